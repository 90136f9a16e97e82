"""Shared plumbing of the ``agentkeys`` commands: output, errors, secrets, the operator's state.

Errors of the command line (the CLI's own leaves; everything else is translated here)::

    AgentkeysError
    └── CliError (exit code by leaf; see EXIT_* and docs/cli.md)
        ├── NoOperatorState      no local operator state (run `agentkeys init`)        → 3
        ├── OperatorStateInvalid the state file is unreadable or malformed             → 3
        ├── SecretUnavailable    a secret file/prompt/stdin gave nothing usable        → 1
        ├── WalletMismatch       the wallet is not the operator's master wallet        → 1
        └── Rejected             the request conflicts with the chain's state          → 6
                                 (scope already present, unknown agent, revoked device)

:func:`run` executes one command's coroutine under Trio and turns any domain error
(:data:`~agentkeys.errors.DOMAIN_ERRORS`: agentkeys' or attest's) into exactly one line on
stderr (``agentkeys: <what happened>; <what to do>``) and the exit code of its class.
Secrets (wallet keys, keystore passwords) are read from a file, stdin or a prompt, never
from argv, and never appear in messages.

The operator's local state is ``operator.json`` in the agentkeys home (``--home``, else
``$AGENTKEYS_HOME``, else ``$XDG_CONFIG_HOME/agentkeys``); ``agentkeys init`` writes it (format:
:class:`OperatorState`). The chain profile comes from ``chain.toml`` beside it, when present, and
the ``AGENTKEYS_CHAIN_*`` environment (agentkeys.chain.profiles).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.chain import (
    ChainClient,
    ChainConfigError,
    ContractReverted,
    DeviceRegistered,
    K10Signer,
    MasterAuthority,
    PasskeyAuthenticator,
    RpcError,
    RpcUnavailable,
    TransactionFailed,
    WebAuthnAssertion,
    load_chain_profile,
)
from agentkeys.chain.events import decode_log
from agentkeys.config import ConfigError, check_private_file
from agentkeys.errors import DOMAIN_ERRORS, AgentkeysError, DomainError, FormatError
from agentkeys.omni import (
    agent_omni,
    device_key_hash_from_point,
    hex32_to_bytes,
    normalize_hex32,
    normalize_service,
    normalize_wallet,
)
from agentkeys.passkey_page import (
    DEFAULT_RP_ID,
    PagePasskey,
    PasskeyPageError,
    PasskeyWrongCredential,
    browser_opener,
)
from attest.device_key import BackendChoice, DeviceKey, open_device_key
from attest.errors import AttestError
from attest.k10_signature import k10_raw_from_der

if TYPE_CHECKING:
    from agentkeys.devstack.softauthn import SoftAuthenticator

__all__ = [
    "EXIT_CHAIN_UNREACHABLE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_STATE",
    "EXIT_OK",
    "EXIT_PASSKEY",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "STATE_FILE",
    "CliError",
    "DeviceK10Signer",
    "NoOperatorState",
    "OperatorSession",
    "OperatorState",
    "OperatorStateInvalid",
    "PasskeyRecord",
    "Rejected",
    "SecretUnavailable",
    "WalletMismatch",
    "add_output_options",
    "add_session_options",
    "add_wallet_options",
    "agentkeys_home",
    "assertion_json",
    "describe_error",
    "emit",
    "exit_code_for",
    "label_arg",
    "load_operator_state",
    "load_wallet",
    "one_line",
    "open_session",
    "passkey_for",
    "read_secret",
    "run",
    "service_arg",
    "wallet_given",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_STATE = 3
EXIT_PASSKEY = 4
EXIT_CHAIN_UNREACHABLE = 5
EXIT_REJECTED = 6
EXIT_INTERRUPTED = 130

STATE_FILE = "operator.json"
STATE_VERSION = 1
CHAIN_FILE = "chain.toml"


# ---------------------------------------------------------------------------- errors


class CliError(AgentkeysError):
    """Base of the command line's own errors; ``exit_code`` is the process exit status."""

    error: ClassVar[str] = "cli_error"
    status: ClassVar[int] = 400
    exit_code: ClassVar[int] = EXIT_FAILED


class NoOperatorState(CliError):
    """No operator state on this machine."""

    error = "no_operator_state"
    exit_code = EXIT_NO_STATE


class OperatorStateInvalid(CliError):
    """The operator state file is unreadable or malformed."""

    error = "operator_state_invalid"
    exit_code = EXIT_NO_STATE


class SecretUnavailable(CliError):
    """A secret could not be read (empty, unreadable, or no terminal to prompt on)."""

    error = "secret_unavailable"


class WalletMismatch(CliError):
    """The wallet given is not the operator's master wallet."""

    error = "wallet_mismatch"
    status = 403  # the one status of this code (agentkeys.error_codes)


class Rejected(CliError):
    """The request conflicts with what the chain says (already present, unknown, revoked)."""

    error = "rejected"
    status = 409
    exit_code = EXIT_REJECTED


