"""The signer service: its routes, ONE authorization table, and the K3 epoch watcher.

Routes (all JSON; see docs/signer.md for the wire format):

=======================  ======  ================  ==========================================
route                    method  roles             does
=======================  ======  ================  ==========================================
/derive-cred-kek         POST    worker            v1 or v2 KEK (SPEC.md section 4)
/sts-credentials         POST    worker            per-actor S3 credentials via STS
/verify/k10-sig          POST    broker, worker    verify a K10 ECDSA P-256 signature
/verify/k11-assertion    POST    broker, worker    verify a WebAuthn assertion
/k4/address              POST    broker            K4 wallet address of an identity omni
/k4/siwe-sign            POST    broker            K4 signature over a SIWE message
/k4/register-first-master POST   broker            K4's EIP-712 RegisterFirstMaster approval,
                                                   only over a K10 + K11-signed registration
/oidc/jwks               GET     broker, worker    public JWKS of the token-signing key
/status                  GET     broker, worker    current epoch, held epochs
=======================  ======  ================  ==========================================

The broker never gets a KEK (it "can never decrypt a credential").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import trio

from agentkeys.b64url import b64url_encode
from agentkeys.chain.errors import ChainError
from agentkeys.config import ConfigError
from agentkeys.errors import DOMAIN_ERRORS
from agentkeys.omni import (
    actor_omni_for_wallet,
    device_key_hash_from_point,
    normalize_hex32,
    normalize_service,
    normalize_wallet,
)
from agentkeys.pki import Role
from agentkeys.service import (
    AuditSink,
    BoundAddress,
    Call,
    JsonObject,
    Route,
    ServerSettings,
    ServerTls,
    ServiceApp,
    allow,
    serve_http,
)
from agentkeys.signer._first_master import (
    AssertionLedger,
    FirstMasterRequestDevice,
    first_master_challenge,
    sign_register_first_master,
    verify_first_master_k10,
    verify_first_master_k11,
)
from agentkeys.signer._kek import Purpose, derive_v1, derive_v2, k4_wallet
from agentkeys.signer._keystore import KeyStore
from agentkeys.signer._oidc import mint_web_identity_token, public_jwks
from agentkeys.signer._siwe import SiwePin, check_siwe_message
from agentkeys.signer._sts import StsExchanger
from agentkeys.signer._verify import verify_k10, verify_k11
from agentkeys.signer.config import OidcSettings
from agentkeys.signer.errors import (
    EpochUnavailable,
    KekRequestInvalid,
    OperatorAlreadyRegistered,
    RegistryUnavailable,
    SiwePinUnset,
)
from agentkeys.wallet import sign_eip191

__all__ = ["AUTHORIZATION", "EpochSource", "RegistrySource", "SignerService"]

_log = logging.getLogger("agentkeys.signer")

AUTHORIZATION = {
    "derive_cred_kek": allow(Role.WORKER),
    "sts_credentials": allow(Role.WORKER),
    "verify_k10_sig": allow(Role.BROKER, Role.WORKER),
    "verify_k11_assertion": allow(Role.BROKER, Role.WORKER),
    "k4_address": allow(Role.BROKER),
    "k4_siwe_sign": allow(Role.BROKER),
    "k4_register_first_master": allow(Role.BROKER),
    "oidc_jwks": allow(Role.BROKER, Role.WORKER),
    "status": allow(Role.BROKER, Role.WORKER),
}
"""The signer's authorization table: route name → roles allowed."""


class EpochSource(Protocol):
    """The chain's K3EpochCounter (agentkeys.chain.ChainClient satisfies it)."""

    async def current_epoch(self) -> int:
        """The current epoch on chain."""
        ...


class RegistrySource(Protocol):
    """The chain's SidecarRegistry (agentkeys.chain.ChainClient satisfies it)."""

    async def chain_id(self) -> int:
        """The chain id the node reports."""
        ...

    def address_of(self, contract: str) -> str:
        """A deployed contract's address."""
        ...

    async def master_wallet(self, operator_omni: str | bytes) -> str | None:
        """The operator's master wallet, None when unregistered."""
        ...

    async def operator_nonce(self, operator_omni: str | bytes) -> int:
        """The operator's mutation nonce."""
        ...


# -- request bodies -----------------------------------------------------------


