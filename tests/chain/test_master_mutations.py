"""Acceptance of issue 3: master mutations need K10 + K11, verified on chain (SPEC section 6).

Every test runs on anvil's default hardfork (P-256 precompile) and on prague (Solidity
fallback) through the parametrised ``chain`` fixture.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentkeys.chain.client import SignedMutation
from agentkeys.chain.events import ScopeSet
from agentkeys.chain.signing import MasterAuthority, SoftwareK10Signer, encode_k11_assertion
from agentkeys.devstack.softauthn import FLAG_UP, SoftAuthenticator
from agentkeys.omni import actor_omni_for_wallet, agent_omni, service_hash
from tests.chain.conftest import ORIGIN, RP_ID, Chain, Operator, new_master, register_operator
from tests.chain.helpers import VariantPasskey, register_agent, reverts

K10_ARG, K11_ARG = 4, 5  # positions in set_scope_with_webauthn


async def _scope_mutation(
    chain: Chain,
    op: Operator,
    *,
    label: str = "bot",
    services: tuple[str, ...] = ("openai",),
    read_only: bool = False,
    authority: MasterAuthority | None = None,
) -> SignedMutation:
    return await chain.client.prepare_set_scope(
        op.omni,
        agent_omni(op.omni, label),
        list(services),
        read_only,
        authority or op.authority,
    )


async def _agent(chain: Chain, op: Operator, label: str = "bot") -> str:
    """Register an agent device for ``label``: scope is only for the operator's own agents."""
    agent, _ = await register_agent(chain.client, op.omni, label, op.authority, op.wallet)
    return agent


def _with(mutation: SignedMutation, index: int, value: object) -> SignedMutation:
    args = list(mutation.args)
    args[index] = value
    return replace(mutation, args=tuple(args))


async def test_k10_and_k11_valid_sets_scope(chain: Chain, operator: Operator) -> None:
    agent = await _agent(chain, operator)
    nonce_before = await chain.client.operator_nonce(operator.omni)
    mutation = await _scope_mutation(chain, operator, services=("openai", "github"), read_only=True)
    receipt = await chain.client.submit(mutation, operator.wallet)

    entry = await chain.client.get_scope(operator.omni, agent)
    assert entry is not None
    assert set(entry.services) == {service_hash("openai").hex(), service_hash("github").hex()}
    assert entry.read_only is True
    assert await chain.client.is_service_in_scope(operator.omni, agent, "github")
    assert not await chain.client.is_service_in_scope(operator.omni, agent, "anthropic")
    assert await chain.client.operator_nonce(operator.omni) == nonce_before + 1
    (event,) = chain.client.receipt_events(receipt)
    assert isinstance(event, ScopeSet)
    assert event.sender == operator.wallet.address.lower()
    device = await chain.client.get_device(operator.k10.device_key_hash)
    assert device is not None
    assert device.sign_count == operator.passkey.sign_count


@pytest.mark.parametrize("assertion", ["empty", "garbage", "other-challenge"])
async def test_k10_only_reverts(chain: Chain, operator: Operator, assertion: str) -> None:
    mutation = await _scope_mutation(chain, operator)
    if assertion == "empty":
        bad, error = b"", "K11AssertionMalformed"
    elif assertion == "garbage":
        bad, error = bytes(range(256)), "K11AssertionMalformed"
    else:  # a genuine assertion by the right passkey, over another challenge
        bad = encode_k11_assertion(operator.passkey.get(b"\x01" * 32))
        error = "K11AssertionInvalid"
    with reverts(error):
        await chain.client.submit(_with(mutation, K11_ARG, bad), operator.wallet)
    assert await chain.client.get_scope(operator.omni, agent_omni(operator.omni, "bot")) is None


async def test_k11_assertion_by_wrong_key_reverts(chain: Chain, operator: Operator) -> None:
    """A correctly formed assertion over the right challenge, signed by another key."""
    impostor = VariantPasskey(operator.passkey, signing_key=ec.generate_private_key(ec.SECP256R1()))
    authority = MasterAuthority(operator.k10.device_key_hash, operator.k10, impostor)
    with reverts("K11AssertionInvalid"):
        await chain.client.submit(
            await _scope_mutation(chain, operator, authority=authority), operator.wallet
        )


@pytest.mark.parametrize("k10", ["empty", "zero-signature", "other-key"])
async def test_k11_only_reverts(chain: Chain, operator: Operator, k10: str) -> None:
    mutation = await _scope_mutation(chain, operator)
    device = operator.k10.device_key_hash
    if k10 == "empty":
        bad, error = b"", "K10SignatureMalformed"
    elif k10 == "zero-signature":
        bad, error = device + bytes(64), "K10SignatureInvalid"
    else:  # the right device hash, signed by another key over the right challenge
        other = SoftwareK10Signer.generate()
        authority = MasterAuthority(device, other, operator.passkey)
        bad = (await _scope_mutation(chain, operator, authority=authority)).args[K10_ARG]
        error = "K10SignatureInvalid"
    with reverts(error):
        await chain.client.submit(_with(mutation, K10_ARG, bad), operator.wallet)