# What to do, per revert of our contracts (docs/contracts.md, "Errors").
_REVERT_ADVICE: Mapping[str, tuple[str, int]] = {
    "K11AssertionInvalid": (
        "the passkey did not match this device; use the passkey you enrolled with `agentkeys init`",
        EXIT_PASSKEY,
    ),
    "K11RpIdMismatch": (
        "the passkey belongs to another site (rpId); use the enrolled passkey",
        EXIT_PASSKEY,
    ),
    "K11SignCountNotIncreasing": (
        "the passkey's counter went backwards (a cloned passkey?); use the enrolled authenticator",
        EXIT_PASSKEY,
    ),
    "K11AssertionMalformed": ("the passkey answer was malformed; try again", EXIT_PASSKEY),
    "K10SignatureInvalid": (
        "this device's key (K10) is not the registered one; check --home and the device key",
        EXIT_REJECTED,
    ),
    "DeviceNotFound": (
        "the device is not registered on this chain; run `agentkeys init` or "
        "check the chain profile",
        EXIT_REJECTED,
    ),
    "DeviceNotAuthorised": (
        "this device may not authorise that change (revoked, not a master, or lacks the role)",
        EXIT_REJECTED,
    ),
    "DeviceAlreadyRevoked": ("that device is already revoked", EXIT_REJECTED),
    "DeviceAlreadyRegistered": ("that device key is already registered", EXIT_REJECTED),
    "DeviceOfOtherOperator": ("that device belongs to another operator", EXIT_REJECTED),
    "OperatorNotRegistered": (
        "the operator is not registered on this chain; run `agentkeys init`",
        EXIT_REJECTED,
    ),
    "ScopeNotFound": ("that agent has no scope to remove", EXIT_REJECTED),
    "InvalidLabel": ("agent labels are 1-32 characters of a-z, 0-9 and -", EXIT_USAGE),
    "ServicesInvalid": ("a scope holds 1 to 64 distinct services", EXIT_USAGE),
}


def exit_code_for(exc: BaseException) -> int:
    """The exit status of a failure (docs/cli.md lists them)."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, ContractReverted):
        return _REVERT_ADVICE.get(exc.revert_error, ("", EXIT_REJECTED))[1]
    if isinstance(exc, PasskeyPageError):
        return EXIT_PASSKEY
    if isinstance(exc, RpcUnavailable):
        return EXIT_CHAIN_UNREACHABLE
    if isinstance(exc, FormatError):
        return EXIT_USAGE
    if isinstance(exc, (ConfigError, ChainConfigError, AttestError)):
        return EXIT_NO_STATE
    return EXIT_FAILED


def describe_error(exc: DomainError) -> str:
    """One line: what happened and what to do (never secret material)."""
    if isinstance(exc, ContractReverted):
        advice = _REVERT_ADVICE.get(exc.revert_error)
        if advice is not None:
            return f"the chain refused the change ({exc.revert_error}): {advice[0]}"
        return f"the chain refused the change ({exc.revert_error})"
    if isinstance(exc, RpcUnavailable):
        return (
            f"the chain is unreachable ({exc.reason}); start it (`agentkeys dev up`) or "
            "check the chain profile's rpc_url"
        )
    if isinstance(exc, (RpcError, TransactionFailed)):
        return f"the chain did not take the transaction ({exc.reason}); try again"
    if isinstance(exc, PasskeyWrongCredential):
        return f"{exc.reason}; use the passkey you enrolled with `agentkeys init`"
    if isinstance(exc, ChainConfigError):
        return f"{exc.reason}; check chain.toml in the agentkeys home or AGENTKEYS_CHAIN_*"
    if isinstance(exc, AttestError):
        return f"the device key (K10) is unusable: {exc.reason}"
    return exc.reason


# ---------------------------------------------------------------------------- arguments


def label_arg(text: str) -> str:
    """argparse ``type`` of an agent label (a bad one is a usage error, exit 2)."""
    try:
        agent_omni("0" * 64, text)
    except FormatError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text


def service_arg(text: str) -> str:
    """argparse ``type`` of a service name: the normalized name (a bad one exits 2)."""
    try:
        return normalize_service(text)
    except FormatError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


# ---------------------------------------------------------------------------- output


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object on stdout instead of text."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (for scripts) instead of text"
    )


def emit(args: argparse.Namespace, data: Mapping[str, Any], lines: Sequence[str]) -> None:
    """Print the result: ``data`` as JSON with ``--json``, else the text ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=True))
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()


