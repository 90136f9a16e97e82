"""The sidecar's own broker session: signed in with its agent device's K10, renewed by itself
(SPEC.md section 8, "the sidecar's own identity").

:class:`DeviceSession` is a long-running duty of the daemon (``device-session``). It signs
in at start — ``POST /v1/auth/device/challenge`` for a fresh single-use challenge, then
``POST /v1/auth/device/session`` with the K10 signature of :mod:`agentkeys.device_signin`
over it — and signs in again, with a fresh challenge, once half of the session's lifetime
has passed. A transient failure (broker unreachable, 5xx, 429, a refusal it may recover
from) is retried with a doubling back-off (0.5 s up to 30 s). The daemon never holds the
operator's J1, a master K10 or a wallet.

What it reports (``/readyz`` problems, the request path's refusals):

* ``session_invalid`` — no valid session: not signed in yet, or the last one expired while
  renewals failed (credentials are not served: 503 ``session_unavailable``);
* ``session_expiring`` — still valid, but the renewal is overdue (less than a quarter of the
  lifetime left); credentials are still served;
* ``device_revoked`` — the broker or the worker said the device is revoked: a definitive
  refusal; no credential is served again (403 ``device_revoked``) and it stops signing in.

Any other refusal (``device_not_registered``, ``role_missing``, ``device_signature_rejected``,
…) leaves the session as it is (invalid once expired) and is retried with the same back-off,
so a device registered after the daemon started is picked up. Each refusal is logged with
its code and reason, never a token, challenge or signature. Deadlines are kept
on Trio's clock (monotonic; a test may run it as a ``MockClock``); the broker's
``expires_at`` only gives the lifetime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

import httpx
import trio

from agentkeys.clients import BrokerClient
from agentkeys.daemon._peer import peer_errors
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable, SessionUnavailable
from attest.device_key import DeviceKey, key_hash

__all__ = ["DEFAULT_AUDIENCE", "DeviceSession", "SessionProblem"]

_log = logging.getLogger("agentkeys.daemon")

DEFAULT_AUDIENCE = "agentkeys-broker"
"""The broker's default session audience (its ``[site] session_audience``)."""

_REVOKED = "device_revoked"
_SESSION_REFUSED = frozenset({"session_expired", "session_revoked", "session_invalid"})
_MAX_LIFETIME = 86400.0


class SessionProblem(StrEnum):
    """What is wrong with the daemon's session (a ``/readyz`` problem)."""

    INVALID = "session_invalid"
    EXPIRING = "session_expiring"
    REVOKED = "device_revoked"


