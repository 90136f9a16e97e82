"""What the worker core needs from the outside, as small interfaces.

* :class:`ChainReader`: the five chain reads (``agentkeys.chain.ChainClient`` satisfies it).
* :class:`CapKeySource`: the trusted K1 key set, configured (:class:`StaticCapKeys`) or
  fetched from the broker's cap JWKS (:class:`FetchedCapKeys`). The JWKS is the worker's
  trust root, so its URL must be ``https`` (plain ``http`` only to a loopback host:
  127.0.0.0/8, ::1, ``localhost``; see :func:`check_jwks_url`), the TLS trust can be pinned
  to one CA (``[caps] jwks_ca``), redirects are not followed, and the body is streamed and
  cut off at ``_MAX_JWKS`` bytes.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.chain.client import DeviceEntry, ScopeEntry
from agentkeys.errors import AgentkeysError
from agentkeys.jwks import JsonWebKeySet
from agentkeys.worker.errors import WorkerError

__all__ = [
    "CapKeySource",
    "CapKeysUnavailable",
    "ChainReader",
    "FetchedCapKeys",
    "StaticCapKeys",
    "check_jwks_url",
    "is_loopback_host",
    "jwks_http_client",
]

_MAX_JWKS = 64 * 1024


class CapKeysUnavailable(WorkerError):
    """The cap key set could not be fetched (and none is cached)."""

    error = "cap_keys_unavailable"
    status = 503


def is_loopback_host(host: str) -> bool:
    """``localhost``, or an IP literal in 127.0.0.0/8 or ``::1``."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_jwks_url(url: str) -> str:
    """``url`` if it may serve the cap JWKS: ``https``, or ``http`` to a loopback host.

    Raises:
        CapKeysUnavailable: another scheme, no host, or plain http to a non-loopback host.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise CapKeysUnavailable("the cap JWKS URL is not a valid URL") from None
    if not parsed.host:
        raise CapKeysUnavailable("the cap JWKS URL has no host")
    if parsed.scheme == "https":
        return url
    if parsed.scheme == "http" and is_loopback_host(parsed.host):
        return url
    raise CapKeysUnavailable(
        "the cap JWKS URL must be https (plain http only to 127.0.0.0/8, ::1 or localhost)"
    )


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

    async def agent_operator(self, agent_omni: str | bytes) -> str | None:
        """The operator SidecarRegistry records for an agent omni, or None (no agent)."""
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


def jwks_http_client(*, ca: Path | None = None, timeout: float = 10.0) -> httpx.AsyncClient:
    """The client :class:`FetchedCapKeys` fetches the broker's JWKS with (caller closes it).

    Args:
        ca: PEM CA bundle to pin (the broker's certificate must chain to it; the system
            trust store is then not used); ``None``: the system trust store.

    No proxies from the environment, no redirects.
    """
    verify: ssl.SSLContext | bool = True
    if ca is not None:
        verify = ssl.create_default_context(cafile=str(ca))
    return httpx.AsyncClient(
        timeout=timeout, trust_env=False, verify=verify, follow_redirects=False
    )


class FetchedCapKeys:
    """The broker's cap JWKS (``GET /v1/cap/jwks.json``), cached.

    Refetched after ``ttl`` seconds, or when a cap names an unknown ``kid`` (at most once
    per ``min_refetch`` seconds, so unknown kids cannot make the worker hammer the broker).

    Args:
        http: client for the broker (caller owns it; build it with the pinned CA, if any,
            and without redirects).
        url: the JWKS URL, absolute or relative to ``http.base_url`` (the resolved URL is
            checked with :func:`check_jwks_url`).
        max_bytes: the largest JWKS body accepted (streamed; the rest is never read).

    Raises:
        CapKeysUnavailable: at construction, for a URL :func:`check_jwks_url` refuses.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        ttl: float = 300.0,
        min_refetch: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = _MAX_JWKS,
    ) -> None:
        self._http = http
        target = httpx.URL(url)
        check_jwks_url(str(target if target.is_absolute_url else http.base_url.join(target)))
        self._url = url
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self._keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None
        self._fetched = -float("inf")
        self._lock = trio.Lock()

    async def _read(self) -> bytes:
        too_large = CapKeysUnavailable(f"cap JWKS larger than {self._max_bytes} bytes")
        try:
            async with self._http.stream(
                "GET", self._url, headers={"accept-encoding": "identity"}, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise CapKeysUnavailable(f"cap JWKS answered HTTP {response.status_code}")
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise CapKeysUnavailable("cap JWKS answered with a content encoding")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise too_large
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise too_large
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise CapKeysUnavailable(f"cap JWKS unreachable ({type(exc).__name__})") from None
        return b"".join(chunks)

    async def _fetch(self) -> None:
        content = await self._read()
        try:
            self._keys = JsonWebKeySet.from_json(content).by_kid
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
