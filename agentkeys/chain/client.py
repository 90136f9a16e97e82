"""The chain client: typed reads, signed master mutations, sovereign and relay submission.

SPEC.md sections 5 and 6. JSON-RPC over an injected ``httpx.AsyncClient`` (Trio-native), ABI
coding by eth-abi, transactions signed locally by eth-account.

A master mutation is built in two steps so that the hosted relay can submit what the operator
signed: ``prepare_*`` reads the operator's nonce, rebuilds the challenge the contract will
rebuild, has the K10 key and the passkey sign it and returns a :class:`SignedMutation`; then
:meth:`ChainClient.submit` sends it from any wallet (the operator's own wallet in sovereign mode,
the relay wallet in relay mode). Authorisation is by the signatures, never by the sender.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import httpx
import trio
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from agentkeys.chain import challenge as ch
from agentkeys.chain._abi import ContractAbi, decode_revert
from agentkeys.chain._rpc import JsonRpc, RevertData, quantity
from agentkeys.chain.artifacts import load_artifact
from agentkeys.chain.errors import (
    AbiError,
    ChainConfigError,
    InsufficientFunds,
    RpcError,
    TransactionFailed,
)
from agentkeys.chain.events import ChainEvent, decode_log
from agentkeys.chain.signing import (
    K10Signer,
    MasterAuthority,
    PasskeyAuthenticator,
    encode_k10_sig,
    encode_k11_assertion,
    k10_digest,
)
from agentkeys.chain.transactions import SendOutcome, classify_send_error, suggest_fees
from agentkeys.errors import InvalidKeyMaterial
from agentkeys.omni import actor_omni_for_wallet, hex32_to_bytes, normalize_hex32, service_hash

__all__ = [
    "ChainClient",
    "ContractAddresses",
    "DeviceEntry",
    "Receipt",
    "ScopeEntry",
    "SignedMutation",
    "Tier",
    "account_from_key",
]

_ZERO_ADDRESS = "0x" + "00" * 20

log = logging.getLogger(__name__)


class Tier(IntEnum):
    """Device tiers of SidecarRegistry."""

    MASTER = 1
    AGENT = 2


@dataclass(frozen=True)
class ContractAddresses:
    """Checksummed addresses of one deployment."""

    registry: str
    scope: str
    epoch_counter: str

    def __post_init__(self) -> None:
        for name in ("registry", "scope", "epoch_counter"):
            try:
                object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
            except (ValueError, TypeError):
                raise ChainConfigError(f"{name} address is not an EVM address") from None


@dataclass(frozen=True)
class DeviceEntry:
    """A SidecarRegistry device (SPEC section 6). Identifiers are 64-hex text (section 3)."""

    device_key_hash: str
    operator_omni: str
    actor_omni: str
    tier: int
    roles: int
    revoked: bool
    sign_count: int
    registered_at: int
    k10_point: bytes
    k11_credential_id_hash: str
    k11_point: bytes
    rp_id_hash: str
    attestation_digest: str

    def has_roles(self, roles: int) -> bool:
        """True when every bit of ``roles`` is held."""
        return self.roles & roles == roles


@dataclass(frozen=True)
class ScopeEntry:
    """scope[operator][agent]: service hashes (64-hex), read_only, updated_at (unix s)."""

    services: tuple[str, ...]
    read_only: bool
    updated_at: int


@dataclass(frozen=True)
class SignedMutation:
    """A contract call carrying its own authorisation, ready for any sender to submit."""

    contract: str  # "SidecarRegistry" | "ScopeContract" | "K3EpochCounter"
    function: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Receipt:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    contract_address: str | None
    logs: tuple[dict[str, Any], ...] = field(repr=False)


class ChainClient:
    """Reads and writes the agentkeys contracts of one deployment.

    Args:
        http: the HTTP client to use; the caller owns and closes it.
        rpc_url: JSON-RPC endpoint.
        addresses: the deployment's contract addresses (None only for deploying).
        receipt_timeout: seconds to wait for a transaction to be mined.
        poll_interval: seconds between receipt polls.
        send_attempts: most attempts at a nonce when other senders share the wallet.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        rpc_url: str,
        addresses: ContractAddresses | None = None,
        *,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.05,
        send_attempts: int = 8,
    ) -> None:
        if send_attempts < 1:
            raise ChainConfigError("send_attempts must be >= 1")
        self._send_attempts = send_attempts
        self.rpc = JsonRpc(http, rpc_url)
        self._addresses = addresses
        self._chain_id: int | None = None
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._send_locks: dict[str, trio.Lock] = {}
        self.abis = {name: load_artifact(name).abi for name in _CONTRACTS}

    # ---------------------------------------------------------------- plumbing

    @property
    def addresses(self) -> ContractAddresses:
        """The deployment's addresses.

        Raises:
            ChainConfigError: the client was built without them.
        """
        if self._addresses is None:
            raise ChainConfigError("no contract addresses configured for this chain")
        return self._addresses

    def with_addresses(self, addresses: ContractAddresses) -> None:
        """Set the deployment's addresses (after :func:`deploy_all`)."""
        self._addresses = addresses

    def address_of(self, contract: str) -> str:
        """The address of ``contract`` by artifact name."""
        addresses = self.addresses
        by_name = {
            "SidecarRegistry": addresses.registry,
            "ScopeContract": addresses.scope,
            "K3EpochCounter": addresses.epoch_counter,
        }
        try:
            return by_name[contract]
        except KeyError:
            raise ChainConfigError(f"unknown contract {contract}") from None

    async def chain_id(self) -> int:
        """eth_chainId (cached)."""
        if self._chain_id is None:
            self._chain_id = quantity(await self.rpc.call("eth_chainId"))
        return self._chain_id

    async def check_chain_id(self, expected: int) -> None:
        """Refuse to work with a node of another chain than the profile names.

        Raises:
            ChainConfigError: eth_chainId differs from ``expected``.
        """
        actual = await self.chain_id()
        if actual != expected:
            raise ChainConfigError(f"RPC endpoint serves chain {actual}, expected {expected}")

    async def block_number(self) -> int:
        """eth_blockNumber."""
        return quantity(await self.rpc.call("eth_blockNumber"))

    def _revert(self, exc: RevertData, context: str) -> Exception:
        return decode_revert(exc.data, list(self.abis.values()), context)

    async def call(
        self, contract: str, function: str, *args: Any, address: str | None = None
    ) -> tuple[Any, ...]:
        """eth_call of a view function; decoded outputs.

        Raises:
            ContractReverted: the call reverted.
        """
        fn = self._abi(contract).function(function)
        to = address if address is not None else self.address_of(contract)
        data = fn.encode_call(args)
        try:
            result = await self.rpc.call(
                "eth_call", {"to": to, "data": "0x" + data.hex()}, "latest"
            )
        except RevertData as exc:
            raise self._revert(exc, f"{contract}.{function}") from None
        if not isinstance(result, str) or not result.startswith("0x"):
            raise AbiError(f"{contract}.{function} returned a non-hex value")
        return fn.decode_output(bytes.fromhex(result[2:]))

    def _abi(self, contract: str) -> ContractAbi:
        abi = self.abis.get(contract)
        return abi if abi is not None else load_artifact(contract).abi

    async def send_transaction(
        self, sender: LocalAccount, to: str | None, data: bytes, *, context: str
    ) -> Receipt:
        """Sign ``data`` to ``to`` (None: contract creation) with ``sender`` and wait for it.

        Gas is estimated first, so a call that would revert raises before anything is sent.
        The transaction is type 2 with fees from :func:`suggest_fees`; its nonce is the
        node's pending nonce, retried when another sender from the same wallet took it (see
        :mod:`agentkeys.chain.transactions`), at most ``send_attempts`` times.

        Raises:
            ContractReverted: the call reverts (decoded custom error).
            TransactionFailed: mined with status 0, not mined within the timeout, or the
                nonce was taken by other senders on every attempt.
            RpcUnavailable / RpcError: transport or node failure.
        """
        tx: dict[str, Any] = {"from": sender.address, "data": "0x" + data.hex()}
        if to is not None:
            tx["to"] = to
        try:
            gas = quantity(await self.rpc.call("eth_estimateGas", tx))
        except RevertData as exc:
            raise self._revert(exc, context) from None
        lock = self._send_locks.setdefault(sender.address, trio.Lock())
        for attempt in range(1, self._send_attempts + 1):
            async with lock:  # one sender per process at a time: fewer collisions
                sent = await self._sign_and_send(sender, to, data, gas, context)
            if sent is not None:
                tx_hash, nonce = sent
                receipt = await self._wait_receipt(tx_hash, context, sender.address, nonce)
                if receipt is not None:
                    return receipt
            log.info("%s: nonce taken by another sender (attempt %d)", context, attempt)
        raise TransactionFailed(
            f"{context}: nonce taken by other senders on {self._send_attempts} attempts"
        )

    async def _sign_and_send(
        self, sender: LocalAccount, to: str | None, data: bytes, gas: int, context: str
    ) -> tuple[str, int] | None:
        """Send one type-2 transaction at the pending nonce; (hash, nonce), or None when
        another sender had taken that nonce."""
        nonce = quantity(await self.rpc.call("eth_getTransactionCount", sender.address, "pending"))
        fees = await suggest_fees(self.rpc)
        gas_limit = gas + gas // 5 + 10_000
        most = gas_limit * fees.max_fee_per_gas
        balance = quantity(await self.rpc.call("eth_getBalance", sender.address, "pending"))
        if balance < most:
            raise InsufficientFunds(
                f"{context}: wallet {sender.address} holds {balance} wei and needs up to "
                f"{most} wei for gas; fund {sender.address} (dev stack: "
                f"`agentkeys dev fund {sender.address}`)",
                address=sender.address,
            )
        unsigned: dict[str, Any] = {
            "type": 2,
            "chainId": await self.chain_id(),
            "nonce": nonce,
            "gas": gas_limit,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            "data": data,
            "value": 0,
        }
        if to is not None:
            unsigned["to"] = to_checksum_address(to)
        signed = sender.sign_transaction(unsigned)
        tx_hash = "0x" + bytes(signed.hash).hex()
        try:
            raw = "0x" + bytes(signed.raw_transaction).hex()
            await self.rpc.call("eth_sendRawTransaction", raw)
        except RevertData as exc:
            raise self._revert(exc, context) from None
        except RpcError as exc:
            outcome = classify_send_error(exc)
            if outcome is SendOutcome.FAILED:
                raise
            if outcome is SendOutcome.RETRY:
                return None
        return tx_hash, nonce

    async def _wait_receipt(
        self, tx_hash: str, context: str, sender: str, nonce: int
    ) -> Receipt | None:
        """The receipt of ``tx_hash``; None when ``sender``'s ``nonce`` was mined in another
        transaction and the node no longer knows ours (it was replaced and can never be
        mined). A node may count the nonce before it serves the receipt, so "no receipt yet"
        alone does not mean replaced."""
        with trio.move_on_after(self._receipt_timeout):
            while True:
                raw = await self.rpc.call("eth_getTransactionReceipt", tx_hash)
                if raw is not None:
                    break
                mined = quantity(await self.rpc.call("eth_getTransactionCount", sender, "latest"))
                if mined > nonce and (
                    await self.rpc.call("eth_getTransactionByHash", tx_hash) is None
                ):  # the nonce went to another transaction and ours left the pool
                    return None
                await trio.sleep(self._poll_interval)
        if raw is None:
            raise TransactionFailed(f"{context}: not mined within {self._receipt_timeout} s")
        if not isinstance(raw, dict):
            raise AbiError("receipt is not an object")
        if quantity(raw.get("status")) != 1:
            raise TransactionFailed(f"{context}: transaction {tx_hash} reverted")
        return Receipt(
            tx_hash=tx_hash,
            block_number=quantity(raw.get("blockNumber")),
            block_hash=str(raw.get("blockHash")),
            gas_used=quantity(raw.get("gasUsed")),
            contract_address=raw.get("contractAddress"),
            logs=tuple(raw.get("logs") or ()),
        )

    async def transact(
        self, sender: LocalAccount, contract: str, function: str, *args: Any
    ) -> Receipt:
        """Call a mutating function of one of our contracts from ``sender``."""
        data = self._abi(contract).function(function).encode_call(args)
        return await self.send_transaction(
            sender, self.address_of(contract), data, context=f"{contract}.{function}"
        )

    def receipt_events(self, receipt: Receipt) -> list[ChainEvent]:
        """The typed events of our contracts in ``receipt``, in log order."""
        by_address = {self.address_of(name).lower(): name for name in _CONTRACTS}
        events: list[ChainEvent] = []
        for raw in receipt.logs:
            name = by_address.get(str(raw.get("address", "")).lower())
            if name is not None:
                event = decode_log(raw, self.abis[name])
                if event is not None:
                    events.append(event)
        return events

    async def submit(self, mutation: SignedMutation, sender: LocalAccount) -> Receipt:
        """Submit a prepared mutation from ``sender`` (operator wallet or relay wallet)."""
        return await self.transact(sender, mutation.contract, mutation.function, *mutation.args)

    # ---------------------------------------------------------------- reads

    async def get_device(self, device_key_hash: str | bytes) -> DeviceEntry | None:
        """The device entry, or None when the hash is not registered."""
        key = normalize_hex32(device_key_hash)
        (raw,) = await self.call("SidecarRegistry", "get_device", bytes.fromhex(key))
        (
            operator,
            actor,
            tier,
            roles,
            revoked,
            count,
            registered_at,
            k10x,
            k10y,
            cred,
            k11x,
            k11y,
            rp,
            attestation,
        ) = raw
        if registered_at == 0:
            return None
        return DeviceEntry(
            device_key_hash=key,
            operator_omni=operator.hex(),
            actor_omni=actor.hex(),
            tier=tier,
            roles=roles,
            revoked=revoked,
            sign_count=count,
            registered_at=registered_at,
            k10_point=k10x + k10y,
            k11_credential_id_hash=cred.hex(),
            k11_point=k11x + k11y,
            rp_id_hash=rp.hex(),
            attestation_digest=attestation.hex(),
        )

    async def get_scope(
        self, operator_omni: str | bytes, actor_omni: str | bytes
    ) -> ScopeEntry | None:
        """scope[operator][actor], or None when there is no entry."""
        services, read_only, updated_at = await self.call(
            "ScopeContract", "get_scope", _raw32(operator_omni), _raw32(actor_omni)
        )
        if updated_at == 0:
            return None
        return ScopeEntry(tuple(s.hex() for s in services), bool(read_only), int(updated_at))

    async def is_service_in_scope(
        self, operator_omni: str | bytes, actor_omni: str | bytes, service: str | bytes
    ) -> bool:
        """ScopeContract.is_service_in_scope; ``service`` is a name or its 32-byte hash."""
        svc = service_hash(service) if isinstance(service, str) else service
        (result,) = await self.call(
            "ScopeContract", "is_service_in_scope", _raw32(operator_omni), _raw32(actor_omni), svc
        )
        return bool(result)

    async def current_epoch(self) -> int:
        """The K3 epoch (starts at 1)."""
        (epoch,) = await self.call("K3EpochCounter", "current_epoch")
        return int(epoch)

    async def master_wallet(self, operator_omni: str | bytes) -> str | None:
        """The operator's master wallet (lowercase 0x hex), None when unregistered."""
        (wallet,) = await self.call("SidecarRegistry", "master_wallet", _raw32(operator_omni))
        text = str(wallet).lower()
        return None if text == _ZERO_ADDRESS else text

    async def agent_operator(self, agent_omni: str | bytes) -> str | None:
        """The operator the agent omni belongs to (SidecarRegistry.agent_operator), as 64 hex.

        None when no agent device was ever registered under this omni (a master's omni, an
        unknown value). Set once by add_agent_device and never changed afterwards.
        """
        (operator,) = await self.call("SidecarRegistry", "agent_operator", _raw32(agent_omni))
        raw = bytes(operator)
        return None if raw == bytes(32) else raw.hex()

    async def operator_nonce(self, operator_omni: str | bytes) -> int:
        """The operator's mutation nonce (part of the next challenge)."""
        (nonce,) = await self.call("SidecarRegistry", "operator_nonce", _raw32(operator_omni))
        return int(nonce)

    # ---------------------------------------------------------------- signed mutations

    async def challenge_for(
        self, op_tag: bytes, target_contract: str, operator_omni: str | bytes, params_hash: bytes
    ) -> bytes:
        """The challenge the next ``op_tag`` mutation must sign (nonce read from chain)."""
        return ch.master_challenge(
            op_tag=op_tag,
            chain_id=await self.chain_id(),
            target=self.address_of(target_contract),
            operator_omni=_raw32(operator_omni),
            nonce=await self.operator_nonce(operator_omni),
            params_hash=params_hash,
        )

    async def _authorise(
        self,
        authority: MasterAuthority,
        op_tag: bytes,
        target: str,
        operator_omni: str | bytes,
        params_hash: bytes,
    ) -> tuple[bytes, bytes]:
        challenge = await self.challenge_for(op_tag, target, operator_omni, params_hash)
        k10 = encode_k10_sig(
            await authority.k10.sign_digest(k10_digest(challenge)), authority.device_key_hash
        )
        k11 = encode_k11_assertion(await authority.passkey.get_assertion(challenge))
        return k10, k11

    async def prepare_register_first_master(
        self,
        wallet: str,
        device: ch.NewMaster,
        k10: K10Signer,
        passkey: PasskeyAuthenticator,
        *,
        relay_signer: LocalAccount | None = None,
    ) -> SignedMutation:
        """First-master registration of the operator owning ``wallet``.

        The new K10 and passkey sign the registration challenge (bound to the wallet, chain and
        registry). Sovereign mode (``relay_signer`` None): submit from ``wallet``. Relay mode:
        ``relay_signer`` is the wallet's account, which signs the EIP-712 RegisterFirstMaster
        approval so that a relay may submit.
        """
        if device.k10_point != k10.public_point:
            raise InvalidKeyMaterial("the device's K10 point is not the signing key's")
        wallet = to_checksum_address(wallet)
        operator = hex32_to_bytes(actor_omni_for_wallet(wallet))
        challenge = await self.challenge_for(
            ch.OP_REGISTER_FIRST_MASTER,
            "SidecarRegistry",
            operator,
            ch.first_master_params(wallet, device),
        )
        k10_sig = encode_k10_sig(await k10.sign_digest(k10_digest(challenge)))
        k11 = encode_k11_assertion(await passkey.get_assertion(challenge))
        wallet_sig = b""
        if relay_signer is not None:
            wallet_sig = await self._sign_first_master(relay_signer, operator, challenge)
        return SignedMutation(
            "SidecarRegistry",
            "register_first_master",
            (wallet, device.abi_tuple(), k10_sig, k11, wallet_sig),
        )

    async def _sign_first_master(
        self, account: LocalAccount, operator: bytes, challenge: bytes
    ) -> bytes:
        typed = ch.register_first_master_typed_data(
            chain_id=await self.chain_id(),
            registry=self.addresses.registry,
            operator_omni=operator,
            challenge=challenge,
        )
        return bytes(account.sign_message(encode_typed_data(full_message=typed)).signature)

    async def k10_binding_proof(
        self, k10: K10Signer, operator_omni: str | bytes, actor_omni: str | bytes
    ) -> bytes:
        """The new K10's proof of possession (r ‖ s, 64 bytes) for a binding to (operator, actor).

        Produced where the key lives (the new device, e.g. an agent's sidecar host) and handed
        to the master preparing the registration; it does not depend on the operator's nonce.
        """
        binding = ch.k10_binding(
            chain_id=await self.chain_id(),
            registry=self.addresses.registry,
            operator_omni=_raw32(operator_omni),
            actor_omni=_raw32(actor_omni),
            k10_point=k10.public_point,
        )
        return encode_k10_sig(await k10.sign_digest(k10_digest(binding)))

    async def prepare_add_master_device(
        self,
        operator_omni: str | bytes,
        device: ch.NewMaster,
        new_k10_proof: bytes,
        authority: MasterAuthority,
    ) -> SignedMutation:
        """Add another master device, authorised by an existing master.

        ``new_k10_proof`` is :meth:`k10_binding_proof` by the new K10 for (operator, operator).
        """
        k10, k11 = await self._authorise(
            authority,
            ch.OP_ADD_MASTER_DEVICE,
            "SidecarRegistry",
            operator_omni,
            ch.add_master_params(device),
        )
        return SignedMutation(
            "SidecarRegistry",
            "add_master_device",
            (_raw32(operator_omni), device.abi_tuple(), new_k10_proof, k10, k11),
        )

    async def prepare_add_agent_device(
        self,
        operator_omni: str | bytes,
        agent: ch.NewAgent,
        agent_k10_proof: bytes,
        authority: MasterAuthority,
    ) -> SignedMutation:
        """Register an agent device (actor = agent_omni(operator, label)).

        ``agent_k10_proof`` is :meth:`k10_binding_proof` by the agent's K10 for
        (operator, agent_omni(operator, label)).
        """
        k10, k11 = await self._authorise(
            authority,
            ch.OP_ADD_AGENT_DEVICE,
            "SidecarRegistry",
            operator_omni,
            ch.add_agent_params(agent),
        )
        return SignedMutation(
            "SidecarRegistry",
            "add_agent_device",
            (_raw32(operator_omni), agent.abi_tuple(), agent_k10_proof, k10, k11),
        )

    async def prepare_revoke_device(
        self, operator_omni: str | bytes, device_key_hash: str | bytes, authority: MasterAuthority
    ) -> SignedMutation:
        """Revoke a device of the operator."""
        device = _raw32(device_key_hash)
        k10, k11 = await self._authorise(
            authority,
            ch.OP_REVOKE_DEVICE,
            "SidecarRegistry",
            operator_omni,
            ch.revoke_device_params(device),
        )
        return SignedMutation(
            "SidecarRegistry", "revoke_device", (_raw32(operator_omni), device, k10, k11)
        )

    async def prepare_rotate_k10(
        self,
        operator_omni: str | bytes,
        old_device_key_hash: str | bytes,
        new_k10_point: bytes,
        new_k10_proof: bytes,
        authority: MasterAuthority,
    ) -> SignedMutation:
        """Move a device entry to a new K10 key (old entry revoked).

        ``new_k10_proof`` is :meth:`k10_binding_proof` by the new K10 for the entry's
        (operator, actor).
        """
        old = _raw32(old_device_key_hash)
        k10, k11 = await self._authorise(
            authority,
            ch.OP_ROTATE_K10,
            "SidecarRegistry",
            operator_omni,
            ch.rotate_k10_params(old, new_k10_point),
        )
        return SignedMutation(
            "SidecarRegistry",
            "rotate_k10",
            (
                _raw32(operator_omni),
                old,
                new_k10_point[:32],
                new_k10_point[32:],
                new_k10_proof,
                k10,
                k11,
            ),
        )

    async def prepare_set_scope(
        self,
        operator_omni: str | bytes,
        agent_omni: str | bytes,
        services: Sequence[str | bytes],
        read_only: bool,
        authority: MasterAuthority,
    ) -> SignedMutation:
        """Set scope[operator][agent]; ``services`` are names or 32-byte hashes."""
        hashes = ch.sorted_services(
            [service_hash(s) if isinstance(s, str) else s for s in services]
        )
        agent = _raw32(agent_omni)
        k10, k11 = await self._authorise(
            authority,
            ch.OP_SET_SCOPE,
            "ScopeContract",
            operator_omni,
            ch.set_scope_params(agent, hashes, read_only),
        )
        return SignedMutation(
            "ScopeContract",
            "set_scope_with_webauthn",
            (_raw32(operator_omni), agent, list(hashes), read_only, k10, k11),
        )

    async def prepare_revoke_scope(
        self, operator_omni: str | bytes, agent_omni: str | bytes, authority: MasterAuthority
    ) -> SignedMutation:
        """Remove scope[operator][agent]."""
        agent = _raw32(agent_omni)
        k10, k11 = await self._authorise(
            authority,
            ch.OP_REVOKE_SCOPE,
            "ScopeContract",
            operator_omni,
            ch.revoke_scope_params(agent),
        )
        return SignedMutation(
            "ScopeContract", "revoke_scope_with_webauthn", (_raw32(operator_omni), agent, k10, k11)
        )

    # ---------------------------------------------------------------- K3 governance

    async def _governance_approvals(
        self,
        approvers: Sequence[LocalAccount],
        message_type: str,
        fields: list[dict[str, str]],
        message: dict[str, Any],
    ) -> list[bytes]:
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                message_type: fields,
            },
            "primaryType": message_type,
            "domain": {
                "name": "agentkeys.K3EpochCounter",
                "version": "1",
                "chainId": await self.chain_id(),
                "verifyingContract": self.addresses.epoch_counter,
            },
            "message": message,
        }
        ordered = sorted(approvers, key=lambda a: int(a.address, 16))
        signable = encode_typed_data(full_message=typed)
        return [bytes(a.sign_message(signable).signature) for a in ordered]

    async def prepare_advance_epoch(
        self, new_epoch: int, approvers: Sequence[LocalAccount]
    ) -> SignedMutation:
        """K3EpochCounter.advance with EIP-712 approvals of ``approvers`` (M of the N)."""
        (nonce,) = await self.call("K3EpochCounter", "governance_nonce")
        approvals = await self._governance_approvals(
            approvers,
            "AdvanceEpoch",
            [{"name": "newEpoch", "type": "uint64"}, {"name": "nonce", "type": "uint256"}],
            {"newEpoch": new_epoch, "nonce": nonce},
        )
        return SignedMutation("K3EpochCounter", "advance", (new_epoch, approvals))

    async def prepare_set_governance(
        self, members: Sequence[str], threshold: int, approvers: Sequence[LocalAccount]
    ) -> SignedMutation:
        """K3EpochCounter.set_governance (new set sorted ascending) with M-of-N approvals."""
        ordered = sorted((to_checksum_address(m) for m in members), key=lambda a: int(a, 16))
        (nonce,) = await self.call("K3EpochCounter", "governance_nonce")
        approvals = await self._governance_approvals(
            approvers,
            "SetGovernance",
            [
                {"name": "members", "type": "address[]"},
                {"name": "threshold", "type": "uint8"},
                {"name": "nonce", "type": "uint256"},
            ],
            {"members": ordered, "threshold": threshold, "nonce": nonce},
        )
        return SignedMutation("K3EpochCounter", "set_governance", (ordered, threshold, approvals))


_CONTRACTS = ("SidecarRegistry", "ScopeContract", "K3EpochCounter")


def _raw32(value: str | bytes) -> bytes:
    return (
        hex32_to_bytes(value) if isinstance(value, str) else bytes.fromhex(normalize_hex32(value))
    )


def account_from_key(private_key: str | bytes) -> LocalAccount:
    """An eth-account signer for a hex or raw private key (dev accounts, keystores)."""
    account: LocalAccount = Account.from_key(private_key)
    return account
