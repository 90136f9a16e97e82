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
  the upstream client, the audit row. The notes give the added p50 and p99.
* ``sidecar cache``: one request to each of ``profile.miss_services`` services
  holding a stored credential: first as cache misses (cap mint at the broker +
  worker fetch: KEK, S3), then again as hits (the baseline).
* ``memory``: the daemon's RSS idle, after the sidecar runs and after a soak
  (growth should stay flat).

Each part reports "not yet" rows when the module it needs is not importable, so
the harness runs at every stage of the tree.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.cap import CapOp
from bench._errors import LoadgenError
from bench._loadgen import LoadResult, build_loadgen, run_loadgen, write_requests
from bench._micro import measure_interleaved
from bench._model import Figures, Row, not_yet
from bench._profile import Profile
from bench._servers import raw_handler
from bench._stack import issue_j1, running_dev_stack, send_one, worker_request
from bench.http import combine, failure_note

__all__ = ["POLICY_SIZES", "run", "sidecar_policy"]

POLICY_SIZES = (10, 1_000, 10_000)
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


_SIDECAR_BASELINES: dict[str, str | None] = {
    "direct": None,
    "daemon-unix": "direct",
    "daemon-tcp": "direct",
}
_SIDECAR_LABELS = {
    "direct": "client → upstream directly (TCP)",
    "daemon-unix": "client → daemon (Unix, E1) → upstream",
    "daemon-tcp": "client → daemon (TCP, E2) → upstream",
}
_CACHE_LABELS = {
    "hit": "first request per service again (cached)",
    "miss": "first request per service (cap mint + worker fetch)",
}
_SERVICE_PREFIX = "bench"
_UPSTREAM_PATH = "/v1/models"
_SOAK_CLIENTS = 8
_REPO_ROOT = os.fspath(Path(__file__).resolve().parent.parent)
_READY_TIMEOUT = 60.0
_CHILD_STOP_TIMEOUT = 15.0
_SECRET = b"sk-bench-upstream-" + b"1" * 32


def _services(profile: Profile) -> list[str]:
    return [f"{_SERVICE_PREFIX}{i}" for i in range(profile.miss_services)]


