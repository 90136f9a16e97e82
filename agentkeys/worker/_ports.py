"""What the worker core needs from the outside, as small interfaces.

* :class:`ChainReader`: the four chain reads (``agentkeys.chain.ChainClient`` satisfies it).
* :class:`CapKeySource`: the trusted K1 key set, configured (:class:`StaticCapKeys`) or
  fetched from the broker's cap JWKS (:class:`FetchedCapKeys`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.chain.client import DeviceEntry, ScopeEntry
from agentkeys.errors import AgentkeysError
from agentkeys.jwks import JsonWebKeySet
from agentkeys.worker.errors import WorkerError

__all__ = ["CapKeySource", "CapKeysUnavailable", "ChainReader", "FetchedCapKeys", "StaticCapKeys"]

_MAX_JWKS = 64 * 1024


class CapKeysUnavailable(WorkerError):
    """The cap key set could not be fetched (and none is cached)."""

    error = "cap_keys_unavailable"
    status = 503


class ChainReader(Protocol):
    """The chain reads of SPEC section 5's binding / scope / epoch re-check."""

    async def get_device(self, device_key_hash: str | bytes) -> DeviceEntry | None:
        """The registry entry of a device, or None."""
        ...

    async def get_scope(
        self, operator_omni: str | bytes, actor_omni: str | bytes
    ) -> ScopeEntry | None:
        """scope[operator][actor], or None."""
        ...

    async def current_epoch(self) -> int:
        """K3EpochCounter's current epoch."""
        ...

    async def master_wallet(self, operator_omni: str | bytes) -> str | None:
        """The operator's master wallet (lowercase 0x hex), or None."""
        ...


class CapKeySource(Protocol):
    """Where the trusted cap-signing (K1) keys come from."""

    async def keys_for(self, kid: str) -> Mapping[str, ec.EllipticCurvePublicKey]:
        """The key set to verify a cap signed under ``kid`` with."""
        ...


class StaticCapKeys:
    """A configured key set (e.g. read from a JWKS file at start-up)."""

    def __init__(self, jwks: JsonWebKeySet) -> None:
        self._keys = jwks.by_kid

    async def keys_for(self, kid: str) -> Mapping[str, ec.EllipticCurvePublicKey]:
        return self._keys


class FetchedCapKeys:
    """The broker's cap JWKS (``GET /v1/cap/jwks.json``), cached.

    Refetched after ``ttl`` seconds, or when a cap names an unknown ``kid`` (at most once
    per ``min_refetch`` seconds, so unknown kids cannot make the worker hammer the broker).

    Args:
        http: client for the broker (caller owns it).
        url: the JWKS URL.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        ttl: float = 300.0,
        min_refetch: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._url = url
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self._keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None
        self._fetched = -float("inf")
        self._lock = trio.Lock()

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self._url)
        except httpx.HTTPError as exc:
            raise CapKeysUnavailable(f"cap JWKS unreachable ({type(exc).__name__})") from None
        if response.status_code != 200 or len(response.content) > _MAX_JWKS:
            raise CapKeysUnavailable(f"cap JWKS answered HTTP {response.status_code}")
        try:
            self._keys = JsonWebKeySet.from_json(response.content).by_kid
        except AgentkeysError as exc:
            raise CapKeysUnavailable(f"cap JWKS is invalid ({exc.error})") from None
        self._fetched = self._clock()

    async def keys_for(self, kid: str) -> Mapping[str, ec.EllipticCurvePublicKey]:
        async with self._lock:
            age = self._clock() - self._fetched
            stale = self._keys is None or age >= self._ttl
            unknown = self._keys is not None and kid not in self._keys
            if stale or (unknown and age >= self._min_refetch):
                try:
                    await self._fetch()
                except CapKeysUnavailable:
                    if self._keys is None:
                        raise
                    # keep the last good set; try again after min_refetch, not on every call
                    self._fetched = self._clock() - self._ttl + self._min_refetch
            assert self._keys is not None
            return self._keys
