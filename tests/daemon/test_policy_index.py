"""The indexed caller match decides exactly as the linear first-match scan (issue 10)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys.daemon.errors import CallerNotAllowed
from agentkeys.daemon.policy import CallerRule, Policy, parse_policy
from attest.caller import CallerIdentity, ProcessIdentity, Transport

_UIDS = st.integers(min_value=0, max_value=3)
_EXES = st.sampled_from(["/usr/bin/a", "/usr/bin/b", "/usr/bin/c (deleted)"])
_SHAS = st.sampled_from(["a" * 64, "b" * 64, "c" * 64])


@st.composite
def _rules(draw: st.DrawFn) -> tuple[CallerRule, ...]:
    count = draw(st.integers(min_value=0, max_value=12))
    rules: list[CallerRule] = []
    for index in range(count):
        name = f"r{index}"
        if draw(st.integers(min_value=0, max_value=7)) == 0:
            rules.append(CallerRule(name=name, services=frozenset(), pod_wide=True))
            continue
        exe = draw(st.none() | _EXES)
        sha = draw(st.none() | _SHAS)
        rules.append(
            CallerRule(
                name=name,
                services=frozenset(),
                uid=draw(_UIDS),
                exe=exe,
                exe_sha256=sha,
                any_exe=exe is None and sha is None,
            )
        )
    return tuple(rules)


@st.composite
def _callers(draw: st.DrawFn) -> CallerIdentity:
    if draw(st.booleans()) and draw(st.booleans()):
        return CallerIdentity(transport=Transport.TCP, process=None, pod_wide=draw(st.booleans()))
    process = ProcessIdentity(
        pid=7,
        uid=draw(_UIDS),
        gid=0,
        exe_path=draw(_EXES),
        exe_sha256=draw(_SHAS),
        start_time=1,
        pidfd_checked=True,
    )
    return CallerIdentity(transport=Transport.UNIX, process=process)


def _linear(rules: tuple[CallerRule, ...], caller: CallerIdentity) -> CallerRule | None:
    return next((rule for rule in rules if rule.matches(caller)), None)


@settings(max_examples=400, deadline=None)
@given(rules=_rules(), callers=st.lists(_callers(), min_size=1, max_size=6))
def test_index_picks_the_same_entry_as_a_linear_scan(
    rules: tuple[CallerRule, ...], callers: list[CallerIdentity]
) -> None:
    policy = Policy(callers=rules, services={})
    for caller in callers:
        assert policy.match_caller(caller) is _linear(rules, caller)


def _process(uid: int, exe: str, sha: str) -> CallerIdentity:
    return CallerIdentity(
        transport=Transport.UNIX,
        process=ProcessIdentity(
            pid=7,
            uid=uid,
            gid=uid,
            exe_path=exe,
            exe_sha256=sha,
            start_time=1,
            pidfd_checked=True,
        ),
    )


_ORDERED = b"""
[[caller]]
name = "by-hash"
uid = 1000
exe_sha256 = "%s"
services = ["svc"]

[[caller]]
name = "by-path"
uid = 1000
exe = "/usr/bin/agent"
services = ["svc"]

[[caller]]
name = "any"
uid = 1000
any_exe = true
services = []

[service.svc]
upstream = "http://127.0.0.1:9"
allow = ["GET /x"]
""" % (b"a" * 64)


def test_first_entry_in_file_order_wins_across_index_buckets() -> None:
    policy = parse_policy(_ORDERED)
    # the digest entry (no path) comes first in the file: it wins over the path entry
    hashed = policy.decide(_process(1000, "/usr/bin/agent", "a" * 64), "svc", "GET", "/x")
    assert hashed.caller.name == "by-hash"
    by_path = policy.decide(_process(1000, "/usr/bin/agent", "b" * 64), "svc", "GET", "/x")
    assert by_path.caller.name == "by-path"
    other = policy.match_caller(_process(1000, "/usr/bin/other", "b" * 64))
    assert other is not None
    assert other.name == "any"


def test_other_uid_and_missing_process_are_refused() -> None:
    policy = parse_policy(_ORDERED)
    assert policy.match_caller(_process(1001, "/usr/bin/agent", "a" * 64)) is None
    unseen = CallerIdentity(transport=Transport.TCP, process=None, pod_wide=True)
    assert policy.match_caller(unseen) is None
    with pytest.raises(CallerNotAllowed):
        policy.decide(unseen, "svc", "GET", "/x")
