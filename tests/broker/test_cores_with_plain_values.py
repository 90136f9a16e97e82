"""The broker's cores called directly with plain values: no HTTP, no Call, no app.

Each core gets only what it needs (a real SQLite store, real keys, the real SMTP sink, the
real chain on anvil) and is given decoded request dataclasses and a Session; what it answers
is a response dataclass, and what it refuses it refuses with the domain error the HTTP shell
would turn into ``{error, reason}``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from agentkeys.broker import BrokerKeys, CachedChainView, SqliteStateStore
from agentkeys.broker._cap_minting import CapMinted, CapMinting, CapMintRequest
from agentkeys.broker._email import SmtpMailer
from agentkeys.broker._email_signin import (
    MAX_PENDING_LINKS,
    EmailPending,
    EmailPollRequest,
    EmailSignedIn,
    EmailSignIn,
    EmailStartRequest,
)
from agentkeys.broker._sessions import DEVICE, J0, J1, Session, SessionIssuer
from agentkeys.broker.config import CapSettings, EmailSettings, SiteSettings
from agentkeys.broker.errors import (
    DeviceSessionNotAllowed,
    EmailRateLimited,
    EmailRequestUnknown,
    EmailTokenInvalid,
    OperatorMismatch,
    ReplayedNonce,
)
from agentkeys.cap import CapOp
from agentkeys.devstack.smtp_sink import SmtpSink, find_link
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import IdentityType, identity_omni
from agentkeys.service._audit import AuditValue
from tests.broker.conftest import ORIGIN, RP_ID, Chain, Operator
from tests.broker.test_cap_mint import proof_for

ADDRESS = "Core@Example.org"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    opened = await SqliteStateStore.open(tmp_path / "broker.sqlite3")
    yield opened
    await opened.aclose()


@pytest.fixture
async def keys(tmp_path: Path) -> BrokerKeys:
    loaded: BrokerKeys = await trio.to_thread.run_sync(BrokerKeys.load_or_create, tmp_path)
    return loaded


SITE = SiteSettings(public_url="http://127.0.0.1:9", rp_id=RP_ID, origin=ORIGIN, chain_id=31337)


def _issuer(keys: BrokerKeys, store: SqliteStateStore) -> SessionIssuer:
    return SessionIssuer(keys.session, store, issuer=SITE.public_url, audience="agentkeys-broker")


def _email_core(keys: BrokerKeys, store: SqliteStateStore, smtp: SmtpSink) -> EmailSignIn:
    return EmailSignIn(
        site=SITE,
        email=EmailSettings(smtp_port=smtp.port),
        store=store,
        mailer=SmtpMailer(host=smtp.host, port=smtp.port, sender="broker@agentkeys.test"),
        sessions=_issuer(keys, store),
        clock=time.time,
    )


async def test_email_sign_in_mails_a_link_and_answers_the_j0_once(
    keys: BrokerKeys, store: SqliteStateStore, smtp: SmtpSink
) -> None:
    core = _email_core(keys, store, smtp)
    audit: dict[str, AuditValue] = {}
    started = await core.start(EmailStartRequest(ADDRESS), audit)
    identity = identity_omni(IdentityType.EMAIL, ADDRESS)
    assert audit == {"identity": identity}
    assert started.expires_at > time.time()
    poll = EmailPollRequest(started.request)
    assert await core.poll(poll, {}) == EmailPending()
    with trio.fail_after(30):
        mail = await smtp.wait_for(ADDRESS.lower(), count=1)
    link = find_link(mail, "/v1/auth/email/verify")
    assert link is not None
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert (await core.verify(token, {})).verified is True
    signed_in = await core.poll(poll, {})
    assert isinstance(signed_in, EmailSignedIn)
    assert (signed_in.stage, signed_in.identity_omni) == (J0, identity)
    session = await _issuer(keys, store).verify(
        signed_in.session, now=int(time.time()), stages=(J0,)
    )
    assert session.subject == identity
    # the request was collected: a second poll and a second use of the link are refused
    with pytest.raises(EmailRequestUnknown):
        await core.poll(poll, {})
    with pytest.raises(EmailTokenInvalid):
        await core.verify(token, {})


async def test_email_sign_in_refuses_odd_addresses_and_bounds_pending_links(
    keys: BrokerKeys, store: SqliteStateStore, smtp: SmtpSink
) -> None:
    core = _email_core(keys, store, smtp)
    audit: dict[str, AuditValue] = {}
    with pytest.raises(InvalidIdentifier):
        await core.start(EmailStartRequest('"quoted" <a@b.c>'), audit)
    assert audit == {}  # refused before anything is looked up
    for _ in range(MAX_PENDING_LINKS):
        await core.start(EmailStartRequest("busy@example.org"), {})
    with pytest.raises(EmailRateLimited):
        await core.start(EmailStartRequest("busy@example.org"), {})
    assert len(smtp.messages("busy@example.org")) == MAX_PENDING_LINKS
    with pytest.raises(EmailTokenInvalid):
        await core.verify("", {})


def _session(stage: str, subject: str, **claims: str) -> Session:
    return Session(
        jti="core-test", stage=stage, subject=subject, expires_at=2**31, claims=dict(claims)
    )


def _mint_core(keys: BrokerKeys, store: SqliteStateStore, chain: Chain) -> CapMinting:
    return CapMinting(
        caps=CapSettings(),
        keys=keys,
        store=store,
        chain=CachedChainView(chain.client),
        clock=time.time,
    )


def _request(operator: Operator, op: CapOp = CapOp.FETCH) -> CapMintRequest:
    return CapMintRequest(
        operator_omni=operator.omni,
        actor_omni=operator.omni,
        service="openai",
        device_key_hash=operator.master.hash,
        pop=proof_for(op, operator.omni, operator.omni, "openai", operator.master),
    )


async def test_cap_minting_signs_a_cap_for_the_master_itself(
    keys: BrokerKeys, store: SqliteStateStore, chain: Chain, operator: Operator
) -> None:
    core = _mint_core(keys, store, chain)
    audit: dict[str, AuditValue] = {}
    minted = await core.fetch(_request(operator), _session(J1, operator.omni), audit)
    assert isinstance(minted, CapMinted)
    assert minted.scope_source == "master_self"
    assert minted.cap["kid"] == keys.cap.active_kid
    assert audit["op"] == "fetch"
    assert audit["scope_source"] == "master_self"
    assert audit["epoch"] == await chain.client.current_epoch()


async def test_cap_minting_refuses_another_operator_a_replayed_pop_and_a_device_store(
    keys: BrokerKeys, store: SqliteStateStore, chain: Chain, operator: Operator
) -> None:
    core = _mint_core(keys, store, chain)
    audit: dict[str, AuditValue] = {}
    with pytest.raises(OperatorMismatch):
        await core.fetch(_request(operator), _session(J1, "ab" * 32), audit)
    assert audit["operator"] == operator.omni  # the audit row names what was asked for
    assert "scope_source" not in audit
    request = _request(operator)
    await core.fetch(request, _session(J1, operator.omni), {})
    with pytest.raises(ReplayedNonce):
        await core.fetch(request, _session(J1, operator.omni), {})
    device = _session(
        DEVICE, operator.omni, actor_omni=operator.omni, device_key_hash=operator.master.hash
    )
    with pytest.raises(DeviceSessionNotAllowed):
        await core.store(_request(operator, CapOp.STORE), device, {})
