"""Scenarios of the sidecar daemon: policy-rule scaling, proxy overhead, memory.

* ``policy``: :meth:`agentkeys.daemon.policy.Policy.decide` (pure; first matching
  caller entry wins, so cost grows with the entries before the match) with 10,
  1,000 and 10,000 caller entries and the matching entry *last* (the worst case),
  each against the 10-entry policy; and :func:`parse_policy` of the same
  documents (the cost of a reload), against the 10-entry parse.
* ``sidecar c=N``: the C load generator → daemon → a local upstream (the raw
  Trio responder on loopback TCP, so nearly all of the difference is the daemon),
  against the generator → upstream directly, at the HTTP scenario's
  concurrencies, over the Unix socket (E1) and loopback TCP (E2). The daemon runs
  as ``agentkeys daemon`` does (``run_daemon``) in its own process
  (:mod:`bench._sidecar_child`): software K10, the broker + worker credential
  source against the ``dev up`` stack (:mod:`bench._stack`), the chain watcher, and
  a policy admitting only the load generator's binary. Every request goes the
  whole path: attestation, policy, quotas, credential injection, forwarding with
  the upstream client, the audit row. The notes give the added p50 and p99. Each
  run's warm-up starts once all its connections have had a response (``settle``):
  these rows are about requests on open connections, the ``attest`` rows about new ones.
  The peers are measured in the same turns, as named baselines: nginx on the same
  ``GET``; and, for a non-streamed ``POST /v1/chat/completions`` to a third upstream
  answering an OpenAI ``chat.completion`` (:func:`bench._sse.completion_handler`), the
  generator → upstream directly, → daemon (Unix) → upstream, and → LiteLLM proxy
  (:mod:`bench._litellm`, its own venv) → upstream, since LiteLLM serves only model
  calls. The notes give each proxy's CPU time per request.
* ``credential cache``: :meth:`agentkeys.daemon.cache.CredentialCache.get` on a hit (the
  lookup every proxied request makes) in caches of 10, 1,000 and 10,000 entries,
  cycling through all of them, each against the 10-entry cache.
* ``sidecar stream c=N``: the same three paths to a second local upstream that
  streams (:mod:`bench._sse`: ``POST /v1/chat/completions`` answered with 20
  server-sent events in a chunked body, as an OpenAI streaming completion), at the
  same concurrencies: time to the first body byte and to the end of the stream, each
  against the direct path. Each run's warm-up starts once all its new connections
  have had a response (``settle``), so attesting them stays out of the window.
* ``sidecar cache``: one request to each of ``profile.miss_services`` services
  holding a stored credential: first as cache misses (cap mint at the broker +
  worker fetch: KEK, S3), then again as hits (the baseline).
* ``memory``: the daemon's RSS idle, after the sidecar runs, and during a soak (8
  clients over the Unix socket) that runs in slices until it has served
  ``profile.soak_requests`` requests itself, or for at most ``profile.soak_seconds``:
  the reading at half the requests and the one at the end show the growth of the
  second half apart from the warm-up (it should be flat).

Each part reports "not yet" rows when the module it needs is not importable, so
the harness runs at every stage of the tree.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import trio

from agentkeys._files import write_private
from agentkeys.cap import CapOp
from agentkeys.devstack import Nginx, start_nginx
from agentkeys.devstack.errors import ComponentStartFailed
from bench import _sse
from bench._children import cpu_seconds
from bench._errors import BenchError, LoadgenError
from bench._litellm import (
    VENV,
    LiteLLM,
    LiteLLMUnavailable,
    litellm_executable,
    litellm_installed,
    start_litellm,
)
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, send_one, write_requests
from bench._micro import measure_interleaved
from bench._model import Figures, Row, not_yet
from bench._profile import Profile
from bench._servers import raw_handler
from bench._stack import key_pem, running_dev_stack, worker_request
from bench.http import combine, failure_note

__all__ = ["CACHE_SIZES", "POLICY_SIZES", "run", "sidecar_policy"]

POLICY_SIZES = (10, 1_000, 10_000)
CACHE_SIZES = (10, 1_000, 10_000)
_SERVICES = 10
_UID = 4242
_EXE = "/usr/bin/agent"


def _policy_document(callers: int) -> bytes:
    """A policy with ``_SERVICES`` services and ``callers`` entries; only the last matches."""
    lines: list[str] = []
    for index in range(callers):
        uid = _UID if index == callers - 1 else 10_000 + index
        lines += [
            "[[caller]]",
            f'name = "c{index}"',
            f"uid = {uid}",
            f'exe = "{_EXE}"',
            f'services = ["svc{index % _SERVICES}", "svc0"]',
            "",
        ]
    for index in range(_SERVICES):
        lines += [
            f"[service.svc{index}]",
            f'upstream = "http://127.0.0.1:{9000 + index}"',
            'allow = ["POST /v1/chat/completions", "GET /v1/models", "GET /v1/files/*"]',
            "per_minute = 60",
            "",
        ]
    return "\n".join(lines).encode("ascii")


def _policy_rows(profile: Profile) -> list[Row]:
    try:
        policy_mod: Any = importlib.import_module("agentkeys.daemon.policy")
    except ImportError as exc:
        why = f"agentkeys.daemon.policy is not importable ({exc.name})"
        return [
            not_yet("policy", f"decide-{n}", f"Policy.decide, {n} callers", why)
            for n in POLICY_SIZES
        ]
    from attest.caller import CallerIdentity, ProcessIdentity, Transport

    caller = CallerIdentity(
        transport=Transport.UNIX,
        process=ProcessIdentity(
            pid=1,
            uid=_UID,
            gid=_UID,
            exe_path=_EXE,
            exe_sha256="0" * 64,
            start_time=0,
            pidfd_checked=True,
        ),
    )
    documents = {n: _policy_document(n) for n in POLICY_SIZES}
    policies = {n: policy_mod.parse_policy(doc) for n, doc in documents.items()}
    for policy in policies.values():  # the benchmark must measure an allowed request
        policy.decide(caller, "svc0", "POST", "/v1/chat/completions")

    def decide(n: int) -> Any:
        policy = policies[n]
        return lambda: policy.decide(caller, "svc0", "POST", "/v1/chat/completions")

    def parse(n: int) -> Any:
        document = documents[n]
        return lambda: policy_mod.parse_policy(document)

    cases = [(f"decide-{n}", decide(n)) for n in POLICY_SIZES]
    cases += [(f"parse-{n}", parse(n)) for n in POLICY_SIZES]
    figures = measure_interleaved(cases, profile.micro)
    smallest = POLICY_SIZES[0]
    rows = []
    for n in POLICY_SIZES:
        rows.append(
            Row(
                "policy",
                f"decide-{n}",
                f"Policy.decide, {n:,} callers, match last",
                figures[f"decide-{n}"],
                baseline=None if n == smallest else f"decide-{smallest}",
            )
        )
    for n in POLICY_SIZES:
        size = len(documents[n]) / 1024
        rows.append(
            Row(
                "policy",
                f"parse-{n}",
                f"parse_policy, {n:,} callers (reload)",
                figures[f"parse-{n}"],
                baseline=None if n == smallest else f"parse-{smallest}",
                notes=f"{size:,.0f} KiB TOML",
            )
        )
    return rows


def _cache_label(n: int) -> str:
    return f"CredentialCache.get hit, {n:,} entries"


def _cache_hit(cache: Any, services: Sequence[str]) -> Callable[[], object]:
    """One cached lookup per call, cycling through ``services`` in insertion order (so
    every lookup takes the least recently used entry and moves it to the end).

    ``get`` is a coroutine that does not suspend on a hit: it is stepped once by hand,
    which is what ``await`` does when nothing is awaited inside.
    """
    order = itertools.cycle(services)

    async def refuse(service: str) -> Any:
        raise BenchError(f"cache miss for {service}: the benchmark must measure hits")

    def lookup() -> object:
        step = cache.get(next(order), refuse)
        try:
            step.send(None)
        except StopIteration as done:
            return done.value
        step.close()
        raise BenchError("a cached lookup suspended: not a hit")

    return lookup


async def _cache_rows(profile: Profile) -> list[Row]:
    try:
        cache_mod: Any = importlib.import_module("agentkeys.daemon.cache")
        credentials_mod: Any = importlib.import_module("agentkeys.daemon.credentials")
    except ImportError as exc:
        why = f"agentkeys.daemon.cache is not importable ({exc.name})"
        return [not_yet("credential cache", f"hit-{n}", _cache_label(n), why) for n in CACHE_SIZES]
    # valid for an hour; the cache's own ttl (5 minutes) outlasts the measurement
    credential = credentials_mod.Credential(secret=_SECRET, expires_at=time.time() + 3600.0)

    async def fetch(service: str) -> Any:
        return credential

    cases: list[tuple[str, Callable[[], object]]] = []
    caches: dict[int, Any] = {}
    for n in CACHE_SIZES:
        cache = cache_mod.CredentialCache(max_entries=n)  # exactly full: nothing evicted
        services = [f"svc{i}" for i in range(n)]
        for service in services:
            await cache.get(service, fetch)
        caches[n] = cache
        cases.append((f"hit-{n}", _cache_hit(cache, services)))
    figures = measure_interleaved(cases, profile.micro)
    smallest = CACHE_SIZES[0]
    rows = []
    for n in CACHE_SIZES:
        if len(caches[n]) != n or caches[n].fetches != n:
            raise BenchError(f"the {n}-entry cache lost entries while it was measured")
        rows.append(
            Row(
                "credential cache",
                f"hit-{n}",
                _cache_label(n),
                figures[f"hit-{n}"],
                baseline=None if n == smallest else f"hit-{smallest}",
                notes="each lookup the least recently used entry",
            )
        )
    return rows


_SIDECAR_BASELINES: dict[str, str | None] = {
    "direct": None,
    "daemon-unix": "direct",
    "daemon-tcp": "direct",
    "nginx": "direct",
    "direct-chat": None,
    "daemon-chat": "direct-chat",
    "litellm": "direct-chat",
}
_SIDECAR_LABELS = {
    "direct": "client → upstream directly (TCP)",
    "daemon-unix": "client → daemon (Unix, E1) → upstream",
    "daemon-tcp": "client → daemon (TCP, E2) → upstream",
    "nginx": "peer: client → nginx (TCP, 1 worker) → upstream",
    "direct-chat": "POST chat completion: client → upstream directly (TCP)",
    "daemon-chat": "POST chat completion: client → daemon (Unix, E1) → upstream",
    "litellm": "peer: POST chat completion: client → LiteLLM (TCP, 1 worker) → upstream",
}
_PROXY_NAMES = {"nginx": "nginx", "litellm": "LiteLLM"}  # the others: the daemon
_CHAT_SERVICE = "bench-chat"
_LITELLM_RUN_FACTOR = 5  # its runs last this many times the others' (profile.http_duration)
_STREAM_MEASURES = {"ttfb": "first body byte", "total": "whole stream"}
_CACHE_LABELS = {
    "hit": "first request per service again (cached)",
    "miss": "first request per service (cap mint + worker fetch)",
}
_SERVICE_PREFIX = "bench"
_STREAM_SERVICE = "bench-sse"
_UPSTREAM_PATH = "/v1/models"
_SOAK_CLIENTS = 8
_SOAK_SLICES = 30  # the soak's time cap in slices: one RSS reading after each
_MIN_SLICE_SECONDS = 0.05
_REPO_ROOT = os.fspath(Path(__file__).resolve().parent.parent)
_READY_TIMEOUT = 60.0
_CHILD_STOP_TIMEOUT = 15.0
_SECRET = b"sk-bench-upstream-" + b"1" * 32
# USD per million tokens: the streamed service is priced, so the usage found in its
# stream is charged to a quota as an OpenAI service's would be
_STREAM_PRICE = "{ prompt = 0.15, completion = 0.6 }"


def _services(profile: Profile) -> list[str]:
    return [f"{_SERVICE_PREFIX}{i}" for i in range(profile.miss_services)]


def _stream_label(target: str, measure: str) -> str:
    return f"{_SIDECAR_LABELS[target]}: {_STREAM_MEASURES[measure]}"


_MEMORY_LABELS = {
    "rss-idle": "daemon RSS idle",
    "rss-after": "daemon RSS after the sidecar runs",
    "rss-half": "daemon RSS at half of all requests (soak)",
}


def _sidecar_not_yet(profile: Profile, why: str) -> list[Row]:
    rows = [
        not_yet(f"sidecar c={n}", "daemon-unix", _SIDECAR_LABELS["daemon-unix"], why)
        for n in profile.http_concurrency
    ]
    rows += [
        not_yet(
            f"sidecar stream c={n}", "ttfb-daemon-unix", _stream_label("daemon-unix", "ttfb"), why
        )
        for n in profile.http_concurrency
    ]
    rows.append(not_yet("sidecar cache", "miss", _CACHE_LABELS["miss"], why))
    rows += [not_yet("memory", case, label, why) for case, label in _MEMORY_LABELS.items()]
    rows.append(not_yet("memory", "rss-soak", "daemon RSS after the soak", why))
    return rows


def _rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def sidecar_policy(
    upstream: str,
    exe: str,
    services: Sequence[str],
    *,
    stream_upstream: str | None = None,
    chat_upstream: str | None = None,
) -> str:
    """The daemon policy of the sidecar runs: the load generator may GET one path of each
    service, all served by ``upstream``; with ``stream_upstream``, also ``POST`` a chat
    completion to the priced service ``bench-sse`` served by it (the streamed runs); with
    ``chat_upstream``, ``POST`` a chat completion to ``bench-chat`` (the LiteLLM peer's)."""
    names = [*services]
    if stream_upstream is not None:
        names.append(_STREAM_SERVICE)
    if chat_upstream is not None:
        names.append(_CHAT_SERVICE)
    listed = ", ".join(f'"{name}"' for name in names)
    lines = [
        "[[caller]]",
        'name = "bench"',
        f"uid = {os.getuid()}",
        f'exe = "{exe}"',
        f"services = [{listed}]",
        "",
    ]
    for name in services:
        lines += [
            f"[service.{name}]",
            f'upstream = "{upstream}"',
            f'allow = ["GET {_UPSTREAM_PATH}"]',
            "",
        ]
    if stream_upstream is not None:
        lines += [
            f'[service."{_STREAM_SERVICE}"]',
            f'upstream = "{stream_upstream}"',
            f'allow = ["POST {_sse.PATH}"]',
            "",
            f'[service."{_STREAM_SERVICE}".prices]',
            f"default = {_STREAM_PRICE}",
            "",
        ]
    if chat_upstream is not None:
        lines += [
            f'[service."{_CHAT_SERVICE}"]',
            f'upstream = "{chat_upstream}"',
            f'allow = ["POST {_sse.PATH}"]',
            "",
        ]
    return "\n".join(lines)


async def _read_line(stream: trio.abc.ReceiveStream, limit: int = 4096) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= limit:
        chunk = await stream.receive_some(limit)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _figures(result: LoadResult) -> Figures:
    return Figures(
        ops=result.requests,
        seconds=result.duration_s,
        ops_per_s=result.rps,
        p50_us=result.p50_us,
        p90_us=result.p90_us,
        p99_us=result.p99_us,
    )


def _extra(result: LoadResult) -> dict[str, float | int | str]:
    return {
        "errors": result.errors,
        "non_2xx": result.non_2xx,
        "timeouts": result.timeouts,
        "reconnects": result.reconnects,
    }


def _adds(figures: Figures, baseline: Figures) -> str:
    return (
        f"adds {figures.p50_us - baseline.p50_us:,.0f} µs p50, "
        f"{figures.p99_us - baseline.p99_us:,.0f} µs p99"
    )


def _sidecar_row(
    scenario: str,
    case: str,
    rounds: Sequence[LoadResult],
    direct: Figures | None,
    *,
    cpu_us: float | None = None,
) -> Row:
    result = combine(rounds)
    figures = _figures(result)
    notes = []
    extra: dict[str, float | int | str] = {**_extra(result), "rounds": len(rounds)}
    if direct is not None:
        notes.append(_adds(figures, direct))
    if cpu_us is not None:
        # what bounds the rate: each proxy is one process (one worker) on one core
        who = _PROXY_NAMES.get(case, "daemon")
        notes.append(f"{who} CPU {cpu_us:,.0f} µs/request")
        extra[f"{who.lower()}_cpu_us_per_request"] = round(cpu_us, 1)
    if failure := failure_note(result):
        notes.append(failure)
    return Row(
        scenario,
        case,
        _SIDECAR_LABELS[case],
        figures,
        baseline=_SIDECAR_BASELINES[case],
        notes="; ".join(notes),
        extra=extra,
    )


def _stream_rows(scenario: str, results: dict[str, list[LoadResult]]) -> list[Row]:
    """Two rows per path: time to the first body byte and to the end of the stream, each
    with the rate of the same runs (total over the rounds, median of each percentile)."""
    rows: list[Row] = []
    for measure in _STREAM_MEASURES:
        direct: Figures | None = None
        for target in ("direct", "daemon-unix", "daemon-tcp"):
            rounds = results[target]
            result = combine(rounds)
            figures = _figures(result)
            if measure == "ttfb":
                figures = replace(
                    figures,
                    p50_us=statistics.median(r.ttfb_p50_us for r in rounds),
                    p90_us=statistics.median(r.ttfb_p90_us for r in rounds),
                    p99_us=statistics.median(r.ttfb_p99_us for r in rounds),
                )
            notes = []
            if direct is None:
                direct = figures
            else:
                notes.append(_adds(figures, direct))
            served = max(result.requests, 1)
            body = sum(r.body_bytes for r in rounds) / served
            chunks = sum(r.chunks for r in rounds) / served
            if measure == "total":
                notes.append(f"{chunks:,.1f} chunks, {body:,.0f} B per response")
            if failure := failure_note(result):
                notes.append(failure)
            baseline = _SIDECAR_BASELINES[target]
            rows.append(
                Row(
                    scenario,
                    f"{measure}-{target}",
                    _stream_label(target, measure),
                    figures,
                    baseline=None if baseline is None else f"{measure}-{baseline}",
                    notes="; ".join(notes),
                    extra={
                        **_extra(result),
                        "rounds": len(rounds),
                        "body_bytes_per_response": body,
                        "chunks_per_response": chunks,
                        "settle_s_max": max(r.settle_s for r in rounds),
                    },
                )
            )
    return rows


def _memory_row(
    case: str,
    label: str,
    kib: int,
    requests: int,
    idle_kib: int,
    *,
    more: str = "",
    extra: dict[str, float | int | str] | None = None,
) -> Row:
    growth = kib - idle_kib
    notes = f"RSS {kib / 1024:,.1f} MiB"
    if case != "rss-idle":
        notes += f" after {requests:,} requests ({growth / 1024:+,.1f} MiB vs idle)"
    if more:
        notes += f"; {more}"
    return Row(
        "memory",
        case,
        label,
        None,
        notes=notes,
        extra={"rss_kib": kib, "requests": requests, "growth_kib": growth, **(extra or {})},
    )


@dataclass(frozen=True)
class _Reading:
    """The daemon's RSS once it had served ``requests`` in all."""

    requests: int
    rss_kib: int


@dataclass(frozen=True)
class _Sidecar:
    """A running daemon child process and the addresses the load generator uses:
    ``targets`` for the plain runs, ``stream_targets`` for the streamed ones (each
    ``direct``, ``daemon-unix``, ``daemon-tcp``)."""

    process: trio.Process
    socket_path: Path
    targets: dict[str, dict[str, Any]]
    stream_targets: dict[str, dict[str, Any]]


async def _start_sidecar(
    nursery: trio.Nursery,
    setup: dict[str, str],
    log: IO[bytes],
    upstream_port: int,
    stream_port: int,
) -> _Sidecar:
    command = [sys.executable, "-m", "bench._sidecar_child", json.dumps(setup)]
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            check=False,
            cwd=_REPO_ROOT,
        )
    )
    if process.stdout is None:
        raise LoadgenError("the sidecar daemon has no stdout pipe")
    with trio.fail_after(_READY_TIMEOUT):
        line = await _read_line(process.stdout)
    if not line:
        raise LoadgenError("the sidecar daemon exited before it was ready (see its log)")
    address = json.loads(line)
    tcp = urlsplit(str(address["tcp_url"]))
    socket_path = Path(address["socket"])
    path = f"/{_SERVICE_PREFIX}0{_UPSTREAM_PATH}"
    targets: dict[str, dict[str, Any]] = {
        "direct": {"tcp": ("127.0.0.1", upstream_port), "path": _UPSTREAM_PATH},
        "daemon-unix": {"unix_path": socket_path, "path": path},
        "daemon-tcp": {"tcp": (tcp.hostname, tcp.port), "path": path},
    }
    stream_path = f"/{_STREAM_SERVICE}{_sse.PATH}"
    stream_targets: dict[str, dict[str, Any]] = {
        "direct": {"tcp": ("127.0.0.1", stream_port), "path": _sse.PATH},
        "daemon-unix": {"unix_path": socket_path, "path": stream_path},
        "daemon-tcp": {"tcp": (tcp.hostname, tcp.port), "path": stream_path},
    }
    return _Sidecar(process, socket_path, targets, stream_targets)


