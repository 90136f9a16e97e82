"""A typed client's failure becomes one command-line error, with the exit code docs/cli.md
gives it (:func:`agentkeys.cli._errors.peer_failure`, the one translation)."""

from __future__ import annotations

import pytest

from agentkeys.cli._errors import (
    EXIT_FAILED,
    EXIT_NO_STATE,
    EXIT_PASSKEY,
    EXIT_REJECTED,
    BrokerRefused,
    BrokerSessionRefused,
    BrokerUnreachable,
    RelayPasskeyRefused,
    RelayRefused,
    SidecarRefused,
    WorkerUnreachable,
    peer_failure,
)
from agentkeys.clients import AnswerMalformed, PeerRefused, PeerUnreachable

URL = "http://127.0.0.1:9"


def _refused(path: str, status: int, code: str | None, who: str = "broker") -> PeerRefused:
    return PeerRefused(who=who, path=path, http_status=status, code=code, peer_reason="why\nnot")


@pytest.mark.parametrize(
    ("failure", "expected", "exit_code"),
    [
        (_refused("/v1/auth/session", 401, "session_expired"), BrokerSessionRefused, EXIT_NO_STATE),
        (_refused("/v1/relay/scope", 403, "device_revoked"), RelayRefused, EXIT_REJECTED),
        (_refused("/v1/relay/agent", 401, "relay_k11_invalid"), RelayPasskeyRefused, EXIT_PASSKEY),
        (_refused("/v1/relay/agent", 503, "chain_unavailable"), BrokerRefused, EXIT_FAILED),
        (_refused("/v1/auth/siwe/start", 400, None), BrokerRefused, EXIT_FAILED),
        (AnswerMalformed("the broker's answer lacks session", who="broker", path="/p"),
         BrokerRefused, EXIT_FAILED),
    ],
)  # fmt: skip
def test_sign_in_failures(failure: Exception, expected: type, exit_code: int) -> None:
    assert isinstance(failure, PeerRefused | AnswerMalformed)
    error = peer_failure(failure, url=URL)
    assert type(error) is expected
    assert error.exit_code == exit_code
    assert "\n" not in error.reason
    if isinstance(failure, PeerRefused):
        assert getattr(error, "code", None) == failure.code


def test_a_refused_session_says_to_sign_in_again() -> None:
    error = peer_failure(_refused("/v1/auth/session", 401, "session_revoked"), url=URL)
    assert "session renew" in error.reason


def test_vault_refusals_are_rejections_whatever_the_code() -> None:
    for failure in (
        _refused("/v1/cap/cred-fetch", 401, "session_expired"),
        _refused("/v1/cred/fetch", 403, "device_revoked", who="worker"),
    ):
        error = peer_failure(failure, url=URL, vault=True)
        assert type(error) is SidecarRefused
        assert error.exit_code == EXIT_REJECTED
        assert error.code == failure.code
        assert error.reason.startswith(f"the {failure.who} refused {failure.path} (")


@pytest.mark.parametrize(("who", "expected"), [("broker", BrokerUnreachable),
                                                ("worker", WorkerUnreachable)])  # fmt: skip
def test_an_unreachable_peer_names_its_url_and_option(who: str, expected: type) -> None:
    failure = PeerUnreachable(who=who, path="/p", transport="ConnectError")
    error = peer_failure(failure, url=URL, vault=True)
    assert type(error) is expected
    assert error.exit_code == EXIT_FAILED
    assert URL in error.reason
    assert f"--{who}-url" in error.reason