@dataclass(frozen=True)
class DeriveKekRequest:
    version: Literal[1, 2]
    purpose: Purpose
    actor_omni: str | None = None
    epoch: int | None = None
    identity_omni: str | None = None
    wallet: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class StsRequest:
    actor_omni: str
    wallet: str | None = None


@dataclass(frozen=True)
class K10Request:
    public_key: str
    signature: str
    message: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class K11Request:
    credential: dict[str, object]
    expected_challenge: str
    expected_rp_id: str
    expected_origin: str
    credential_public_key: str
    current_sign_count: int
    require_user_verification: bool = True


@dataclass(frozen=True)
class K4AddressRequest:
    identity_omni: str


@dataclass(frozen=True)
class SiweSignRequest:
    identity_omni: str
    message: str


@dataclass(frozen=True)
class FirstMasterSignRequest:
    identity_omni: str
    device: FirstMasterRequestDevice
    k10_signature: str
    assertion: dict[str, object]


class SignerService:
    """The signer core: owns its nursery (epoch watcher + HTTP server).

    Args:
        settings: listening options; TLS is mandatory.
        keys: the unsealed key store (see KeyStore.open).
        epochs: where the chain's current epoch is read.
        sts: the STS exchanger.
        oidc: issuer/audience/lifetime of the web-identity tokens.
        audit: receives one event per request and per refused connection.
        epoch_poll_interval: seconds between reads of the chain's epoch.
        clock: seconds since the epoch (tests may fix it).
        registry: where first-master registration state is read; ``None`` refuses
            ``/k4/register-first-master`` (503 ``registry_unavailable``).
        siwe: the domain, URI and chain id K4 SIWE messages must name; ``None`` refuses
            ``/k4/siwe-sign`` (503 ``siwe_pin_unset``).
    """

    def __init__(
        self,
        *,
        settings: ServerSettings,
        keys: KeyStore,
        epochs: EpochSource,
        sts: StsExchanger,
        oidc: OidcSettings,
        audit: AuditSink,
        epoch_poll_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        registry: RegistrySource | None = None,
        siwe: SiwePin | None = None,
    ) -> None:
        if not settings.tls_enabled:
            raise ConfigError("the signer serves mutual TLS only")
        self._settings = settings
        self._keys = keys
        self._epochs = epochs
        self._sts = sts
        self._oidc = oidc
        self._poll = epoch_poll_interval
        self._clock = clock
        self._registry = registry
        self._siwe = siwe
        self._approvals = AssertionLedger()
        self._approval_lock = trio.Lock()
        self._current: int | None = None
        self._epoch_lock = trio.Lock()
        self._epoch_changed = trio.Event()
        self._stop = trio.Event()
        self._bound: BoundAddress | None = None
        routes = (
            Route("derive_cred_kek", "POST", "/derive-cred-kek", self._derive_cred_kek),
            Route("sts_credentials", "POST", "/sts-credentials", self._sts_credentials),
            Route("verify_k10_sig", "POST", "/verify/k10-sig", self._verify_k10),
            Route("verify_k11_assertion", "POST", "/verify/k11-assertion", self._verify_k11),
            Route("k4_address", "POST", "/k4/address", self._k4_address),
            Route("k4_siwe_sign", "POST", "/k4/siwe-sign", self._k4_siwe_sign),
            Route(
                "k4_register_first_master",
                "POST",
                "/k4/register-first-master",
                self._k4_register_first_master,
            ),
            Route("oidc_jwks", "GET", "/oidc/jwks", self._oidc_jwks),
            Route("status", "GET", "/status", self._status),
        )
        self.app = ServiceApp(
            "signer",
            routes,
            AUTHORIZATION,
            audit=audit,
            max_body_bytes=settings.max_body_bytes,
            readiness=self._readiness,
        )

    async def _readiness(self) -> list[str]:
        return ["epoch_unknown"] if self._current is None else []

    @property
    def bound(self) -> BoundAddress | None:
        """Where the service listens (``None`` until :meth:`serve` has started)."""
        return self._bound

    @property
    def current_epoch(self) -> int | None:
        """The chain epoch last read (``None`` before the first read)."""
        return self._current

    async def serve(
        self, *, task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the chain's epoch (ensuring its K3), then serve until :meth:`shutdown`.

        ``task_status.started`` gets the bound address once the server listens.

        Raises:
            PkiFileError / ConfigError: TLS material unusable.
            AgentkeysError: the chain's epoch cannot be read at start-up.
        """
        tls = ServerTls.from_settings(self._settings)
        assert tls is not None
        await self.refresh_epoch()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_epochs)

            async def http(*, task_status: trio.TaskStatus[BoundAddress]) -> None:
                await serve_http(
                    self.app,
                    self._settings,
                    tls=tls,
                    shutdown_trigger=self._stop.wait,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            bound: BoundAddress = await nursery.start(http)
            self._bound = bound
            _log.info("signer listening on %s (epoch %s)", bound.url, self._current)
            task_status.started(bound)

    def shutdown(self) -> None:
        """Stop serving gracefully (in-flight requests finish)."""
        self._stop.set()

    async def refresh_epoch(self) -> int:
        """Read the chain's epoch; on a new one, create and seal its K3 first.

        Returns:
            The current epoch.

        Raises:
            AgentkeysError: the chain cannot be read or the K3 cannot be sealed.
        """
        async with self._epoch_lock:
            epoch = await self._epochs.current_epoch()
            if self._current is not None and epoch < self._current:
                _log.error("chain epoch went backwards (%d < %d); ignoring", epoch, self._current)
                return self._current
            if epoch != self._current:
                await self._keys.ensure_epoch(epoch)
                self._current = epoch
                self._epoch_changed.set()
                self._epoch_changed = trio.Event()
                _log.info("K3 epoch is now %d", epoch)
            return epoch

    async def wait_for_epoch(self, epoch: int) -> None:
        """Return once the signer has taken up ``epoch`` (or a later one)."""
        while self._current is None or self._current < epoch:
            await self._epoch_changed.wait()

    async def _watch_epochs(self) -> None:
        while True:
            await trio.sleep(self._poll)
            try:
                await self.refresh_epoch()
            except DOMAIN_ERRORS as exc:
                _log.warning("cannot read the chain's K3 epoch: %s", exc.reason)

    # -- handlers ---------------------------------------------------------------

    async def _derive_cred_kek(self, call: Call) -> JsonObject:
        req = call.decode(DeriveKekRequest)
        call.audit["version"] = req.version
        call.audit["purpose"] = req.purpose.value
        if req.version == 2:
            if req.actor_omni is None or req.epoch is None:
                raise KekRequestInvalid("v2 needs actor_omni and epoch")
            if req.identity_omni is not None or req.wallet is not None or req.service is not None:
                raise KekRequestInvalid("v2 takes no identity_omni, wallet or service")
            actor = normalize_hex32(req.actor_omni)
            call.audit["actor"] = actor
            call.audit["epoch"] = req.epoch
            if req.epoch < 0:
                raise KekRequestInvalid("epoch must not be negative")
            if self._current is None or req.epoch > self._current:
                # the chain may have advanced since the last poll
                try:
                    await self.refresh_epoch()
                except DOMAIN_ERRORS as exc:
                    raise EpochUnavailable("cannot read the chain's K3 epoch") from exc
            kek = derive_v2(self._keys, actor, req.epoch, req.purpose, current=self._current)
            return {"version": 2, "epoch": req.epoch, "kek": b64url_encode(kek)}
        if req.identity_omni is None or req.wallet is None or req.service is None:
            raise KekRequestInvalid("v1 needs identity_omni, wallet and service")
        if req.actor_omni is not None or req.epoch is not None:
            raise KekRequestInvalid("v1 takes no actor_omni or epoch")
        identity = normalize_hex32(req.identity_omni)
        service = normalize_service(req.service)
        call.audit["identity"] = identity
        call.audit["service"] = service
        kek = derive_v1(self._keys, identity, req.wallet, service)
        return {"version": 1, "wallet": normalize_wallet(req.wallet), "kek": b64url_encode(kek)}

    async def _sts_credentials(self, call: Call) -> JsonObject:
        req = call.decode(StsRequest)
        actor = normalize_hex32(req.actor_omni)
        call.audit["actor"] = actor
        wallet = normalize_wallet(req.wallet) if req.wallet is not None else None
        token = mint_web_identity_token(
            self._keys.oidc_key,
            issuer=self._oidc.issuer,
            audience=self._oidc.audience,
            actor_omni=actor,
            wallet=wallet,
            now=int(self._clock()),
            lifetime=self._oidc.token_lifetime,
        )
        creds = await self._sts.exchange(token, session_name=f"agentkeys-{actor[:32]}")
        return {"actor_omni": actor, "credentials": creds.to_json()}

    async def _verify_k10(self, call: Call) -> JsonObject:
        req = call.decode(K10Request)
        verified = verify_k10(
            public_key=req.public_key,
            signature=req.signature,
            message=req.message,
            digest=req.digest,
        )
        call.audit["device_key_hash"] = verified.device_key_hash
        return {"verified": True, "device_key_hash": verified.device_key_hash}

    async def _verify_k11(self, call: Call) -> JsonObject:
        req = call.decode(K11Request)
        verified = verify_k11(
            credential=req.credential,
            expected_challenge=req.expected_challenge,
            expected_rp_id=req.expected_rp_id,
            expected_origin=req.expected_origin,
            credential_public_key=req.credential_public_key,
            current_sign_count=req.current_sign_count,
            require_user_verification=req.require_user_verification,
        )
        return {
            "verified": True,
            "credential_id": verified.credential_id,
            "new_sign_count": verified.new_sign_count,
            "user_verified": verified.user_verified,
        }

    async def _k4_address(self, call: Call) -> JsonObject:
        req = call.decode(K4AddressRequest)
        identity = normalize_hex32(req.identity_omni)
        call.audit["identity"] = identity
        _, wallet = k4_wallet(self._keys, identity)
        return {"identity_omni": identity, "wallet": wallet}

    async def _k4_siwe_sign(self, call: Call) -> JsonObject:
        req = call.decode(SiweSignRequest)
        identity = normalize_hex32(req.identity_omni)
        call.audit["identity"] = identity
        if self._siwe is None:
            raise SiwePinUnset("this signer was started without a SIWE domain, URI and chain id")
        private_key, wallet = k4_wallet(self._keys, identity)
        message = check_siwe_message(req.message, wallet=wallet, pin=self._siwe, now=self._clock())
        sig = sign_eip191(private_key, message)
        # SIWE verifiers expect personal_sign's v in {27, 28}
        signature = sig[:64] + bytes([sig[64] + 27])
        return {"wallet": wallet, "signature": "0x" + signature.hex()}

    async def _k4_register_first_master(self, call: Call) -> JsonObject:
        """K4's RegisterFirstMaster approval (see :mod:`agentkeys.signer._first_master`)."""
        req = call.decode(FirstMasterSignRequest)
        identity = normalize_hex32(req.identity_omni)
        call.audit["identity"] = identity
        if self._registry is None:
            raise RegistryUnavailable("this signer was started without the SidecarRegistry")
        device = req.device.to_new_master()
        private_key, wallet = k4_wallet(self._keys, identity)
        operator = actor_omni_for_wallet(wallet)
        call.audit["operator"] = operator
        # one approval at a time: the chain check and the ledger entry must not interleave
        async with self._approval_lock:
            try:
                if await self._registry.master_wallet(operator) is not None:
                    raise OperatorAlreadyRegistered("this operator already has a master wallet")
                chain_id = await self._registry.chain_id()
                registry = self._registry.address_of("SidecarRegistry")
                nonce = await self._registry.operator_nonce(operator)
            except ChainError as exc:
                raise RegistryUnavailable(f"cannot read the registry ({exc.error})") from exc
            operator_raw = bytes.fromhex(operator)
            challenge = first_master_challenge(
                chain_id=chain_id,
                registry=registry,
                operator_omni=operator_raw,
                nonce=nonce,
                wallet=wallet,
                device=device,
            )
            verify_first_master_k10(device, challenge, req.k10_signature)
            verified = verify_first_master_k11(req.assertion, device=device, challenge=challenge)
            self._approvals.consume(verified.replay_key)
        signature = sign_register_first_master(
            private_key,
            chain_id=chain_id,
            registry=registry,
            operator_omni=operator_raw,
            challenge=challenge,
        )
        call.audit["device_key_hash"] = device_key_hash_from_point(device.k10_point)
        return {
            "wallet": wallet,
            "operator_omni": operator,
            "challenge": challenge.hex(),
            "signature": "0x" + signature.hex(),
        }

    async def _oidc_jwks(self, call: Call) -> JsonObject:
        return dict(public_jwks(self._keys.oidc_key))

    async def _status(self, call: Call) -> JsonObject:
        return {"current_epoch": self._current, "epochs": list(self._keys.epochs())}
