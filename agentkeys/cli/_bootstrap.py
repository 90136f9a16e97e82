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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode, b64url_encode
from agentkeys.broker._passkey import enrollment_approval_challenge
from agentkeys.chain import ChainClient, PasskeyAuthenticator, Receipt
from agentkeys.chain import challenge as ch
from agentkeys.chain.signing import k10_digest
from agentkeys.cli._common import (
    EXIT_FAILED,
    EXIT_NO_STATE,
    EXIT_PASSKEY,
    EXIT_REJECTED,
    EXIT_USAGE,
    CliError,
    DeviceK10Signer,
    PasskeyRecord,
    one_line,
)
from agentkeys.config import check_private_file
from agentkeys.omni import actor_omni_for_wallet
from agentkeys.siwe import SiweMessage
from attest.device_key import DeviceKey
from attest.k10_signature import k10_raw_from_der

__all__ = [
    "EMAIL",
    "K4_WALLET",
    "MASTER_WALLET",
    "OWN_WALLET",
    "SESSION_FILE",
    "SESSION_REFUSALS",
    "SESSION_TOKEN_FILE",
    "BrokerRefused",
    "BrokerSessionRefused",
    "BrokerSignIn",
    "BrokerUnreachable",
    "NoSession",
    "RelayPasskeyRefused",
    "RelayRefused",
    "SessionRecord",
    "UsageError",
    "email_sign_in",
    "find_magic_link",
    "load_session",
    "maildir_names",
    "register_master",
    "register_master_via_relay",
    "write_session",
]

# operator.json: how this operator signs in (``init`` records it; ``session renew`` repeats it)
EMAIL = "email"
MASTER_WALLET = "master_wallet"
OWN_WALLET = "own"  # the operator's own wallet (K5): SIWE signed in the CLI
K4_WALLET = "k4"  # an email-only operator: the signer-held K4 signs SIWE through the broker

SESSION_FILE = "session.json"
SESSION_TOKEN_FILE = "session.jwt"  # noqa: S105 (a file name)
ALL_MASTER_ROLES = 7  # CAP_MINT | RECOVERY | SCOPE_MGMT
MAX_ANSWER = 256 * 1024


class BrokerUnreachable(CliError):
    """The broker did not answer."""

    error = "broker_unreachable"
    status = 503  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_FAILED


class BrokerRefused(CliError):
    """The broker answered with an error (its ``error`` code is in the reason)."""

    error = "broker_refused"
    exit_code = EXIT_FAILED

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


class BrokerSessionRefused(BrokerRefused):
    """The broker refused the home's session (expired, revoked or invalid there)."""

    error = "broker_session_refused"
    status = 401  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_NO_STATE


SESSION_REFUSALS = frozenset({"session_expired", "session_invalid", "session_revoked"})
"""The broker's codes for a session it will not accept (docs/api.md)."""


class RelayRefused(BrokerRefused):
    """The broker's relay refused a master mutation (exit 6: the chain's state does not allow
    it, e.g. not this operator's session, a device that may not approve, a bad K10)."""

    error = "relay_refused"
    status = 403  # the one status of this code (agentkeys.error_codes)
    exit_code = EXIT_REJECTED


class RelayPasskeyRefused(RelayRefused):
    """The broker's relay refused the passkey assertion (not a fresh one over the change)."""

    error = "relay_passkey_refused"
    exit_code = EXIT_PASSKEY


class UsageError(CliError):
    """A missing or inconsistent option (exit 2)."""

    error = "usage_error"
    exit_code = EXIT_USAGE


class NoSession(CliError):
    """No usable broker session in the agentkeys home."""

    error = "no_session"
    exit_code = EXIT_NO_STATE


def _b64d(text: object) -> bytes:
    if not isinstance(text, str):
        raise BrokerRefused("the broker's answer lacks a base64url field")
    return b64url_decode(text)


