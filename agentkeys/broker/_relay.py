"""Hosted-relay mode: the broker submits master mutations the operator signed (SPEC 1, 6, 7).

Scope mutations (:meth:`Relay.scope_mutation`), agent registration
(:meth:`Relay.add_agent_device`), device revocation (:meth:`Relay.revoke_device`) and, for an
operator whose master wallet is the signer-held K4, the first-master registration
(:meth:`Relay.register_first_master`, with K4's EIP-712 approval obtained from the signer by
the broker's ``/v1/relay/first-master``).

Off unless configured. Authorisation never rests on the relay: the contracts check K10 + K11
themselves. The broker still verifies both *before* paying gas, against what the chain says
about the device (SidecarRegistry: a live master of the operator with the role the contract
wants: SCOPE_MGMT for scope, RECOVERY to add an agent or revoke another device; its K10
point, its passkey's public key, rpIdHash and last sign count) and the challenge the contract
will rebuild (operation tag, parameters, chain id, contract, the operator's current nonce).

Submissions go through one queue; a single task takes up to ``batch_size`` queued mutations
at a time and submits them back to back from the relay wallet (so their nonces stay in
order), answering each caller with its receipt or its error.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import trio
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from agentkeys.b64url import b64url_decode
from agentkeys.broker import _passkey as pk
from agentkeys.broker.errors import (
    ChainUnavailable,
    RelayDeviceNotAuthorised,
    RelayK10Invalid,
    RelayK11Invalid,
    RelayRejected,
)
from agentkeys.chain import ROLE_RECOVERY, ROLE_SCOPE_MGMT
from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient, Receipt, SignedMutation, Tier
from agentkeys.chain.errors import ChainError, ContractReverted
from agentkeys.chain.signing import encode_k10_sig, encode_k11_assertion
from agentkeys.errors import AgentkeysError, FormatError
from agentkeys.es256 import raw_rs_to_der
from agentkeys.omni import (
    actor_omni_for_wallet,
    device_key_hash_from_point,
    hex32_to_bytes,
    p256_public_key_from_point,
)
from agentkeys.omni import agent_omni as omni_of_agent
from attest.k10_signature import verify_k10

__all__ = ["Approval", "Relay"]

log = logging.getLogger("agentkeys.broker.relay")


@dataclass(frozen=True)
class _Assertion:
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes


def _assertion_parts(assertion: Mapping[str, Any]) -> _Assertion:
    response = assertion.get("response")
    if not isinstance(response, Mapping):
        raise RelayRejected("assertion lacks its response")
    try:
        return _Assertion(
            b64url_decode(str(response["authenticatorData"])),
            b64url_decode(str(response["clientDataJSON"])),
            b64url_decode(str(response["signature"])),
        )
    except (KeyError, FormatError):
        raise RelayRejected("assertion response is malformed") from None


def _cose_key(point: bytes) -> bytes:
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: point[:32], -3: point[32:]})


def _k10_verifies(point: bytes, raw: bytes, message: bytes) -> bool:
    try:
        return verify_k10(p256_public_key_from_point(point), raw, message=message)
    except FormatError:
        return False


@dataclass(frozen=True)
class Approval:
    """A master device's approval of one mutation, as the operator's CLI hands it over:
    its ``device_key_hash``, K10 ``r ‖ s`` (hex) and K11 AuthenticationResponseJSON over the
    challenge, checked for ``rp_id`` / ``origin`` (the broker's WebAuthn site)."""

    operator_omni: str
    device_key_hash: str
    k10_signature: str
    assertion: Mapping[str, Any]
    rp_id: str
    origin: str


@dataclass
class _Job:
    mutation: SignedMutation
    reply: trio.MemorySendChannel[Receipt | AgentkeysError]


class Relay:
    """Verifies and submits master mutations from the relay wallet.

    Args:
        client: the chain client (reads, challenge, submission).
        account: the relay wallet that pays gas.
        batch_size: most mutations submitted per batch.
    """

    def __init__(self, client: ChainClient, account: LocalAccount, *, batch_size: int = 16) -> None:
        self._client = client
        self._account = account
        self._batch = batch_size
        self._send, self._receive = trio.open_memory_channel[_Job](math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Submit queued mutations until cancelled (a task of the broker's nursery)."""
        task_status.started()
        async for job in self._receive:
            batch = [job]
            while len(batch) < self._batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            for item in batch:
                result: Receipt | AgentkeysError
                try:
                    result = await self._client.submit(item.mutation, self._account)
                except ContractReverted as exc:
                    result = RelayRejected(f"the contract refused the mutation: {exc.revert_error}")
                except ChainError as exc:
                    result = ChainUnavailable(f"cannot submit: {exc.error}")
                try:
                    await item.reply.send(result)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.warning("relay caller went away before its receipt")

    async def scope_mutation(
        self,
        approval: Approval,
        *,
        agent_omni: str,
        services: list[bytes] | None,
        read_only: bool,
    ) -> Receipt:
        """Verify and submit set_scope (``services``: their hashes) or revoke_scope (``None``).

        Raises:
            RelayRejected: device not a live SCOPE_MGMT master of the operator, K10 or K11 does
                not verify, or the contract reverted.
            ChainUnavailable: the chain cannot be read or written.
        """
        agent = hex32_to_bytes(agent_omni)
        operator = hex32_to_bytes(approval.operator_omni)
        if services is None:
            k10, k11 = await self._verified(
                approval, ch.OP_REVOKE_SCOPE, "ScopeContract", ch.revoke_scope_params(agent),
                ROLE_SCOPE_MGMT,
            )  # fmt: skip
            return await self._submit(
                SignedMutation(
                    "ScopeContract", "revoke_scope_with_webauthn", (operator, agent, k10, k11)
                )
            )
        hashes = ch.sorted_services(list(set(services)))
        k10, k11 = await self._verified(
            approval, ch.OP_SET_SCOPE, "ScopeContract",
            ch.set_scope_params(agent, hashes, read_only), ROLE_SCOPE_MGMT,
        )  # fmt: skip
        return await self._submit(
            SignedMutation(
                "ScopeContract",
                "set_scope_with_webauthn",
                (operator, agent, list(hashes), read_only, k10, k11),
            )
        )

    async def add_agent_device(
        self, approval: Approval, agent: ch.NewAgent, agent_k10_proof: str
    ) -> Receipt:
        """Verify and submit add_agent_device: the agent's K10 binding proof (``r ‖ s`` hex
        over k10_binding(operator, agent_omni(operator, label), its key)) and the approval of
        a live RECOVERY master of the operator.

        Raises:
            RelayRejected: the proof, K10 or K11 does not verify, the device may not approve,
                the agent key is registered already, or the contract reverted.
            ChainUnavailable: the chain cannot be read or written.
        """
        operator = hex32_to_bytes(approval.operator_omni)
        actor = hex32_to_bytes(omni_of_agent(approval.operator_omni, agent.label))
        try:
            proof = bytes.fromhex(agent_k10_proof.removeprefix("0x"))
            existing = await self._client.get_device(device_key_hash_from_point(agent.k10_point))
            binding = ch.k10_binding(
                chain_id=await self._client.chain_id(),
                registry=self._client.addresses.registry,
                operator_omni=operator,
                actor_omni=actor,
                k10_point=agent.k10_point,
            )
        except ChainError as exc:
            raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc
        except ValueError:
            raise RelayK10Invalid("the agent's K10 binding proof is not hex") from None
        if existing is not None:
            raise RelayRejected("that agent key is registered already; use a new agent key")
        if not _k10_verifies(agent.k10_point, proof, binding):
            raise RelayK10Invalid("the agent's K10 binding proof does not verify")
        k10, k11 = await self._verified(
            approval, ch.OP_ADD_AGENT_DEVICE, "SidecarRegistry", ch.add_agent_params(agent),
            ROLE_RECOVERY,
        )  # fmt: skip
        return await self._submit(
            SignedMutation(
                "SidecarRegistry",
                "add_agent_device",
                (operator, agent.abi_tuple(), proof, k10, k11),
            )
        )

    async def revoke_device(self, approval: Approval, device_key_hash: str) -> Receipt:
        """Verify and submit revoke_device of a live device of the operator, approved by a
        live master of it (RECOVERY unless it revokes itself, as the contract rules).

        Raises:
            RelayRejected: no such live device of the operator, the approval does not verify,
                or the contract reverted.
            ChainUnavailable: the chain cannot be read or written.
        """
        try:
            target = await self._client.get_device(device_key_hash)
        except ChainError as exc:
            raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc
        if target is None or target.revoked or target.operator_omni != approval.operator_omni:
            raise RelayRejected("no live device of this operator with that device_key_hash")
        roles = 0 if device_key_hash == approval.device_key_hash else ROLE_RECOVERY
        device = hex32_to_bytes(device_key_hash)
        k10, k11 = await self._verified(
            approval, ch.OP_REVOKE_DEVICE, "SidecarRegistry", ch.revoke_device_params(device),
            roles,
        )  # fmt: skip
        operator = hex32_to_bytes(approval.operator_omni)
        return await self._submit(
            SignedMutation("SidecarRegistry", "revoke_device", (operator, device, k10, k11))
        )

    async def _verified(
        self, approval: Approval, op_tag: bytes, target: str, params: bytes, roles: int
    ) -> tuple[bytes, bytes]:
        """Check ``approval`` as the contract will (a live master of the operator holding
        ``roles``, K10 and K11 over the challenge it rebuilds) → (k10, k11) as it takes them.

        Raises:
            RelayDeviceNotAuthorised / RelayK10Invalid / RelayK11Invalid: the check failed.
            ChainUnavailable: the chain cannot be read.
        """
        try:
            device = await self._client.get_device(approval.device_key_hash)
            challenge = await self._client.challenge_for(
                op_tag, target, approval.operator_omni, params
            )
        except ChainError as exc:
            raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc
        if (
            device is None
            or device.revoked
            or device.tier != Tier.MASTER
            or device.operator_omni != approval.operator_omni
            or not device.has_roles(roles)
        ):
            raise RelayDeviceNotAuthorised(
                "the approving device is not a live master of the operator with the role needed"
            )
        if device.rp_id_hash != hashlib.sha256(approval.rp_id.encode()).hexdigest():
            raise RelayK11Invalid("the device's passkey belongs to another relying party")
        try:
            raw = bytes.fromhex(approval.k10_signature.removeprefix("0x"))
        except ValueError:
            raw = b""
        if not _k10_verifies(device.k10_point, raw, challenge):
            raise RelayK10Invalid("the K10 signature does not verify over the challenge")
        try:
            pk.verify_assertion(
                approval.assertion,
                challenge=challenge,
                public_key=_cose_key(device.k11_point),
                stored_sign_count=device.sign_count,
                rp_id=approval.rp_id,
                origin=approval.origin,
            )
        except AgentkeysError as exc:
            raise RelayK11Invalid(
                f"the K11 assertion is not a fresh one over this change ({exc.error})"
            ) from exc
        k10 = encode_k10_sig(raw_rs_to_der(raw), bytes.fromhex(approval.device_key_hash))
        return k10, encode_k11_assertion(_assertion_parts(approval.assertion))

    async def first_master_challenge(self, wallet: str, device: ch.NewMaster) -> bytes:
        """The registration challenge for ``wallet``'s operator (which must be unregistered).

        Raises:
            RelayRejected: the operator already has a master wallet.
            ChainUnavailable: the chain cannot be read.
        """
        operator = actor_omni_for_wallet(wallet)
        try:
            if await self._client.master_wallet(operator) is not None:
                raise RelayRejected("this operator already has a master wallet")
            return await self._client.challenge_for(
                ch.OP_REGISTER_FIRST_MASTER,
                "SidecarRegistry",
                operator,
                ch.first_master_params(to_checksum_address(wallet), device),
            )
        except ChainError as exc:
            raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc

    async def register_first_master(
        self,
        *,
        wallet: str,
        device: ch.NewMaster,
        k10_signature: bytes,
        assertion: Mapping[str, Any],
        wallet_signature: bytes,
    ) -> Receipt:
        """Submit a relay-mode first-master registration (the wallet's EIP-712 approval given).

        The caller has verified K10 and K11 and obtained ``wallet_signature`` (for an email
        operator: K4's, from the signer). ``k10_signature`` is the new K10's ``r ‖ s``.

        Raises:
            RelayRejected: malformed material or the contract reverted.
            ChainUnavailable: the chain cannot be written.
        """
        if len(k10_signature) != 64:
            raise RelayRejected("the K10 signature must be 64 bytes r || s")
        parts = _assertion_parts(assertion)
        mutation = SignedMutation(
            "SidecarRegistry",
            "register_first_master",
            (
                to_checksum_address(wallet),
                device.abi_tuple(),
                encode_k10_sig(raw_rs_to_der(k10_signature)),
                encode_k11_assertion(parts),
                wallet_signature,
            ),
        )
        return await self._submit(mutation)

    async def _submit(self, mutation: SignedMutation) -> Receipt:
        reply_send, reply_receive = trio.open_memory_channel[Receipt | AgentkeysError](1)
        async with reply_receive:
            await self._send.send(_Job(mutation, reply_send))
            result = await reply_receive.receive()
        if isinstance(result, AgentkeysError):
            raise result
        return result
