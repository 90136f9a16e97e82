"""E2 with real network namespaces: two test-made namespaces joined by a veth pair.

``pod`` is the daemon's namespace (server and local callers); ``outside`` is
another namespace reaching the pod over the veth with private 10.x addresses.
Both namespaces and the veth exist only for the test and are always removed.

Holders are found either by passes of the lookup's own or, given the accept time,
from a descriptor-table pass shared between lookups (``HolderScanner``); the tests
run both and expect the same verdicts. To show when a shared pass may answer, a pass
is held open after it read the tables by wrapping the real ``scan_socket_holders``
with an event; nothing else is replaced.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attest._sockdiag import HolderScanner, scan_socket_holders
from attest.caller import CallerIdentity
from attest.errors import CallerUnidentified
from attest.netns import (
    Address,
    attribute_holders,
    find_peer_socket,
    identify_tcp_peer,
    parse_proc_net_tcp,
    sock_diag_lookup,
    socket_holders,
)
from attest.peercred import ExeHashCache, boot_ticks_now

SERVER = str(Path(__file__).with_name("tcp_server.py"))
# tcp_server.py with the accept time passed on, so holders come from a shared pass.
SHARED_SERVER = (
    "import sys, time\n"
    "import attest\n"
    "from tests.attest import tcp_server\n"
    "def identify(conn, **kwargs):\n"
    "    return attest.identify_tcp_peer(conn, accepted_ns=time.monotonic_ns(), **kwargs)\n"
    "tcp_server.identify_tcp_peer = identify\n"
    "sys.exit(tcp_server.main())\n"
)
ROOT = str(Path(__file__).resolve().parents[2])
CURL = shutil.which("curl") or "/usr/bin/curl"
SLEEP = os.path.realpath(shutil.which("sleep") or "/usr/bin/sleep")
NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
WAIT = 10.0  # generous bound on a wait that should end at once; never a timing assertion


@dataclass(frozen=True)
class Pod:
    pod: str
    outside: str
    pod_address: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod() -> Iterator[Pod]:
    tag = secrets.token_hex(3)
    pod_ns, outside_ns = f"ak-pod-{tag}", f"ak-out-{tag}"
    veth_pod, veth_out = f"akp{tag}", f"ako{tag}"
    net = f"10.252.{secrets.randbelow(250) + 1}"
    try:
        _ip("netns", "add", pod_ns)
        _ip("netns", "add", outside_ns)
        _ip("link", "add", veth_pod, "netns", pod_ns, "type", "veth",
            "peer", "name", veth_out, "netns", outside_ns)  # fmt: skip
        ends = ((pod_ns, veth_pod, f"{net}.1/30"), (outside_ns, veth_out, f"{net}.2/30"))
        for ns, dev, addr in ends:
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Pod(pod=pod_ns, outside=outside_ns, pod_address=f"{net}.1")
    finally:
        for ns in (pod_ns, outside_ns):  # deleting a namespace removes its veth end
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


class Server:
    def __init__(
        self,
        ns: str,
        host: str,
        count: int,
        *extra: str,
        wrap: tuple[str, ...] = (),
        shared: bool = False,
    ):
        env = dict(os.environ, PYTHONPATH=ROOT)
        program = ("-c", SHARED_SERVER) if shared else (SERVER,)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *wrap, sys.executable, *program, host, str(count), *extra],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def outcomes(self) -> list[dict[str, object]]:
        out, _ = self.proc.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def _client(ns: str, url: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *prefix, CURL, "-sS", "--max-time", "10", url],
        capture_output=True,
        text=True,
        check=False,
    )


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


PASSES = pytest.mark.parametrize("shared", [False, True], ids=["own-passes", "shared-pass"])


@PASSES
def test_same_namespace_callers_are_identified_other_namespace_is_not(
    pod: Pod, shared: bool
) -> None:
    server = Server(pod.pod, "0.0.0.0", 3, shared=shared)
    try:
        url_local = f"http://127.0.0.1:{server.port}/"
        root = _client(pod.pod, url_local)
        _client(
            pod.pod, url_local, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
            "--clear-groups",
        )  # fmt: skip
        # From the other namespace the pod's loopback is unreachable ...
        assert _client(pod.outside, url_local).returncode != 0
        # ... and its veth address is not a local caller.
        _client(pod.outside, f"http://{pod.pod_address}:{server.port}/")
        first, second, third = server.outcomes()
    finally:
        server.stop()
    curl_exe = os.path.realpath(CURL)
    assert first["ok"] is True, first
    assert (first["uid"], first["exe"], first["sha256"]) == (0, curl_exe, _sha256(curl_exe))
    assert json.loads(root.stdout) == first
    assert second["ok"] is True, second
    assert (second["uid"], second["exe"]) == (NOBODY, curl_exe)
    assert second["pid"] != first["pid"]
    assert third == {
        "ok": False,
        "error": "caller_not_local",
        "reason": f"peer {pod.pod_address[:-1]}2 is not a loopback caller",
    }


@PASSES
def test_invisible_process_needs_the_pod_wide_policy(pod: Pod, shared: bool) -> None:
    """A daemon in its own pid namespace (sidecar) sees loopback callers it cannot name."""
    hide = ("unshare", "--pid", "--fork", "--mount-proc")
    for extra, expected in (((), False), (("--pod-wide",), True)):
        server = Server(pod.pod, "127.0.0.1", 1, *extra, wrap=hide, shared=shared)
        try:
            _client(pod.pod, f"http://127.0.0.1:{server.port}/")
            (outcome,) = server.outcomes()
        finally:
            server.stop()
        if expected:
            assert outcome["ok"] is True
            assert outcome["pod_wide"] is True
            assert outcome["pid"] is None
            assert outcome["uid"] is None
        else:
            assert outcome == {
                "ok": False,
                "error": "caller_unidentified",
                "reason": "the calling process is not visible from here",
            }


SYSTEM_PYTHON = Path("/usr/bin/python3.11")
DAEMON_UID = 65533  # the attesting server's uid: neither root nor the caller's (NOBODY)
# what `agentkeys sidecar setup` gives its daemon (agentkeys/cli/sidecar.py, CAPABILITIES)
TWO_CAPS = (
    "--inh-caps=+sys_ptrace,+dac_read_search",
    "--ambient-caps=+sys_ptrace,+dac_read_search",
)


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3.11 for another uid")
@pytest.mark.parametrize(
    ("caps", "identified"), [((), False), (TWO_CAPS, True)], ids=["no-caps", "two-caps"]
)
def test_a_server_of_another_uid_attests_tcp_callers_only_with_its_two_capabilities(
    pod: Pod, caps: tuple[str, ...], identified: bool
) -> None:
    """The sidecar daemon as `sidecar setup` runs it: its own uid, CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH (ambient), attesting a loopback caller of a third uid (E2)."""
    site = Path(pytest.__file__).resolve().parents[1]  # this checkout's site-packages
    if not (_reachable_by_others(site) and _reachable_by_others(Path(ROOT))):
        pytest.skip("the checkout or its site-packages is not reachable by another uid")
    as_daemon = ("setpriv", f"--reuid={DAEMON_UID}", f"--regid={DAEMON_UID}", "--clear-groups")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{site}")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pod.pod, *as_daemon, *caps, "--", str(SYSTEM_PYTHON), SERVER,
         "127.0.0.1", "1"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        _client(pod.pod, f"http://127.0.0.1:{port}/", *AS_NOBODY)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    (outcome,) = [json.loads(line) for line in out.splitlines()]
    if identified:
        assert outcome["ok"] is True, outcome
        assert (outcome["uid"], outcome["exe"]) == (NOBODY, os.path.realpath(CURL))
    else:  # another uid's descriptor table is closed to it: the socket has no visible holder
        assert outcome == {
            "ok": False,
            "error": "caller_unidentified",
            "reason": "the calling process is not visible from here",
        }


def test_proc_net_tcp_parser() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 1111 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000 "
        "       0 2222 1 0000000000000000 20 4 30 10 -1\n"
    )
    import ipaddress

    entries = parse_proc_net_tcp(text)
    lo = ipaddress.IPv4Address("127.0.0.1")
    found = find_peer_socket(entries, peer=(lo, 0xD431), ours=(lo, 8080))
    assert found is not None
    assert (found.uid, found.inode) == (1000, 2222)
    assert find_peer_socket(entries, peer=(lo, 1), ours=(lo, 8080)) is None
    from attest import CallerUnidentified

    with pytest.raises(CallerUnidentified):
        parse_proc_net_tcp("header\n 0: zz:zz\n")


def _loopback_pair(
    family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1"
) -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen(1)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(server.getsockname()[:2])
    accepted, _ = server.accept()
    return server, client, accepted


def _ends(client: socket.socket, accepted: socket.socket) -> tuple[Address, Address]:
    peer = ipaddress.ip_address(client.getsockname()[0])
    ours = ipaddress.ip_address(accepted.getsockname()[0])
    return (peer, client.getsockname()[1]), (ours, accepted.getsockname()[1])


_LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


@pytest.mark.parametrize(("family", "host"), _LOOPBACKS)
def test_sock_diag_finds_the_callers_socket_as_proc_net_tcp_does(
    family: socket.AddressFamily, host: str
) -> None:
    server, client, accepted = _loopback_pair(family, host)
    with server, client, accepted:
        inode = os.fstat(client.fileno()).st_ino
        peer, ours = _ends(client, accepted)
        answered, entry = sock_diag_lookup(peer=peer, ours=ours)
        name = "tcp" if family == socket.AF_INET else "tcp6"
        text = Path(f"/proc/self/net/{name}").read_text()
        expected = find_peer_socket(parse_proc_net_tcp(text), peer=peer, ours=ours)
        filtered = parse_proc_net_tcp(text, ports=(peer[1], ours[1]))
    assert answered is True
    assert expected is not None
    assert entry == expected
    assert (expected.inode, expected.uid) == (inode, os.getuid())
    assert expected in filtered
    # the port filter keeps only rows of this connection (both of its ends)
    assert {(e.local[1], e.remote[1]) for e in filtered} <= {
        (peer[1], ours[1]),
        (ours[1], peer[1]),
    }


def test_sock_diag_reports_pairs_without_a_connection_as_absent() -> None:
    server, client, accepted = _loopback_pair()
    with server, client, accepted:
        peer, ours = _ends(client, accepted)
        # the kernel answers these with the listener, or with nothing: never a caller
        assert sock_diag_lookup(peer=(peer[0], ours[1]), ours=(ours[0], 1)) == (True, None)
        assert sock_diag_lookup(peer=(peer[0], 1), ours=ours) == (True, None)
    # once closed, the caller's own pair is gone too
    assert sock_diag_lookup(peer=peer, ours=ours)[1] is None


def test_sock_diag_finds_an_ipv6_socket_connected_to_an_ipv4_listener() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with server, client:
        client.connect(("::ffff:127.0.0.1", server.getsockname()[1]))
        inode = os.fstat(client.fileno()).st_ino
        accepted, _ = server.accept()
        with accepted:
            lo = ipaddress.IPv4Address("127.0.0.1")
            peer, ours = (lo, client.getsockname()[1]), (lo, server.getsockname()[1])
            answered, entry = sock_diag_lookup(peer=peer, ours=ours)
    assert answered is True
    assert entry is not None
    assert (entry.inode, entry.state) == (inode, 1)


def test_socket_holders_looks_only_at_the_given_uid() -> None:
    server, client, accepted = _loopback_pair()
    with server, client, accepted:
        inode = os.fstat(client.fileno()).st_ino
        assert socket_holders(inode) == [os.getpid()]
        assert socket_holders(inode, uid=os.getuid()) == [os.getpid()]
        assert socket_holders(inode, uid=NOBODY) == []
    assert socket_holders(inode) == []


def test_attribution_rule_of_one_pass() -> None:
    """The rule of the own passes (holders of the socket's uid first), over one pass."""
    owners = {7: 1000, 8: 0, 9: 0, 10: 1000}

    def never(pid: int) -> int | None:
        raise AssertionError(f"owner of {pid} asked for a lone holder")

    assert attribute_holders([], uid=1000, owner=never) == []
    assert attribute_holders([8], uid=1000, owner=never) == [8]  # another uid, but alone
    assert attribute_holders([7, 7], uid=1000, owner=never) == [7]  # two descriptors
    assert attribute_holders([8, 7, 9], uid=1000, owner=owners.get) == [7]
    assert attribute_holders([7, 8, 10], uid=1000, owner=owners.get) == [7, 10]
    assert attribute_holders([8, 9], uid=1000, owner=owners.get) == [8, 9]
    # a holder gone since the pass (no owner) is not of the uid: still several holders
    assert attribute_holders([8, 11], uid=1000, owner=owners.get) == [8, 11]


@dataclass
class HeldPass:
    """The real pass over ``/proc``, held open after it read the tables until ``gate``."""

    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    gate: threading.Event = field(default_factory=threading.Event)
    runs: int = 0

    def __call__(self, proc: str | Path) -> dict[bytes, list[int]]:
        self.runs += 1
        found = scan_socket_holders(proc)
        self.entered.release()
        assert self.gate.wait(WAIT)
        return found

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=WAIT)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def _wait_for_exe(pid: int, exe: str) -> None:
    """Until ``pid`` runs ``exe`` (it has taken its final uid by then)."""
    _until(lambda: _exe(pid) == exe)


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        yield listener


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


