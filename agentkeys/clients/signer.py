"""The signer's client: KEKs and per-actor S3 credentials (worker), K4 and JWKS (broker).

Wire format: docs/signer.md, as the signer implements it in ``agentkeys.signer``. The
signer authenticates its callers by their mutual-TLS role certificate, so the caller's
injected ``httpx.AsyncClient`` is built with :func:`agentkeys.service.mtls_client` (its own
role's certificate, expecting role ``signer``); the routes a role may call are the
signer's to enforce:

* worker: ``POST /derive-cred-kek`` (v2 ``{version: 2, purpose, actor_omni, epoch}`` or v1
  ``{version: 1, purpose, identity_omni, wallet, service}`` → ``{kek}``, 32 bytes
  base64url) and ``POST /sts-credentials`` ``{actor_omni, wallet?}`` → ``{credentials}`` →
  :class:`AwsCredentials`;
* broker: ``POST /k4/address``, ``POST /k4/siwe-sign``, ``POST /k4/register-first-master``
  and ``GET /oidc/jwks``.

KEKs come back as ``bytes`` and are never logged. Failures are
:mod:`agentkeys.clients.errors`: the signer not reached (connection refused or reset, a
timeout, the connection closed before the answer, including during the TLS handshake) is
:class:`~agentkeys.clients.errors.PeerUnreachable`; a TLS handshake the signer took part in
and failed, or a certificate that is not the signer's, is
:class:`~agentkeys.clients.errors.PeerUntrusted`; a refusal is
:class:`~agentkeys.clients.errors.PeerRefused`. Each caller says what those mean to it
(``agentkeys.worker._signer``, ``agentkeys.broker._run``).
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from agentkeys.b64url import b64url_decode
from agentkeys.clients._answer import Answer, PeerClient, text
from agentkeys.clients.errors import ClientError, PeerUnreachable, PeerUntrusted
from agentkeys.errors import AgentkeysError, InvalidEncoding
from agentkeys.omni import normalize_hex32, normalize_service, normalize_wallet

__all__ = ["SIGNER_MAX_ANSWER", "AwsCredentials", "SignerClient"]

SIGNER_MAX_ANSWER = 16 * 1024
"""The largest signer answer read (bytes)."""

_JSON = {"content-type": "application/json"}
_KEK = "/derive-cred-kek"
_STS = "/sts-credentials"

# TLS errors that mean the connection went away, not that the peer refused the handshake
_TLS_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_NOT_REACHED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class AwsCredentials:
    """Temporary S3 credentials for one (actor, wallet) session: what STS gives the signer,
    and the ``credentials`` member of its ``/sts-credentials`` answer (written by
    :meth:`to_json`, read by :meth:`from_answer`)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime.datetime

    def to_json(self) -> dict[str, str]:
        """The ``credentials`` member of the signer's ``/sts-credentials`` answer."""
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
            "expiration": self.expiration.astimezone(datetime.UTC).isoformat(),
        }

    @classmethod
    def from_answer(cls, answer: Answer) -> AwsCredentials:
        """Read the ``credentials`` member of ``/sts-credentials``.

        Raises:
            AnswerMalformed: missing or malformed members.
        """
        obj = answer.doc.get("credentials")
        if not isinstance(obj, dict):
            raise answer.malformed("answer lacks credentials")
        inner = Answer(obj, who=answer.who, path=answer.path)
        names = ("access_key_id", "secret_access_key", "session_token", "expiration")
        key_id, secret, token, expires = (text(inner, name) for name in names)
        try:
            expiration = datetime.datetime.fromisoformat(expires)
        except ValueError:
            raise answer.malformed("credentials' expiration is not an ISO 8601 time") from None
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=datetime.UTC)
        return cls(key_id, secret, token, expiration)


def _tls_refused(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a TLS handshake the peer took part in and failed.

    httpx chains the underlying ``ssl.SSLError`` (via httpcore and Trio) as the cause.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) and not isinstance(current, _TLS_CONNECTION_LOST):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _kek(answer: Answer) -> bytes:
    value = answer.doc.get("kek")
    try:
        kek = b64url_decode(value) if isinstance(value, str) else b""
    except InvalidEncoding:
        kek = b""
    if len(kek) != 32:
        raise answer.malformed("answer lacks a 32-byte KEK")
    return kek