async def test_device_of_another_operator_reverts(chain: Chain, operator: Operator) -> None:
    other = await register_operator(chain, chain.accounts[2])
    mutation = await _scope_mutation(chain, operator, authority=other.authority)
    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(mutation, operator.wallet)


async def test_replay_reverts(chain: Chain, operator: Operator) -> None:
    await _agent(chain, operator)
    mutation = await _scope_mutation(chain, operator)
    await chain.client.submit(mutation, operator.wallet)
    with reverts("K10SignatureInvalid"):
        await chain.client.submit(mutation, operator.wallet)
    with reverts("K10SignatureInvalid"):  # and from another sender
        await chain.client.submit(mutation, chain.accounts[5])


@pytest.mark.parametrize(
    ("index", "value"),
    [
        pytest.param(
            2, sorted([service_hash("openai"), service_hash("github")]), id="other-services"
        ),
        pytest.param(3, True, id="read-only-flipped"),
        pytest.param(1, "other-agent", id="other-agent"),
        pytest.param(0, "other-operator", id="other-operator"),
    ],
)
async def test_signature_for_other_parameters_reverts(
    chain: Chain, operator: Operator, index: int, value: object
) -> None:
    mutation = await _scope_mutation(chain, operator)
    if value == "other-agent":
        value = bytes.fromhex(agent_omni(operator.omni, "other"))
    if value == "other-operator":
        other = await register_operator(chain, chain.accounts[2])
        value = bytes.fromhex(other.omni)
        error = "DeviceNotAuthorised"
    else:
        error = "K10SignatureInvalid"
    with reverts(error):
        await chain.client.submit(_with(mutation, index, value), operator.wallet)


async def test_sign_count_must_increase(chain: Chain, operator: Operator) -> None:
    await _agent(chain, operator)
    await chain.client.submit(await _scope_mutation(chain, operator), operator.wallet)
    stored = operator.passkey.sign_count
    for count in (stored, stored - 1, 0):
        passkey = VariantPasskey(operator.passkey, sign_count=count)
        authority = MasterAuthority(operator.k10.device_key_hash, operator.k10, passkey)
        with reverts("K11SignCountNotIncreasing"):
            await chain.client.submit(
                await _scope_mutation(chain, operator, authority=authority), operator.wallet
            )
    # a jump forward is fine
    passkey = VariantPasskey(operator.passkey, sign_count=stored + 10)
    authority = MasterAuthority(operator.k10.device_key_hash, operator.k10, passkey)
    await chain.client.submit(
        await _scope_mutation(chain, operator, authority=authority), operator.wallet
    )


async def test_counterless_passkey_zero_to_zero_is_accepted(chain: Chain) -> None:
    op = await register_operator(chain, chain.accounts[3], counting=False)
    for label in ("one", "two", "three", "four"):
        await _agent(chain, op, label)
    for label in ("one", "two"):
        await chain.client.submit(await _scope_mutation(chain, op, label=label), op.wallet)
    device = await chain.client.get_device(op.k10.device_key_hash)
    assert device is not None
    assert device.sign_count == 0
    # once 0, a counter that starts counting is accepted; afterwards 0 is not
    counting = VariantPasskey(op.passkey, sign_count=1)
    await chain.client.submit(
        await _scope_mutation(
            chain,
            op,
            label="three",
            authority=MasterAuthority(op.k10.device_key_hash, op.k10, counting),
        ),
        op.wallet,
    )
    with reverts("K11SignCountNotIncreasing"):
        await chain.client.submit(await _scope_mutation(chain, op, label="four"), op.wallet)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"rp_id": "evil.example"}, "K11RpIdMismatch", id="other-rp-id"),
        pytest.param({"flags": FLAG_UP}, "K11AssertionInvalid", id="no-user-verification"),
        pytest.param({"flags": 0x04}, "K11AssertionInvalid", id="no-user-presence"),
        pytest.param({"kind": "webauthn.create"}, "K11AssertionInvalid", id="wrong-type"),
        pytest.param({"high_s": True}, "K11AssertionInvalid", id="high-s"),
    ],
)
async def test_faulty_assertions_revert(
    chain: Chain, operator: Operator, options: dict[str, object], error: str
) -> None:
    passkey = VariantPasskey(operator.passkey, **options)  # type: ignore[arg-type]
    authority = MasterAuthority(operator.k10.device_key_hash, operator.k10, passkey)
    mutation = await _scope_mutation(chain, operator, authority=authority)
    if passkey.high_s:  # the client normalises s; undo that
        assert passkey.last is not None
        mutation = _with(mutation, K11_ARG, encode_k11_assertion(passkey.last, low_s=False))
    with reverts(error):
        await chain.client.submit(mutation, operator.wallet)


