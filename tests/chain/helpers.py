"""Shared helpers for the chain tests: revert expectations and faulty passkeys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agentkeys.chain.errors import ContractReverted
from agentkeys.chain.signing import P256_N
from agentkeys.softauthn import SoftAssertion, SoftAuthenticator


@contextlib.contextmanager
def reverts(name: str) -> Iterator[None]:
    """Expect a ContractReverted whose decoded custom error is ``name``."""
    with pytest.raises(ContractReverted) as info:
        yield
    assert info.value.revert_error == name, info.value.reason


class VariantPasskey:
    """A SoftAuthenticator whose assertions carry the given ``get`` options (negative tests)."""

    def __init__(self, passkey: SoftAuthenticator, *, high_s: bool = False, **options: Any):
        self.passkey = passkey
        self.high_s = high_s
        self.options = options
        self.last: SoftAssertion | None = None

    async def get_assertion(self, challenge: bytes) -> SoftAssertion:
        assertion = self.passkey.get(challenge, **self.options)
        if not self.high_s:
            return assertion
        r, s = decode_dss_signature(assertion.signature)
        s = s if s > P256_N // 2 else P256_N - s
        self.last = SoftAssertion(
            assertion.credential_id,
            assertion.authenticator_data,
            assertion.client_data_json,
            encode_dss_signature(r, s),
        )
        return self.last
