"""The worker's client of the signer: KEKs and per-actor S3 credentials over mutual TLS.

Wire format: docs/signer.md (``POST /derive-cred-kek``, ``POST /sts-credentials``). The
caller owns the injected ``httpx.AsyncClient`` (built with
:func:`agentkeys.service.mtls_client`, role ``worker``, expecting role ``signer``).
KEKs come back as ``bytes`` and are never logged; refusals carry the signer's error code.

Failures (:func:`_transport_errors`, :func:`_answer`): the signer not reached (connection
refused or reset, a timeout, the connection closed before the answer, including during
the TLS handshake) is :class:`SignerUnavailable` (503, retry later); a signer that
answered wrongly (an error status, a malformed or oversized answer, a TLS alert or a
certificate that fails verification or the role check) is :class:`SignerFailed` (502).
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from agentkeys.b64url import b64url_decode
from agentkeys.errors import AgentkeysError, InvalidEncoding
from agentkeys.omni import normalize_hex32, normalize_service, normalize_wallet
from agentkeys.worker.errors import SignerFailed, SignerUnavailable

__all__ = ["AwsCredentials", "SignerClient"]

_MAX_ANSWER = 16 * 1024


@dataclass(frozen=True)
class AwsCredentials:
    """Temporary S3 credentials for one (actor, wallet) session."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime.datetime

    @classmethod
    def from_json(cls, obj: object) -> AwsCredentials:
        """Parse the ``credentials`` member of ``/sts-credentials``.

        Raises:
            SignerFailed: missing or malformed members.
        """
        if not isinstance(obj, dict):
            raise SignerFailed("signer answered /sts-credentials without credentials")
        try:
            values = [obj[name] for name in ("access_key_id", "secret_access_key",
                                             "session_token", "expiration")]  # fmt: skip
            if not all(isinstance(v, str) and v for v in values):
                raise TypeError
            expiration = datetime.datetime.fromisoformat(values[3])
        except (KeyError, TypeError, ValueError):
            raise SignerFailed("signer answered /sts-credentials with bad credentials") from None
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=datetime.UTC)
        return cls(values[0], values[1], values[2], expiration)


# TLS errors that mean the connection went away, not that the peer refused the handshake
_TLS_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


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


def _unreachable(exc: httpx.HTTPError) -> bool:
    """Whether ``exc`` means the signer gave no answer at all (a transport failure)."""
    transport = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
    return isinstance(exc, transport) and not _tls_refused(exc)


@contextmanager
def _transport_errors(route: str) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        if _unreachable(exc):
            raise SignerUnavailable(
                f"signer unreachable on {route} ({type(exc).__name__})"
            ) from None
        raise SignerFailed(f"signer failed on {route} ({type(exc).__name__})") from None
    except AgentkeysError as exc:  # e.g. CertificateRejected from the role check
        raise SignerFailed(f"signer rejected on {route} ({exc.error})") from None


def _answer(route: str, response: httpx.Response) -> dict[str, Any]:
    if len(response.content) > _MAX_ANSWER:
        raise SignerFailed(f"signer answer on {route} too large")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        code = body.get("error") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        detail = f"{code}: {reason}" if isinstance(code, str) else f"HTTP {response.status_code}"
        raise SignerFailed(f"signer refused {route} ({detail[:300]})")
    if not isinstance(body, dict):
        raise SignerFailed(f"signer answered {route} with something other than a JSON object")
    return body


def _kek(route: str, body: dict[str, Any]) -> bytes:
    value = body.get("kek")
    try:
        kek = b64url_decode(value) if isinstance(value, str) else b""
    except InvalidEncoding:
        kek = b""
    if len(kek) != 32:
        raise SignerFailed(f"signer answered {route} without a 32-byte KEK")
    return kek


class SignerClient:
    """Calls the signer for one worker.

    Args:
        http: an mTLS client whose ``base_url`` is the signer (caller owns and closes it).
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        with _transport_errors(route):
            response = await self._http.post(route, json=payload)
        return _answer(route, response)

    async def v2_kek(
        self, actor_omni: str, epoch: int, purpose: Literal["encrypt", "decrypt"]
    ) -> bytes:
        """The v2 KEK of ``actor_omni`` under K3[epoch] (SPEC section 4).

        Raises:
            SignerFailed: refused (e.g. ``epoch_not_current``); SignerUnavailable (a
                SignerFailed) when the signer was not reached.
        """
        payload = {"version": 2, "purpose": purpose, "actor_omni": normalize_hex32(actor_omni),
                   "epoch": epoch}  # fmt: skip
        return _kek("/derive-cred-kek", await self._post("/derive-cred-kek", payload))

    async def v1_kek(self, identity_omni: str, wallet: str, service: str) -> bytes:
        """The v1 KEK of (wallet, service), re-derived from the identity's K4.

        Raises:
            SignerFailed: refused (e.g. ``wallet_mismatch``); SignerUnavailable (a
                SignerFailed) when the signer was not reached.
        """
        payload = {
            "version": 1,
            "purpose": "decrypt",
            "identity_omni": normalize_hex32(identity_omni),
            "wallet": normalize_wallet(wallet),
            "service": normalize_service(service),
        }
        return _kek("/derive-cred-kek", await self._post("/derive-cred-kek", payload))

    async def sts_credentials(self, actor_omni: str, wallet: str | None) -> AwsCredentials:
        """Per-actor S3 credentials tagged with ``actor_omni`` (and the master ``wallet``).

        Args:
            wallet: the master wallet tag, for the operator's own vault only (it opens the
                v1 prefix ``bots/<wallet>/``); ``None`` for an agent's session.

        Raises:
            SignerFailed: refused; SignerUnavailable (a SignerFailed) when not reached.
        """
        payload = {"actor_omni": normalize_hex32(actor_omni)}
        if wallet is not None:
            payload["wallet"] = normalize_wallet(wallet)
        body = await self._post("/sts-credentials", payload)
        return AwsCredentials.from_json(body.get("credentials"))
