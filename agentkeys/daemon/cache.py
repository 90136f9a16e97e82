"""The in-memory credential cache (SPEC.md section 8).

* An entry lives at most ``ttl`` seconds (5 minutes by default) and never past the
  credential's own expiry (the cap's ``expires_at``).
* At most ``max_entries`` entries (least recently used evicted first).
* Concurrent misses for one service make ONE fetch; the others wait for its result.
* An entry older than ``revalidate`` seconds is fetched again on its next use (one fetch,
  as for a miss). A refusal (:class:`CredentialRefused`: the worker answers
  ``credential_not_found`` after ``agentkeys teardown``, the broker a revoked scope) replaces
  the entry, so a torn-down credential stops being served within ``revalidate`` seconds; any
  other failure (transport, malformed answer) keeps serving the cached credential until
  its ``ttl``.
* A failed fetch is remembered for ``negative_ttl`` seconds, so a refusing authority is
  not hammered; callers get the same refusal meanwhile.
* :meth:`drop` (revocation events) and :meth:`clear` (shutdown) wipe entries; a fetch in
  flight for a wiped service is discarded, and its waiters are refused (fetches of other
  services are not affected).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from agentkeys.daemon.credentials import Credential
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable, ScopeRevoked
from agentkeys.errors import DOMAIN_ERRORS, DomainError

__all__ = ["CredentialCache"]


@dataclass
class _Entry:
    credential: Credential | None
    error: DomainError | None
    expires_at: float
    fetched_at: float


@dataclass
class _Flight:
    done: trio.Event
    wiped: bool = False  # dropped while in flight: discard the result, refuse the waiters
    entry: _Entry | None = None


def _copy(error: DomainError) -> DomainError:
    """A fresh copy of ``error`` (one instance raised in many tasks tangles tracebacks)."""
    if isinstance(error, CredentialRefused):
        return CredentialRefused(error.reason, code=error.code)
    try:
        return type(error)(error.reason)
    except TypeError:
        return CredentialUnavailable(error.reason)


class CredentialCache:
    """See the module docstring. Keys are service names (one actor per daemon)."""

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 5.0,
        revalidate: float = 30.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < ttl <= 300.0:
            raise CredentialUnavailable("cache ttl must be within (0, 300] seconds")
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._revalidate = revalidate
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        #: fetches made (for health output and tests)
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._entries)

    def services(self) -> frozenset[str]:
        """The services cached or being fetched (never the credentials)."""
        return frozenset(self._entries) | frozenset(self._flights)

    async def get(self, service: str, fetch: Callable[[str], Awaitable[Credential]]) -> Credential:
        """The cached credential of ``service``, fetching it once on a miss.

        Raises:
            DomainError: the (possibly negative-cached) fetch failure.
            ScopeRevoked: the entry was wiped while this fetch was in flight.
        """
        now = self._clock()
        entry = self._entries.get(service)
        if entry is not None:
            if entry.expires_at <= now:
                del self._entries[service]
                entry = None
            elif entry.credential is None or now < entry.fetched_at + self._revalidate:
                self._entries.move_to_end(service)
                return self._unpack(entry)
        flight = self._flights.get(service)
        if flight is None:
            flight = _Flight(done=trio.Event())
            self._flights[service] = flight
            try:
                fetched = await self._fetch(service, fetch)
                error = fetched.error
                if entry is not None and error and not isinstance(error, CredentialRefused):
                    # short of a refusal the cached credential stays; retry after negative_ttl
                    entry.fetched_at = fetched.expires_at - self._revalidate
                    flight.entry = entry
                else:
                    flight.entry = fetched
            finally:
                del self._flights[service]
                flight.done.set()
            if not flight.wiped and flight.entry is fetched:
                self._store(service, fetched)
        else:
            await flight.done.wait()
        if flight.entry is None:
            raise CredentialUnavailable("the credential fetch was interrupted")
        if flight.wiped:
            raise ScopeRevoked("the credential was revoked while it was being fetched")
        return self._unpack(flight.entry)

    async def _fetch(self, service: str, fetch: Callable[[str], Awaitable[Credential]]) -> _Entry:
        self.fetches += 1
        try:
            credential = await fetch(service)
        except DOMAIN_ERRORS as exc:
            now = self._clock()
            return _Entry(None, exc, now + self._negative_ttl, now)
        now = self._clock()
        return _Entry(credential, None, min(now + self._ttl, credential.expires_at), now)

    def _store(self, service: str, entry: _Entry) -> None:
        if entry.expires_at <= self._clock():
            return
        self._entries[service] = entry
        self._entries.move_to_end(service)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    @staticmethod
    def _unpack(entry: _Entry) -> Credential:
        if entry.credential is not None:
            return entry.credential
        assert entry.error is not None
        raise _copy(entry.error)

    def purge(self) -> int:
        """Remove expired entries; returns how many."""
        now = self._clock()
        stale = [k for k, e in self._entries.items() if e.expires_at <= now]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def drop(self, services: frozenset[str] | None = None) -> None:
        """Wipe ``services`` (all when None); their fetches in flight are discarded."""
        if services is None:
            self._entries.clear()
            for flight in self._flights.values():
                flight.wiped = True
            return
        for service in services:
            self._entries.pop(service, None)
            in_flight = self._flights.get(service)
            if in_flight is not None:
                in_flight.wiped = True

    def clear(self) -> None:
        """Wipe everything (shutdown)."""
        self.drop(None)
