"""The operator's local state: the agentkeys home and its ``operator.json``.

The home is ``--home``, else ``$AGENTKEYS_HOME``, else ``$XDG_CONFIG_HOME/agentkeys``;
``agentkeys init`` writes ``operator.json`` there (format: :class:`OperatorState`, version
:data:`STATE_VERSION`, 0600). It is read strictly: :mod:`agentkeys.strict_json` (no
duplicate key) then the schema below with :data:`agentkeys.strict_schema.STRICT` (no unknown
member, every value of its exact type); a refusal names the member. The chain profile comes
from ``chain.toml`` (:data:`CHAIN_FILE`) beside it, when present, and the
``AGENTKEYS_CHAIN_*`` environment (agentkeys.chain.profiles).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, with_config

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cli._errors import NoOperatorState, OperatorStateInvalid
from agentkeys.config import ConfigError, check_private_file, validate_document
from agentkeys.errors import AgentkeysError
from agentkeys.omni import normalize_hex32, normalize_wallet
from agentkeys.passkey_page import DEFAULT_RP_ID
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import STRICT
from attest.device_key import BackendChoice

__all__ = [
    "CHAIN_FILE",
    "K4_WALLET",
    "OWN_WALLET",
    "STATE_FILE",
    "STATE_VERSION",
    "MasterWallet",
    "OperatorState",
    "PasskeyRecord",
    "agentkeys_home",
    "load_operator_state",
]


STATE_FILE = "operator.json"
STATE_VERSION = 1
CHAIN_FILE = "chain.toml"

MasterWallet = Literal["own", "k4"]
"""How the operator signs in (``init`` records it; ``session renew`` repeats it)."""
OWN_WALLET: MasterWallet = "own"  # the operator's own wallet (K5): SIWE signed in the CLI
K4_WALLET: MasterWallet = "k4"  # email-only operator: the signer-held K4 signs SIWE via the broker

_REINIT = "run `agentkeys init` again"

T = TypeVar("T")


def agentkeys_home(explicit: Path | None = None) -> Path:
    """``--home``, else ``$AGENTKEYS_HOME``, else ``$XDG_CONFIG_HOME/agentkeys``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("AGENTKEYS_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "agentkeys"


@dataclass(frozen=True)
class PasskeyRecord:
    """The operator's enrolled passkey (K11) as the CLI needs it to ask for assertions.

    ``dev_key_file`` is set only for a development passkey held by agentkeys.devstack.softauthn
    (enrolled with ``--dev-authenticator``); a browser passkey has none.
    """

    credential_id: bytes
    public_point: bytes
    rp_id: str = DEFAULT_RP_ID
    origin: str | None = None
    dev_key_file: Path | None = None


@with_config(STRICT)
@dataclass(frozen=True)
class _K10Document:
    backend: BackendChoice = BackendChoice.SOFTWARE
    key_file: str | None = None
    tcti: str | None = None


@with_config(STRICT)
@dataclass(frozen=True)
class _PasskeyDocument:
    credential_id: str
    public_point: str
    rp_id: str = DEFAULT_RP_ID
    origin: str | None = None
    dev_key_file: str | None = None


@with_config(STRICT)
@dataclass(frozen=True)
class _Document:
    """``operator.json``'s JSON shape (what :meth:`OperatorState.to_json` writes)."""

    version: int
    wallet: str
    operator_omni: str
    device_key_hash: str
    k10: _K10Document
    passkey: _PasskeyDocument
    submit: Literal["sovereign", "relay"] = "sovereign"
    email: str | None = None
    master_wallet: MasterWallet | None = None
    legacy_identity_omni: str | None = None


_DOCUMENT = TypeAdapter(_Document)


@dataclass(frozen=True)
class OperatorState:
    """``operator.json``: who this operator is and which local keys act for it.

    Fields: ``wallet`` (master wallet, 0x hex), ``operator_omni`` and ``device_key_hash``
    (64 hex), ``k10_backend`` (tpm|software|auto), ``k10_key_file`` (software K10),
    ``k10_tcti`` (TPM), the passkey, and ``submit`` (``sovereign``; ``relay`` is not yet
    wired into the CLI). How the operator signs in, when ``init`` recorded it: ``email`` and
    ``master_wallet`` (:data:`MasterWallet`); ``legacy_identity_omni`` (64 hex) for an operator
    upgraded from v1 (``device register --upgrade-from-v1``). Relative paths are relative to
    the home directory.
    """

    wallet: str
    operator_omni: str
    device_key_hash: str
    passkey: PasskeyRecord
    k10_backend: str = "software"
    k10_key_file: Path | None = None
    k10_tcti: str | None = None
    submit: str = "sovereign"
    email: str | None = None
    master_wallet: MasterWallet | None = None
    legacy_identity_omni: str | None = None

    def to_json(self, home: Path) -> dict[str, Any]:
        """The JSON document (paths relative to ``home`` where possible)."""

        def rel(path: Path | None) -> str | None:
            if path is None:
                return None
            try:
                return str(path.relative_to(home))
            except ValueError:
                return str(path)

        optional = {
            "email": self.email,
            "master_wallet": self.master_wallet,
            "legacy_identity_omni": self.legacy_identity_omni,
        }
        return {
            **{name: value for name, value in optional.items() if value is not None},
            "version": STATE_VERSION,
            "wallet": self.wallet,
            "operator_omni": self.operator_omni,
            "device_key_hash": self.device_key_hash,
            "k10": {
                "backend": self.k10_backend,
                "key_file": rel(self.k10_key_file),
                "tcti": self.k10_tcti,
            },
            "passkey": {
                "credential_id": b64url_encode(self.passkey.credential_id),
                "public_point": self.passkey.public_point.hex(),
                "rp_id": self.passkey.rp_id,
                "origin": self.passkey.origin,
                "dev_key_file": rel(self.passkey.dev_key_file),
            },
            "submit": self.submit,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], home: Path) -> OperatorState:
        """Parse ``operator.json`` (strictly: no unknown member, every value of its exact type).

        Raises:
            OperatorStateInvalid: wrong version, or a missing, unknown or malformed member
                (named in the message).
        """

        def path(value: str | None) -> Path | None:
            if value is None:
                return None
            p = Path(value)
            return p if p.is_absolute() else home / p

        if data.get("version") != STATE_VERSION:
            raise OperatorStateInvalid(f"operator.json has an unsupported version; {_REINIT}")
        try:
            doc = validate_document(_DOCUMENT, data)
        except ConfigError as exc:
            raise OperatorStateInvalid(
                f"operator.json is malformed: {exc.reason}; {_REINIT}"
            ) from None
        legacy = doc.legacy_identity_omni
        return cls(
            wallet=_member("wallet", normalize_wallet, doc.wallet),
            operator_omni=_member("operator_omni", normalize_hex32, doc.operator_omni),
            device_key_hash=_member("device_key_hash", normalize_hex32, doc.device_key_hash),
            k10_backend=str(doc.k10.backend),
            k10_key_file=path(doc.k10.key_file),
            k10_tcti=doc.k10.tcti,
            passkey=PasskeyRecord(
                credential_id=_member(
                    "passkey.credential_id", b64url_decode, doc.passkey.credential_id
                ),
                public_point=_member("passkey.public_point", _point, doc.passkey.public_point),
                rp_id=doc.passkey.rp_id,
                origin=doc.passkey.origin,
                dev_key_file=path(doc.passkey.dev_key_file),
            ),
            submit=doc.submit,
            email=doc.email,
            master_wallet=doc.master_wallet,
            legacy_identity_omni=(
                None if legacy is None else _member("legacy_identity_omni", normalize_hex32, legacy)
            ),
        )

    def write(self, home: Path) -> Path:
        """Write ``home/operator.json`` (0600, home 0700) atomically; returns the path."""
        target = home / STATE_FILE
        write_private(target, json.dumps(self.to_json(home), indent=2, sort_keys=True) + "\n")
        return target