async def test_revoked_master_cannot_authorise(chain: Chain, operator: Operator) -> None:
    await _agent(chain, operator)
    # a second master device, added by the first
    k10_2 = SoftwareK10Signer.generate()
    passkey_2 = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    proof = await chain.client.k10_binding_proof(k10_2, operator.omni, operator.omni)
    add = await chain.client.prepare_add_master_device(
        operator.omni, new_master(k10_2, passkey_2), proof, operator.authority
    )
    await chain.client.submit(add, operator.wallet)
    second = MasterAuthority(k10_2.device_key_hash, k10_2, passkey_2)

    revoke = await chain.client.prepare_revoke_device(
        operator.omni, operator.k10.device_key_hash, second
    )
    await chain.client.submit(revoke, operator.wallet)
    device = await chain.client.get_device(operator.k10.device_key_hash)
    assert device is not None
    assert device.revoked

    with reverts("DeviceNotAuthorised"):
        await chain.client.submit(await _scope_mutation(chain, operator), operator.wallet)
    await chain.client.submit(
        await _scope_mutation(chain, operator, authority=second), operator.wallet
    )


async def test_front_runner_cannot_take_first_master_registration(chain: Chain) -> None:
    wallet, attacker = chain.accounts[1], chain.accounts[5]
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    mutation = await chain.client.prepare_register_first_master(
        wallet.address, new_master(k10, passkey), k10, passkey
    )
    # copied from the mempool and sent by the attacker as is
    with reverts("SenderIsNotWallet"):
        await chain.client.submit(mutation, attacker)
    # with the attacker's wallet substituted: the K10/K11 self-attestation binds the wallet
    with reverts("K10SignatureInvalid"):
        await chain.client.submit(_with(mutation, 0, attacker.address), attacker)
    # ... and with the attacker's wallet and a valid K10 of its own, the K11 still binds it
    own_k10 = SoftwareK10Signer.generate()
    theirs = await chain.client.prepare_register_first_master(
        attacker.address, new_master(own_k10, passkey), own_k10, VariantPasskey(passkey)
    )
    forged = replace(theirs, args=(*theirs.args[:3], mutation.args[3], b""))
    with reverts("K11AssertionInvalid"):
        await chain.client.submit(forged, attacker)

    await chain.client.submit(mutation, wallet)
    omni = actor_omni_for_wallet(wallet.address)
    assert await chain.client.master_wallet(omni) == wallet.address.lower()
    device = await chain.client.get_device(k10.device_key_hash)
    assert device is not None
    assert (device.operator_omni, device.actor_omni, device.tier) == (omni, omni, 1)
    assert await chain.client.master_wallet(actor_omni_for_wallet(attacker.address)) is None
    with reverts("OperatorAlreadyRegistered"):
        await chain.client.submit(mutation, wallet)


async def test_relay_submits_operator_signed_scope_change(chain: Chain, operator: Operator) -> None:
    relay = chain.accounts[7]
    agent = await _agent(chain, operator)
    mutation = await _scope_mutation(chain, operator)
    receipt = await chain.client.submit(mutation, relay)
    (event,) = chain.client.receipt_events(receipt)
    assert isinstance(event, ScopeSet)
    assert event.sender == relay.address.lower()
    assert await chain.client.is_service_in_scope(operator.omni, agent, "openai")

    unsigned = _with(
        _with(await _scope_mutation(chain, operator, label="b2"), K10_ARG, b""), K11_ARG, b""
    )
    with reverts("K10SignatureMalformed"):
        await chain.client.submit(unsigned, relay)


async def test_relay_first_master_registration_needs_wallet_signature(chain: Chain) -> None:
    wallet, relay = chain.accounts[2], chain.accounts[7]
    k10 = SoftwareK10Signer.generate()
    passkey = SoftAuthenticator(rp_id=RP_ID, origin=ORIGIN)
    device = new_master(k10, passkey)
    forged = await chain.client.prepare_register_first_master(
        wallet.address, device, k10, passkey, relay_signer=relay
    )
    with reverts("WalletSignatureInvalid"):
        await chain.client.submit(forged, relay)
    mutation = await chain.client.prepare_register_first_master(
        wallet.address, device, k10, passkey, relay_signer=wallet
    )
    receipt = await chain.client.submit(mutation, relay)
    senders = {e.sender for e in chain.client.receipt_events(receipt)}
    assert senders == {relay.address.lower()}
    assert (
        await chain.client.master_wallet(actor_omni_for_wallet(wallet.address))
        == wallet.address.lower()
    )
