"""The broker's state store (both backends), key files, SMTP sink and public surface."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

import agentkeys.broker
from agentkeys.broker import BrokerKeys, SqliteStateStore, StateStore
from agentkeys.broker._email import SmtpMailer, hash_secret, new_secret
from agentkeys.broker._store import PasskeyCredential, SessionRecord
from agentkeys.broker.errors import EmailDeliveryFailed
from agentkeys.config import InsecureFileError
from agentkeys.devstack import pick_port
from agentkeys.devstack.smtp_sink import find_link, run_smtp_sink


async def _store(tmp_path: Path) -> SqliteStateStore:
    return await SqliteStateStore.open(tmp_path / "state" / "broker.sqlite3")


async def test_database_is_private(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    finally:
        await store.aclose()


async def test_refuses_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # noqa: S103 - the unsafe directory under test
    with pytest.raises(InsecureFileError):
        await SqliteStateStore.open(shared / "broker.sqlite3")


async def test_email_link_single_use_and_expiry(state_store: StateStore) -> None:
    store = state_store
    token, handle = new_secret(), new_secret()
    assert len(token) >= 43  # 256 bits
    await store.add_email_request(
        token_hash=hash_secret(token),
        request_hash=hash_secret(handle),
        email="a@b.c",
        identity_omni="00" * 32,
        expires_at=100,
    )
    assert await store.follow_email_link(hash_secret(token), now=101) is not None
    request = await store.get_email_request(hash_secret(handle))
    assert request is not None
    assert not request.verified
    assert await store.follow_email_link(hash_secret(token), now=50) is None  # used
    assert await store.collect_email_request(hash_secret(handle)) is None


async def test_stored_secrets_are_hashed(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    token, handle = new_secret(), new_secret()
    await store.add_email_request(
        token_hash=hash_secret(token),
        request_hash=hash_secret(handle),
        email="a@b.c",
        identity_omni="00" * 32,
        expires_at=10**10,
    )
    await store.aclose()
    data = (
        store.path.read_bytes() + store.path.with_name("broker.sqlite3-wal").read_bytes()
        if store.path.with_name("broker.sqlite3-wal").exists()
        else store.path.read_bytes()
    )
    assert token.encode() not in data
    assert handle.encode() not in data


async def test_challenges_are_single_use_per_session(state_store: StateStore) -> None:
    store = state_store
    await store.add_challenge(
        challenge_id="c", purpose="p", session_jti="s", payload={"k": "v"}, expires_at=100
    )
    assert (
        await store.take_challenge(challenge_id="c", purpose="p", session_jti="other", now=1)
        is None
    )
    assert await store.take_challenge(challenge_id="c", purpose="p", session_jti="s", now=1) == {
        "k": "v"
    }
    assert await store.take_challenge(challenge_id="c", purpose="p", session_jti="s", now=1) is None
    await store.add_challenge(
        challenge_id="d", purpose="p", session_jti="s", payload={}, expires_at=100
    )
    assert (
        await store.take_challenge(challenge_id="d", purpose="p", session_jti="s", now=101) is None
    )


async def test_nonces_sessions_sign_counts(state_store: StateStore) -> None:
    store = state_store
    assert await store.consume_nonce(b"n", expires_at=100, now=1)
    assert not await store.consume_nonce(b"n", expires_at=100, now=2)
    assert await store.consume_nonce(b"n", expires_at=300, now=101)  # window over
    await store.add_session(SessionRecord("j", "j1", "s", 100, False))
    assert await store.revoke_subject("s") == 1
    record = await store.get_session("j")
    assert record is not None
    assert record.revoked
    await store.add_credential(PasskeyCredential("i", b"id", b"cose", 3, b"\x00" * 64, "rp", 1))
    assert not await store.update_sign_count(b"id", old=2, new=4)
    assert await store.update_sign_count(b"id", old=3, new=4)
    assert (await store.credentials_of("i"))[0].sign_count == 4
    await store.set_legacy_scope("o", "a", ("b", "a", "a"), True)
    legacy = await store.get_legacy_scope("o", "a")
    assert legacy is not None
    assert legacy.services == ("a", "b")
    assert legacy.read_only
    assert await store.delete_legacy_scope("o", "a")
    assert await store.get_legacy_scope("o", "a") is None


def test_keys_are_created_private_and_rotate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = BrokerKeys.load_or_create(state)
    for purpose in ("cap", "oidc", "session"):
        directory = state / "keys" / purpose
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = BrokerKeys.load_or_create(state)
    assert again.cap.active_kid == keys.cap.active_kid
    assert len({keys.cap.active_kid, keys.oidc.active_kid, keys.session.active_kid}) == 3
    BrokerKeys.rotate(state, "cap")
    rotated = BrokerKeys.load_or_create(state)
    assert rotated.cap.active_kid != keys.cap.active_kid
    assert keys.cap.active_kid in rotated.cap.published.by_kid  # old key stays published


def test_keys_refuse_readable_key_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    BrokerKeys.load_or_create(state)
    path = next((state / "keys" / "cap").iterdir())
    os.chmod(path, 0o644)
    with pytest.raises(InsecureFileError):
        BrokerKeys.load_or_create(state)


async def test_smtp_sink_receives_and_mailer_fails_closed(tmp_path: Path) -> None:
    async with run_smtp_sink(maildir=tmp_path / "maildir") as sink:
        mailer = SmtpMailer(host=sink.host, port=sink.port, sender="b@agentkeys.test")
        await mailer.send(to="x@example.org", subject="s", body="go to https://h/v?token=t\n")
        with trio.fail_after(30):
            mail = await sink.wait_for("x@example.org")
        assert find_link(mail, "token=") == "https://h/v?token=t"
        assert mail.subject == "s"
        assert sink.messages("nobody@example.org") == []
        assert len(list((tmp_path / "maildir" / "new").iterdir())) == 1
    dead = SmtpMailer(host="127.0.0.1", port=pick_port(), sender="b@agentkeys.test")
    with pytest.raises(EmailDeliveryFailed):
        await dead.send(to="x@example.org", subject="s", body="b")


def test_exported_names() -> None:
    assert sorted(agentkeys.broker.__all__) == sorted(
        [
            "J0",
            "J1",
            "ROUTES",
            "SESSION_REQUIREMENTS",
            "BrokerConfig",
            "BrokerKeys",
            "BrokerRoute",
            "BrokerService",
            "CachedChainView",
            "CapSettings",
            "ChainReader",
            "ChainSettings",
            "EmailRequest",
            "EmailSettings",
            "K4Signer",
            "KeyRing",
            "LegacyScope",
            "Mailer",
            "MintDecision",
            "MintRecord",
            "OidcSettings",
            "PasskeyCredential",
            "PostgresStateStore",
            "Relay",
            "RelaySettings",
            "ScopeSource",
            "Session",
            "SessionIssuer",
            "SessionRecord",
            "SignerK4Client",
            "SignerLink",
            "SigningKeyRecord",
            "SiteSettings",
            "SmtpMailer",
            "SqliteStateStore",
            "StateSettings",
            "StateStore",
            "check_binding",
            "decide_scope",
            "discovery_document",
            "mint_oidc_token",
            "run_broker",
        ]
    )
    for name in agentkeys.broker.__all__:
        assert hasattr(agentkeys.broker, name)