def _member(name: str, convert: Callable[[str], T], value: str) -> T:
    """``convert(value)``, else :class:`OperatorStateInvalid` naming member ``name``."""
    try:
        return convert(value)
    except (ValueError, AgentkeysError):
        raise OperatorStateInvalid(
            f"operator.json is malformed: {name} is malformed; {_REINIT}"
        ) from None


def _point(text: str) -> bytes:
    """A passkey public point: 64 bytes (x || y) in hex."""
    point = bytes.fromhex(text)
    if len(point) != 64:
        raise ValueError("not 64 bytes")
    return point


def load_operator_state(home: Path) -> OperatorState:
    """Read the operator state of ``home``.

    Raises:
        NoOperatorState: there is none.
        OperatorStateInvalid: unreadable or malformed.
        InsecureFileError: the file can be changed by others.
    """
    path = home / STATE_FILE
    try:
        present = path.exists()
    except PermissionError:  # another user's home
        raise OperatorStateInvalid(f"{home} is not readable by this user") from None
    if not present:
        raise NoOperatorState(
            f"no operator set up in {home}; run `agentkeys init` first (or pass --home)"
        )
    check_private_file(path)
    try:
        text = path.read_bytes()
    except OSError:
        raise OperatorStateInvalid(f"cannot read {path}; {_REINIT}") from None
    try:
        data = loads_object(text, what="operator.json")
    except StrictJsonError as exc:
        raise OperatorStateInvalid(f"{path}: {exc.reason}; {_REINIT}") from None
    return OperatorState.from_json(data, home)
