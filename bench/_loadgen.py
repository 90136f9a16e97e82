"""Build and drive ``loadgen.c``, the C load generator (see the comment at its top).

The binary is compiled with ``gcc -O2`` on first use into a build directory
(default ``bench/results/bin``, gitignored), named after the sha256 of the source
so an edited source is rebuilt and an unchanged one is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from bench._errors import BenchError, LoadgenError

__all__ = ["LoadResult", "LoadgenError", "build_loadgen", "run_loadgen", "write_requests"]

SOURCE = Path(__file__).with_name("loadgen.c")
_BUILD_TIMEOUT = 60.0
_RUN_SLACK = 15.0
_SETTLE_CAP = 10.0  # loadgen.c SETTLE_CAP_NS


@dataclass(frozen=True)
class LoadResult:
    """One load-generator run, as it reported it (latencies in microseconds).

    ``requests`` were completed inside the measured window (they make ``rps`` and the
    percentiles); ``completed`` counts every response, warm-up and drain included.
    ``ttfb_*`` are percentiles of the time to the first byte of the response *body*
    (the first data byte of a chunked body; an empty body's end) of the same measured
    requests; ``body_bytes`` and ``chunks`` (non-empty chunks of chunked bodies) are
    summed over them. ``settle_s``: with ``settle``, how long until every connection had
    its first response. The defaults are for results built by hand
    (:func:`bench.http.combine`).
    """

    conns: int
    duration_s: float
    requests: int
    completed: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    errors: int
    non_2xx: int
    reconnects: int
    timeouts: int
    exhausted: bool = False
    first_bad_status: int = 0
    ttfb_p50_us: float = 0.0
    ttfb_p90_us: float = 0.0
    ttfb_p99_us: float = 0.0
    body_bytes: int = 0
    chunks: int = 0
    settle_s: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        """Parse the JSON line the generator prints.

        Raises:
            LoadgenError: not the expected object.
        """
        try:
            data = json.loads(text)
            return cls(
                conns=int(data["conns"]),
                duration_s=float(data["duration_s"]),
                requests=int(data["requests"]),
                completed=int(data["completed"]),
                rps=float(data["rps"]),
                p50_us=float(data["p50_us"]),
                p90_us=float(data["p90_us"]),
                p99_us=float(data["p99_us"]),
                max_us=float(data["max_us"]),
                errors=int(data["errors"]),
                non_2xx=int(data["non_2xx"]),
                reconnects=int(data["reconnects"]),
                timeouts=int(data["timeouts"]),
                exhausted=bool(data.get("exhausted", False)),
                first_bad_status=int(data.get("first_bad_status", 0)),
                ttfb_p50_us=float(data["ttfb_p50_us"]),
                ttfb_p90_us=float(data["ttfb_p90_us"]),
                ttfb_p99_us=float(data["ttfb_p99_us"]),
                body_bytes=int(data["body_bytes"]),
                chunks=int(data["chunks"]),
                settle_s=float(data["settle_s"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadgenError(f"unexpected load generator output: {text[:200]!r}") from exc


async def build_loadgen(build_dir: Path) -> Path:
    """The path of a compiled load generator, compiling it if needed.

    Raises:
        LoadgenError: gcc is missing or the build failed.
    """
    source = SOURCE.read_bytes()
    binary = build_dir / f"loadgen-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise LoadgenError("gcc is needed to build bench/loadgen.c (make setup installs it)")
    await trio.Path(build_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        partial = Path(tmp) / "loadgen"
        with trio.fail_after(_BUILD_TIMEOUT):
            result = await trio.run_process(
                [gcc, "-O2", "-Wall", "-o", os.fspath(partial), os.fspath(SOURCE)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if result.returncode != 0:
            raise LoadgenError(f"gcc failed: {result.stderr.decode(errors='replace')[-500:]}")
        os.replace(partial, binary)
    return binary


async def run_loadgen(
    binary: Path,
    *,
    unix_path: Path | None = None,
    tcp: tuple[str, int] | None = None,
    conns: int,
    duration: float,
    warmup: float,
    reconnect: bool = False,
    path: str = "/bench",
    requests_file: Path | None = None,
    body_file: Path | None = None,
    settle: bool = False,
) -> LoadResult:
    """Run one closed-loop load test and return its figures.

    Args:
        requests_file: pre-built requests, each sent once (see :func:`write_requests`);
            without it every request is ``GET path``.
        body_file: every request is ``POST path`` with this JSON body (1–8,192 bytes)
            instead.
        settle: start the warm-up only once every connection has had its first
            response (at most 10 s after the start): per-connection work such as
            caller attestation stays out of the measured window.

    Raises:
        LoadgenError: the generator failed or printed no figures.
        trio.TooSlowError: it overran its duration by more than a safety margin.
    """
    args = [
        os.fspath(binary),
        "--conns",
        str(conns),
        "--duration",
        f"{duration:.3f}",
        "--warmup",
        f"{warmup:.3f}",
        "--path",
        path,
    ]
    if unix_path is not None:
        args += ["--unix", os.fspath(unix_path)]
    elif tcp is not None:
        args += ["--tcp", f"{tcp[0]}:{tcp[1]}"]
    else:
        raise LoadgenError("give a Unix socket path or a TCP address")
    if reconnect:
        args.append("--reconnect")
    if requests_file is not None:
        args += ["--requests", os.fspath(requests_file)]
    if body_file is not None:
        args += ["--body-file", os.fspath(body_file)]
    if settle:
        args.append("--settle")
    with trio.fail_after(duration + warmup + _RUN_SLACK + (_SETTLE_CAP if settle else 0.0)):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")[-500:]
        raise LoadgenError(f"load generator exited with {result.returncode}: {stderr}")
    return LoadResult.from_json(result.stdout.decode(errors="replace"))


def write_requests(path: Path, requests: Sequence[bytes]) -> None:
    """Write raw HTTP/1.1 requests for ``--requests``: records ``<length>\\n<bytes>``."""
    with path.open("wb") as handle:
        for request in requests:
            handle.write(b"%d\n" % len(request))
            handle.write(request)


async def send_one(url: str, request: bytes) -> None:
    """Send one pre-built request with httpx; fail with the answer if it is refused.

    Raises:
        BenchError: the server did not answer 200.
    """
    head, body = request.split(b"\r\n\r\n", 1)
    lines = head.decode("ascii").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("Content-Length", None)
    headers.pop("Host", None)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        response = await http.post(url + path, content=body, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"{url}{path} refused the benchmark request: {response.text[:300]}")
