"""Hosted-relay mode: the broker submits master mutations the operator signed (SPEC 1, 6, 7).

Scope mutations (:meth:`Relay.scope_mutation`) and, for an operator whose master wallet is
the signer-held K4, the first-master registration (:meth:`Relay.register_first_master`, with
K4's EIP-712 approval obtained from the signer by the broker's ``/v1/relay/first-master``).

Off unless configured. Authorisation never rests on the relay: the contracts check K10 + K11
themselves. The broker still verifies both *before* paying gas, against what the chain says
about the device (SidecarRegistry: a live master of the operator with SCOPE_MGMT, its K10
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

from agentkeys.broker import _passkey as pk
from agentkeys.broker.errors import ChainUnavailable, RelayRejected
from agentkeys.chain import challenge as ch
from agentkeys.chain.client import ChainClient, Receipt, SignedMutation, Tier
from agentkeys.chain.errors import ChainError, ContractReverted
from agentkeys.chain.signing import encode_k10_sig, encode_k11_assertion
from agentkeys.errors import AgentkeysError, FormatError
from agentkeys.jwks import b64url_decode, raw_rs_to_der
from agentkeys.omni import (
    actor_omni_for_wallet,
    hex32_to_bytes,
    p256_public_key_from_point,
)
from attest.k10_signature import verify_k10

__all__ = ["ROLE_SCOPE_MGMT", "Relay"]

log = logging.getLogger("agentkeys.broker.relay")

ROLE_SCOPE_MGMT = 4


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


@dataclass
class _Job:
    mutation: SignedMutation
    reply: trio.MemorySendChannel[Receipt | AgentkeysError]


class Relay:
    """Verifies and submits scope mutations from the relay wallet.

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
        *,
        operator_omni: str,
        agent_omni: str,
        device_key_hash: str,
        k10_signature: str,
        assertion: Mapping[str, Any],
        services: list[bytes] | None,
        read_only: bool,
        rp_id: str,
        origin: str,
    ) -> Receipt:
        """Verify and submit set_scope (``services``: their hashes) or revoke_scope (``None``).

        Raises:
            RelayRejected: device not a live SCOPE_MGMT master of the operator, K10 or K11 does
                not verify, or the contract reverted.
            ChainUnavailable: the chain cannot be read or written.
        """
        try:
            device = await self._client.get_device(device_key_hash)
            agent = hex32_to_bytes(agent_omni)
            if services is None:
                op_tag, params = ch.OP_REVOKE_SCOPE, ch.revoke_scope_params(agent)
                hashes: tuple[bytes, ...] = ()
            else:
                hashes = ch.sorted_services(list(set(services)))
                op_tag, params = ch.OP_SET_SCOPE, ch.set_scope_params(agent, hashes, read_only)
            challenge = await self._client.challenge_for(
                op_tag, "ScopeContract", operator_omni, params
            )
        except ChainError as exc:
            raise ChainUnavailable(f"cannot read the chain: {exc.error}") from exc
        if (
            device is None
            or device.revoked
            or device.tier != Tier.MASTER
            or device.operator_omni != operator_omni
            or not device.has_roles(ROLE_SCOPE_MGMT)
        ):
            raise RelayRejected("the device is not a live scope-managing master of the operator")
        if device.rp_id_hash != hashlib.sha256(rp_id.encode()).hexdigest():
            raise RelayRejected("the device's passkey belongs to another relying party")
        try:
            raw = bytes.fromhex(k10_signature.removeprefix("0x"))
            valid = verify_k10(p256_public_key_from_point(device.k10_point), raw, message=challenge)
        except (ValueError, FormatError):
            valid = False
        if not valid:
            raise RelayRejected("the K10 signature does not verify over the challenge")
        try:
            pk.verify_assertion(
                assertion,
                challenge=challenge,
                public_key=_cose_key(device.k11_point),
                stored_sign_count=device.sign_count,
                rp_id=rp_id,
                origin=origin,
            )
        except AgentkeysError as exc:
            raise RelayRejected(f"the K11 assertion does not verify ({exc.error})") from exc
        parts = _assertion_parts(assertion)
        k10 = encode_k10_sig(raw_rs_to_der(raw), bytes.fromhex(device_key_hash))
        k11 = encode_k11_assertion(parts)
        operator = hex32_to_bytes(operator_omni)
        if services is None:
            mutation = SignedMutation(
                "ScopeContract", "revoke_scope_with_webauthn", (operator, agent, k10, k11)
            )
        else:
            mutation = SignedMutation(
                "ScopeContract",
                "set_scope_with_webauthn",
                (operator, agent, list(hashes), read_only, k10, k11),
            )
        return await self._submit(mutation)

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
