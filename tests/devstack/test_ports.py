"""Free-port probing on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from agentkeys.devstack import NoFreePort, pick_port, pick_ports, port_is_free


def test_a_bound_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_out_of_range_ports_are_never_free(port: int) -> None:
    assert not port_is_free(port)


def test_pick_port_honours_offsets() -> None:
    port = pick_port(offsets=(0, 10000))
    assert port + 10000 <= 65535
    assert port_is_free(port)
    assert port_is_free(port + 10000)


def test_pick_ports_do_not_overlap_with_offsets() -> None:
    ports = pick_ports(5, offsets=(0, 10000))
    taken = [p + offset for p in ports for offset in (0, 10000)]
    assert len(set(taken)) == len(taken) == 10


def test_impossible_offsets_raise_no_free_port() -> None:
    with pytest.raises(NoFreePort):
        pick_port(offsets=(0, 70000))