Verdict = tuple[int, int] | str


def _verdict(
    conn: socket.socket,
    *,
    accepted_ns: int | None = None,
    scanner: HolderScanner | None = None,
    pod_wide: bool = False,
) -> Verdict:
    """``(pid, uid)`` of the attested caller, or the reason of the refusal."""
    try:
        caller = identify_tcp_peer(
            conn,
            cache=ExeHashCache(),
            accepted_at=boot_ticks_now(),
            pod_wide=pod_wide,
            scanner=scanner,
            accepted_ns=accepted_ns,
        )
    except CallerUnidentified as exc:
        return exc.reason
    assert caller.process is not None
    return caller.process.pid, caller.process.uid


def test_concurrent_lookups_share_a_pass_and_attribute_each_socket(
    tcp_listener: socket.socket, pool: ThreadPoolExecutor
) -> None:
    """Four callers, each held differently, attested at once from one pass: the same
    verdicts as with passes of their own."""
    url = f"http://127.0.0.1:{tcp_listener.getsockname()[1]}/"
    curl = ("-sS", "--max-time", "30", url)
    children: list[subprocess.Popen[bytes]] = []
    ours: list[socket.socket] = []
    conns: list[socket.socket] = []

    def start(*argv: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, pass_fds=pass_fds, stdout=subprocess.DEVNULL)
        children.append(child)
        return child

    def own_connection() -> socket.socket:
        client = socket.create_connection(tcp_listener.getsockname())
        ours.append(client)
        return client

    try:
        root_curl = start(CURL, *curl)
        conns.append(tcp_listener.accept()[0])
        nobody_curl = start(*AS_NOBODY, CURL, *curl)
        conns.append(tcp_listener.accept()[0])
        # our socket, also held by a process of another uid: attributed to us
        lent = own_connection()
        conns.append(tcp_listener.accept()[0])
        lender = start(*AS_NOBODY, SLEEP, "60", pass_fds=(lent.fileno(),))
        # our socket, also held by a process of our uid (a fork): refused
        forked = own_connection()
        conns.append(tcp_listener.accept()[0])
        fork = start(SLEEP, "60", pass_fds=(forked.fileno(),))
        for child in (lender, fork):
            _wait_for_exe(child.pid, SLEEP)
        accepted_ns = time.monotonic_ns()  # after every accept
        expected: list[Verdict] = [
            (root_curl.pid, 0),
            (nobody_curl.pid, NOBODY),
            (os.getpid(), os.getuid()),
            "the calling process is shared by several processes",
        ]
        assert [_verdict(conn) for conn in conns] == expected  # passes of their own

        held = HeldPass()
        scanner = HolderScanner(scan=held)
        verdicts = [
            pool.submit(_verdict, conn, accepted_ns=accepted_ns, scanner=scanner) for conn in conns
        ]
        _until(lambda: scanner.lookups == len(conns))  # every lookup is waiting on pass 1
        held.gate.set()
        assert [v.result(WAIT) for v in verdicts] == expected
        assert held.runs == scanner.passes == 1
    finally:
        for conn in conns:
            conn.close()
        for client in ours:
            client.close()
        for child in children:
            child.kill()
            child.wait()


