"""One registry of error codes: every code one status and one meaning, across all services.

Walks every error class of every package (all modules of ``agentkeys`` and ``attest`` are
imported, so a class defined anywhere is seen) against ``agentkeys.error_codes.CODES``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections import defaultdict

import pytest

import agentkeys
import attest
from agentkeys import binding
from agentkeys.error_codes import CODES, ErrorCode, status_of
from agentkeys.errors import AgentkeysError, DomainError
from attest.errors import AttestError


def _every_error_class() -> list[type[DomainError]]:
    """Every class under either root: agentkeys' ``AgentkeysError`` and attest's own."""
    for package in (agentkeys, attest):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    seen: list[type[DomainError]] = []
    todo: list[type[DomainError]] = [AgentkeysError, AttestError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return [cls for cls in seen if cls.__module__.split(".")[0] in ("agentkeys", "attest")]


CLASSES = _every_error_class()


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_code_is_registered() -> None:
    missing = sorted({f"{cls.error} ({_name(cls)})" for cls in CLASSES if cls.error not in CODES})
    assert missing == [], "add these codes to agentkeys/error_codes.py"


def test_every_class_answers_its_codes_one_status() -> None:
    wrong = sorted(
        f"{_name(cls)}: {cls.error} is {cls.status}, registered {CODES[cls.error].status}"
        for cls in CLASSES
        if cls.error in CODES and cls.status != CODES[cls.error].status
    )
    assert wrong == []


def test_no_code_has_two_statuses_across_services() -> None:
    statuses: dict[str, set[int]] = defaultdict(set)
    for cls in CLASSES:
        statuses[cls.error].add(cls.status)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}


def test_every_registered_code_is_carried_by_a_class() -> None:
    carried = {cls.error for cls in CLASSES}
    assert sorted(set(CODES) - carried) == []


def test_registry_entries_are_well_formed() -> None:
    for code, entry in CODES.items():
        assert re.fullmatch(r"[a-z0-9]+(?:_[a-z0-9]+)*", code), code
        assert isinstance(entry, ErrorCode)
        assert 400 <= entry.status <= 599, code
        assert entry.meaning.strip(), code
    assert status_of("not_a_code") == 500
    assert status_of("signer_unavailable") == 503


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("signer_unavailable", 503),  # was 502 at the broker, 503 at the worker
        ("signer_failed", 502),
        ("broker_unreachable", 503),  # was 400 in the CLI, 503 in the daemon
        ("wallet_mismatch", 403),  # was 400 in the CLI, 403 at the signer
        ("passkey_error", 401),  # the passkey page's branch is passkey_page_error now
        ("passkey_page_error", 400),
    ],
)
def test_unified_statuses(code: str, status: int) -> None:
    assert CODES[code].status == status
    assert {cls.status for cls in CLASSES if cls.error == code} == {status}


def test_binding_codes_are_one_class_each_for_broker_and_worker() -> None:
    """The device-binding leaves exist once (agentkeys.errors), whoever raises them."""
    from agentkeys.broker import errors as broker_errors
    from agentkeys.worker import errors as worker_errors

    for name in (
        "DeviceNotRegistered", "DeviceRevoked", "BindingMismatch", "RoleMissing",
        "MasterOnly", "ActorNotAgentOfOperator", "ServiceNotInScope", "ReadOnlyScope",
    ):  # fmt: skip
        shared = getattr(agentkeys.errors, name)
        assert getattr(broker_errors, name) is shared
        assert getattr(worker_errors, name) is shared
        assert [cls for cls in CLASSES if cls.error == shared.error] == [shared]
    assert binding.check_device.__module__ == "agentkeys.binding"