async def _stop_sidecar(process: trio.Process) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()
    with trio.move_on_after(_CHILD_STOP_TIMEOUT):
        await process.wait()
    if process.returncode is None:
        process.kill()


async def _measure_cache(
    profile: Profile, binary: Path, sidecar: _Sidecar, directory: Path
) -> list[Row]:
    """Each service's first request (a miss), then the same requests again (hits)."""
    requests = [
        f"GET /{name}{_UPSTREAM_PATH} HTTP/1.1\r\nHost: daemon\r\n\r\n".encode()
        for name in _services(profile)
    ]
    path = directory / "first-requests"
    write_requests(path, requests)
    rows: list[Row] = []
    results = {}
    for case in ("miss", "hit"):
        results[case] = await run_loadgen(
            binary,
            unix_path=sidecar.socket_path,
            conns=1,
            duration=60.0,  # ends when the requests run out
            warmup=0.0,
            requests_file=path,
        )
    for case, baseline in (("hit", None), ("miss", "hit")):
        result = results[case]
        notes = [f"{len(requests)} services, one request each"]
        if failure := failure_note(result):
            notes.append(failure)
        rows.append(
            Row(
                "sidecar cache",
                case,
                _CACHE_LABELS[case],
                _figures(result),
                baseline=baseline,
                notes="; ".join(notes),
                extra=_extra(result),
            )
        )
    return rows


