"""An operator's session: the state, an open chain client and, for mutations, K10 + passkey.

:func:`open_session` loads the operator's state (agentkeys.cli._operator_state), connects to
the chain of its profile (checking the chain id) and, when signing, opens the device key
(K10, :class:`DeviceK10Signer`) and chooses the passkey (:func:`passkey_for`: the page, or
the development one only with ``--dev-authenticator``).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agentkeys.b64url import b64url_encode
from agentkeys.chain import (
    ChainClient,
    ChainConfigError,
    DeviceRegistered,
    K10Signer,
    MasterAuthority,
    PasskeyAuthenticator,
    RpcError,
    WebAuthnAssertion,
    load_chain_profile,
)
from agentkeys.chain.events import decode_log
from agentkeys.cli._errors import CliError, OperatorStateInvalid, Rejected
from agentkeys.cli._operator_state import (
    CHAIN_FILE,
    OperatorState,
    PasskeyRecord,
    agentkeys_home,
    load_operator_state,
)
from agentkeys.cli._secrets import add_wallet_options
from agentkeys.config import check_private_file
from agentkeys.omni import device_key_hash_from_point, hex32_to_bytes, normalize_hex32
from agentkeys.passkey_page import PagePasskey, browser_opener
from attest.device_key import DeviceKey, open_device_key
from attest.k10_signature import k10_raw_from_der

if TYPE_CHECKING:
    from agentkeys.devstack.softauthn import SoftAuthenticator

__all__ = [
    "DeviceK10Signer",
    "OperatorSession",
    "RecordingAuthority",
    "add_session_options",
    "assertion_json",
    "open_session",
    "passkey_for",
]


class DeviceK10Signer:
    """attest's DeviceKey (TPM or software K10) as agentkeys.chain's K10Signer."""

    def __init__(self, key: DeviceKey) -> None:
        self._key = key
        numbers = key.public_key.public_numbers()
        self._point = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    @property
    def public_point(self) -> bytes:
        """X ‖ Y."""
        return self._point

    async def sign_digest(self, digest: bytes) -> bytes:
        """DER ECDSA over ``digest`` (the device key signs r ‖ s; re-encoded here)."""
        raw = await self._key.sign(digest)
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )


def add_session_options(parser: argparse.ArgumentParser, *, passkey: bool = True) -> None:
    """``--home`` and, for mutations, the passkey and wallet options."""
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        help="agentkeys home (default $AGENTKEYS_HOME or ~/.config/agentkeys)",
    )
    if passkey:
        group = parser.add_argument_group("passkey")
        group.add_argument(
            "--dev-authenticator",
            action="store_true",
            help="use the development software passkey enrolled with "
            "`init --dev-authenticator` (never a real passkey)",
        )
        group.add_argument(
            "--no-browser",
            action="store_true",
            help="print the passkey page URL instead of opening a browser",
        )
        group.add_argument(
            "--passkey-timeout",
            type=float,
            default=180.0,
            metavar="SECONDS",
            help="how long the passkey page stays usable (default 180)",
        )
        add_wallet_options(parser)


def _dev_passkey(record: PasskeyRecord) -> SoftAuthenticator:
    # development tooling, loaded only when --dev-authenticator asks for it
    from agentkeys.devstack.softauthn import SoftAuthenticator

    if record.dev_key_file is None:
        raise Rejected(
            "this operator's passkey lives in a browser/authenticator, not in agentkeys; "
            "drop --dev-authenticator"
        )
    check_private_file(record.dev_key_file)
    try:
        key = serialization.load_pem_private_key(record.dev_key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise OperatorStateInvalid(
            f"cannot read the development passkey {record.dev_key_file}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise OperatorStateInvalid("the development passkey is not a P-256 key")
    origin = record.origin or f"http://{record.rp_id}"
    passkey = SoftAuthenticator(rp_id=record.rp_id, origin=origin, private_key=key, counting=False)
    if passkey.public_point != record.public_point:
        raise OperatorStateInvalid("the development passkey file does not match operator.json")
    passkey.credential_id = record.credential_id
    return passkey


def _page_port(origin: str | None) -> int:
    """The port of the origin a passkey was enrolled on (0: any free port)."""
    try:
        return (urlsplit(origin).port or 0) if origin else 0
    except ValueError:
        return 0


def passkey_for(args: argparse.Namespace, record: PasskeyRecord) -> PasskeyAuthenticator:
    """The page passkey, or the development one only when ``--dev-authenticator`` asks.

    The page is served on the port of the origin the passkey was enrolled on (the broker's
    WebAuthn origin): the broker checks an assertion's origin (sign-in, relay), the chain
    does not.
    """
    if getattr(args, "dev_authenticator", False):
        return _dev_passkey(record)
    opener = getattr(args, "passkey_opener", None) or browser_opener(
        launch=not getattr(args, "no_browser", False)
    )
    return PagePasskey(
        credential_id=record.credential_id,
        public_point=record.public_point,
        open_url=opener,
        rp_id=record.rp_id,
        timeout=float(getattr(args, "passkey_timeout", 180.0)),
        port=_page_port(record.origin),
    )


@dataclass
class RecordingAuthority:
    """K10 and passkey of this master that keep what they produced, for a relay request
    (the broker wants the raw signature and the assertion, not the contract's encoding)."""

    k10: K10Signer
    passkey: PasskeyAuthenticator
    credential_id: bytes
    der: bytes = b""
    assertion: WebAuthnAssertion | None = None

    @property
    def public_point(self) -> bytes:
        """The K10 public point (X ‖ Y)."""
        return self.k10.public_point

    async def sign_digest(self, digest: bytes) -> bytes:
        """K10 signs; the DER signature is kept."""
        self.der = await self.k10.sign_digest(digest)
        return self.der

    async def get_assertion(self, challenge: bytes) -> WebAuthnAssertion:
        """The passkey asserts; the assertion is kept."""
        self.assertion = await self.passkey.get_assertion(challenge)
        return self.assertion

    def relay_fields(self) -> dict[str, Any]:
        """``k10_signature`` (raw r ‖ s hex) and ``assertion`` (AuthenticationResponseJSON)."""
        if not self.der or self.assertion is None:
            raise CliError("internal: nothing was signed for the relay")
        return {
            "k10_signature": k10_raw_from_der(self.der).hex(),
            "assertion": assertion_json(self.credential_id, self.assertion),
        }


def assertion_json(credential_id: bytes, assertion: WebAuthnAssertion) -> dict[str, Any]:
    """``assertion`` by ``credential_id`` as AuthenticationResponseJSON (what the broker
    takes)."""
    cid = b64url_encode(credential_id)
    return {
        "id": cid,
        "rawId": cid,
        "type": "public-key",
        "response": {
            "authenticatorData": b64url_encode(assertion.authenticator_data),
            "clientDataJSON": b64url_encode(assertion.client_data_json),
            "signature": b64url_encode(assertion.signature),
        },
        "clientExtensionResults": {},
    }


@dataclass
class OperatorSession:
    """An operator's state with an open chain client (and, for mutations, K10 + passkey)."""

    home: Path
    state: OperatorState
    chain: ChainClient
    chain_name: str
    start_block: int = 0
    device_key: DeviceKey | None = None
    passkey: PasskeyAuthenticator | None = None
    recorded: RecordingAuthority | None = None

    @property
    def operator(self) -> bytes:
        """operator_omni as 32 bytes."""
        return hex32_to_bytes(self.state.operator_omni)

    async def registered_devices(self, actor_omni: str | None = None) -> list[DeviceRegistered]:
        """DeviceRegistered events of this operator (optionally of one actor), oldest first.

        Scans from the deployment's block (one ``eth_getLogs``; fine for stage-1 chains).
        """
        registry = self.chain.address_of("SidecarRegistry")
        abi = self.chain.abis["SidecarRegistry"]
        topics: list[str | None] = [
            "0x" + abi.events["DeviceRegistered"].topic0.hex(),
            "0x" + self.state.operator_omni,
        ]
        if actor_omni is not None:
            topics.append("0x" + normalize_hex32(actor_omni))
        logs = await self.chain.rpc.call(
            "eth_getLogs",
            {
                "fromBlock": hex(self.start_block),
                "toBlock": "latest",
                "address": registry,
                "topics": topics,
            },
        )
        if not isinstance(logs, list):
            raise RpcError("eth_getLogs answered a non-list")
        events = [decode_log(raw, abi) for raw in logs if isinstance(raw, Mapping)]
        return [e for e in events if isinstance(e, DeviceRegistered)]

    def authority(self, operation: str | None = None, *details: tuple[str, str]) -> MasterAuthority:
        """K10 + K11 of this master device (only in a session opened for mutations).

        The passkey page shows what it approves: ``operation`` (e.g. ``scope add``), the
        ``details`` (name, value) lines, then this operator and this master device.
        """
        if self.device_key is None or self.passkey is None:
            raise CliError("internal: session opened without signing keys")
        if operation is not None and isinstance(self.passkey, PagePasskey):
            self.passkey.purpose = f"Approve with your passkey: {operation}."
            self.passkey.details = (
                ("Operation", operation),
                *details,
                ("Operator", self.state.operator_omni),
                ("Approving device", self.state.device_key_hash),
            )
        self.recorded = RecordingAuthority(
            DeviceK10Signer(self.device_key), self.passkey, self.state.passkey.credential_id
        )
        return MasterAuthority(
            bytes.fromhex(self.state.device_key_hash), self.recorded, self.recorded
        )


@asynccontextmanager
async def open_session(
    args: argparse.Namespace, *, signing: bool
) -> AsyncIterator[OperatorSession]:
    """Load the state, connect to the chain (checking the chain id) and, when ``signing``,
    open the device key and choose the passkey. The caller's session closes everything.

    Raises:
        NoOperatorState / OperatorStateInvalid: no usable local state.
        ChainConfigError: no deployment configured, or the RPC serves another chain.
        RpcUnavailable: the chain cannot be reached.
    """
    home = agentkeys_home(getattr(args, "home", None))
    state = load_operator_state(home)
    chain_file = home / CHAIN_FILE
    profile = load_chain_profile(path=chain_file if chain_file.exists() else None)
    if profile.addresses is None:
        raise ChainConfigError(
            f"no contract deployment configured for chain profile {profile.name}"
        )
    async with httpx.AsyncClient(timeout=15) as http:
        client = ChainClient(http, profile.rpc_url, profile.addresses)
        await client.check_chain_id(profile.chain_id)
        session = OperatorSession(home, state, client, profile.name, profile.start_block)
        if not signing:
            yield session
            return
        session.passkey = passkey_for(args, state.passkey)
        key = await open_device_key(
            state.k10_backend,
            key_path=state.k10_key_file,
            tcti=state.k10_tcti,
            create=False,
        )
        try:
            signer = DeviceK10Signer(key)
            if device_key_hash_from_point(signer.public_point) != state.device_key_hash:
                raise OperatorStateInvalid(
                    "the device key on this machine is not the one in operator.json"
                )
            session.device_key = key
            yield session
        finally:
            await key.aclose()
