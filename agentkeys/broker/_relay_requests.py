"""Hosted-relay requests (SPEC.md section 7): registry mutations a J1 asks the relay to submit.

Each carries the approving master's K10 signature and K11 assertion (:class:`Approval`,
verified by :class:`~agentkeys.broker._relay.Relay` against the chain); the J1 must be the
operator's. :class:`FirstMasterRelay` registers an email operator's first master, approved
by its K4 wallet at the signer. Without a relay (or, for the first master, a signer) the
routes answer ``relay_disabled`` before reading a body: the composition root binds them to
nothing (``agentkeys.broker._shell.Disabled``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentkeys.broker import _passkey as pk
from agentkeys.broker._devices import cose_point, k10_point_from_hex, verify_enrolled_assertion
from agentkeys.broker._relay import Approval, Relay
from agentkeys.broker._sessions import Session
from agentkeys.broker._store import PasskeyCredential, StateStore
from agentkeys.broker._wallet_signin import K4Signer
from agentkeys.broker.config import SiteSettings
from agentkeys.broker.errors import (
    OperatorMismatch,
    PasskeyNotEnrolled,
    RelayRejected,
    SignerFailed,
)
from agentkeys.chain import ROLE_CAP_MINT
from agentkeys.chain import challenge as ch
from agentkeys.errors import FormatError
from agentkeys.omni import (
    actor_omni_for_wallet,
    agent_omni,
    device_key_hash_from_point,
    hex32_to_bytes,
    normalize_hex32,
    normalize_service,
    service_hash,
)
from agentkeys.service._audit import AuditValue
from agentkeys.service.errors import WrongType

__all__ = [
    "AgentRegistered",
    "FirstMasterDevice",
    "FirstMasterRegistered",
    "FirstMasterRelay",
    "RelayAgentRequest",
    "RelayDeviceRevokeRequest",
    "RelayFirstMasterRequest",
    "RelayReceipt",
    "RelayRequests",
    "RelayScopeRequest",
]


@dataclass(frozen=True)
class RelayScopeRequest:
    operator_omni: str
    agent_omni: str
    device_key_hash: str
    k10_signature: str
    assertion: dict[str, object]
    services: list[str] | None = None
    read_only: bool = False
    revoke: bool = False
    service_hashes: list[str] | None = None  # 64 hex each: services known only by hash


@dataclass(frozen=True)
class RelayAgentRequest:
    """add_agent_device: the agent's K10 point and binding proof, the master's approval."""

    operator_omni: str
    device_key_hash: str  # the approving master device
    k10_signature: str
    assertion: dict[str, object]
    label: str
    agent_k10_public_key: str  # 64 bytes X || Y, hex
    agent_k10_proof: str  # r || s hex over k10_binding(operator, agent_omni, key)


@dataclass(frozen=True)
class RelayDeviceRevokeRequest:
    """revoke_device of ``revoke_device_key_hash``, approved by ``device_key_hash``."""

    operator_omni: str
    device_key_hash: str
    k10_signature: str
    assertion: dict[str, object]
    revoke_device_key_hash: str


@dataclass(frozen=True)
class RelayReceipt:
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class AgentRegistered:
    tx_hash: str
    block_number: int
    agent_omni: str
    device_key_hash: str


@dataclass(frozen=True)
class FirstMasterDevice:
    """SidecarRegistry.NewMaster as hex (points 64 bytes X || Y, the rest 32 bytes)."""

    k10_public_key: str
    k11_credential_id_hash: str
    k11_public_key: str
    rp_id_hash: str
    roles: int = 7
    attestation_digest: str = "00" * 32

    def to_json(self) -> dict[str, object]:
        """The same object for the signer's ``/k4/register-first-master``."""
        return {
            "k10_public_key": self.k10_public_key,
            "k11_credential_id_hash": self.k11_credential_id_hash,
            "k11_public_key": self.k11_public_key,
            "rp_id_hash": self.rp_id_hash,
            "roles": self.roles,
            "attestation_digest": self.attestation_digest,
        }

    def to_new_master(self) -> ch.NewMaster:
        """The registry struct.

        Raises:
            WrongType: a field is not hex of its size, or roles are out of range.
        """

        def raw(text: str, size: int, what: str) -> bytes:
            try:
                value = bytes.fromhex(text.removeprefix("0x"))
            except ValueError:
                raise WrongType(f"{what} must be {size} bytes as hex") from None
            if len(value) != size:
                raise WrongType(f"{what} must be {size} bytes as hex")
            return value

        if not 1 <= self.roles <= 7:
            raise WrongType("roles must be a non-empty subset of 7")
        return ch.NewMaster(
            k10_point=raw(self.k10_public_key, 64, "k10_public_key"),
            k11_credential_id_hash=raw(self.k11_credential_id_hash, 32, "k11_credential_id_hash"),
            k11_point=raw(self.k11_public_key, 64, "k11_public_key"),
            rp_id_hash=raw(self.rp_id_hash, 32, "rp_id_hash"),
            roles=self.roles,
            attestation_digest=raw(self.attestation_digest, 32, "attestation_digest"),
        )