def _sidecar_not_yet(profile: Profile, why: str) -> list[Row]:
    rows = [
        not_yet(f"sidecar c={n}", "daemon-unix", _SIDECAR_LABELS["daemon-unix"], why)
        for n in profile.http_concurrency
    ]
    rows.append(not_yet("sidecar cache", "miss", _CACHE_LABELS["miss"], why))
    rows += [
        not_yet("memory", "rss-idle", "daemon RSS idle", why),
        not_yet("memory", "rss-after", "daemon RSS after the sidecar runs", why),
        not_yet("memory", "rss-soak", "daemon RSS after the soak", why),
    ]
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


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def sidecar_policy(upstream: str, exe: str, services: Sequence[str]) -> str:
    """The daemon policy of the sidecar runs: the load generator may GET one path of each
    service, all served by ``upstream``."""
    names = ", ".join(f'"{name}"' for name in services)
    lines = [
        "[[caller]]",
        'name = "bench"',
        f"uid = {os.getuid()}",
        f'exe = "{exe}"',
        f"services = [{names}]",
        "",
    ]
    for name in services:
        lines += [
            f"[service.{name}]",
            f'upstream = "{upstream}"',
            f'allow = ["GET {_UPSTREAM_PATH}"]',
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


def _sidecar_row(
    scenario: str, case: str, rounds: Sequence[LoadResult], direct: Figures | None
) -> Row:
    result = combine(rounds)
    notes = []
    if direct is not None:
        notes.append(
            f"adds {result.p50_us - direct.p50_us:,.0f} µs p50, "
            f"{result.p99_us - direct.p99_us:,.0f} µs p99"
        )
    if failure := failure_note(result):
        notes.append(failure)
    return Row(
        scenario,
        case,
        _SIDECAR_LABELS[case],
        _figures(result),
        baseline=_SIDECAR_BASELINES[case],
        notes="; ".join(notes),
        extra={**_extra(result), "rounds": len(rounds)},
    )


def _memory_row(case: str, label: str, kib: int, requests: int, idle_kib: int) -> Row:
    growth = kib - idle_kib
    notes = f"RSS {kib / 1024:,.1f} MiB"
    if case != "rss-idle":
        notes += f" after {requests:,} requests ({growth / 1024:+,.1f} MiB vs idle)"
    return Row(
        "memory",
        case,
        label,
        None,
        notes=notes,
        extra={"rss_kib": kib, "requests": requests, "growth_kib": growth},
    )


@dataclass(frozen=True)
class _Sidecar:
    """A running daemon child process and the addresses the load generator uses."""

    process: trio.Process
    socket_path: Path
    targets: dict[str, dict[str, Any]]


async def _start_sidecar(
    nursery: trio.Nursery, setup: dict[str, str], log: IO[bytes], upstream_port: int
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
    path = f"/{_SERVICE_PREFIX}0{_UPSTREAM_PATH}"
    targets: dict[str, dict[str, Any]] = {
        "direct": {"tcp": ("127.0.0.1", upstream_port), "path": _UPSTREAM_PATH},
        "daemon-unix": {"unix_path": Path(address["socket"]), "path": path},
        "daemon-tcp": {"tcp": (tcp.hostname, tcp.port), "path": path},
    }
    return _Sidecar(process=process, socket_path=Path(address["socket"]), targets=targets)


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


async def _measure_sidecar(profile: Profile, binary: Path, sidecar: _Sidecar) -> list[Row]:
    await trio.sleep(0.5)  # let start-up garbage settle before the idle reading
    pid = sidecar.process.pid
    idle_kib = _rss_kib(pid)
    rows: list[Row] = []
    served = 0
    for conns in profile.http_concurrency:
        results: dict[str, list[LoadResult]] = {name: [] for name in sidecar.targets}
        for _ in range(profile.http_rounds):
            for name, target in sidecar.targets.items():
                result = await run_loadgen(
                    binary,
                    conns=conns,
                    duration=profile.http_duration,
                    warmup=profile.http_warmup,
                    **target,
                )
                results[name].append(result)
                if name != "direct":
                    served += result.completed
        scenario = f"sidecar c={conns}"
        direct = _sidecar_row(scenario, "direct", results["direct"], None)
        rows.append(direct)
        rows += [
            _sidecar_row(scenario, name, results[name], direct.figures)
            for name in ("daemon-unix", "daemon-tcp")
        ]
    after_kib = _rss_kib(pid)
    soak = await run_loadgen(
        binary,
        conns=_SOAK_CLIENTS,
        duration=profile.soak_seconds,
        warmup=0.0,
        **sidecar.targets["daemon-unix"],
    )
    soak_kib = _rss_kib(pid)
    rows.append(_memory_row("rss-idle", "daemon RSS idle", idle_kib, 0, idle_kib))
    rows.append(
        _memory_row("rss-after", "daemon RSS after the sidecar runs", after_kib, served, idle_kib)
    )
    soak_label = f"daemon RSS after a {profile.soak_seconds:g} s soak (8 clients)"
    rows.append(_memory_row("rss-soak", soak_label, soak_kib, served + soak.completed, idle_kib))
    return rows


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


async def _sidecar_rows(profile: Profile, build_dir: Path) -> list[Row]:
    try:
        importlib.import_module("agentkeys.daemon.run")
        importlib.import_module("agentkeys.devup")
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
                for name in _services(profile):
                    store = worker_request(
                        stack.signing, CapOp.STORE, host=host, service=name, secret=_SECRET
                    )
                    await send_one(stack.worker_url, store)
                listeners = await nursery.start(
                    partial(trio.serve_tcp, raw_handler, 0, host="127.0.0.1")
                )
                port = listeners[0].socket.getsockname()[1]
                upstream = f"http://127.0.0.1:{port}"
                secrets_dir = private / "secrets"
                _write_private(secrets_dir / "session", await issue_j1(stack))
                _write_private(secrets_dir / "k10.pem", _key_pem(stack.signing.k10))
                _write_private(
                    private / "policy.toml",
                    sidecar_policy(upstream, str(binary), _services(profile)),
                )
                setup = {
                    "socket": os.fspath(private / "run" / "agentkeys-proxy.sock"),
                    "policy": os.fspath(private / "policy.toml"),
                    "audit": os.fspath(private / "state" / "daemon-audit.log"),
                    "broker_url": stack.broker_url,
                    "session_file": os.fspath(secrets_dir / "session"),
                    "worker_url": stack.worker_url,
                    "operator": stack.signing.operator,
                    "key_path": os.fspath(secrets_dir / "k10.pem"),
                    "rpc_url": stack.rpc_url,
                    "deployment": os.fspath(stack.deployment_record),
                }
                with log_path.open("wb") as log:
                    sidecar = await _start_sidecar(nursery, setup, log, port)
                    try:
                        rows = await _measure_cache(profile, binary, sidecar, private)
                        rows += await _measure_sidecar(profile, binary, sidecar)
                    finally:
                        await _stop_sidecar(sidecar.process)
                nursery.cancel_scope.cancel()
        except BaseException:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            if tail:
                print(f"bench: sidecar daemon log (tail):\n{tail}", file=sys.stderr)
            raise
    return rows


async def run(profile: Profile, *, build_dir: Path) -> list[Row]:
    """Policy scaling, then the sidecar overhead and memory (one daemon process)."""
    return _policy_rows(profile) + await _sidecar_rows(profile, build_dir)
