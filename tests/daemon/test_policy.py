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


_SERVICE = b"[service.x]\nupstream = 'https://h'\nallow = ['GET /']\n"
_CALLER = b"[[caller]]\nuid = 1\nany_exe = true\nservices = ['x']\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_SERVICE + b"surprise = 1\n", "unknown option(s) in [service.x]: surprise"),
        (
            _SERVICE + b"[service.x.prices]\ndefault = { prompt = 1, cost = 2, completion = 1 }\n",
            "unknown option(s) in [service.x.prices.default]: cost",
        ),
        (_SERVICE + _CALLER + b"shell = true\n", "unknown option(s) in [caller[0]]: shell"),
        (_SERVICE + b"[limits]\n", "unknown option(s) in [top level]: limits"),
        (_SERVICE + b"per_minute = true\n", "service.x.per_minute:"),  # bool is not int
        (_SERVICE + b"per_hour = 1.0\n", "service.x.per_hour:"),
        (_SERVICE + b"per_minute = -1\n", "service.x.per_minute:"),
        (_SERVICE + b"daily_usd = '5'\n", "service.x.daily_usd:"),
        (_SERVICE + b"inject_header = 7\n", "service.x.inject_header:"),
        (b"[service.x]\nupstream = 'https://h'\nallow = 'GET /'\n", "service.x.allow:"),
        (b"[service.x]\nupstream = 'https://h'\nallow = ['GET /', 1]\n", "service.x.allow[1]:"),
        (
            _SERVICE + b"[service.x.prices]\ndefault = { prompt = 1.0 }\n",
            "service.x.prices.default.completion is required",
        ),
        (_SERVICE + b"[[caller]]\nuid = true\nany_exe = true\n", "caller[0].uid:"),
        (_SERVICE + b"[[caller]]\nuid = 1\nany_exe = 1\n", "caller[0].any_exe:"),
        (_SERVICE + b"[[caller]]\nuid = -1\nany_exe = true\n", "caller[0].uid:"),
        (
            _SERVICE + b"[[caller]]\nuid = 1\nany_exe = true\nservices = 'x'\n",
            "caller[0].services:",
        ),
        (_SERVICE + b"[caller]\nuid = 1\n", "caller:"),
        (_SERVICE + b"[service.y]\nupstream = 1979-05-27\n", "a TOML date is no option's value"),
    ],
)
def test_a_malformed_policy_names_the_entry_and_the_option(text: bytes, reason: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(text)
    assert caught.value.reason.startswith(reason)


def test_a_duplicate_policy_key_is_refused() -> None:
    with pytest.raises(PolicyInvalid, match="not valid TOML"):
        parse_policy(_SERVICE + b"[service.x]\nallow = ['GET /a']\n")
    with pytest.raises(PolicyInvalid, match="not valid TOML"):
        parse_policy(_SERVICE + b"per_minute = 1\nper_minute = 2\n")


def test_a_policy_takes_integers_for_prices_and_keeps_its_types() -> None:
    policy = parse_policy(
        _SERVICE + b"daily_usd = 2\nper_hour = 7\n[service.x.prices]\n"
        b"default = { prompt = 1, completion = 2.5 }\n" + _CALLER
    )
    service = policy.services["x"]
    assert (service.daily_usd, service.per_hour, service.per_minute) == (2.0, 7, 0)
    assert service.prices["default"].cost(1_000_000, 0) == 1.0
    assert policy.callers[0].uid == 1
    assert policy.callers[0].services == frozenset({"x"})


def test_a_policy_file_refusal_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(POLICY + b"[[caller]]\nuid = true\n")
    os.chmod(path, 0o600)
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    assert caught.value.reason.startswith(f"{path}: caller[3].uid: ")
