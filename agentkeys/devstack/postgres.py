"""PostgreSQL, the shared broker state store for replicas (SPEC section 10, docs/devstack.md).

``start_postgres`` runs Debian's PostgreSQL (``/usr/lib/postgresql/<major>/bin``): ``initdb``
into a fresh private directory, then ``postgres`` listening on a Unix socket in a 0700
directory and on 127.0.0.1 at a free port, and yields a ``Postgres`` once the server reports
itself ready. It is stopped ("fast shutdown", SIGINT) and its directory removed when the
block is left, however it is left.

PostgreSQL refuses to run as root. Run by root (as CI does), the launcher starts ``initdb``
and ``postgres`` as the unprivileged ``postgres`` system user the Debian package creates
(``nobody`` where there is none), owning the data directory; otherwise as the caller.

One superuser role ``agentkeys`` with a random password (SCRAM-SHA-256 for every
connection, socket and TCP). The password never reaches a command line: ``initdb`` reads it
from a 0600 file that is deleted once it has run, clients find it in
``Postgres.password_file`` (0600, in ``run_dir``). Durability is traded for speed
(``fsync=off``, ``synchronous_commit=off``): a development server, never production data.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import trio
from psycopg import sql

from agentkeys._files import write_private
from agentkeys.devstack._binaries import postgres_bin_dir
from agentkeys.devstack._ports import LOOPBACK, pick_port
from agentkeys.devstack._process import LaunchPlan, RunAs, launch, log_tail
from agentkeys.devstack._rundir import run_directory
from agentkeys.devstack.errors import ComponentStartFailed, DevstackError

SUPERUSER = "agentkeys"
_GRACE = 10.0
_ATTEMPTS = 3
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
_SERVER_SETTINGS = (
    "listen_addresses=" + LOOPBACK,
    "unix_socket_permissions=0700",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=32MB",
    "logging_collector=off",
    "log_min_messages=warning",
)


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server.

    Attributes:
        port: the TCP port on 127.0.0.1 (also names the Unix socket in ``socket_dir``).
        socket_dir: the 0700 directory holding the server's Unix socket.
        user: the superuser role.
        password: its password (never printed; also in ``password_file``).
        password_file: the password in a 0600 file, for ``[state] password_file``.
        log_path: the server's (and initdb's) output.
    """

    port: int
    socket_dir: Path
    user: str
    password: str = field(repr=False)
    password_file: Path
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    @property
    def pid(self) -> int:
        """Process id of the launched program (the leader of its process group)."""
        return self._process.pid

    def dsn(self, database: str = "postgres", *, tcp: bool = False) -> str:
        """A libpq connection string without the password (over the socket unless ``tcp``)."""
        host = LOOPBACK if tcp else str(self.socket_dir)
        return f"host={host} port={self.port} user={self.user} dbname={database}"

    async def create_database(self, name: str) -> str:
        """Create database ``name`` (lowercase identifier); returns its :meth:`dsn`.

        Raises:
            DevstackError: an invalid name, or PostgreSQL refused (e.g. it exists).
        """
        await self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)), name)
        return self.dsn(name)

    async def drop_database(self, name: str) -> None:
        """Drop database ``name`` (closing its connections first)."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        await self._admin(statement, name)

    async def _admin(self, statement: sql.Composed, name: str) -> None:
        if _DATABASE_NAME.fullmatch(name) is None:
            raise DevstackError(f"{name!r} is not a database name this launcher creates")

        def run() -> None:
            with psycopg.connect(self.dsn(), password=self.password, autocommit=True) as conn:
                conn.execute(statement)

        try:
            await trio.to_thread.run_sync(run)
        except psycopg.Error as exc:
            raise DevstackError(f"PostgreSQL refused {name!r}: {type(exc).__name__}") from exc


def _unprivileged() -> RunAs | None:
    """The identity to run PostgreSQL under: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(uid=entry.pw_uid, gid=entry.pw_gid)
    raise DevstackError("running as root, and neither a postgres nor a nobody user exists")


