"""Request-level behaviour of the worker, through both front ends (microservice and Lambda).

Real anvil (contracts), SeaweedFS (STS + deploy/aws policies) and the signer over mTLS.
"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.b64url import b64url_decode
from agentkeys.cap import cap_digest
from agentkeys.pop import PopProof, new_worker_pop_claims, sign_pop
from agentkeys.worker.layout import v2_key
from tests.worker.conftest import Stack, add_agent, revoke

SECRET = b"sk-test-0123456789abcdef"


async def test_master_store_fetch_list_teardown(frontend: Stack) -> None:
    s = frontend
    master = s.operator.master
    stored = await s.store_credential(master, "openai", SECRET)
    assert stored.status == 200, stored.body
    assert stored.body["key"] == v2_key(s.operator.omni, "openai")
    assert stored.body["envelope_version"] == 4
    envelope = await s.admin_get(stored.body["key"])
    assert envelope is not None
    assert envelope[0] == 4
    assert SECRET not in envelope

    fetched = await s.fetch(master)
    assert fetched.status == 200, fetched.body
    assert b64url_decode(fetched.body["credential"]) == SECRET
    assert fetched.body["source"] == "v2"
    assert fetched.body["migration"] == {"migrated": False}
    if s.frontend == "service":
        row = s.audit.events[-1]
        assert (row.route, row.outcome) == ("cred_fetch", "ok")
        assert row.fields["actor"] == s.operator.omni
        assert row.fields["source"] == "v2"
        assert SECRET.decode() not in repr(row.to_json())

    await s.store_credential(master, "github", b"ghp_x")
    listed = await s.request(master, "list", {})
    assert listed.status == 200, listed.body
    assert listed.body["services"] == [
        {"service": "github", "source": "v2"},
        {"service": "openai", "source": "v2"},
    ]
    torn = await s.request(master, "teardown", {})
    assert torn.status == 200, torn.body
    assert torn.body["deleted"] == {"v2": 1, "v1": 0}  # the cap's service only
    missing = await s.fetch(master)
    assert (missing.status, missing.body["error"]) == (404, "credential_not_found")
    assert (await s.fetch(master, "github")).status == 200


async def test_refusals_name_their_reason(frontend: Stack) -> None:
    s = frontend
    master = s.operator.master
    assert (await s.store_credential(master, "openai", SECRET)).status == 200

    no_proof = await s.fetch(master, with_proof=False)
    assert (no_proof.status, no_proof.body["error"]) == (401, "pop_missing")

    wrong_op = await s.fetch(master, cap_op="store")
    assert (wrong_op.status, wrong_op.body["error"]) == (403, "cap_operation_mismatch")

    proof_for_other_op = await s.request(master, "fetch", {}, proof_op="list")
    assert proof_for_other_op.body["error"] == "pop_signature_invalid"

    expired = await s.fetch(master, issued_at=int(time.time()) - 400, lifetime=300)
    assert (expired.status, expired.body["error"]) == (401, "cap_expired")

    other_aud = await s.fetch(master, aud="another-worker")
    assert other_aud.body["error"] == "cap_audience_mismatch"

    future_epoch = await s.fetch(master, epoch=(await s.chain.client.current_epoch()) + 1)
    assert (future_epoch.status, future_epoch.body["error"]) == (409, "epoch_not_current")

    agent = await add_agent(s.chain, s.operator, "bot", ["openai"])
    agent_store = await s.store_credential(agent, "openai", b"x")
    assert (agent_store.status, agent_store.body["error"]) == (403, "master_only")
    out_of_scope = await s.fetch(agent, "github")
    assert (out_of_scope.status, out_of_scope.body["error"]) == (403, "service_not_in_scope")

    await revoke(s.chain, s.operator, agent)
    revoked = await s.fetch(agent)
    assert (revoked.status, revoked.body["error"]) == (403, "device_revoked")


async def test_a_replayed_or_stale_proof_is_refused(frontend: Stack) -> None:
    s = frontend
    master = s.operator.master
    assert (await s.store_credential(master, "openai", SECRET)).status == 200
    token, payload = await s.cap(master, "fetch")
    raw = b"{}"
    headers = {
        "authorization": f"Cap {token}",
        "agentkeys-pop": s.proof(payload, "fetch", raw, master.key),
        "content-type": "application/json",
    }
    first = await s.post("/v1/cred/fetch", headers, raw)
    assert first.status == 200, first.body
    replay = await s.post("/v1/cred/fetch", headers, raw)
    assert (replay.status, replay.body["error"]) == (401, "pop_nonce_reused")

    other_body = await s.post("/v1/cred/fetch", headers, b'{"legacy_identity_omni": null}')
    assert other_body.body["error"] == "pop_signature_invalid"  # the proof covers the body

    stale_claims = new_worker_pop_claims(
        cap_digest=cap_digest(payload), op="fetch", body=raw, now=int(time.time()) - 120
    )
    stale = PopProof(stale_claims.timestamp, stale_claims.nonce, sign_pop(stale_claims, master.key))
    headers["agentkeys-pop"] = stale.to_header_value()
    refused = await s.post("/v1/cred/fetch", headers, raw)
    assert (refused.status, refused.body["error"]) == (401, "pop_stale")

    stranger = ec.generate_private_key(ec.SECP256R1())
    headers["agentkeys-pop"] = s.proof(payload, "fetch", raw, stranger)
    forged = await s.post("/v1/cred/fetch", headers, raw)
    assert (forged.status, forged.body["error"]) == (401, "pop_signature_invalid")


async def test_malformed_requests(frontend: Stack) -> None:
    s = frontend
    master = s.operator.master
    no_cap = await s.post("/v1/cred/fetch", {"content-type": "application/json"}, b"{}")
    assert (no_cap.status, no_cap.body["error"]) == (401, "cap_missing")
    garbage = await s.post(
        "/v1/cred/fetch", {"authorization": "Cap !!!", "agentkeys-pop": "1.2.3"}, b""
    )
    assert (garbage.status, garbage.body["error"]) == (400, "cap_invalid")
    unknown = await s.post("/v1/cred/nope", {"content-type": "application/json"}, b"{}")
    assert (unknown.status, unknown.body["error"]) == (404, "not_found")
    text = await s.post("/v1/cred/fetch", {"content-type": "text/plain"}, b"hello")
    assert (text.status, text.body["error"]) == (415, "unsupported_media_type")
    huge = await s.post(
        "/v1/cred/store", {"content-type": "application/json"}, b'{"x": "' + b"a" * 70000 + b'"}'
    )
    assert (huge.status, huge.body["error"]) == (413, "body_too_large")
    bad_field = await s.request(master, "store", {"credential": "not base64!"})
    assert (bad_field.status, bad_field.body["error"]) == (400, "request_refused")
    unknown_field = await s.request(master, "fetch", {"surprise": 1})
    assert (unknown_field.status, unknown_field.body["error"]) == (400, "unknown_field")


async def test_agent_reads_in_scope_only_and_master_stores_for_it(frontend: Stack) -> None:
    s = frontend
    agent = await add_agent(s.chain, s.operator, "bot", ["openai"], read_only=False)
    master_for_agent = await s.store_credential(
        s.operator.master, "openai", b"agent-copy", actor_omni=agent.actor_omni
    )
    assert master_for_agent.status == 200, master_for_agent.body
    assert master_for_agent.body["key"] == v2_key(agent.actor_omni, "openai")
    fetched = await s.fetch(agent)
    assert fetched.status == 200, fetched.body
    assert b64url_decode(fetched.body["credential"]) == b"agent-copy"
    # The operator's own vault is another prefix: the agent's cap never reaches it.
    assert (await s.store_credential(s.operator.master, "github", b"own")).status == 200
    github = await s.fetch(agent, "github")
    assert github.body["error"] == "service_not_in_scope"
    agent_list = await s.request(agent, "list", {})
    assert agent_list.body["error"] == "master_only"
