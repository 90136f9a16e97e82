"""The operator's local state: the agentkeys home and its ``operator.json``.

The home is ``--home``, else ``$AGENTKEYS_HOME``, else ``$XDG_CONFIG_HOME/agentkeys``;
``agentkeys init`` writes ``operator.json`` there (format: :class:`OperatorState`, version
:data:`STATE_VERSION`, 0600). The chain profile comes from ``chain.toml`` (:data:`CHAIN_FILE`)
beside it, when present, and the ``AGENTKEYS_CHAIN_*`` environment (agentkeys.chain.profiles).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.cli._errors import NoOperatorState, OperatorStateInvalid
from agentkeys.config import check_private_file
from agentkeys.errors import AgentkeysError
from agentkeys.omni import normalize_hex32, normalize_wallet
from agentkeys.passkey_page import DEFAULT_RP_ID
from attest.device_key import BackendChoice

__all__ = [
    "CHAIN_FILE",
    "STATE_FILE",
    "STATE_VERSION",
    "OperatorState",
    "PasskeyRecord",
    "agentkeys_home",
    "load_operator_state",
]


STATE_FILE = "operator.json"
STATE_VERSION = 1
CHAIN_FILE = "chain.toml"


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


@dataclass(frozen=True)
class OperatorState:
    """``operator.json``: who this operator is and which local keys act for it.

    Fields: ``wallet`` (master wallet, 0x hex), ``operator_omni`` and ``device_key_hash``
    (64 hex), ``k10_backend`` (tpm|software|auto), ``k10_key_file`` (software K10),
    ``k10_tcti`` (TPM), the passkey, and ``submit`` (``sovereign``; ``relay`` is not yet
    wired into the CLI). Relative paths are relative to the home directory.
    """

    wallet: str
    operator_omni: str
    device_key_hash: str
    passkey: PasskeyRecord
    k10_backend: str = "software"
    k10_key_file: Path | None = None
    k10_tcti: str | None = None
    submit: str = "sovereign"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self, home: Path) -> dict[str, Any]:
        """The JSON document (paths relative to ``home`` where possible)."""

        def rel(path: Path | None) -> str | None:
            if path is None:
                return None
            try:
                return str(path.relative_to(home))
            except ValueError:
                return str(path)

        return {
            **self.extra,
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
    def from_json(cls, data: Any, home: Path) -> OperatorState:
        """Parse ``operator.json``.

        Raises:
            OperatorStateInvalid: wrong version, missing or malformed fields.
        """

        def path(value: Any) -> Path | None:
            if value is None:
                return None
            p = Path(str(value))
            return p if p.is_absolute() else home / p

        try:
            if data["version"] != STATE_VERSION:
                raise OperatorStateInvalid("operator.json has an unsupported version")
            k10 = data["k10"]
            pk = data["passkey"]
            point = bytes.fromhex(str(pk["public_point"]))
            if len(point) != 64:
                raise OperatorStateInvalid("operator.json: passkey public_point is not 64 bytes")
            submit = str(data.get("submit", "sovereign"))
            if submit not in ("sovereign", "relay"):
                raise OperatorStateInvalid("operator.json: submit is sovereign or relay")
            known = {
                "version",
                "wallet",
                "operator_omni",
                "device_key_hash",
                "k10",
                "passkey",
                "submit",
            }
            return cls(
                wallet=normalize_wallet(str(data["wallet"])),
                operator_omni=normalize_hex32(str(data["operator_omni"])),
                device_key_hash=normalize_hex32(str(data["device_key_hash"])),
                k10_backend=str(BackendChoice(str(k10.get("backend", "software")))),
                k10_key_file=path(k10.get("key_file")),
                k10_tcti=k10.get("tcti"),
                passkey=PasskeyRecord(
                    credential_id=b64url_decode(str(pk["credential_id"])),
                    public_point=point,
                    rp_id=str(pk.get("rp_id", DEFAULT_RP_ID)),
                    origin=pk.get("origin"),
                    dev_key_file=path(pk.get("dev_key_file")),
                ),
                submit=submit,
                extra={k: v for k, v in data.items() if k not in known},
            )
        except OperatorStateInvalid:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, AgentkeysError):
            raise OperatorStateInvalid(
                "operator.json is malformed; run `agentkeys init` again"
            ) from None

    def write(self, home: Path) -> Path:
        """Write ``home/operator.json`` (0600, home 0700) atomically; returns the path."""
        target = home / STATE_FILE
        write_private(target, json.dumps(self.to_json(home), indent=2, sort_keys=True) + "\n")
        return target


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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OperatorStateInvalid(f"cannot read {path}; run `agentkeys init` again") from None
    return OperatorState.from_json(data, home)
