"""Service presets: a policy that names one needs no upstream or injection settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeys.daemon.envfile import PLACEHOLDER_KEY, render_env
from agentkeys.daemon.errors import PolicyInvalid
from agentkeys.daemon.policy import parse_policy
from agentkeys.daemon.presets import PRESETS
from agentkeys.daemon.proxy import ProxyLimits, request_headers

_SOCKET = Path("/run/agentkeys/proxy.sock")


def _one(table: str) -> bytes:
    return f'[service.x]\n{table}\nallow = ["GET /x"]\n'.encode()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_parses_by_name_alone(name: str) -> None:
    policy = parse_policy(f'[service.{name}]\nallow = ["GET /x"]\n'.encode())
    svc = policy.services[name]
    preset = PRESETS[name]
    assert svc.upstream == preset.upstream
    assert svc.header_value(b"sk-1") == preset.inject_format.replace("{key}", "sk-1")
    assert svc.inject_header == preset.inject_header


def test_anthropic_takes_x_api_key_and_no_bearer() -> None:
    svc = parse_policy(_one('preset = "anthropic"')).services["x"]
    assert (svc.inject_header, svc.header_value(b"sk-ant")) == ("x-api-key", "sk-ant")
    assert svc.upstream == "https://api.anthropic.com"


def test_github_takes_bearer_or_token_and_writes_gh_token_names() -> None:
    policy = parse_policy(
        b'[service.github]\nallow = ["GET /user"]\n\n'
        b'[service.ghe]\npreset = "github"\ninject_format = "token {key}"\n'
        b'upstream = "https://ghe.example.com/api/v3"\nallow = ["GET /user"]\n'
    )
    assert policy.services["github"].header_value(b"ghp_1") == "Bearer ghp_1"
    ghe = policy.services["ghe"]
    assert (ghe.upstream, ghe.header_value(b"ghp_1")) == (
        "https://ghe.example.com/api/v3",
        "token ghp_1",
    )
    lines = set(
        render_env(policy, base_url="http://127.0.0.1:9090", socket_path=_SOCKET).split("\n")
    )
    assert f"export GH_TOKEN={PLACEHOLDER_KEY}" in lines
    assert f"export GITHUB_TOKEN={PLACEHOLDER_KEY}" in lines
    assert "export GITHUB_API_BASE_URL=http://127.0.0.1:9090/github" in lines


_PLACEHOLDERS = [
    (b"Authorization", b"Bearer agentkeys-placeholder"),
    (b"x-api-key", b"agentkeys-placeholder"),
    (b"api-key", b"agentkeys-placeholder"),
]
_COMMON = [(b"content-type", b"application/json"), (b"user-agent", b"sdk/1.0")]


@pytest.mark.parametrize(
    ("name", "kept", "key"),
    [
        ("openai", [(b"OpenAI-Beta", b"assistants=v2")], b"authorization: Bearer sk-1"),
        ("openrouter", [(b"HTTP-Referer", b"https://a.example")], b"authorization: Bearer sk-1"),
        ("anthropic", [(b"anthropic-version", b"2023-06-01")], b"x-api-key: sk-1"),
        ("github", [(b"X-GitHub-Api-Version", b"2022-11-28")], b"authorization: Bearer sk-1"),
    ],
)
def test_exactly_the_sdk_headers_and_the_real_key_go_upstream(
    name: str, kept: list[tuple[bytes, bytes]], key: bytes
) -> None:
    """Whatever auth headers the SDK sends (placeholders) are dropped; its other headers pass
    in order, names lowercased; the preset's one header carries the key."""
    svc = parse_policy(f'[service.{name}]\nallow = ["POST /x"]\n'.encode()).services[name]
    sent = [*_COMMON, *_PLACEHOLDERS, *kept]
    forwarded, has_body = request_headers(sent, "POST", svc, ProxyLimits())
    assert has_body
    assert forwarded == [
        *_COMMON,
        *((n.lower(), v) for n, v in kept),
        (b"accept-encoding", b"identity"),
    ]
    injected = svc.inject_header.lower().encode() + b": " + svc.header_value(b"sk-1").encode()
    assert injected == key


def test_the_openai_preset_points_the_sdk_at_v1() -> None:
    policy = parse_policy(b'[service.openai]\nallow = ["POST /v1/chat/completions"]\n')
    text = render_env(policy, base_url="http://127.0.0.1:9090", socket_path=_SOCKET)
    assert "export OPENAI_BASE_URL=http://127.0.0.1:9090/openai/v1\n" in text


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(PolicyInvalid, match="no preset 'opneai'"):
        parse_policy(_one('preset = "opneai"'))


def test_a_service_without_preset_still_needs_an_upstream() -> None:
    with pytest.raises(PolicyInvalid, match="upstream is required"):
        parse_policy(_one(""))


def test_a_policy_exe_symlink_is_resolved_at_load(tmp_path: Path) -> None:
    real = tmp_path / "python3.11"
    real.write_bytes(b"")
    link = tmp_path / "venv-python"
    link.symlink_to(real)
    policy = parse_policy(
        f'[[caller]]\nuid = 1000\nexe = "{link}"\nservices = ["openai"]\n\n'
        '[service.openai]\nallow = ["GET /v1/models"]\n'.encode()
    )
    assert policy.callers[0].exe == str(real)
