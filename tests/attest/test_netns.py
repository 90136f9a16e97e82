"""E2 with real network namespaces: two test-made namespaces joined by a veth pair.

``pod`` is the daemon's namespace (server and local callers); ``outside`` is
another namespace reaching the pod over the veth with private 10.x addresses.
Both namespaces and the veth exist only for the test and are always removed.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attest.netns import (
    Address,
    find_peer_socket,
    parse_proc_net_tcp,
    sock_diag_lookup,
    socket_holders,
)

SERVER = str(Path(__file__).with_name("tcp_server.py"))
ROOT = str(Path(__file__).resolve().parents[2])
CURL = shutil.which("curl") or "/usr/bin/curl"
NOBODY = 65534


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
    def __init__(self, ns: str, host: str, count: int, *extra: str, wrap: tuple[str, ...] = ()):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *wrap, sys.executable, SERVER, host, str(count), *extra],
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


def test_same_namespace_callers_are_identified_other_namespace_is_not(pod: Pod) -> None:
    server = Server(pod.pod, "0.0.0.0", 3)
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


def test_invisible_process_needs_the_pod_wide_policy(pod: Pod) -> None:
    """A daemon in its own pid namespace (sidecar) sees loopback callers it cannot name."""
    hide = ("unshare", "--pid", "--fork", "--mount-proc")
    for extra, expected in (((), False), (("--pod-wide",), True)):
        server = Server(pod.pod, "127.0.0.1", 1, *extra, wrap=hide)
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
            assert outcome["ok"] is False
            assert outcome["error"] == "caller_unidentified"


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