async def _turns(
    profile: Profile,
    binary: Path,
    targets: dict[str, dict[str, Any]],
    conns: int,
    *,
    warmup: float,
    pids: Mapping[str, Sequence[int]],
    **options: Any,
) -> tuple[dict[str, list[LoadResult]], int, dict[str, float]]:
    """Every target once per round, in turn; how many responses the daemon sent; and the
    CPU time per response of the proxy processes (``pids``: each target's but
    ``direct``) on each target, in µs. A target may name its own ``duration``."""
    results: dict[str, list[LoadResult]] = {name: [] for name in targets}
    cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
    served = 0
    for _ in range(profile.http_rounds):
        for name, target in targets.items():
            proxies = pids.get(name, ())
            before = sum(map(cpu_seconds, proxies))
            run = {"duration": profile.http_duration, "warmup": warmup, **options, **target}
            result = await run_loadgen(binary, conns=conns, **run)
            cpu[name] += sum(map(cpu_seconds, proxies)) - before
            results[name].append(result)
            if name.startswith("daemon-"):
                served += result.completed
    per_request = {
        name: cpu[name] * 1e6 / max(1, sum(r.completed for r in results[name]))
        for name in targets
        if name != "direct"
    }
    return results, served, per_request


@dataclass(frozen=True)
class _Peers:
    """The named baselines: nginx, and LiteLLM or why it is not there."""

    nginx: Nginx
    litellm: LiteLLM | str
    chat_port: int  # the upstream of the chat completion rows


