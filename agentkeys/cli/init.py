"""``agentkeys init`` and ``agentkeys device register [--upgrade-from-v1]`` (SPEC.md 6, 7, 9).

``init`` runs the bootstrap stages in order against the broker (docs/broker.md):

0. K10 on this device (``attest.open_device_key``: TPM when present, else a 0600 key file);
1. email magic link → J0 (waits with a spinner; in development the mail lands in the SMTP
   sink's maildir, ``$AGENTKEYS_DEV_MAILDIR``, and is followed automatically);
2. passkey enrollment bound to K10: the local passkey page on the port of the broker's
   configured WebAuthn origin (``--passkey-origin``, default ``$AGENTKEYS_DEV_PASSKEY_ORIGIN``),
   or the development software passkey with ``--dev-authenticator`` (never implied);
3. SIWE with the operator's own wallet (``--wallet-keystore`` / ``--wallet-key-file``) → J1,
   or, without a wallet option, with the signer-held K4 of the email identity (email-only
   operator) → J1;

then it registers this device as the master on chain (sovereign: the wallet sends; email-only:
through the broker's relay, K4 approving after the signer checked K10 and the passkey), writes
``operator.json``, ``chain.toml`` (from ``AGENTKEYS_CHAIN_*`` when set) and the J1 session
(``session.jwt`` + ``session.json``, 0600), and prints ``whoami``.

``device register`` registers this device as a master. With a wallet option it needs no
broker (sovereign). Without one (an operator of the legacy design, ``--upgrade-from-v1``,
whose master wallet is the signer-held K4 of its email identity) it signs in to the broker with
``--legacy-email`` (magic link, passkey bound to K10, K4 SIWE) and registers through the
broker's relay. Either way it records the legacy identity (email → ``identity_omni``) in
``operator.json`` as ``legacy_identity_omni`` and prints the next migration steps
(docs/runbook-migration.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account.signers.local import LocalAccount

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode
from agentkeys.chain import ChainClient, PasskeyAuthenticator, load_chain_profile
from agentkeys.chain.errors import ChainConfigError
from agentkeys.cli._bootstrap import (
    BrokerSignIn,
    SessionRecord,
    find_magic_link,
    maildir_names,
    register_master,
    register_master_via_relay,
    write_session,
)
from agentkeys.cli._errors import BrokerRefused, Rejected, UsageError
from agentkeys.cli._operator_session import DeviceK10Signer
from agentkeys.cli._operator_state import (
    CHAIN_FILE,
    K4_WALLET,
    OWN_WALLET,
    STATE_FILE,
    MasterWallet,
    OperatorState,
    PasskeyRecord,
    agentkeys_home,
)
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._secrets import add_wallet_options, load_wallet, wallet_given
from agentkeys.omni import actor_omni_for_wallet, identity_omni, normalize_hex32
from agentkeys.passkey_page import (
    DEFAULT_TIMEOUT,
    PagePasskey,
    assertion_ceremony,
    browser_opener,
    enrollment_ceremony,
    run_page,
    verify_enrollment,
)
from attest.device_key import DeviceKey, key_hash, open_device_key

if TYPE_CHECKING:
    from agentkeys.devstack.softauthn import SoftAuthenticator

__all__ = ["add_maildir_option", "email_stage", "register"]

RP_ID = "localhost"
_SPINNER = "|/-\\"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``init``."""
    init = sub.add_parser(
        "init",
        epilog="example: agentkeys init --email you@example.com",
        allow_abbrev=False,
        help="sign in (email, passkey, wallet) and register this device as your master",
        description="Bootstrap stages 0-3 against the broker, then the master device on chain.",
    )
    init.add_argument("--email", required=True, help="your email address (magic link)")
    init.add_argument(
        "--broker-url",
        default=os.environ.get("AGENTKEYS_DEV_BROKER_URL"),
        help="the broker (default $AGENTKEYS_DEV_BROKER_URL, set by `dev up`'s env.sh)",
    )
    add_maildir_option(init)
    add_device_options(init)
    add_output_options(init)
    init.set_defaults(func=_init)


