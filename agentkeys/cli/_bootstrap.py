"""The operator's side of the broker sign-in (bootstrap stages 1-3) and master registration.

docs/broker.md ("Sign-in stages"), SPEC.md sections 6 and 7. Used by ``agentkeys init`` and
``agentkeys dev demo``:

1. email magic link → J0 (:meth:`BrokerSignIn.start_email`, :meth:`BrokerSignIn.poll_email`;
   in development the link is read from the SMTP sink's maildir, :func:`find_magic_link`);
2. passkey enrollment bound to K10 (:meth:`BrokerSignIn.enroll`);
3. SIWE with the operator's own wallet → J1 (:meth:`BrokerSignIn.siwe`);

then the master device is registered on chain: sovereign (:func:`register_master`, the
operator's wallet sends the transaction) or, for an operator who signed up by email and whose
master wallet is the signer-held K4, through the broker's relay
(:func:`register_master_via_relay`: the new K10 and passkey sign the registration challenge,
the signer approves it with K4's EIP-712 signature after checking both, the relay sends it).
The J1 session is kept in the agentkeys home as
``session.jwt`` (the raw token, 0600, for the operator's own commands; the sidecar daemon
signs in with its own K10 instead) and
``session.json`` (0600: broker URL, actor, wallet, expiry); :func:`load_session` reads it,
and ``agentkeys session status|renew|revoke`` (agentkeys.cli.session) checks it with the
broker, signs in again (stages 1 and 3) and ends it.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from pydantic import TypeAdapter, with_config

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.broker._passkey import enrollment_approval_challenge
from agentkeys.chain import ChainClient, PasskeyAuthenticator, Receipt
from agentkeys.chain import challenge as ch
from agentkeys.chain.signing import k10_digest
from agentkeys.cli._errors import BrokerRefused, NoSession, peer_failure
from agentkeys.cli._operator_session import DeviceK10Signer
from agentkeys.cli._operator_state import PasskeyRecord
from agentkeys.clients import BrokerClient, ClientError, SessionInfo
from agentkeys.config import ConfigError, check_private_file, validate_document
from agentkeys.omni import actor_omni_for_wallet
from agentkeys.siwe import SiweMessage
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import STRICT
from attest.device_key import DeviceKey
from attest.k10_signature import k10_raw_from_der

__all__ = [
    "SESSION_FILE",
    "SESSION_TOKEN_FILE",
    "BrokerSignIn",
    "SessionRecord",
    "email_sign_in",
    "find_magic_link",
    "load_session",
    "maildir_names",
    "register_master",
    "register_master_via_relay",
    "write_session",
]

SESSION_FILE = "session.json"
SESSION_TOKEN_FILE = "session.jwt"  # noqa: S105 (a file name)
ALL_MASTER_ROLES = 7  # CAP_MINT | RECOVERY | SCOPE_MGMT
MAX_ANSWER = 256 * 1024


def _b64d(text: object) -> bytes:
    if not isinstance(text, str):
        raise BrokerRefused("the broker's answer lacks a base64url field")
    return b64url_decode(text)


class BrokerSignIn:
    """The operator's sign-in ceremonies with one broker, over its typed client.

    Args:
        http: a client whose ``base_url`` is the broker (the caller owns it).

    Every failure is the command line's (:func:`agentkeys.cli._errors.peer_failure`):
    BrokerUnreachable (no answer), BrokerSessionRefused (the session expired, revoked or
    invalid), RelayRefused / RelayPasskeyRefused (a relay route refused the mutation),
    BrokerRefused (any other refusal or a malformed answer).
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.broker = BrokerClient(http, max_answer=MAX_ANSWER)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise peer_failure(exc, url=self.broker.http.base_url) from None

    async def start_email(self, address: str) -> str:
        """Stage 1: ask for a magic link; returns the request handle to poll."""
        with self._errors():
            return await self.broker.email_start(address)

    async def follow_link(self, link: str) -> None:
        """Follow the magic link (what a click in the mail does)."""
        with self._errors():
            await self.broker.follow_magic_link(link)

    async def poll_email(self, handle: str) -> str | None:
        """The J0 session once the link was followed, else None (still pending)."""
        with self._errors():
            return await self.broker.email_poll(handle)

    async def enroll(
        self,
        j0: str,
        device_key: DeviceKey,
        create: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
        approve: Callable[[bytes, list[bytes]], Awaitable[Mapping[str, Any]]] | None = None,
        on_approval: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Stage 2: enroll a passkey bound to K10.

        Args:
            j0: the J0 session.
            device_key: K10; signs sha256 of the challenge (the broker checks ES256 over it).
            create: runs ``navigator.credentials.create`` (or the development authenticator)
                with the broker's creation options; returns the RegistrationResponseJSON.
            approve: an already enrolled passkey of the identity: AuthenticationResponseJSON
                over a raw challenge by one of the listed credential ids; the broker requires
                it for any passkey after the first (docs/broker.md, stage 2).
            on_approval: called before ``create`` when the broker wants that approval (so
                that the first page can count the steps to come).

        Raises:
            BrokerRefused: e.g. ``passkey_approval_required`` when the identity already has a
                passkey and ``approve`` is missing or not one of them.
        """
        point = DeviceK10Signer(device_key).public_point
        with self._errors():
            options = await self.broker.passkey_options(j0, point)
        creation = options["options"]
        challenge = _b64d(creation.get("challenge"))
        approval = options.get("approval")
        if isinstance(approval, dict) and approve is not None and on_approval is not None:
            on_approval()
        credential = await create(creation)
        proof = await device_key.sign(hashlib.sha256(challenge).digest())
        body: dict[str, Any] = {
            "challenge_id": options.get("challenge_id"),
            "credential": dict(credential),
            "k10_signature": b64url_encode(proof),
        }
        if isinstance(approval, dict) and approve is not None:
            allowed = approval.get("allow_credentials")
            allow = [_b64d(c) for c in allowed] if isinstance(allowed, list) else []
            new_id = _b64d(credential.get("rawId", credential.get("id")))
            body["approval"] = dict(
                await approve(enrollment_approval_challenge(challenge, new_id), allow)
            )
        with self._errors():
            return await self.broker.passkey_verify(j0, body)

    async def siwe(
        self,
        j0: str,
        wallet: LocalAccount,
        assert_: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> dict[str, Any]:
        """Stage 3: SIWE with the operator's own wallet and a passkey assertion → J1 answer
        ``{session, actor_omni, wallet, expires_at}``."""
        with self._errors():
            start = await self.broker.siwe_start(j0, wallet.address)
        text = start.get("message")
        if not isinstance(text, str):
            text = SiweMessage(
                domain=start["domain"],
                address=wallet.address,
                statement="Sign in to agentkeys.",
                uri=start["uri"],
                chain_id=start["chain_id"],
                nonce=start["nonce"],
                issued_at=start["issued_at"],
                expiration_time=start["expiration_time"],
            ).to_text()
        signed = Account.sign_message(encode_defunct(text=text), private_key=wallet.key)
        assertion = await assert_(start["webauthn"])
        body = {
            "challenge_id": start.get("challenge_id"),
            "message": text,
            "signature": "0x" + bytes(signed.signature).hex(),
            "assertion": dict(assertion),
        }
        with self._errors():
            return await self.broker.siwe_verify(j0, body, k4=False)

    async def siwe_k4(
        self, j0: str, assert_: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """Stage 3 for an email identity (the legacy design): the broker has the signer sign
        the SIWE message with the identity's K4 wallet after the passkey assertion."""
        with self._errors():
            start = await self.broker.siwe_start(j0, None)
        assertion = await assert_(start["webauthn"])
        body = {"challenge_id": start.get("challenge_id"), "assertion": dict(assertion)}
        with self._errors():
            return await self.broker.siwe_verify(j0, body, k4=True)

    async def session_info(self, token: str) -> SessionInfo:
        """What the broker says of the session ``token`` (``GET /v1/auth/session``).

        Raises:
            BrokerSessionRefused: expired, revoked or invalid at the broker (its code).
        """
        with self._errors():
            return await self.broker.session_info(token)

    async def session_revoke(self, token: str) -> None:
        """The broker refuses the session from now on."""
        with self._errors():
            await self.broker.revoke_session(token)

    async def relay(self, j1: str, route: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A master mutation sent by the broker's relay (``route``: ``scope``, ``agent``,
        ``device-revoke`` or ``first-master``) → at least ``{tx_hash, block_number}``; the
        broker and the contract verify K10 + K11 (SPEC 6, 7)."""
        with self._errors():
            return await self.broker.relay(j1, route, body)


async def email_sign_in(
    signin: BrokerSignIn,
    address: str,
    *,
    maildir: Path,
    limit: float = 30.0,
    on_wait: Callable[[str], None] | None = None,
) -> str:
    """Stage 1 against a development broker whose mail lands in ``maildir`` (the SMTP sink):
    request the link, read it from the sink, follow it, poll; returns the J0 session.

    Raises:
        BrokerRefused: no mail arrived within ``limit`` seconds, or the broker refused.
    """
    seen = maildir_names(maildir)
    handle = await signin.start_email(address)
    if on_wait is not None:
        on_wait(f"magic link mailed to {address} (development SMTP sink: {maildir / 'new'})")
    link: str | None = None
    with trio.move_on_after(limit):
        while link is None:
            link = find_magic_link(maildir, address, seen=seen)
            if link is None:
                await trio.sleep(0.1)
    if link is None:
        raise BrokerRefused(f"no magic link reached {maildir} within {limit:.0f} s")
    await signin.follow_link(link)
    j0 = await signin.poll_email(handle)
    if j0 is None:
        raise BrokerRefused("the broker still reports the email link as pending")
    return j0


def find_magic_link(
    maildir: Path, address: str, *, seen: frozenset[str] = frozenset()
) -> str | None:
    """The newest magic link mailed to ``address`` in a maildir (development SMTP sink).

    ``seen`` holds message file names to skip (those present before the request).
    """
    new = maildir / "new"
    try:
        names = sorted(n for n in os.listdir(new) if n not in seen)
    except OSError:
        return None
    for name in reversed(names):
        try:
            raw = (new / name).read_bytes()
        except OSError:
            continue
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if address.lower() not in str(message.get("To", "")).lower():
            continue
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        for word in str(text).split():
            if "/v1/auth/email/verify?token=" in word and word.startswith("http"):
                return word.strip("<>.,")
    return None


def maildir_names(maildir: Path) -> frozenset[str]:
    """Message file names already in the maildir."""
    try:
        return frozenset(os.listdir(maildir / "new"))
    except OSError:
        return frozenset()


async def register_master(
    chain: ChainClient,
    wallet: LocalAccount,
    k10: DeviceK10Signer,
    passkey: PasskeyAuthenticator,
    record: PasskeyRecord,
) -> Receipt:
    """Register this device as the operator's first master (sovereign: ``wallet`` sends)."""
    entry = _new_master(k10, record)
    mutation = await chain.prepare_register_first_master(wallet.address, entry, k10, passkey)
    return await chain.submit(mutation, wallet)


def _new_master(k10: DeviceK10Signer, record: PasskeyRecord) -> ch.NewMaster:
    return ch.NewMaster(
        k10_point=k10.public_point,
        k11_credential_id_hash=hashlib.sha256(record.credential_id).digest(),
        k11_point=record.public_point,
        rp_id_hash=hashlib.sha256(record.rp_id.encode()).digest(),
        roles=ALL_MASTER_ROLES,
    )


async def register_master_via_relay(
    signin: BrokerSignIn,
    j1: str,
    wallet: str,
    chain: ChainClient,
    k10: DeviceK10Signer,
    assert_: Callable[[bytes], Awaitable[Mapping[str, Any]]],
    record: PasskeyRecord,
) -> dict[str, Any]:
    """Register this device as the first master of the email operator whose K4 is ``wallet``.

    The same material as the sovereign path (the new K10's signature and a passkey assertion
    over the registration challenge); the broker and the signer check both, K4 approves, the
    broker's relay wallet sends. ``assert_`` returns AuthenticationResponseJSON over the raw
    challenge bytes (the broker needs the credential id).

    Raises:
        BrokerRefused / BrokerUnreachable: the broker (or, through it, the signer) refused.
    """
    entry = _new_master(k10, record)
    challenge = await chain.challenge_for(
        ch.OP_REGISTER_FIRST_MASTER,
        "SidecarRegistry",
        actor_omni_for_wallet(wallet),
        ch.first_master_params(to_checksum_address(wallet), entry),
    )
    der = await k10.sign_digest(k10_digest(challenge))
    assertion = await assert_(challenge)
    body = {
        "device": {
            "k10_public_key": entry.k10_point.hex(),
            "k11_credential_id_hash": entry.k11_credential_id_hash.hex(),
            "k11_public_key": entry.k11_point.hex(),
            "rp_id_hash": entry.rp_id_hash.hex(),
            "roles": entry.roles,
        },
        "k10_signature": k10_raw_from_der(der).hex(),
        "assertion": dict(assertion),
    }
    return await signin.relay(j1, "first-master", body)


@with_config(STRICT)
@dataclass(frozen=True)
class _SessionDocument:
    """``session.json``'s JSON shape (what :func:`write_session` writes; the token itself is
    in ``session.jwt``), read strictly: no duplicate key, no unknown member, exact types."""

    broker_url: str
    actor_omni: str
    wallet: str
    expires_at: int


_SESSION_DOCUMENT = TypeAdapter(_SessionDocument)


@dataclass(frozen=True)
class SessionRecord:
    """The operator's J1 session as kept in the agentkeys home."""

    token: str
    broker_url: str
    actor_omni: str
    wallet: str
    expires_at: int
    token_file: Path

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


def write_session(home: Path, answer: Mapping[str, Any], broker_url: str) -> SessionRecord:
    """Keep the J1 answer of :meth:`BrokerSignIn.siwe` (both files 0600)."""
    token = str(answer["session"])
    token_file = home / SESSION_TOKEN_FILE
    write_private(token_file, token.encode("ascii") + b"\n")
    record = SessionRecord(
        token=token,
        broker_url=broker_url,
        actor_omni=str(answer.get("actor_omni", "")),
        wallet=str(answer.get("wallet", "")),
        expires_at=int(answer.get("expires_at", 0)),
        token_file=token_file,
    )
    meta = _SessionDocument(
        broker_url=record.broker_url,
        actor_omni=record.actor_omni,
        wallet=record.wallet,
        expires_at=record.expires_at,
    )
    write_private(home / SESSION_FILE, json.dumps(asdict(meta), indent=2).encode() + b"\n")
    return record


def load_session(home: Path, *, allow_expired: bool = False) -> SessionRecord:
    """The J1 session of ``home``.

    Raises:
        NoSession: none, unreadable, malformed (the reason names the member of
            ``session.json``), or expired (unless ``allow_expired``).
    """
    meta_file, token_file = home / SESSION_FILE, home / SESSION_TOKEN_FILE
    try:
        present = meta_file.exists() and token_file.exists()
    except PermissionError:  # another user's home
        raise NoSession(f"{home} is not readable by this user; run as its owner") from None
    if not present:
        raise NoSession(
            f"no broker session in {home}; sign in: `agentkeys session renew` "
            "(or `agentkeys init` on a new machine)"
        )
    renew = "sign in again: `agentkeys session renew`"
    try:
        check_private_file(meta_file)
        check_private_file(token_file)
        text = meta_file.read_bytes()
        token = token_file.read_text("ascii").strip()
    except (OSError, ValueError):
        raise NoSession(f"the broker session in {home} is unreadable; {renew}") from None
    try:
        meta = validate_document(_SESSION_DOCUMENT, loads_object(text, what=SESSION_FILE))
    except (StrictJsonError, ConfigError) as exc:
        raise NoSession(f"{meta_file} is malformed: {exc.reason}; {renew}") from None
    record = SessionRecord(
        token=token,
        broker_url=meta.broker_url,
        actor_omni=meta.actor_omni,
        wallet=meta.wallet,
        expires_at=meta.expires_at,
        token_file=token_file,
    )
    if record.expired and not allow_expired:
        raise NoSession("the broker session has expired; sign in again: `agentkeys session renew`")
    return record