async def _measure_sidecar(
    profile: Profile, binary: Path, sidecar: _Sidecar, peers: _Peers, directory: Path
) -> tuple[list[Row], int]:
    """The plain runs at each concurrency, the peers among them as named baselines; the
    rows and the responses the daemon sent.

    Every run settles first, as the streamed ones do: these rows measure requests on
    keep-alive connections; what a new connection costs is the ``attest`` rows' subject.
    """
    rows: list[Row] = []
    served = 0
    chat = directory / "chat-completion.json"
    chat.write_bytes(_sse.COMPLETION_REQUEST_BODY)
    chat_path = {"path": _sse.PATH, "body_file": chat}
    targets = {
        **sidecar.targets,
        "nginx": {"tcp": ("127.0.0.1", peers.nginx.port), "path": _UPSTREAM_PATH},
        "direct-chat": {"tcp": ("127.0.0.1", peers.chat_port), **chat_path},
        "daemon-chat": {
            "unix_path": sidecar.socket_path,
            "path": f"/{_CHAT_SERVICE}{_sse.PATH}",
            "body_file": chat,
        },
    }
    daemon = [sidecar.process.pid]
    pids = {name: daemon for name in ("daemon-unix", "daemon-tcp", "daemon-chat")}
    pids["nginx"] = peers.nginx.pids()
    litellm = peers.litellm
    if isinstance(litellm, LiteLLM):
        # its answers take up to a second at 64 clients: a longer window, or none lands in it
        slow = {"duration": _LITELLM_RUN_FACTOR * profile.http_duration}
        targets["litellm"] = {"tcp": ("127.0.0.1", litellm.port), **chat_path, **slow}
        pids["litellm"] = litellm.pids()
    for conns in profile.http_concurrency:
        results, count, cpu = await _turns(
            profile,
            binary,
            targets,
            conns,
            warmup=profile.http_warmup,
            pids=pids,
            settle=True,
        )
        served += count
        scenario = f"sidecar c={conns}"
        direct = _sidecar_row(scenario, "direct", results["direct"], None)
        rows.append(direct)
        rows += [
            _sidecar_row(scenario, name, results[name], direct.figures, cpu_us=cpu[name])
            for name in ("daemon-unix", "daemon-tcp", "nginx")
        ]
        direct_chat = _sidecar_row(scenario, "direct-chat", results["direct-chat"], None)
        rows.append(direct_chat)
        for name in ("daemon-chat", "litellm"):
            if name in results:
                row = _sidecar_row(
                    scenario, name, results[name], direct_chat.figures, cpu_us=cpu[name]
                )
            else:  # not measured in this run: the row says why ("LiteLLM skipped: …")
                row = Row(scenario, name, _SIDECAR_LABELS[name], figures=None, notes=str(litellm))
            rows.append(row)
    return rows, served