@contextmanager
def _server_home(run_as: RunAs | None) -> Iterator[Path]:
    """A short private directory (0700, the server's owner) for data and socket; removed."""
    home = Path(tempfile.mkdtemp(prefix="ak-pg-", dir="/tmp"))
    try:
        if run_as is not None:
            os.chown(home, run_as.uid, run_as.gid)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _owned_dir(path: Path, run_as: RunAs | None) -> Path:
    path.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    return path


def _environment(home: Path) -> dict[str, str]:
    """A minimal environment: none of the caller's variables (secrets) reach the server."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "HOME": str(home)}


async def _initdb(
    bin_dir: Path, data: Path, home: Path, password: str, run_as: RunAs | None, log_path: Path
) -> None:
    pwfile = home / "initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if run_as is not None:
            os.fchown(fd, run_as.uid, run_as.gid)
        os.write(fd, password.encode() + b"\n")
    finally:
        os.close(fd)
    argv = [
        str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
        "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
        "--no-instructions",
    ]  # fmt: skip
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    offset = os.fstat(log).st_size
    try:
        result = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False,
            env=_environment(home), cwd=home,
            user=run_as.uid if run_as is not None else None,
            group=run_as.gid if run_as is not None else None,
            extra_groups=[] if run_as is not None else None,
        )  # fmt: skip
    finally:
        os.close(log)
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ComponentStartFailed(
            f"initdb exited with status {result.returncode} (log {log_path}):\n"
            f"{log_tail(log_path, start=offset)}"
        )


def _ready(data: Path, port: int) -> bool:
    """Whether ``postmaster.pid`` says the server on ``port`` accepts connections.

    Lines of that file: pid, data dir, start time, port, socket dir, listen address,
    shared memory key, status (``ready`` once connections are accepted).
    """
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[3].strip() == str(port) and lines[7].strip() == "ready"


@asynccontextmanager
async def start_postgres(
    *, run_dir: Path | None = None, startup_timeout: float = 30.0
) -> AsyncIterator[Postgres]:
    """Run a fresh PostgreSQL until the block ends (module docstring).

    Args:
        run_dir: where ``postgres.log`` and ``postgres-password`` go; None uses a temporary
            directory removed afterwards. The data directory and socket always live in a
            private ``/tmp/ak-pg-*`` directory removed on stop.
        startup_timeout: seconds to wait for the server to be ready.

    Raises:
        BinaryNotFound: PostgreSQL is not installed.
        ComponentStartFailed: initdb failed, or the server exited or was not ready in time.
    """
    bin_dir = postgres_bin_dir()
    run_as = _unprivileged()
    password = secrets.token_urlsafe(24)
    with run_directory(run_dir, "postgres") as directory, _server_home(run_as) as home:
        log_path = directory / "postgres.log"
        password_file = directory / "postgres-password"
        write_private(password_file, password)
        data = home / "data"
        sockets = _owned_dir(home / "sock", run_as)
        await _initdb(bin_dir, data, home, password, run_as, log_path)

        def plan() -> LaunchPlan[int]:
            port = pick_port()
            argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets)]
            for setting in _SERVER_SETTINGS:
                argv += ["-c", setting]
            return LaunchPlan(ports=port, argv=tuple(argv))

        async def ready(port: int) -> bool:
            return _ready(data, port)

        async with launch(
            "postgres",
            plan=plan,
            ready=ready,
            log_path=log_path,
            startup_timeout=startup_timeout,
            grace=_GRACE,
            attempts=_ATTEMPTS,
            env=_environment(home),
            cwd=home,
            run_as=run_as,
            stop_signal=signal.SIGINT,
        ) as (port, process):
            yield Postgres(
                port=port,
                socket_dir=sockets,
                user=SUPERUSER,
                password=password,
                password_file=password_file,
                log_path=log_path,
                _process=process,
            )