class SignerClient(PeerClient):
    """Typed requests to the signer (``http``: an mTLS client, see the module docstring;
    ``max_answer``: see :class:`~agentkeys.clients._answer.PeerClient`)."""

    who = "signer"

    def __init__(self, http: httpx.AsyncClient, *, max_answer: int = SIGNER_MAX_ANSWER) -> None:
        super().__init__(http, max_answer=max_answer)

    async def _call(self, path: str, body: Mapping[str, object] | None = None) -> Answer:
        """POST ``body`` to ``path`` (GET without one) → the signer's 200 JSON object.

        Raises:
            PeerUnreachable: no answer; PeerUntrusted: TLS or the certificate's role failed;
            PeerRefused, AnswerMalformed: see :func:`~agentkeys.clients._answer.read_answer`.
        """
        try:
            if body is None:
                return await self._request("GET", path)
            content = json.dumps(body, separators=(",", ":")).encode()
            return await self._request("POST", path, content=content, headers=_JSON)
        except PeerUnreachable as exc:
            cause = exc.__cause__
            if isinstance(cause, _NOT_REACHED) and not _tls_refused(cause):
                raise
            raise PeerUntrusted(who=self.who, path=path, failure=exc.transport) from cause
        except ClientError:
            raise
        except AgentkeysError as exc:  # CertificateRejected from the client's role check
            raise PeerUntrusted(who=self.who, path=path, failure=exc.error) from None

    async def v2_kek(
        self, actor_omni: str, epoch: int, purpose: Literal["encrypt", "decrypt"]
    ) -> bytes:
        """The v2 KEK of ``actor_omni`` under K3[epoch] (SPEC section 4).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (refusals: e.g.
                ``epoch_not_current``).
        """
        body = {"version": 2, "purpose": purpose, "actor_omni": normalize_hex32(actor_omni),
                "epoch": epoch}  # fmt: skip
        return _kek(await self._call(_KEK, body))

    async def v1_kek(self, identity_omni: str, wallet: str, service: str) -> bytes:
        """The v1 KEK of (wallet, service), re-derived from the identity's K4.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (refusals: e.g.
                ``wallet_mismatch``).
        """
        body = {
            "version": 1,
            "purpose": "decrypt",
            "identity_omni": normalize_hex32(identity_omni),
            "wallet": normalize_wallet(wallet),
            "service": normalize_service(service),
        }
        return _kek(await self._call(_KEK, body))

    async def sts_credentials(self, actor_omni: str, wallet: str | None) -> AwsCredentials:
        """Per-actor S3 credentials tagged with ``actor_omni`` (and the master ``wallet``).

        Args:
            wallet: the master wallet tag, for the operator's own vault only (it opens the
                v1 prefix ``bots/<wallet>/``); ``None`` for an agent's session.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        body = {"actor_omni": normalize_hex32(actor_omni)}
        if wallet is not None:
            body["wallet"] = normalize_wallet(wallet)
        return AwsCredentials.from_answer(await self._call(_STS, body))

    async def k4_address(self, identity_omni: str) -> str:
        """The wallet of the identity's K4.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._call("/k4/address", {"identity_omni": identity_omni})
        return text(answer, "wallet")

    async def k4_siwe_sign(self, identity_omni: str, message: str) -> str:
        """K4's signature (0x r ‖ s ‖ v) over the SIWE ``message``.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        body = {"identity_omni": identity_omni, "message": message}
        return text(await self._call("/k4/siwe-sign", body), "signature")

    async def k4_register_first_master(
        self,
        identity_omni: str,
        device: Mapping[str, object],
        k10_signature: str,
        assertion: Mapping[str, object],
    ) -> dict[str, object]:
        """K4's approval of the first master device: ``{wallet, challenge, signature, …}``.

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors` (``AnswerMalformed`` also when
                ``wallet``, ``challenge`` or ``signature`` is missing).
        """
        body = {
            "identity_omni": identity_omni,
            "device": dict(device),
            "k10_signature": k10_signature,
            "assertion": dict(assertion),
        }
        answer = await self._call("/k4/register-first-master", body)
        for name in ("wallet", "challenge", "signature"):
            text(answer, name)
        return answer.doc

    async def oidc_keys(self) -> list[dict[str, str]]:
        """The signer's OIDC token-signing keys (public JWKs).

        Raises:
            ClientError: see :mod:`agentkeys.clients.errors`.
        """
        answer = await self._call("/oidc/jwks")
        keys = answer.doc.get("keys")
        if not isinstance(keys, list):
            raise answer.malformed("JWKS has no keys")
        return [{str(k): str(v) for k, v in key.items()} for key in keys if isinstance(key, dict)]