def _leaf_error(exc: BaseException) -> DomainError | None:
    """The domain error inside ``exc`` (itself, or the first leaf of an exception group)."""
    if isinstance(exc, DOMAIN_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf_error(inner)
            if found is not None:
                return found
    return None


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def run(args: argparse.Namespace, command: Callable[[], Awaitable[None]]) -> int:
    """Run one command's coroutine; failures become one stderr line and an exit code.

    Errors that are not agentkeys' own propagate (a traceback is a bug to report).
    """
    try:
        trio.run(command)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        if not _only_interrupts(exc):
            error = _leaf_error(exc)
            if error is None:
                raise
            return _report(args, error)
        print(
            "agentkeys: interrupted; nothing was submitted unless a tx hash was printed",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DOMAIN_ERRORS as exc:
        return _report(args, exc)
    return EXIT_OK


def one_line(text: object) -> str:
    """``text`` on one line (a peer's reason may hold newlines); never shortened."""
    return " ".join(str(text).split())


def _report(args: argparse.Namespace, exc: DomainError) -> int:
    message = describe_error(exc)
    if getattr(args, "json", False):
        code = getattr(exc, "code", None)  # a refusing broker's/worker's own code
        error = code if isinstance(code, str) and code else exc.error
        print(json.dumps({"error": error, "reason": message}), file=sys.stderr)
    else:
        print(f"agentkeys: {message}", file=sys.stderr)
    return exit_code_for(exc)


# ---------------------------------------------------------------------------- secrets


def read_secret(*, path: Path | None, use_stdin: bool, prompt: str, what: str) -> bytes:
    """A secret from a file (0600, ours), stdin (first line) or a terminal prompt.

    Raises:
        SecretUnavailable: nothing usable (empty, unreadable, no terminal).
        InsecureFileError: the file is readable by others.
    """
    if path is not None:
        check_private_file(path)
        try:
            data = path.read_bytes()
        except OSError:
            raise SecretUnavailable(f"cannot read the {what} file {path}") from None
    elif use_stdin:
        data = sys.stdin.buffer.readline()
    else:
        if not sys.stdin.isatty():
            raise SecretUnavailable(
                f"no {what} given; pass a file (0600) or --{what.replace(' ', '-')}-stdin"
            )
        data = getpass.getpass(prompt).encode()
    secret = data.strip()
    if not secret:
        raise SecretUnavailable(f"the {what} is empty")
    return secret


def add_wallet_options(parser: argparse.ArgumentParser) -> None:
    """Sovereign submission: the operator's wallet from a keystore or key file (not argv)."""
    group = parser.add_argument_group("wallet (sovereign mode: your wallet sends the tx)")
    group.add_argument(
        "--wallet-keystore",
        type=Path,
        metavar="FILE",
        help="encrypted JSON keystore of the operator's wallet",
    )
    group.add_argument(
        "--wallet-key-file",
        type=Path,
        metavar="FILE",
        help="file (0600) holding the wallet's hex private key",
    )
    group.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file (0600) holding the keystore password (else prompt)",
    )
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the keystore password from the first line of stdin",
    )


def wallet_given(args: argparse.Namespace) -> bool:
    """Whether ``--wallet-keystore`` or ``--wallet-key-file`` was passed."""
    return (
        getattr(args, "wallet_keystore", None) is not None
        or getattr(args, "wallet_key_file", None) is not None
    )


def load_wallet(args: argparse.Namespace, expected: str | None) -> LocalAccount:
    """The operator's wallet, from ``--wallet-keystore`` or ``--wallet-key-file``.

    Raises:
        SecretUnavailable: neither given, or the key/password is unusable.
        WalletMismatch: the wallet is not ``expected`` (the master wallet on record).
    """
    keystore: Path | None = getattr(args, "wallet_keystore", None)
    key_file: Path | None = getattr(args, "wallet_key_file", None)
    if keystore is not None and key_file is not None:
        raise SecretUnavailable("give --wallet-keystore or --wallet-key-file, not both")
    key: bytes | str
    if keystore is not None:
        try:
            encrypted = json.loads(keystore.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise SecretUnavailable(f"cannot read the keystore {keystore}") from None
        password = read_secret(
            path=args.password_file,
            use_stdin=args.password_stdin,
            prompt=f"Password for {keystore.name}: ",
            what="password",
        )
        try:
            key = bytes(Account.decrypt(encrypted, password.decode()))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise SecretUnavailable("the keystore did not open (wrong password?)") from None
    elif key_file is not None:
        text = read_secret(path=key_file, use_stdin=False, prompt="", what="wallet key")
        try:
            key = text.decode("ascii")
        except UnicodeDecodeError:
            raise SecretUnavailable("the wallet key file must hold the key as hex text") from None
    else:
        raise SecretUnavailable(
            "no wallet to send the transaction; pass --wallet-keystore FILE or "
            "--wallet-key-file FILE (create one with `agentkeys wallet create`)"
        )
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError):
        raise SecretUnavailable("the wallet key is not a secp256k1 private key") from None
    if expected is not None and account.address.lower() != expected.lower():
        raise WalletMismatch(
            f"wallet {account.address} is not the operator's master wallet {expected}"
        )
    return account


# ---------------------------------------------------------------------------- operator state


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


# ---------------------------------------------------------------------------- keys and session


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