class DeviceSession:
    """The daemon's device session at the broker (see the module docstring).

    Args:
        broker: client whose ``base_url`` is the broker (the caller owns it).
        device_key: the agent device's K10 (TPM or software); signs digests only.
        audience: the broker's session audience (what the K10 signature is bound to).
        operator_omni, actor_omni: whom the daemon is configured to serve (64 hex); a
            session the broker binds to another operator or actor is not used (the chain
            binding of the device decides, so the configuration is wrong: logged, retried).
        renew_fraction: renew once this fraction of the lifetime has passed.
        min_backoff, max_backoff: the retry back-off bounds (seconds).
        clock: Unix seconds (only to turn the broker's ``expires_at`` into a lifetime).
    """

    def __init__(
        self,
        *,
        broker: httpx.AsyncClient,
        device_key: DeviceKey,
        audience: str = DEFAULT_AUDIENCE,
        operator_omni: str | None = None,
        actor_omni: str | None = None,
        renew_fraction: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < renew_fraction < 1 or not 0 < min_backoff <= max_backoff:
            raise ValueError("renew_fraction within (0, 1), 0 < min_backoff <= max_backoff")
        self._broker = BrokerClient(broker, clock=clock)
        self._key = device_key
        self._audience = audience
        self._expected = {"operator_omni": operator_omni, "actor_omni": actor_omni}
        self._renew_fraction = renew_fraction
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self.device_key_hash = key_hash(device_key)
        self._token: bytes | None = None
        self._valid_until = 0.0  # Trio clock
        self._lifetime = 0.0
        self._revoked = False
        self._wake = trio.Event()
        #: how many sessions were obtained (sign-in and renewals)
        self.sign_ins = 0

    # -- what the daemon asks ---------------------------------------------------------------

    def problem(self) -> SessionProblem | None:
        """The session's problem now, or ``None`` when it is valid and not near expiry."""
        if self._revoked:
            return SessionProblem.REVOKED
        left = self._valid_until - trio.current_time()
        if self._token is None or left <= 0:
            return SessionProblem.INVALID
        if left < self._lifetime * (1 - self._renew_fraction) / 2:
            return SessionProblem.EXPIRING
        return None

    def require(self) -> None:
        """Refuse unless the session may be used now.

        Raises:
            CredentialRefused: the device is revoked (code ``device_revoked``, 403).
            SessionUnavailable: no valid session (503).
        """
        problem = self.problem()
        if problem is SessionProblem.REVOKED:
            raise CredentialRefused("the broker refused this device: revoked", code=_REVOKED)
        if problem is SessionProblem.INVALID:
            raise SessionUnavailable(
                "the sidecar has no valid device session at the broker (see its log)"
            )

    def token(self) -> bytes:
        """The session token (never logged).

        Raises:
            CredentialRefused, SessionUnavailable: see :meth:`require`.
        """
        self.require()
        assert self._token is not None  # require() refuses without one
        return self._token

    def refused(self, code: str | None) -> None:
        """Learn from a refusal the broker or the worker gave a request made with the session:
        ``device_revoked`` is definitive; a refused session is renewed at once."""
        if code == _REVOKED:
            if not self._revoked:
                _log.error("the device is revoked: no credential is served any more")
            self._revoked = True
            self._token = None
            self._wake.set()
        elif code in _SESSION_REFUSED:
            self._wake.set()

    # -- the duty -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sign in, then keep the session renewed until cancelled (a daemon duty).

        ``task_status.started()`` is called after the first attempt, whatever its outcome.
        Never returns: once the device is revoked it waits for cancellation.
        """
        backoff = self._min_backoff
        started = False
        while True:
            if self._revoked:
                if not started:
                    task_status.started()
                await trio.sleep_forever()
            try:
                await self._sign_in()
                delay = self._lifetime * self._renew_fraction
                backoff = self._min_backoff
            except CredentialRefused as exc:
                if exc.code == _REVOKED:
                    self.refused(_REVOKED)
                    continue
                delay = backoff
                backoff = min(backoff * 2, self._max_backoff)
            except CredentialUnavailable as exc:
                _log.warning("device sign-in failed, retrying in %.1f s: %s", backoff, exc.reason)
                delay = backoff
                backoff = min(backoff * 2, self._max_backoff)
            if not started:
                task_status.started()
                started = True
            with trio.move_on_after(delay):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _sign_in(self) -> None:
        """One sign-in: a fresh challenge, the K10 signature, a new session.

        Raises:
            CredentialRefused: the broker refused (logged with its code and reason).
            CredentialUnavailable: transport failure or a malformed answer.
        """
        with peer_errors():
            grant = await self._broker.sign_in_device(self._key, audience=self._audience)
        bound = {"operator_omni": grant.operator_omni, "actor_omni": grant.actor_omni}
        for name, expected in self._expected.items():
            if expected is not None and bound[name] != expected:
                raise CredentialUnavailable(
                    f"the device is bound on chain to {name} {bound[name]}, "
                    f"not the configured identity.{name} {expected}"
                )
        lifetime = min(float(grant.expires_at) - self._clock(), _MAX_LIFETIME)
        if lifetime <= 0:
            raise CredentialUnavailable("the broker's session is already expired (clock skew?)")
        renewed = self._token is not None
        self._token = grant.session.encode("ascii")
        self._lifetime = lifetime
        self._valid_until = trio.current_time() + lifetime
        self.sign_ins += 1
        _log.info(
            "device session %s for device %s, valid for %.0f s",
            "renewed" if renewed else "signed in",
            self.device_key_hash[:16],
            lifetime,
        )