def test_a_pass_that_started_before_the_accept_never_answers(
    tcp_listener: socket.socket, pool: ThreadPoolExecutor
) -> None:
    """A connection accepted after a pass started (the pass may predate its socket) waits
    for a later pass, running or finished alike. Under ``pod_wide`` an early pass would
    show: the socket would look unheld and the caller pass as "some process in the pod"."""
    held = HeldPass()
    scanner = HolderScanner(scan=held)
    opened: list[socket.socket] = []

    def accept() -> tuple[socket.socket, int]:
        opened.append(socket.create_connection(tcp_listener.getsockname()))
        conn = tcp_listener.accept()[0]
        opened.append(conn)
        return conn, time.monotonic_ns()

    def attest(conn: socket.socket, accepted_ns: int) -> Future[CallerIdentity]:
        return pool.submit(
            identify_tcp_peer,
            conn,
            cache=ExeHashCache(),
            accepted_at=boot_ticks_now(),
            pod_wide=True,
            scanner=scanner,
            accepted_ns=accepted_ns,
        )

    def pid_of(caller: CallerIdentity) -> int | None:
        return None if caller.process is None else caller.process.pid

    try:
        first = attest(*accept())
        held.wait_entered()  # pass 1 has read the tables and is held open
        second = attest(*accept())  # its socket did not exist when pass 1 read them
        _until(lambda: scanner.lookups == 2)
        held.gate.set()
        assert pid_of(first.result(WAIT)) == os.getpid()
        assert pid_of(second.result(WAIT)) == os.getpid()  # from pass 2, not pod_wide
        assert scanner.passes == 2
        # pass 2 is finished and kept, but started before this accept too
        assert pid_of(attest(*accept()).result(WAIT)) == os.getpid()
        assert held.runs == scanner.passes == 3
    finally:
        held.gate.set()
        for sock in opened:
            sock.close()


def test_a_shared_pass_that_fails_refuses_even_pod_wide(
    tcp_listener: socket.socket, tmp_path: Path
) -> None:
    """Passes of its own over an unreadable process list find no holder (``pod_wide``
    accepts that as "not visible"); a shared pass that fails refuses: fail closed."""
    with socket.create_connection(tcp_listener.getsockname()):
        conn = tcp_listener.accept()[0]
        with conn:
            broken = HolderScanner(tmp_path / "no-proc")
            for pod_wide in (False, True):
                with pytest.raises(CallerUnidentified, match="list the processes"):
                    identify_tcp_peer(
                        conn,
                        cache=ExeHashCache(),
                        accepted_at=boot_ticks_now(),
                        pod_wide=pod_wide,
                        scanner=broken,
                        accepted_ns=time.monotonic_ns(),
                    )