class BrokerSignIn:
    """The sign-in endpoints of one broker.

    Args:
        http: a client whose ``base_url`` is the broker (the caller owns it).
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _call(
        self,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        session: str | None = None,
        accept: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``path`` (GET when ``body`` is ``None``) → (status, JSON answer).

        Raises:
            BrokerUnreachable: no answer.
            BrokerSessionRefused: the broker refused the session (expired, revoked, invalid).
            RelayRefused / RelayPasskeyRefused: a relay route refused the mutation.
            BrokerRefused: any other refusal.
        """
        headers = {"authorization": f"Bearer {session}"} if session else {}
        try:
            if body is None:
                response = await self._http.get(path, headers=headers)
            else:
                response = await self._http.post(path, json=dict(body), headers=headers)
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(
                f"the broker at {self._http.base_url} is unreachable ({type(exc).__name__}); "
                "start it (`agentkeys dev up`) or pass --broker-url"
            ) from None
        try:
            doc = json.loads(response.content[:MAX_ANSWER])
        except ValueError:
            doc = None
        if response.status_code not in accept or not isinstance(doc, dict):
            code = doc.get("error") if isinstance(doc, dict) else None
            reason = doc.get("reason") if isinstance(doc, dict) else None
            detail = f"{code}: {reason}" if code else f"HTTP {response.status_code}"
            peer = code if isinstance(code, str) else None
            refused = BrokerRefused
            advice = ""
            if peer in SESSION_REFUSALS:
                refused = BrokerSessionRefused
                advice = "; sign in again: `agentkeys session renew`"
            elif path.startswith("/v1/relay/") and response.status_code in (401, 403):
                refused = RelayPasskeyRefused if peer == "relay_k11_invalid" else RelayRefused
            raise refused(f"the broker refused {path} ({one_line(detail)}){advice}", code=peer)
        return response.status_code, doc

    async def start_email(self, address: str) -> str:
        """Stage 1: ask for a magic link; returns the request handle to poll."""
        _, doc = await self._call("/v1/auth/email/start", {"email": address})
        handle = doc.get("request")
        if not isinstance(handle, str):
            raise BrokerRefused("the broker's email answer lacks the request handle")
        return handle

    async def follow_link(self, link: str) -> None:
        """Follow the magic link (what a click in the mail does)."""
        try:
            response = await self._http.get(link)
        except httpx.HTTPError as exc:
            raise BrokerUnreachable(f"the magic link did not load ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise BrokerRefused(f"the magic link was refused (HTTP {response.status_code})")

    async def poll_email(self, handle: str) -> str | None:
        """The J0 session once the link was followed, else None (still pending)."""
        status, doc = await self._call(
            "/v1/auth/email/poll", {"request": handle}, accept=(200, 202)
        )
        if status == 202:
            return None
        session = doc.get("session")
        if not isinstance(session, str):
            raise BrokerRefused("the broker's poll answer lacks the session")
        return session

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
        _, options = await self._call(
            "/v1/auth/passkey/register/options", {"k10_public_key": point.hex()}, session=j0
        )
        creation = options.get("options")
        if not isinstance(creation, dict):
            raise BrokerRefused("the broker's passkey options are malformed")
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
        _, doc = await self._call("/v1/auth/passkey/register/verify", body, session=j0)
        return doc

    async def siwe(
        self,
        j0: str,
        wallet: LocalAccount,
        assert_: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> dict[str, Any]:
        """Stage 3: SIWE with the operator's own wallet and a passkey assertion → J1 answer
        ``{session, actor_omni, wallet, expires_at}``."""
        _, start = await self._call("/v1/auth/siwe/start", {"wallet": wallet.address}, session=j0)
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
        webauthn = start.get("webauthn")
        if not isinstance(webauthn, dict):
            raise BrokerRefused("the broker's SIWE answer lacks the passkey options")
        assertion = await assert_(webauthn)
        _, doc = await self._call(
            "/v1/auth/siwe/verify",
            {
                "challenge_id": start.get("challenge_id"),
                "message": text,
                "signature": "0x" + bytes(signed.signature).hex(),
                "assertion": dict(assertion),
            },
            session=j0,
        )
        if not isinstance(doc.get("session"), str):
            raise BrokerRefused("the broker's SIWE answer lacks the J1 session")
        return doc

    async def siwe_k4(
        self, j0: str, assert_: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """Stage 3 for an email identity (the legacy design): the broker has the signer sign
        the SIWE message with the identity's K4 wallet after the passkey assertion."""
        _, start = await self._call("/v1/auth/siwe/start", {}, session=j0)
        webauthn = start.get("webauthn")
        if not isinstance(webauthn, dict):
            raise BrokerRefused("the broker's SIWE answer lacks the passkey options")
        assertion = await assert_(webauthn)
        _, doc = await self._call(
            "/v1/auth/siwe/k4",
            {"challenge_id": start.get("challenge_id"), "assertion": dict(assertion)},
            session=j0,
        )
        if not isinstance(doc.get("session"), str):
            raise BrokerRefused("the broker's SIWE answer lacks the J1 session")
        return doc

    async def session_info(self, token: str) -> dict[str, Any]:
        """``GET /v1/auth/session`` → ``{stage, subject, wallet, identity_omni, expires_at}``.

        Raises:
            BrokerSessionRefused: expired, revoked or invalid at the broker (its code).
        """
        _, doc = await self._call("/v1/auth/session", None, session=token)
        return doc

    async def session_revoke(self, token: str) -> None:
        """``POST /v1/auth/session/revoke``: the broker refuses the session from now on."""
        await self._call("/v1/auth/session/revoke", {}, session=token)

    async def relay(self, j1: str, route: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A master mutation sent by the broker's relay (``route``: ``scope``, ``agent`` or
        ``device-revoke``) → at least ``{tx_hash, block_number}``; the broker and the
        contract verify K10 + K11 (SPEC 6, 7)."""
        _, doc = await self._call(f"/v1/relay/{route}", body, session=j1)
        if not isinstance(doc.get("tx_hash"), str):
            raise BrokerRefused("the broker's relay answer lacks the transaction")
        return doc

    async def relay_first_master(self, j1: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """First-master registration of an email operator through the broker's relay →
        ``{tx_hash, block_number, operator_omni, wallet, device_key_hash}``."""
        _, doc = await self._call("/v1/relay/first-master", body, session=j1)
        if not isinstance(doc.get("tx_hash"), str):
            raise BrokerRefused("the broker's relay answer lacks the transaction")
        return doc


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
    return await signin.relay_first_master(j1, body)


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
    meta = {
        "broker_url": record.broker_url,
        "actor_omni": record.actor_omni,
        "wallet": record.wallet,
        "expires_at": record.expires_at,
    }
    write_private(home / SESSION_FILE, json.dumps(meta, indent=2).encode() + b"\n")
    return record


def load_session(home: Path, *, allow_expired: bool = False) -> SessionRecord:
    """The J1 session of ``home``.

    Raises:
        NoSession: none, unreadable, or expired (unless ``allow_expired``).
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
    try:
        check_private_file(meta_file)
        check_private_file(token_file)
        meta = json.loads(meta_file.read_text("utf-8"))
        record = SessionRecord(
            token=token_file.read_text("ascii").strip(),
            broker_url=str(meta["broker_url"]),
            actor_omni=str(meta["actor_omni"]),
            wallet=str(meta["wallet"]),
            expires_at=int(meta["expires_at"]),
            token_file=token_file,
        )
    except (OSError, ValueError, KeyError, TypeError):
        raise NoSession(
            f"the broker session in {home} is unreadable; sign in again: `agentkeys session renew`"
        ) from None
    if record.expired and not allow_expired:
        raise NoSession("the broker session has expired; sign in again: `agentkeys session renew`")
    return record