def add_maildir_option(parser: argparse.ArgumentParser) -> None:
    """``--maildir``: where the development SMTP sink puts the magic link (stage 1)."""
    parser.add_argument(
        "--maildir",
        type=Path,
        default=os.environ.get("AGENTKEYS_DEV_MAILDIR"),
        help="development only: read the magic link from this maildir (the SMTP sink)",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """K10 backend, passkey (page or development) and wallet options."""
    parser.add_argument("--home", type=Path, metavar="DIR", help="agentkeys home")
    parser.add_argument(
        "--k10-backend",
        choices=("auto", "tpm", "software"),
        default="auto",
        help="where K10 lives (auto: the TPM when one answers)",
    )
    group = parser.add_argument_group("passkey")
    group.add_argument(
        "--dev-authenticator",
        action="store_true",
        help="enroll a development software passkey (kept in the home; never a real one)",
    )
    group.add_argument("--no-browser", action="store_true", help="print the page URL only")
    group.add_argument(
        "--passkey-origin",
        default=os.environ.get("AGENTKEYS_DEV_PASSKEY_ORIGIN"),
        help="the broker's WebAuthn origin http://localhost:PORT (the page is served there)",
    )
    group.add_argument("--passkey-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S")
    add_wallet_options(parser)


def _origin_port(origin: str | None) -> int:
    if not origin:
        return 0
    try:
        return int(origin.rsplit(":", 1)[1].strip("/"))
    except (IndexError, ValueError):
        raise UsageError(f"--passkey-origin {origin!r} is not http://localhost:PORT") from None


class _Passkey:
    """The passkey being enrolled: development (software) or the browser page."""

    def __init__(self, args: argparse.Namespace, home: Path, user: str) -> None:
        self.args = args
        self.home = home
        self.user = user
        self.origin: str = args.passkey_origin or "http://localhost"
        self.port = _origin_port(args.passkey_origin)
        self.soft: SoftAuthenticator | None = None
        self.record: PasskeyRecord | None = None
        # the page ceremonies of init: create, [approve with the old passkey], sign in, register
        self.step = 0
        self.steps = 3
        self.signed_in = False
        self.opener = getattr(args, "passkey_opener", None) or browser_opener(
            launch=not args.no_browser
        )
        if args.dev_authenticator:
            self._dev()

    def _dev(self) -> None:
        key_file = self.home / "passkey-dev.pem"
        if key_file.exists():
            loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise Rejected(f"{key_file} is not a P-256 key; remove it")
            key = loaded
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_private(
                key_file,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        # development tooling, loaded only for a development passkey
        from agentkeys.devstack.softauthn import SoftAuthenticator

        self.soft = SoftAuthenticator(
            rp_id=RP_ID, origin=self.origin, private_key=key, counting=False
        )
        self.record = PasskeyRecord(
            credential_id=self.soft.credential_id,
            public_point=self.soft.public_point,
            rp_id=RP_ID,
            origin=self.origin,
            dev_key_file=key_file,
        )

    def expect_approval(self) -> None:
        """The broker wants the enrolled passkey's approval: one page more (told before the
        first page, so that every page says the same n)."""
        self.steps = 4

    def _details(self, operation: str) -> tuple[tuple[str, str], ...]:
        """The next page's "step k of n" lines (n is 4 when an old passkey approves)."""
        self.step += 1
        return (
            ("Step", f"{self.step} of {self.steps} (agentkeys init)"),
            ("Operation", operation),
            ("Operator", self.user),
        )

    async def enroll(self, signin: BrokerSignIn, j0: str, k10: DeviceKey) -> None:
        """Stage 2 with this passkey (and, when the broker asks, the enrolled one's approval)."""
        await signin.enroll(
            j0,
            k10,
            lambda o: self.create(b64url_decode(str(o["challenge"]))),
            self.approve,
            self.expect_approval,
        )

    async def create(self, challenge: bytes) -> Mapping[str, Any]:
        """RegistrationResponseJSON over ``challenge``; sets :attr:`record`."""
        if self.soft is not None:
            return self.soft.create(challenge).to_json()
        ceremony = enrollment_ceremony(
            challenge=challenge,
            rp_id=RP_ID,
            user_id=secrets.token_bytes(16),
            user_name=self.user,
            purpose=f"Create the agentkeys passkey for {self.user}.",
            timeout_ms=int(self.args.passkey_timeout * 1000),
            details=self._details("create your passkey"),
        )
        result = await run_page(
            ceremony, open_url=self.opener, expires_in=self.args.passkey_timeout, port=self.port
        )
        enrolled = verify_enrollment(
            result.credential, challenge=challenge, origin=result.origin, rp_id=RP_ID
        )
        self.record = PasskeyRecord(
            credential_id=enrolled.credential_id,
            public_point=enrolled.public_point,
            rp_id=RP_ID,
            origin=result.origin,
        )
        return result.credential

    async def get(self, challenge: bytes) -> Mapping[str, Any]:
        """AuthenticationResponseJSON over ``challenge`` (for the broker)."""
        if self.soft is not None:
            return self.soft.get(challenge).to_json()
        assert self.record is not None
        if self.signed_in:
            purpose = "Register this device as your master device with your passkey."
            details = self._details("register this device as your master")
        else:
            self.signed_in = True
            purpose = "Sign in to agentkeys with your passkey."
            details = self._details("sign in")
        ceremony = assertion_ceremony(
            challenge=challenge,
            rp_id=RP_ID,
            credential_id=self.record.credential_id,
            purpose=purpose,
            timeout_ms=int(self.args.passkey_timeout * 1000),
            details=details,
        )
        result = await run_page(
            ceremony, open_url=self.opener, expires_in=self.args.passkey_timeout, port=self.port
        )
        return result.credential

    async def approve(self, challenge: bytes, allow: list[bytes]) -> Mapping[str, Any]:
        """The identity's already enrolled passkey approves the one being enrolled (the
        broker's rule for every passkey after the first): an assertion over ``challenge``.

        The page asks for the first of ``allow``; the development authenticator signs with
        its key file under that credential id (the file is the enrolled passkey's key when
        this home enrolled it before, e.g. a v1 sign-in).
        """
        if not allow:
            raise Rejected("the broker lists no enrolled passkey to approve with")
        if self.soft is not None:
            own = self.soft.credential_id
            self.soft.credential_id = allow[0]
            try:
                return self.soft.get(challenge).to_json()
            finally:
                self.soft.credential_id = own
        ceremony = assertion_ceremony(
            challenge=challenge,
            rp_id=RP_ID,
            credential_id=allow[0],
            purpose="Approve the new agentkeys passkey with the passkey you already use.",
            timeout_ms=int(self.args.passkey_timeout * 1000),
            details=self._details("approve the new passkey with your old one"),
        )
        result = await run_page(
            ceremony, open_url=self.opener, expires_in=self.args.passkey_timeout, port=self.port
        )
        return result.credential

    def authenticator(self) -> PasskeyAuthenticator:
        """For the chain's registration assertion."""
        if self.soft is not None:
            return self.soft
        assert self.record is not None
        return PagePasskey(
            credential_id=self.record.credential_id,
            public_point=self.record.public_point,
            open_url=self.opener,
            rp_id=RP_ID,
            purpose="Register this device as your master device with your passkey.",
            timeout=self.args.passkey_timeout,
            port=self.port,
            details=self._details("register this device as your master"),
        )


def _write_chain_toml(home: Path) -> None:
    """``chain.toml`` from ``AGENTKEYS_CHAIN_*`` (``dev up``'s env.sh), unless one exists."""
    target = home / CHAIN_FILE
    if target.exists() or not os.environ.get("AGENTKEYS_CHAIN_RPC_URL"):
        return
    lines = ["[chain]"]
    for key in ("profile", "rpc_url", "chain_id", "deployment"):
        value = os.environ.get(f"AGENTKEYS_CHAIN_{key.upper()}")
        if value is not None:
            lines.append(f"{key} = {value}" if key == "chain_id" else f'{key} = "{value}"')
    write_private(target, ("\n".join(lines) + "\n").encode())


async def _open_k10(args: argparse.Namespace, home: Path) -> DeviceKey:
    return await open_device_key(
        args.k10_backend, key_path=home / "device" / "k10.pem", tcti=None, create=True
    )


def _check_chain_profile(home: Path) -> None:
    """Fail before any sign-in step when no deployment is configured."""
    chain_file = home / CHAIN_FILE
    profile = load_chain_profile(path=chain_file if chain_file.exists() else None)
    if profile.addresses is None:
        raise ChainConfigError(f"no contract deployment configured for {profile.name}")


async def _register_master_device(
    home: Path,
    wallet: str,
    k10: DeviceKey,
    passkey: _Passkey,
    submit: Callable[[ChainClient], Awaitable[str]],
    *,
    email: str | None,
    master_wallet: MasterWallet,
    legacy_identity_omni: str | None = None,
) -> tuple[OperatorState, str]:
    """Register ``k10`` + the passkey as the first master of ``wallet``; write operator.json.

    ``submit`` sends the registration (sovereign or relay) and returns the transaction hash;
    ``email``, ``master_wallet`` and ``legacy_identity_omni`` are recorded in operator.json.
    """
    chain_file = home / CHAIN_FILE
    profile = load_chain_profile(path=chain_file if chain_file.exists() else None)
    if profile.addresses is None:
        raise ChainConfigError(f"no contract deployment configured for {profile.name}")
    assert passkey.record is not None
    operator = actor_omni_for_wallet(wallet)
    async with httpx.AsyncClient(timeout=30) as http:
        chain = ChainClient(http, profile.rpc_url, profile.addresses)
        await chain.check_chain_id(profile.chain_id)
        if await chain.master_wallet(operator) is not None:
            raise Rejected(
                f"operator {operator} already has a master device; use `agentkeys whoami` "
                "or register another device from it"
            )
        tx = await submit(chain)
    state = OperatorState(
        wallet=wallet.lower(),
        operator_omni=operator,
        device_key_hash=key_hash(k10),
        passkey=passkey.record,
        k10_backend=k10.backend.value,
        k10_key_file=home / "device" / "k10.pem" if k10.backend.value == "software" else None,
        email=email,
        master_wallet=master_wallet,
        legacy_identity_omni=legacy_identity_omni,
    )
    state.write(home)
    return state, tx


def _sovereign(
    wallet: LocalAccount, k10: DeviceKey, passkey: _Passkey
) -> Callable[[ChainClient], Awaitable[str]]:
    async def submit(chain: ChainClient) -> str:
        assert passkey.record is not None
        receipt = await register_master(
            chain, wallet, DeviceK10Signer(k10), passkey.authenticator(), passkey.record
        )
        return receipt.tx_hash

    return submit


def _relayed(
    signin: BrokerSignIn, session: SessionRecord, k10: DeviceKey, passkey: _Passkey
) -> Callable[[ChainClient], Awaitable[str]]:
    async def submit(chain: ChainClient) -> str:
        assert passkey.record is not None
        answer = await register_master_via_relay(
            signin,
            session.token,
            session.wallet,
            chain,
            DeviceK10Signer(k10),
            passkey.get,
            passkey.record,
        )
        return str(answer["tx_hash"])

    return submit


async def _email_operator(
    args: argparse.Namespace,
    home: Path,
    address: str,
    k10: DeviceKey,
    passkey: _Passkey,
    legacy_identity_omni: str | None = None,
) -> tuple[OperatorState, str, SessionRecord]:
    """An email-only operator: sign in (link, passkey bound to K10, K4 SIWE), then register
    this device as the first master through the broker's relay."""
    async with httpx.AsyncClient(base_url=args.broker_url, trust_env=False, timeout=30) as http:
        signin = BrokerSignIn(http)
        j0 = await email_stage(args, signin, address)
        await passkey.enroll(signin, j0, k10)
        answer = await signin.siwe_k4(j0, lambda o: passkey.get(b64url_decode(str(o["challenge"]))))
        session = write_session(home, answer, args.broker_url)
        state, tx = await _register_master_device(
            home,
            session.wallet,
            k10,
            passkey,
            _relayed(signin, session, k10, passkey),
            email=address,
            master_wallet=K4_WALLET,
            legacy_identity_omni=legacy_identity_omni,
        )
    return state, tx, session


def _refuse_existing(home: Path) -> None:
    if (home / STATE_FILE).exists():
        raise Rejected(
            f"{home / STATE_FILE} already exists: this machine is set up "
            "(see `agentkeys whoami`; use another --home for another operator)"
        )


def _init(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        _refuse_existing(home)
        if not args.broker_url:
            raise UsageError("no broker: pass --broker-url (or source the env.sh of `dev up`)")
        wallet = load_wallet(args, None) if wallet_given(args) else None
        await trio.Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_chain_toml(home)
        _check_chain_profile(home)
        k10 = await _open_k10(args, home)
        try:
            passkey = _Passkey(args, home, args.email)
            if wallet is None:
                state, tx, session = await _email_operator(args, home, args.email, k10, passkey)
            else:
                async with httpx.AsyncClient(
                    base_url=args.broker_url, trust_env=False, timeout=30
                ) as http:
                    signin = BrokerSignIn(http)
                    j0 = await email_stage(args, signin, args.email)
                    await passkey.enroll(signin, j0, k10)
                    answer = await signin.siwe(
                        j0, wallet, lambda o: passkey.get(b64url_decode(str(o["challenge"])))
                    )
                session = write_session(home, answer, args.broker_url)
                state, tx = await _register_master_device(
                    home,
                    wallet.address,
                    k10,
                    passkey,
                    _sovereign(wallet, k10, passkey),
                    email=args.email,
                    master_wallet=OWN_WALLET,
                )
        finally:
            await k10.aclose()
        emit(
            args,
            {
                "wallet": state.wallet,
                "agentkeys_actor_omni": state.operator_omni,
                "device_key_hash": state.device_key_hash,
                "k10_backend": state.k10_backend,
                "tx_hash": tx,
                "session_expires_at": session.expires_at,
                "home": str(home),
            },
            [
                "agentkeys init: done",
                f"wallet                {state.wallet}",
                f"agentkeys_actor_omni  {state.operator_omni}",
                f"device                {state.device_key_hash} (K10: {state.k10_backend})",
                f"master registered     tx {tx}",
                f"broker session        J1, expires at {session.expires_at} (Unix time)",
            ],
        )

    return run(args, command)


async def email_stage(args: argparse.Namespace, signin: BrokerSignIn, address: str) -> str:
    """Stage 1: mail the magic link to ``address`` and wait for it to be followed (from
    ``args.maildir``, the development SMTP sink, automatically) → the J0 session."""
    maildir: Path | None = args.maildir
    seen = maildir_names(maildir) if maildir is not None else frozenset()
    handle = await signin.start_email(address)
    where = f"the development SMTP sink ({maildir / 'new'})" if maildir else address
    print(f"agentkeys: magic link sent; the mail went to {where}", file=sys.stderr, flush=True)
    followed = False
    with trio.move_on_after(600):
        tick = 0
        while True:
            if maildir is not None and not followed:
                link = find_magic_link(maildir, address, seen=seen)
                if link is not None:
                    await signin.follow_link(link)
                    followed = True
            j0 = await signin.poll_email(handle)
            if j0 is not None:
                if sys.stderr.isatty():
                    print("\r", end="", file=sys.stderr)
                return j0
            if sys.stderr.isatty():
                spin = _SPINNER[tick % 4]
                print(f"\r{spin} waiting for the link to be followed …", end="", file=sys.stderr)
            tick += 1
            await trio.sleep(0.5)
    raise BrokerRefused("the magic link was not followed within 10 minutes; run init again")


def register_device_command(parser: argparse.ArgumentParser) -> None:
    """``device register [--upgrade-from-v1] [--legacy-email E | --legacy-identity-omni X]``."""
    parser.add_argument(
        "--upgrade-from-v1",
        action="store_true",
        help="this operator used the legacy (v1) design: record its identity for migration",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--legacy-email", help="the email whose signer-held K4 was the v1 wallet")
    who.add_argument("--legacy-identity-omni", help="that identity's omni (64 hex)")
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("AGENTKEYS_DEV_BROKER_URL"),
        help="without a wallet option: the broker to sign in to and relay through",
    )
    add_maildir_option(parser)
    add_device_options(parser)
    add_output_options(parser)
    parser.set_defaults(func=_register_device)


_NEXT_STEPS = (
    "next (docs/runbook-migration.md):",
    "  1. keep using --credential-backend s3 until you switch; nothing was moved yet",
    "  2. read through the sidecar: agentkeys read <service> --credential-backend sidecar",
    "     (a v1 credential is copied to a 0x04 envelope at the v2 key on first read)",
    "  3. migrate the rest: agentkeys-migrate-s3-prefix --config worker.toml \\",
    "       --operator-omni {operator} --identity-omni {identity}",
    "  4. only after verifying: rerun the tool with --delete-v1",
)


def _register_device(args: argparse.Namespace) -> int:
    async def command() -> None:
        home = agentkeys_home(args.home)
        _refuse_existing(home)
        identity: str | None = None
        if args.legacy_email is not None:
            identity = identity_omni("email", args.legacy_email)
        elif args.legacy_identity_omni is not None:
            identity = normalize_hex32(args.legacy_identity_omni)
        if args.upgrade_from_v1 and identity is None:
            raise UsageError(
                "--upgrade-from-v1 needs the legacy identity: pass --legacy-email ADDRESS"
            )
        wallet = load_wallet(args, None) if wallet_given(args) else None
        if wallet is None and (args.legacy_email is None or not args.broker_url):
            raise UsageError(
                "without --wallet-keystore/--wallet-key-file the master wallet is the K4 of "
                "your email identity: pass --legacy-email ADDRESS and --broker-url"
            )
        await trio.Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_chain_toml(home)
        _check_chain_profile(home)
        k10 = await _open_k10(args, home)
        try:
            if wallet is None:
                passkey = _Passkey(args, home, args.legacy_email)
                state, tx, _ = await _email_operator(
                    args, home, args.legacy_email, k10, passkey, identity
                )
            else:
                passkey = _Passkey(args, home, args.legacy_email or wallet.address)
                if passkey.soft is None:
                    await passkey.create(secrets.token_bytes(32))
                state, tx = await _register_master_device(
                    home,
                    wallet.address,
                    k10,
                    passkey,
                    _sovereign(wallet, k10, passkey),
                    email=args.legacy_email,
                    master_wallet=OWN_WALLET,
                    legacy_identity_omni=identity,
                )
        finally:
            await k10.aclose()
        lines = [
            "master device registered" + (" (upgraded from v1)" if args.upgrade_from_v1 else ""),
            f"wallet                {state.wallet}",
            f"agentkeys_actor_omni  {state.operator_omni}",
            f"device                {state.device_key_hash} (K10: {state.k10_backend})",
            f"tx                    {tx}",
        ]
        if identity is not None:
            lines.append(f"legacy identity_omni  {identity}")
            lines += [
                s.format(operator=state.operator_omni, identity=identity) for s in _NEXT_STEPS
            ]
        emit(
            args,
            {
                "wallet": state.wallet,
                "operator_omni": state.operator_omni,
                "device_key_hash": state.device_key_hash,
                "k10_backend": state.k10_backend,
                "legacy_identity_omni": identity,
                "tx_hash": tx,
            },
            lines,
        )

    return run(args, command)