async def _measure_stream(
    profile: Profile, binary: Path, sidecar: _Sidecar, directory: Path
) -> tuple[list[Row], int]:
    """The streamed runs at each concurrency; the rows and the responses the daemon sent.

    One request goes through the daemon first, so the streamed service's cache miss
    (cap mint + worker fetch) is not measured; and every run settles first (its warm-up
    starts once each of its new connections has had a response), so attesting 64 new
    connections (E1 or E2, several ms each, in the daemon's few worker threads) stays
    out of the measured window.
    """
    body_file = directory / "completion.json"
    body_file.write_bytes(_sse.REQUEST_BODY)
    first = directory / "first-stream-request"
    unix = sidecar.stream_targets["daemon-unix"]
    write_requests(
        first,
        [
            b"POST %s HTTP/1.1\r\nHost: daemon\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (unix["path"].encode("ascii"), len(_sse.REQUEST_BODY), _sse.REQUEST_BODY)
        ],
    )
    primed = await run_loadgen(
        binary,
        unix_path=unix["unix_path"],
        conns=1,
        duration=60.0,  # ends after the one request
        warmup=0.0,
        requests_file=first,
    )
    served = primed.completed
    rows: list[Row] = []
    for conns in profile.http_concurrency:
        results, count, _ = await _turns(
            profile,
            binary,
            sidecar.stream_targets,
            conns,
            warmup=profile.http_warmup,
            pids={name: [sidecar.process.pid] for name in ("daemon-unix", "daemon-tcp")},
            body_file=body_file,
            settle=True,
        )
        served += count
        rows += _stream_rows(f"sidecar stream c={conns}", results)
    return rows, served