@dataclass(frozen=True)
class RelayFirstMasterRequest:
    device: FirstMasterDevice
    k10_signature: str
    assertion: dict[str, object]


@dataclass(frozen=True)
class FirstMasterRegistered:
    tx_hash: str
    block_number: int
    operator_omni: str
    wallet: str
    device_key_hash: str


class RelayRequests:
    """The operator's registry mutations, approved by one of its masters."""

    def __init__(self, *, relay: Relay, site: SiteSettings) -> None:
        self._relay = relay
        self._site = site

    def _approval(
        self,
        request: RelayScopeRequest | RelayAgentRequest | RelayDeviceRevokeRequest,
        session: Session,
        audit: dict[str, AuditValue],
    ) -> Approval:
        """The master's approval in ``request``, once the J1 is the operator's."""
        operator = normalize_hex32(request.operator_omni)
        device = normalize_hex32(request.device_key_hash)
        audit.update(operator=operator, approving_device=device)
        if session.subject != operator:
            raise OperatorMismatch("the session is not this operator's")
        site = self._site
        return Approval(
            operator, device, request.k10_signature, request.assertion, site.rp_id, site.origin
        )

    async def agent(
        self, request: RelayAgentRequest, session: Session, audit: dict[str, AuditValue]
    ) -> AgentRegistered:
        """Register an agent device of the operator (SidecarRegistry.add_agent_device).

        Raises:
            OperatorMismatch, WrongType, InvalidKeyMaterial, Relay*: see :class:`Relay`.
        """
        approval = self._approval(request, session, audit)
        label = request.label
        try:
            actor = agent_omni(normalize_hex32(request.operator_omni), label)
        except FormatError:
            raise WrongType("label must match ^[a-z0-9-]{1,32}$") from None
        point = k10_point_from_hex(request.agent_k10_public_key)
        dkh = device_key_hash_from_point(point)
        audit.update(actor=actor, device_key_hash=dkh)
        agent = ch.NewAgent(label=label, k10_point=point, roles=ROLE_CAP_MINT)
        receipt = await self._relay.add_agent_device(approval, agent, request.agent_k10_proof)
        audit["tx_hash"] = receipt.tx_hash
        return AgentRegistered(
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            agent_omni=actor,
            device_key_hash=dkh,
        )

    async def device_revoke(
        self, request: RelayDeviceRevokeRequest, session: Session, audit: dict[str, AuditValue]
    ) -> RelayReceipt:
        """Revoke a device of the operator (SidecarRegistry.revoke_device)."""
        approval = self._approval(request, session, audit)
        target = normalize_hex32(request.revoke_device_key_hash)
        audit["device_key_hash"] = target
        receipt = await self._relay.revoke_device(approval, target)
        audit["tx_hash"] = receipt.tx_hash
        return RelayReceipt(tx_hash=receipt.tx_hash, block_number=receipt.block_number)

    async def scope(
        self, request: RelayScopeRequest, session: Session, audit: dict[str, AuditValue]
    ) -> RelayReceipt:
        """Set (or, with ``revoke``, clear) an agent's scope entry."""
        approval = self._approval(request, session, audit)
        audit["actor"] = normalize_hex32(request.agent_omni)
        receipt = await self._relay.scope_mutation(
            approval,
            agent_omni=normalize_hex32(request.agent_omni),
            services=None
            if request.revoke
            else [
                *(service_hash(normalize_service(x)) for x in request.services or []),
                *(hex32_to_bytes(x) for x in request.service_hashes or []),
            ],
            read_only=request.read_only,
        )
        audit["tx_hash"] = receipt.tx_hash
        return RelayReceipt(tx_hash=receipt.tx_hash, block_number=receipt.block_number)


