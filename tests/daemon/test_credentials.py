"""The credential source (broker cap mint + worker fetch): refusals, transport failures,
the legacy identity in fetch bodies, and v1 data served through the daemon.

There is no other source: the interim local-file source is gone and stays gone.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import agentkeys.daemon.credentials as credentials_module
from agentkeys._files import write_private
from agentkeys.clients import AnswerMalformed, PeerRefused, PeerUnreachable
from agentkeys.config import ConfigError, load_config
from agentkeys.daemon import DaemonConfig
from agentkeys.daemon._peer import peer_errors
from agentkeys.daemon.credentials import BrokerWorkerSource
from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable, SessionUnavailable
from agentkeys.daemon.session import DeviceSession, SessionProblem
from agentkeys.errors import InvalidIdentifier
from attest.device_key import SoftwareDeviceKey
from tests.daemon.conftest import ACTOR, OPERATOR, Broker, signed_in


def source_for(key: SoftwareDeviceKey, broker: httpx.AsyncClient) -> BrokerWorkerSource:
    return BrokerWorkerSource(
        broker=broker,
        worker=broker,
        device_key=key,
        session=DeviceSession(broker=broker, device_key=key),
        operator_omni=OPERATOR,
        actor_omni=ACTOR,
    )


async def test_a_failed_sign_in_serves_nothing(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The real broker (here without a chain) cannot sign the device in: no session, nothing
    is minted, and the daemon logs the broker's code and reason (never a token or signature)
    and that it retries."""
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    async with httpx.AsyncClient(base_url=broker.url, trust_env=False) as http:
        source = source_for(key, http)
        async with signed_in(source):
            assert source.session.problem() is SessionProblem.INVALID
            with pytest.raises(SessionUnavailable):
                await source.fetch("openai")
    assert source.session.sign_ins == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "agentkeys.daemon"]
    assert logged[0].startswith("the broker refused: HTTP 503 chain_unavailable (")
    assert logged[1].startswith("device sign-in failed, retrying in 0.5 s")
    assert all("eyJ" not in line for line in logged)


async def test_unreachable_broker_is_unavailable(tmp_path: Path) -> None:
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", trust_env=False) as http:
        source = source_for(key, http)
        async with signed_in(source):
            with pytest.raises(CredentialUnavailable) as info:
                await source.fetch("openai")
    assert not isinstance(info.value, CredentialRefused)
    assert info.value.error == "session_unavailable"


def test_session_file_is_refused_at_load(tmp_path: Path) -> None:
    """The daemon signs in with its own K10: a config still naming the operator's session
    file is refused, from the file or the environment."""
    path = tmp_path / "daemon.toml"
    write_private(path, '[broker]\nsession_file = "/home/op/.agentkeys/session.jwt"\n')
    with pytest.raises(ConfigError) as info:
        load_config(DaemonConfig, path=path, environ={})
    assert "signs in to the broker with its own K10" in info.value.reason
    write_private(path, "")
    with pytest.raises(ConfigError):
        load_config(
            DaemonConfig, path=path, environ={"AGENTKEYS_BROKER_SESSION_FILE": "/tmp/session"}
        )


def test_no_local_file_source_exists(tmp_path: Path) -> None:
    """A config asking for credentials from a local file is refused at load."""
    assert not hasattr(credentials_module, "FileCredentialSource")
    path = tmp_path / "daemon.toml"
    write_private(path, '[credentials]\nsource = "file"\n')
    with pytest.raises(ConfigError):
        load_config(DaemonConfig, path=path, environ={})
    write_private(path, '[credentials]\nfile = "/tmp/credentials.toml"\n')
    with pytest.raises(ConfigError):
        load_config(DaemonConfig, path=path, environ={})


def test_legacy_identity_omni_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    write_private(path, f'[identity]\nlegacy_identity_omni = "0x{"AB" * 32}"\n')
    config = load_config(DaemonConfig, path=path, environ={})
    assert config.identity.legacy_identity_omni == "0x" + "AB" * 32
    for bad in ("ab" * 31, "zz" * 32, ""):
        write_private(path, f'[identity]\nlegacy_identity_omni = "{bad}"\n')
        with pytest.raises(ConfigError) as info:
            load_config(DaemonConfig, path=path, environ={})
        assert "legacy_identity_omni" in info.value.reason
    key = SoftwareDeviceKey.open(tmp_path / "dev" / "k10.pem")
    http = httpx.AsyncClient()
    with pytest.raises(InvalidIdentifier):
        BrokerWorkerSource(
            broker=http, worker=http, device_key=key,
            session=DeviceSession(broker=http, device_key=key), operator_omni=OPERATOR,
            actor_omni=ACTOR, legacy_identity_omni="not-hex",
        )  # fmt: skip


def _refused(status: int, code: str | None, reason: str | None = "why") -> PeerRefused:
    return PeerRefused(who="worker", path="/v1/cred/fetch", http_status=status, code=code,
                       peer_reason=reason)  # fmt: skip


@pytest.mark.parametrize(
    ("error", "raised", "answer_code", "reason"),
    [
        (_refused(404, "credential_not_found"), CredentialRefused, "credential_not_found",
         "the worker refused: credential_not_found"),
        (_refused(403, None), CredentialRefused, "credential_refused",
         "the worker refused: refused"),
        (_refused(503, "chain_unavailable"), CredentialUnavailable, "credential_unavailable",
         "the worker answered HTTP 503 (chain_unavailable)"),
        (_refused(500, None, None), CredentialUnavailable, "credential_unavailable",
         "the worker answered HTTP 500 (no error code)"),
        (PeerUnreachable(who="broker", path="/p", transport="ConnectError"),
         CredentialUnavailable, "credential_unavailable", "broker unreachable: ConnectError"),
        (AnswerMalformed("the worker's answer lacks source", who="worker", path="/p"),
         CredentialUnavailable, "credential_unavailable", "the worker's answer lacks source"),
    ],
)  # fmt: skip
def test_client_errors_become_the_daemons(
    error: Exception, raised: type[CredentialUnavailable], answer_code: str, reason: str
) -> None:
    with pytest.raises(CredentialUnavailable) as caught, peer_errors():
        raise error
    assert type(caught.value) is raised
    assert caught.value.reason == reason
    code = caught.value.answer_code if isinstance(caught.value, CredentialRefused) else None
    assert (code or caught.value.error) == answer_code


def test_a_refusal_is_logged_with_a_printable_bounded_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(CredentialRefused), peer_errors():
        raise _refused(403, "device_revoked", "revoked\nat block 7" + "x" * 300)
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "agentkeys.daemon"]
    assert logged == "the worker refused: HTTP 403 device_revoked (revoked?at block 7" + (
        "x" * 182 + ")"
    )