async def _soak(profile: Profile, binary: Path, sidecar: _Sidecar, served: int) -> list[_Reading]:
    """Load in slices (8 clients, Unix socket) until the soak itself has served
    ``profile.soak_requests`` or ``profile.soak_seconds`` have passed, and at least two
    slices; one RSS reading after each slice (``served``: the count before the soak)."""
    pid = sidecar.process.pid
    slice_seconds = max(profile.soak_seconds / _SOAK_SLICES, _MIN_SLICE_SECONDS)
    readings: list[_Reading] = []
    deadline = trio.current_time() + profile.soak_seconds
    target = served + profile.soak_requests
    while len(readings) < 2 or served < target:
        left = deadline - trio.current_time()
        if len(readings) >= 2 and left < _MIN_SLICE_SECONDS:
            break
        result = await run_loadgen(
            binary,
            conns=_SOAK_CLIENTS,
            duration=max(min(slice_seconds, left), _MIN_SLICE_SECONDS),
            warmup=0.0,
            **sidecar.targets["daemon-unix"],
        )
        served += result.completed
        readings.append(_Reading(served, _rss_kib(pid)))
    return readings


def _memory_rows(
    profile: Profile, idle_kib: int, after: _Reading, soak: Sequence[_Reading], seconds: float
) -> list[Row]:
    """Idle, after the sidecar runs, at half of all requests served, at the end."""
    end = soak[-1]
    # the first reading at or past half of the final count: the second half starts there
    half = next(r for r in (after, *soak) if 2 * r.requests >= end.requests)
    second = end.requests - half.requests
    more = (
        f"{(end.rss_kib - half.rss_kib) / 1024:+,.1f} MiB over the second half "
        f"({second:,} requests)"
    )
    if end.requests - after.requests < profile.soak_requests:
        more += f"; the soak's {profile.soak_requests:,} requests not reached in {seconds:.1f} s"
    soak_label = f"daemon RSS after the soak ({_SOAK_CLIENTS} clients, {seconds:.1f} s)"
    return [
        _memory_row("rss-idle", _MEMORY_LABELS["rss-idle"], idle_kib, 0, idle_kib),
        _memory_row(
            "rss-after", _MEMORY_LABELS["rss-after"], after.rss_kib, after.requests, idle_kib
        ),
        _memory_row("rss-half", _MEMORY_LABELS["rss-half"], half.rss_kib, half.requests, idle_kib),
        _memory_row(
            "rss-soak",
            soak_label,
            end.rss_kib,
            end.requests,
            idle_kib,
            more=more,
            extra={
                "second_half_growth_kib": end.rss_kib - half.rss_kib,
                "second_half_requests": second,
                "soak_seconds": round(seconds, 1),
                "target_requests": profile.soak_requests,
            },
        ),
    ]


