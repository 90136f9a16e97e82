"""nginx as a reverse proxy, the peer the sidecar is measured against (docs/performance.md).

``start_nginx`` runs Debian's ``/usr/sbin/nginx`` in the foreground (``daemon off``) with a
generated configuration in a fresh private directory: one server on 127.0.0.1 at a free
port that ``proxy_pass``-es every request to ``upstream`` through a keep-alive upstream
pool, setting ``Authorization`` to a fixed value (what a sidecar injects), with the access
log on. It yields an ``Nginx`` once the port accepts connections, and is stopped (SIGTERM
to its process group, "fast shutdown") and its directory removed when the block is left,
however it is left.

Run by root, the whole server (master and workers) runs as the unprivileged ``nobody``
user, owning its directory; otherwise as the caller. The ``Authorization`` value reaches
only the configuration file (0600), never a command line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import trio

from agentkeys.devstack._binaries import nginx_binary
from agentkeys.devstack._ports import LOOPBACK, pick_port
from agentkeys.devstack._process import LaunchPlan, RunAs, group_members, launch
from agentkeys.devstack.errors import DevstackError

_GRACE = 10.0
_ATTEMPTS = 3
_KEEPALIVE = 64  # idle upstream connections each worker keeps open
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class Nginx:
    """A running nginx reverse proxy.

    Attributes:
        port: the TCP port on 127.0.0.1 it listens on.
        access_log: its access log (one line per proxied request).
        log_path: its error log and output.
    """

    port: int
    access_log: Path
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.port}"

    def pids(self) -> list[int]:
        """Pids of its live processes (master and workers), for CPU accounting."""
        return group_members(self._process.pid)


def _unprivileged() -> RunAs | None:
    """The identity to run nginx under: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        raise DevstackError("running as root, and no nobody user exists") from None
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


@contextmanager
def _server_home(run_as: RunAs | None) -> Iterator[Path]:
    """A private directory (0700, the server's owner) for config, logs and temp files."""
    home = Path(tempfile.mkdtemp(prefix="ak-nginx-", dir="/tmp"))
    try:
        for name in _TEMP_PATHS:
            (home / name).mkdir(mode=0o700)
        if run_as is not None:
            for path in (home, *(home / name for name in _TEMP_PATHS)):
                os.chown(path, run_as.uid, run_as.gid)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _upstream_address(upstream: str) -> str:
    parts = urlsplit(upstream)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise DevstackError(f"nginx upstream must be http://host:port, not {upstream!r}")
    if parts.path not in ("", "/") or parts.query:
        raise DevstackError(f"nginx upstream takes no path or query: {upstream!r}")
    return f"{parts.hostname}:{parts.port}"


def _quoted(value: str) -> str:
    if any(c in value for c in '"\\;\r\n${}') or not value.isprintable():
        raise DevstackError("the Authorization value holds a character nginx would interpret")
    return f'"{value}"'


def nginx_config(home: Path, port: int, upstream: str, authorization: str, workers: int) -> str:
    """The configuration ``start_nginx`` writes (exposed for tests and the docs)."""
    temp = "\n".join(f"    {name}_temp_path {home / name};" for name in _TEMP_PATHS)
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {home / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log {home / "access.log"};
{temp}
    upstream agentkeys_peer {{
        server {_upstream_address(upstream)};
        keepalive {_KEEPALIVE};
    }}
    server {{
        listen {LOOPBACK}:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://agentkeys_peer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization {_quoted(authorization)};
            proxy_buffering off;
        }}
    }}
}}
"""


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(LOOPBACK, port)
    except OSError:
        return False
    await stream.aclose()
    return True


@asynccontextmanager
async def start_nginx(
    upstream: str,
    *,
    authorization: str,
    workers: int = 1,
    run_dir: Path | None = None,
    startup_timeout: float = 15.0,
) -> AsyncIterator[Nginx]:
    """Run nginx proxying to ``upstream`` (``http://host:port``) until the block ends.

    Args:
        authorization: the ``Authorization`` header value set on every proxied request.
        workers: ``worker_processes`` (1: one core, as the sidecar daemon's one process).
        run_dir: kept copy of the error log; None leaves it in the removed directory.
        startup_timeout: seconds to wait for the port to accept connections.

    Raises:
        BinaryNotFound: nginx is not installed.
        DevstackError: an upstream that is not ``http://host:port``, or a header value
            nginx would interpret.
        ComponentStartFailed: nginx exited or was not ready in time.
    """
    binary = nginx_binary()
    run_as = _unprivileged()
    with _server_home(run_as) as home:
        log_path = (run_dir / "nginx.log") if run_dir is not None else home / "nginx.log"
        config = home / "nginx.conf"

        def plan() -> LaunchPlan[int]:
            port = pick_port()
            text = nginx_config(home, port, upstream, authorization, workers)
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                if run_as is not None:
                    os.fchown(fd, run_as.uid, run_as.gid)
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            argv = (str(binary), "-p", str(home), "-e", "stderr", "-c", str(config))
            return LaunchPlan(ports=port, argv=argv)

        async with launch(
            "nginx",
            plan=plan,
            ready=_accepts,
            log_path=log_path,
            startup_timeout=startup_timeout,
            grace=_GRACE,
            attempts=_ATTEMPTS,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"},
            cwd=home,
            run_as=run_as,
            stop_signal=signal.SIGTERM,
        ) as (port, process):
            yield Nginx(
                port=port, access_log=home / "access.log", log_path=log_path, _process=process
            )
