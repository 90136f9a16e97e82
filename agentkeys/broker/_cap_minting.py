"""Cap minting (SPEC.md section 5): one signed cap per request, checked against the chain.

In order: the session is the operator's (a device session mints ``fetch`` caps for its own
device and actor only); the PoP header parses; the device's K10 signed it within the window
and its nonce is unused; the device binding (``_mint.check_binding``); the scope entry that
counts (``_mint.decide_scope``); the chain's current K3 epoch; the lifetime. The cap is
signed with K1 and a mint record written; ``scope_source`` and ``epoch`` reach the audit row
even when the scope refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._keys import BrokerKeys, PublishedKeys
from agentkeys.broker._mint import ScopeSource, check_binding, decide_scope
from agentkeys.broker._sessions import DEVICE, Session
from agentkeys.broker._store import MintRecord, StateStore
from agentkeys.broker.config import CapSettings
from agentkeys.broker.errors import (
    DeviceSessionNotAllowed,
    EpochMismatch,
    OperatorMismatch,
    PopRejected,
    ReplayedNonce,
    StalePop,
)
from agentkeys.cap import CapOp, new_cap_payload, sign_cap
from agentkeys.errors import AgentkeysError, FormatError, PopError, PopStale
from agentkeys.omni import normalize_hex32, normalize_service, p256_public_key_from_point
from agentkeys.pop import POP_MINT_PREFIX, MintPopClaims, NonceRegistry, PopProof, verify_mint_pop
from agentkeys.service._audit import AuditValue
from agentkeys.service.errors import WrongType

__all__ = ["CapMintRequest", "CapMinted", "CapMinting"]


@dataclass(frozen=True)
class CapMintRequest:
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    pop: str
    k3_epoch: int | None = None
    lifetime: int | None = None


@dataclass(frozen=True)
class CapMinted:
    cap: dict[str, object]  # the wire object {payload, kid, broker_sig}
    token: str  # the same cap as one string
    scope_source: str
    expires_at: int


class CapMinting:
    """The mint core: the chain view, the store (PoP nonces, mint records, legacy scopes),
    K1 and the cap settings."""

    def __init__(
        self,
        *,
        caps: CapSettings,
        keys: BrokerKeys,
        store: StateStore,
        chain: CachedChainView,
        clock: Callable[[], float],
    ) -> None:
        self._caps = caps
        self._keys = keys
        self._store = store
        self._chain = chain
        self._clock = clock

    async def fetch(
        self, request: CapMintRequest, session: Session, audit: dict[str, AuditValue]
    ) -> CapMinted:
        """A ``fetch`` cap (see :meth:`mint`)."""
        return await self.mint(request, session, CapOp.FETCH, audit)

    async def store(
        self, request: CapMintRequest, session: Session, audit: dict[str, AuditValue]
    ) -> CapMinted:
        """A ``store`` cap (see :meth:`mint`)."""
        return await self.mint(request, session, CapOp.STORE, audit)

    async def list(
        self, request: CapMintRequest, session: Session, audit: dict[str, AuditValue]
    ) -> CapMinted:
        """A ``list`` cap (see :meth:`mint`)."""
        return await self.mint(request, session, CapOp.LIST, audit)

    async def teardown(
        self, request: CapMintRequest, session: Session, audit: dict[str, AuditValue]
    ) -> CapMinted:
        """A ``teardown`` cap (see :meth:`mint`)."""
        return await self.mint(request, session, CapOp.TEARDOWN, audit)

    async def jwks(self) -> PublishedKeys:
        """K1's published keys (the worker verifies caps with them)."""
        return PublishedKeys(keys=self._keys.cap.published.to_dict()["keys"])

    async def mint(
        self,
        request: CapMintRequest,
        session: Session,
        op: CapOp,
        audit: dict[str, AuditValue],
    ) -> CapMinted:
        """Check and mint one cap (the checks in order: the module docstring).

        Raises:
            OperatorMismatch, DeviceSessionNotAllowed: the session may not mint this cap.
            PopRejected, StalePop, ReplayedNonce: the PoP.
            DeviceNotRegistered, DeviceRevoked, BindingMismatch, RoleMissing, ...: the
                binding rules of ``agentkeys.binding``.
            ServiceNotInScope, ActorNotAgentOfOperator: the scope.
            EpochMismatch, WrongType, ChainUnavailable, StoreUnavailable.
        """
        operator = normalize_hex32(request.operator_omni)
        actor = normalize_hex32(request.actor_omni)
        service = normalize_service(request.service)
        dkh = normalize_hex32(request.device_key_hash)
        audit.update(
            op=op.value, operator=operator, actor=actor, service=service, device_key_hash=dkh
        )
        if session.subject != operator:
            raise OperatorMismatch("the session is not this operator's")
        if session.stage == DEVICE and (
            op != CapOp.FETCH or dkh != session.device_key_hash or actor != session.actor_omni
        ):
            raise DeviceSessionNotAllowed(
                "a device session mints fetch caps for its own device and actor only"
            )
        try:
            proof = PopProof.from_header_value(request.pop)
            claims = MintPopClaims(
                op=op,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                device_key_hash=dkh,
                nonce=proof.nonce,
                timestamp=proof.timestamp,
            )
        except FormatError as exc:
            raise PopRejected(exc.reason) from exc
        device = await self._chain.device(dkh)
        if device is not None:
            await self._verify_pop(claims, proof.signature, device.k10_point)
        check_binding(device, op=op, operator_omni=operator, actor_omni=actor)
        chain_scope = None
        legacy = None
        agent_operator = None
        if actor != operator:
            agent_operator = await self._chain.agent_operator(actor)
            chain_scope = await self._chain.scope(operator, actor)
            if chain_scope is None:
                legacy = await self._store.get_legacy_scope(operator, actor)
        try:
            decision = decide_scope(
                op=op,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                agent_operator=agent_operator,
                chain_scope=chain_scope,
                legacy_scope=legacy,
            )
        except AgentkeysError:
            source = (
                ScopeSource.CHAIN
                if chain_scope is not None
                else ScopeSource.LEGACY
                if legacy is not None
                else ScopeSource.NONE
            )
            audit["scope_source"] = source.value
            raise
        audit["scope_source"] = decision.scope_source.value
        epoch = await self._chain.epoch()
        audit["epoch"] = epoch
        if request.k3_epoch is not None and request.k3_epoch != epoch:
            raise EpochMismatch(f"the chain's current K3 epoch is {epoch}")
        lifetime = request.lifetime if request.lifetime is not None else self._caps.lifetime
        if not 1 <= lifetime <= self._caps.lifetime:
            raise WrongType(f"lifetime must be within 1..{self._caps.lifetime}")
        now = int(self._clock())
        payload = new_cap_payload(
            op=op,
            operator_omni=operator,
            actor_omni=actor,
            service=service,
            device_key_hash=dkh,
            k3_epoch=epoch,
            aud=self._caps.audience,
            now=now,
            lifetime=lifetime,
        )
        signed = sign_cap(payload, self._keys.cap.active, self._keys.cap.active_kid)
        await self._store.add_mint_record(
            MintRecord(
                cap_nonce=payload.nonce,
                op=op.value,
                operator_omni=operator,
                actor_omni=actor,
                service=service,
                device_key_hash=dkh,
                k3_epoch=epoch,
                scope_source=decision.scope_source.value,
                issued_at=now,
            )
        )
        return CapMinted(
            cap=dict(signed.to_wire()),
            token=signed.to_token(),
            scope_source=decision.scope_source.value,
            expires_at=payload.expires_at,
        )

    async def _verify_pop(self, claims: MintPopClaims, signature: str, point: bytes) -> None:
        now = int(self._clock())
        window = self._caps.pop_window
        try:
            verified = verify_mint_pop(
                claims,
                signature,
                public_key=p256_public_key_from_point(point),
                now=now,
                nonces=NonceRegistry(1),
                window=window,
            )
        except PopStale as exc:
            raise StalePop(exc.reason) from exc
        except PopError as exc:
            raise PopRejected(exc.reason) from exc
        key = POP_MINT_PREFIX + bytes.fromhex(verified.device_key_hash) + claims.nonce
        if not await self._store.consume_nonce(key, expires_at=claims.timestamp + window, now=now):
            raise ReplayedNonce("the PoP nonce was already used")
