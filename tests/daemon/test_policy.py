"""Policy parsing and matching (pure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkeys.daemon.errors import (
    CallerNotAllowed,
    PolicyInvalid,
    RouteNotAllowed,
    ServiceNotAllowed,
    UnknownService,
)
from agentkeys.daemon.policy import RoutePattern, load_policy, parse_policy
from attest.caller import CallerIdentity, ProcessIdentity, Transport

POLICY = b"""
[[caller]]
name = "coder"
uid = 1000
exe = "/usr/bin/python3"
services = ["openai"]

[[caller]]
name = "hashed"
uid = 1001
exe_sha256 = "AA%s"
services = ["openai", "github"]

[[caller]]
name = "pod"
pod_wide = true
services = ["github"]

[service.openai]
upstream = "https://api.openai.com/"
allow = ["POST /v1/chat/completions", "GET /v1/models/*"]
per_minute = 2
daily_usd = 1.5

[service.openai.prices]
default = { prompt = 1.0, completion = 2.0 }

[service.github]
upstream = "https://api.github.com"
inject_header = "Authorization"
inject_format = "token {key}"
allow = ["GET /repos/**"]
""" % (b"b" * 62)


# what /proc/<pid>/exe shows for /usr/bin/python3 (a symlink): the policy resolves it at load
PYTHON3 = os.path.realpath("/usr/bin/python3")


def _caller(uid: int, exe: str = PYTHON3, sha: str = "c" * 64) -> CallerIdentity:
    process = ProcessIdentity(
        pid=42, uid=uid, gid=uid, exe_path=exe, exe_sha256=sha, start_time=1, pidfd_checked=True
    )
    return CallerIdentity(transport=Transport.UNIX, process=process)


def test_allowed_request_matches_first_entry() -> None:
    policy = parse_policy(POLICY)
    decision = policy.decide(_caller(1000), "openai", "POST", "/v1/chat/completions")
    assert decision.caller.name == "coder"
    assert decision.service.upstream == "https://api.openai.com"
    assert decision.service.header_value(b"sk-x") == "Bearer sk-x"


@pytest.mark.parametrize(
    ("caller", "service", "method", "path", "error"),
    [
        (_caller(1002), "openai", "POST", "/v1/chat/completions", CallerNotAllowed),
        (
            _caller(1000, exe="/usr/bin/curl"),
            "openai",
            "POST",
            "/v1/chat/completions",
            CallerNotAllowed,
        ),
        (_caller(1000), "github", "GET", "/repos/a/b", ServiceNotAllowed),
        (_caller(1000), "nosuch", "GET", "/", UnknownService),
        (_caller(1000), "openai", "GET", "/v1/chat/completions", RouteNotAllowed),
        (_caller(1000), "openai", "POST", "/v1/chat/completions/x", RouteNotAllowed),
        (_caller(1000), "openai", "GET", "/v1/models/a/b", RouteNotAllowed),
    ],
)
def test_denials(
    caller: CallerIdentity, service: str, method: str, path: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_policy(POLICY).decide(caller, service, method, path)


def test_exe_hash_and_pod_wide_entries() -> None:
    policy = parse_policy(POLICY)
    hashed = _caller(1001, exe="/anything", sha="aa" + "b" * 62)
    assert policy.decide(hashed, "github", "GET", "/repos/x/y/z").caller.name == "hashed"
    with pytest.raises(CallerNotAllowed):
        policy.decide(_caller(1001, sha="ab" + "b" * 62), "github", "GET", "/repos/x")
    pod = CallerIdentity(transport=Transport.TCP, process=None, pod_wide=True)
    assert policy.decide(pod, "github", "GET", "/repos/x").caller.name == "pod"
    # a process-less caller never matches a uid entry, a process never a pod_wide entry
    with pytest.raises(ServiceNotAllowed):
        policy.decide(pod, "openai", "POST", "/v1/chat/completions")


@pytest.mark.parametrize(
    "text",
    [
        b"[service.x]\nupstream = 'ftp://h'\nallow = ['GET /']",
        b"[service.x]\nupstream = 'https://h'\nallow = []",
        b"[service.x]\nupstream = 'https://h'\nallow = ['FETCH /']",
        b"[service.x]\nupstream = 'https://h'\nallow = ['GET /a/**/b']",
        b"[service.x]\nupstream = 'https://h'\nallow = ['GET /a/../b']",
        b"[service.x]\nupstream = 'https://h'\nallow = ['GET /']\ninject_format = 'Bearer'",
        b"[service.x]\nupstream = 'https://h'\nallow = ['GET /']\ndaily_usd = 1.0",
        b"[service.x]\nupstream = 'https://h'\nallow = ['GET /']\nsurprise = 1",
        b"[service.X]\nupstream = 'https://h'\nallow = ['GET /']",
        b"[[caller]]\nuid = 1\nservices = []",
        b"[[caller]]\nuid = 1\nexe = 'relative'\nservices = []",
        b"[[caller]]\nuid = 1\nany_exe = true\nservices = ['nosuch']",
        b"[[caller]]\npod_wide = true\nuid = 1\nservices = []",
        b"not toml [",
    ],
)
def test_malformed_policies_are_refused(text: bytes) -> None:
    with pytest.raises(PolicyInvalid):
        parse_policy(text)


def test_route_patterns() -> None:
    star = RoutePattern.parse("GET /v1/models/*")
    assert star.matches("GET", "/v1/models/gpt-4o")
    assert not star.matches("GET", "/v1/models/")
    assert not star.matches("POST", "/v1/models/gpt-4o")
    rest = RoutePattern.parse("get /repos/**")
    assert rest.matches("GET", "/repos/a/b/c")
    assert not rest.matches("GET", "/repos")
    inner = RoutePattern.parse("GET /v1/files/file-*")
    assert inner.matches("GET", "/v1/files/file-abc")
    assert not inner.matches("GET", "/v1/files/other")


def test_policy_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(POLICY)
    os.chmod(path, 0o600)
    assert "openai" in load_policy(path).services
    os.chmod(path, 0o666)  # noqa: S103 (the unsafe case)
    with pytest.raises(PolicyInvalid):
        load_policy(path)
