"""The K4 SIWE signing guard (bootstrap stage of SPEC.md section 7, broker).

The signer signs, with an email identity's K4, only text that parses as an
EIP-4361 message (:func:`agentkeys.siwe.parse_siwe`, strict ABNF) whose
address is that K4 wallet. This matters: K4 also produces v1 KEKs by signing
``agentkeys.kek.v1:…`` (SPEC.md section 4), so a signer that signed arbitrary
text for the broker would hand the broker every v1 KEK.
"""

from __future__ import annotations

from agentkeys.signer.errors import SiweMessageRejected
from agentkeys.siwe import SiweFormatError, parse_siwe

__all__ = ["check_siwe_message"]


def check_siwe_message(message: str, *, wallet: str) -> bytes:
    """The bytes to sign, if ``message`` is a SIWE message for ``wallet``.

    Args:
        message: the full EIP-4361 text.
        wallet: the identity's K4 address (lowercase ``0x`` hex).

    Raises:
        SiweMessageRejected: not EIP-4361, or for another address.
    """
    try:
        parsed = parse_siwe(message)
    except SiweFormatError as exc:
        raise SiweMessageRejected(f"not an EIP-4361 message: {exc.reason}") from exc
    if parsed.address.lower() != wallet.lower():
        raise SiweMessageRejected("the message is not for this identity's wallet")
    return message.encode("utf-8")
