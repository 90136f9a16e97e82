"""E1 and E2 through ``serve_attested``: real client processes on one Unix socket and
on loopback TCP, a Quart-Trio app reading the attested caller.

The HTTP/1.1 behaviour of the server itself is in tests/http1/test_server.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from agentkeys.http1 import ServeConfig, serve_attested
from attest.caller import CallerIdentity, Transport
from attest.errors import CallerUnidentified, InsecurePath
from attest.serve import (
    CallerAttestor,
    caller_from_scope,
    create_loopback_listener,
    create_unix_listener,
)

CLIENT = Path(__file__).with_name("uds_client.py")
NOBODY = 65534
PYTHON_EXE = os.path.realpath(sys.executable)
CURL = shutil.which("curl") or "/usr/bin/curl"
CURL_EXE = os.path.realpath(CURL)


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _app() -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["started"] = False

    @app.before_serving
    async def startup() -> None:
        app.config["started"] = True

    @app.route("/whoami")
    async def whoami() -> dict[str, object]:
        caller = caller_from_scope(request.scope)
        assert caller.process is not None
        p = caller.process
        return {
            "transport": caller.transport.value,
            "pid": p.pid,
            "uid": p.uid,
            "gid": p.gid,
            "exe": p.exe_path,
            "sha256": p.exe_sha256,
            "pidfd": p.pidfd_checked,
            "conn": id(caller),
            "started": app.config["started"],
        }

    return app


@pytest.fixture
async def server() -> AsyncIterator[Path]:
    # The dropped-uid client must reach the socket, and pytest's tmp_path lives
    # under a 0700 directory: use a directory of our own under /tmp and widen
    # it (and the socket) in this test only.
    top = Path(tempfile.mkdtemp(prefix="agentkeys-e1-"))
    try:
        path = top / "run" / "agentkeys-proxy.sock"
        sock = create_unix_listener(path)
        os.chmod(top, 0o711)  # noqa: S103 - test only: let uid 65534 traverse
        os.chmod(path.parent, 0o711)  # noqa: S103
        os.chmod(path, 0o666)  # noqa: S103 - test only: let uid 65534 connect
        config = ServeConfig(graceful_timeout=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_attested, _app(), [sock], config=config))
            yield path
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(top)


async def test_listener_is_0600_in_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "sockdir" / "s.sock"
    sock = create_unix_listener(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        sock.close()
    # A stale socket is replaced; a regular file is not.
    create_unix_listener(path).close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(InsecurePath):
        create_unix_listener(path)


async def test_listener_refuses_wide_directory(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    os.chmod(wide, 0o755)  # noqa: S103 - the insecure case under test
    with pytest.raises(InsecurePath, match="0700"):
        create_unix_listener(wide / "s.sock")


async def _run(*argv: str) -> dict[str, object]:
    result = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True)
    assert result.stdout.strip(), result.stderr.decode()[-2000:]
    out: dict[str, object] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return out


async def test_each_process_is_seen_per_request_on_keep_alive(server: Path) -> None:
    python_exe, curl = PYTHON_EXE, CURL

    async def curl_client() -> dict[str, object]:
        # curl reuses one connection for several URLs on one command line.
        proc = await trio.run_process(
            [curl, "-sS", "--unix-socket", str(server)] + ["http://agentkeys/whoami"] * 3,
            capture_stdout=True,
        )
        decoder = json.JSONDecoder()
        text, answers = proc.stdout.decode(), []
        while text.strip():
            obj, end = decoder.raw_decode(text.strip())
            answers.append(obj)
            text = text.strip()[end:]
        return {"pid": None, "uid": 0, "answers": answers}

    results: dict[str, dict[str, object]] = {}

    async def run(name: str, coro_fn, *args) -> None:  # type: ignore[no-untyped-def]
        results[name] = await coro_fn(*args)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "root", _run, sys.executable, str(CLIENT), str(server), "3")
        nursery.start_soon(
            run,
            "nobody",
            _run,
            sys.executable,
            str(CLIENT),
            str(server),
            "3",
            "--drop-to",
            str(NOBODY),
        )
        nursery.start_soon(run, "curl", curl_client)

    expected = {
        "root": (0, python_exe),
        "nobody": (NOBODY, python_exe),
        "curl": (0, CURL_EXE),
    }
    for name, (uid, exe) in expected.items():
        answers = results[name]["answers"]
        assert isinstance(answers, list)
        assert len(answers) == 3, name
        for answer in answers:
            assert answer["transport"] == Transport.UNIX.value
            assert answer["uid"] == uid, name
            assert answer["gid"] == uid, name
            assert answer["exe"] == exe, name
            assert answer["sha256"] == _sha256(exe), name
            assert answer["pidfd"] is True
            assert answer["started"] is True  # lifespan startup ran
            if results[name]["pid"] is not None:
                assert answer["pid"] == results[name]["pid"], name
        # All three requests of one client rode one connection (one identity object,
        # alive throughout, so its id() is stable; across clients id() may be reused
        # once a finished connection's identity is freed: the pids tell them apart).
        assert len({a["conn"] for a in answers}) == 1, name
        assert len({a["pid"] for a in answers}) == 1
    pids = {results[n]["answers"][0]["pid"] for n in expected}  # type: ignore[index]
    assert len(pids) == 3


async def test_unattested_connection_gets_403_and_app_never_runs(tmp_path: Path) -> None:
    """A connection whose peer cannot be attested is refused before the app."""
    path = tmp_path / "d" / "s.sock"
    sock = create_unix_listener(path)

    class Refusing(CallerAttestor):
        def identify_blocking(
            self, sock: socket.socket, accepted_at: int, accepted_ns: int | None = None
        ) -> CallerIdentity:
            raise CallerUnidentified("test refusal")

    app = _app()
    hits: list[int] = []

    @app.route("/hit")
    async def hit() -> str:
        hits.append(1)
        return "ok"

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_attested, app, [sock], attestor=Refusing()))
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))) as c:
            response = await c.get("http://agentkeys/hit")
        nursery.cancel_scope.cancel()
    assert response.status_code == 403
    assert response.json()["error"] == "caller_unidentified"
    assert hits == []


def test_caller_from_scope_fails_closed() -> None:
    with pytest.raises(CallerUnidentified):
        caller_from_scope({"type": "http", "extensions": {}})
    with pytest.raises(CallerUnidentified):
        caller_from_scope({"type": "http", "extensions": {"agentkeys.caller": "root"}})


async def test_shutdown_trigger_drains_and_runs_lifespan_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "d" / "s.sock"
    sock = create_unix_listener(path)
    app = _app()
    stopped: list[bool] = []

    @app.after_serving
    async def shutdown() -> None:
        stopped.append(True)

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_attested, app, [sock], shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))) as c:
            assert (await c.get("http://agentkeys/whoami")).status_code == 200
        stop.set()
    assert stopped == [True]
    assert sock.fileno() == -1  # the listening socket was closed


async def test_loopback_tcp_callers_are_attested_per_connection() -> None:
    """E2 through the same helper: a TCP caller on 127.0.0.1 is named by uid and exe."""
    sock = create_loopback_listener(0)
    port = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_attested, _app(), [sock]))
        proc = await trio.run_process(
            [CURL, "-sS", f"http://127.0.0.1:{port}/whoami"], capture_stdout=True
        )
        nursery.cancel_scope.cancel()
    answer = json.loads(proc.stdout)
    assert answer["transport"] == Transport.TCP.value
    assert (answer["uid"], answer["exe"]) == (0, CURL_EXE)
    assert answer["sha256"] == _sha256(CURL_EXE)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "localhost"])
def test_loopback_listener_refuses_other_addresses(host: str) -> None:
    with pytest.raises(InsecurePath):
        create_loopback_listener(0, host=host)


async def test_borrowed_connection_gets_403(server: Path) -> None:
    """End to end: python forks, the child connects and execs
    ``sleep``, python speaks HTTP on its own copy; without the sole-holder check the
    app would answer it as ``sleep``."""
    borrower = str(Path(__file__).with_name("borrower.py"))
    result = await trio.run_process(
        [sys.executable, borrower, str(server), "/bin/sleep", "http"], capture_stdout=True
    )
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("ready ")
    answer = json.loads(lines[1])
    assert answer.startswith("HTTP/1.1 403"), answer
    assert "caller_unidentified" in answer


async def test_a_caller_with_a_non_utf8_name_is_attested_and_serving_goes_on(
    server: Path,
) -> None:
    """/proc/<pid>/stat carries the caller's chosen command name; bytes
    that are not UTF-8 once made attestation raise out of the server and stop it."""
    code = (
        "import socket, sys\n"
        "open('/proc/self/comm', 'wb').write(b'ag\\xff\\xfe')\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(b'GET /whoami HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n')\n"
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "print(data.split(b'\\r\\n', 1)[0].decode())\n"
    )
    result = await trio.run_process([sys.executable, "-c", code, str(server)], capture_stdout=True)
    assert result.stdout.decode().strip() == "HTTP/1.1 200 OK"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(server))) as c:
        assert (await c.get("http://agentkeys/whoami")).status_code == 200


def _connects_as(path: Path, uid: int, groups: list[int]) -> bool:
    """Whether a process of ``uid`` with ``groups`` can connect to ``path`` (a forked child)."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(os.fspath(path))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as other uids needs root")
async def test_listener_with_a_group_admits_exactly_its_members(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="ak-grp-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)  # noqa: S103 - other uids must reach the socket directory
        path = top / "run" / "s.sock"
        sock = create_unix_listener(path, group=4301)
        try:
            st, dst = os.stat(path), os.stat(path.parent)
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 4301)
            assert (stat.S_IMODE(dst.st_mode), dst.st_gid) == (0o710, 4301)
            assert _connects_as(path, 4302, [4301])  # the agent user: a member
            assert not _connects_as(path, 4303, [])  # anybody else
            assert not _connects_as(path, 4304, [4305])
        finally:
            sock.close()
        # a directory open to others is refused, not narrowed behind the operator's back
        os.chmod(path.parent, 0o750)  # noqa: S103 - the insecure state under test
        with pytest.raises(InsecurePath, match="0710 of group 4301"):
            create_unix_listener(path, group=4301)
    finally:
        shutil.rmtree(top)
