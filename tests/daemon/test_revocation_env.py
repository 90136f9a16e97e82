"""Pure cores: chain revocation state and the env file text."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeys.chain.events import (
    ChainReorged,
    DeviceKeyRotated,
    EventPosition,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.daemon.envfile import render_env
from agentkeys.daemon.errors import ScopeRevoked as ScopeRevokedError
from agentkeys.daemon.policy import parse_policy
from agentkeys.daemon.revocation import HISTORY, RevocationState, changes_nothing
from agentkeys.errors import ServiceNotInScope
from agentkeys.omni import service_hash


def H(name: str) -> str:
    return service_hash(name).hex()


P = EventPosition(block_number=1, log_index=0, block_hash="00" * 32, tx_hash="00" * 32)
OP, AGENT, DEV, S = "0a" * 32, "0b" * 32, "0c" * 32, "0x" + "22" * 20


def test_scope_set_narrows_and_reports_dropped_services() -> None:
    state = RevocationState(operator_omni=OP, actor_omni=AGENT, device_key_hash=DEV)
    state.check("anything")  # unknown chain scope: left to the broker and worker
    assert state.outside_scope(frozenset({"a", "b"})) == frozenset()
    assert state.apply(ScopeSet(P, OP, AGENT, (H("a"), H("b")), False, 1, S)) is None
    assert changes_nothing(state.apply(ScopeSet(P, OP, AGENT, (H("a"), H("b")), False, 2, S)))
    assert state.apply(ScopeSet(P, OP, AGENT, (H("a"),), False, 3, S)) is None
    assert state.outside_scope(frozenset({"a", "b", "c"})) == frozenset({"b", "c"})
    state.check("a")
    with pytest.raises(ScopeRevokedError):
        state.check("b")
    assert changes_nothing(state.apply(ScopeRevoked(P, OP, "0d" * 32, S)))
    assert state.apply(DeviceKeyRotated(P, OP, DEV, "0e" * 32, S)) is None
    with pytest.raises(ScopeRevokedError):
        state.check("a")


def _at(block: int) -> EventPosition:
    return EventPosition(block_number=block, log_index=0, block_hash="00" * 32, tx_hash="00" * 32)


def test_a_reorg_drops_everything_and_rolls_the_state_back_to_the_fork() -> None:
    state = RevocationState(operator_omni=OP, actor_omni=AGENT, device_key_hash=DEV)
    state.apply(ScopeSet(_at(1), OP, AGENT, (H("a"), H("b")), False, 1, S))
    state.apply(ScopeSet(_at(5), OP, AGENT, (H("a"),), False, 2, S))
    state.apply(DeviceKeyRotated(_at(6), OP, DEV, "0e" * 32, S))
    with pytest.raises(ScopeRevokedError):
        state.check("a")
    assert state.apply(ChainReorged(fork_block=4)) is None  # drop every cached credential
    state.check("a")
    state.check("b")  # its removal (block 5) was rolled back
    assert state.apply(ChainReorged(fork_block=0)) is None
    assert state.scope is None  # before any event: left to the broker and the worker again
    # the removal mined again on the new branch drops everything again and refuses "b"
    assert state.apply(ScopeSet(_at(5), OP, AGENT, (H("a"),), False, 2, S)) is None
    with pytest.raises(ServiceNotInScope):
        state.check("b")


def test_a_reorg_older_than_the_history_keeps_every_refusal() -> None:
    state = RevocationState(operator_omni=OP, actor_omni=AGENT, device_key_hash=DEV)
    for block in range(1, HISTORY + 2):  # more changes than remembered
        services = (H("a"), H("b")) if block % 2 else (H("a"),)
        state.apply(ScopeSet(_at(block), OP, AGENT, services, False, block, S))
    assert state.scope == frozenset({H("a"), H("b")})
    assert state.apply(ChainReorged(fork_block=1)) is None  # cache dropped all the same
    assert state.scope == frozenset({H("a"), H("b")})  # unchanged: the fork is forgotten


def test_a_master_daemon_ignores_agent_scope_events() -> None:
    state = RevocationState(operator_omni=OP, actor_omni=OP, device_key_hash=DEV)
    assert changes_nothing(state.apply(ScopeRevoked(P, OP, OP, S)))
    state.check("openai")


def test_env_text_for_a_unix_socket_only_daemon() -> None:
    policy = parse_policy(
        b"""
[service.anthropic]
upstream = "https://api.anthropic.com"
inject_header = "x-api-key"
inject_format = "{key}"
allow = ["POST /v1/messages"]

[service.openrouter]
upstream = "https://openrouter.ai"
allow = ["POST /api/v1/chat/completions"]

[service.my-svc]
upstream = "https://example.com"
allow = ["GET /x"]
env_prefix = "MYSVC"
sdk_base_path = "/api"
"""
    )
    text = render_env(policy, base_url=None, socket_path=Path("/run/user/1/agentkeys-proxy.sock"))
    lines = set(text.splitlines())
    assert "export AGENTKEYS_PROXY_SOCKET=/run/user/1/agentkeys-proxy.sock" in lines
    assert "export ANTHROPIC_BASE_URL=http://agentkeys.localhost/anthropic" in lines
    assert "export ANTHROPIC_API_KEY=agentkeys-placeholder" in lines
    assert "export OPENROUTER_BASE_URL=http://agentkeys.localhost/openrouter/api/v1" in lines
    assert "export MYSVC_BASE_URL=http://agentkeys.localhost/my-svc/api" in lines
    assert "export AGENTKEYS_MY_SVC_API_KEY=agentkeys-placeholder" in lines