class FirstMasterRelay:
    """First-master registration of an email operator, whose master wallet is its K4."""

    def __init__(
        self, *, relay: Relay, k4: K4Signer, store: StateStore, site: SiteSettings
    ) -> None:
        self._relay = relay
        self._k4 = k4
        self._store = store
        self._site = site

    async def register(
        self, request: RelayFirstMasterRequest, session: Session, audit: dict[str, AuditValue]
    ) -> FirstMasterRegistered:
        """Register ``request.device`` as the first master of the J1's operator.

        The J1 must be an email identity's (K4 SIWE); the new device must be a passkey this
        identity enrolled, bound at enrollment to this very K10; the passkey's assertion over
        the registration challenge verifies here (origin included) and at the signer, which
        also checks K10 and signs the EIP-712 approval; the relay wallet submits.

        Raises:
            WrongType: the device is not hex of its sizes.
            RelayRejected: not an email operator's J1, another device than enrolled, or a
                signature that is not hex.
            PasskeyNotEnrolled, PasskeyAssertionRejected, PasskeySignCountReplayed.
            SignerFailed: the signer approved another registration.
        """
        device = request.device.to_new_master()
        dkh = device_key_hash_from_point(device.k10_point)
        audit.update(operator=session.subject, device_key_hash=dkh)
        identity, wallet = session.identity_omni, session.wallet
        if identity is None or wallet is None:
            raise RelayRejected("the session is not an email operator's (K4 sign-in)")
        if (
            await self._k4.k4_address(identity) != wallet
            or actor_omni_for_wallet(wallet) != session.subject
        ):
            raise RelayRejected("the session's wallet is not the identity's K4 wallet")
        credential = await self._enrolled_credential(identity, request.assertion, device)
        challenge = await self._relay.first_master_challenge(wallet, device)
        await verify_enrolled_assertion(
            self._store, self._site, credential, request.assertion, challenge
        )
        approval = await self._k4.k4_register_first_master(
            identity, request.device.to_json(), request.k10_signature, request.assertion
        )
        if approval.get("wallet") != wallet or approval.get("challenge") != challenge.hex():
            raise SignerFailed("the signer approved another registration than this one")
        try:
            k10 = bytes.fromhex(request.k10_signature.removeprefix("0x"))
            wallet_sig = bytes.fromhex(str(approval["signature"]).removeprefix("0x"))
        except ValueError:
            raise RelayRejected("a signature is not hex") from None
        receipt = await self._relay.register_first_master(
            wallet=wallet,
            device=device,
            k10_signature=k10,
            assertion=request.assertion,
            wallet_signature=wallet_sig,
        )
        return FirstMasterRegistered(
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            operator_omni=session.subject,
            wallet=wallet,
            device_key_hash=dkh,
        )

    async def _enrolled_credential(
        self, identity: str, assertion: Mapping[str, Any], device: ch.NewMaster
    ) -> PasskeyCredential:
        """The identity's enrolled passkey the assertion is by, matching ``device`` exactly."""
        wanted = pk.credential_id_of(assertion)
        for credential in await self._store.credentials_of(identity):
            if credential.credential_id != wanted:
                continue
            if (
                hashlib.sha256(credential.credential_id).digest() != device.k11_credential_id_hash
                or cose_point(credential.public_key) != device.k11_point
                or credential.k10_point != device.k10_point
                or hashlib.sha256(self._site.rp_id.encode()).digest() != device.rp_id_hash
            ):
                raise RelayRejected("the device is not the one this passkey was enrolled with")
            return credential
        raise PasskeyNotEnrolled("the assertion is not by a passkey this identity enrolled")