async def _measure_all(
    profile: Profile, binary: Path, sidecar: _Sidecar, peers: _Peers, directory: Path
) -> list[Row]:
    """Cache misses, plain and streamed runs, then the soak with its memory readings."""
    rows = await _measure_cache(profile, binary, sidecar, directory)
    served = 2 * profile.miss_services
    await trio.sleep(0.5)  # let start-up garbage settle before the idle reading
    pid = sidecar.process.pid
    idle_kib = _rss_kib(pid)
    plain, count = await _measure_sidecar(profile, binary, sidecar, peers, directory)
    served += count
    streamed, count = await _measure_stream(profile, binary, sidecar, directory)
    served += count
    rows += plain + streamed
    after = _Reading(served, _rss_kib(pid))
    started = trio.current_time()
    soak = await _soak(profile, binary, sidecar, served)
    rows += _memory_rows(profile, idle_kib, after, soak, trio.current_time() - started)
    return rows


async def _sidecar_rows(profile: Profile, build_dir: Path) -> list[Row]:
    try:
        importlib.import_module("agentkeys.daemon.run")
        importlib.import_module("agentkeys.devstack.up")
    except ImportError as exc:
        return _sidecar_not_yet(profile, f"{exc.name} is not importable")
    binary = await build_loadgen(build_dir)
    with tempfile.TemporaryDirectory(prefix="agentkeys-bench-") as tmp:
        private = Path(tmp)
        os.chmod(private, 0o700)
        log_path = private / "daemon.log"
        try:
            async with (
                trio.open_nursery() as nursery,
                running_dev_stack(private) as stack,
            ):
                if stack is None:
                    return _sidecar_not_yet(profile, "the dev stack has no broker and worker")
                host = "{}:{}".format(*stack.worker_address)
                for name in [*_services(profile), _STREAM_SERVICE, _CHAT_SERVICE]:
                    store = worker_request(
                        stack.signing, CapOp.STORE, host=host, service=name, secret=_SECRET
                    )
                    await send_one(stack.worker_url, store)
                ports = []
                for handler in (raw_handler, _sse.sse_handler, _sse.completion_handler):
                    listeners = await nursery.start(
                        partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
                    )
                    ports.append(listeners[0].socket.getsockname()[1])
                port, stream_port, chat_port = ports
                secrets_dir = private / "secrets"
                write_private(secrets_dir / "k10.pem", key_pem(stack.signing.k10))
                write_private(
                    private / "policy.toml",
                    sidecar_policy(
                        f"http://127.0.0.1:{port}",
                        str(binary),
                        _services(profile),
                        stream_upstream=f"http://127.0.0.1:{stream_port}",
                        chat_upstream=f"http://127.0.0.1:{chat_port}",
                    ),
                )
                setup = {
                    "socket": os.fspath(private / "run" / "agentkeys-proxy.sock"),
                    "policy": os.fspath(private / "policy.toml"),
                    "audit": os.fspath(private / "state" / "daemon-audit.log"),
                    "broker_url": stack.broker_url,
                    "worker_url": stack.worker_url,
                    "operator": stack.signing.operator,
                    "key_path": os.fspath(secrets_dir / "k10.pem"),
                    "rpc_url": stack.rpc_url,
                    "deployment": os.fspath(stack.deployment_record),
                }
                with log_path.open("wb") as log:
                    sidecar = await _start_sidecar(nursery, setup, log, port, stream_port)
                    try:
                        async with (
                            start_nginx(
                                f"http://127.0.0.1:{port}",
                                authorization=f"Bearer {_SECRET.decode()}",
                            ) as nginx,
                            _litellm_peer(profile, chat_port, private) as litellm,
                        ):
                            peers = _Peers(nginx, litellm, chat_port)
                            rows = await _measure_all(profile, binary, sidecar, peers, private)
                    finally:
                        await _stop_sidecar(sidecar.process)
                nursery.cancel_scope.cancel()
        except BaseException:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            if tail:
                print(f"bench: sidecar daemon log (tail):\n{tail}", file=sys.stderr)
            raise
    return rows


@asynccontextmanager
async def _litellm_peer(
    profile: Profile, upstream_port: int, run_dir: Path
) -> AsyncIterator[LiteLLM | str]:
    """The LiteLLM proxy in front of the chat upstream, or why it is not measured."""
    if not profile.install_litellm and not litellm_installed():
        yield (
            f"LiteLLM skipped: its venv ({VENV}) is not built and the {profile.name} profile "
            "does not build it (`make bench` does)"
        )
        return
    upstream = f"http://127.0.0.1:{upstream_port}"
    async with AsyncExitStack() as stack:
        try:
            executable = await litellm_executable()
            litellm = await stack.enter_async_context(
                start_litellm(executable, upstream, api_key=_SECRET.decode(), run_dir=run_dir)
            )
        except (LiteLLMUnavailable, ComponentStartFailed) as exc:
            yield f"LiteLLM skipped: {exc.reason}"
            return
        yield litellm


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Policy and cache scaling, then the sidecar overhead and memory (one daemon process)."""
    return (
        _policy_rows(profile) + await _cache_rows(profile) + await _sidecar_rows(profile, build_dir)
    )
