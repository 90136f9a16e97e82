"""What the broker accepts as a device or a passkey, checked against the chain and the store.

Shared by the sign-in, OIDC and relay cores: the live CAP_MINT device (``agentkeys.binding``
rules 1, 2 and 4), the operator's live master device whose registered passkey is this one,
an enrolled passkey's assertion (verified, then its sign count advanced in one store
statement), and the hex / COSE forms of the P-256 points these compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import cbor2

from agentkeys.binding import check_device, require_device
from agentkeys.broker import _passkey as pk
from agentkeys.broker._chainview import CachedChainView
from agentkeys.broker._store import PasskeyCredential, StateStore
from agentkeys.broker.config import SiteSettings
from agentkeys.broker.errors import PasskeyNotChainMaster, PasskeySignCountReplayed
from agentkeys.cap import CapOp
from agentkeys.chain.client import DeviceEntry, Tier
from agentkeys.omni import p256_public_key_from_point
from agentkeys.service.errors import WrongType

__all__ = [
    "chain_master_device",
    "cose_point",
    "k10_point_from_hex",
    "live_device",
    "verify_enrolled_assertion",
]


def cose_point(cose: bytes) -> bytes | None:
    """X || Y of an EC2 COSE key, None when it is not one."""
    try:
        key = cbor2.loads(cose)
    except (cbor2.CBORDecodeError, ValueError):
        return None
    if not isinstance(key, dict):
        return None
    x, y = key.get(-2), key.get(-3)
    if not isinstance(x, bytes) or not isinstance(y, bytes):
        return None
    return x + y


def k10_point_from_hex(text: str) -> bytes:
    """A K10 public key given as 64 bytes X || Y in hex (``0x`` optional), on the curve.

    Raises:
        WrongType: not 64 bytes of hex.
        InvalidKeyMaterial: not a point of P-256.
    """
    try:
        raw = bytes.fromhex(text[2:] if text[:2] in ("0x", "0X") else text)
    except ValueError:
        raise WrongType("k10_public_key must be 64 bytes X || Y as hex") from None
    if len(raw) != 64:
        raise WrongType("k10_public_key must be 64 bytes X || Y as hex")
    p256_public_key_from_point(raw)
    return raw


async def live_device(chain: CachedChainView, device_key_hash: str) -> DeviceEntry:
    """The registered, unrevoked device holding CAP_MINT (rules 1, 2 and 4 of
    ``agentkeys.binding`` against the device's own binding).

    Raises:
        DeviceNotRegistered, DeviceRevoked, RoleMissing, ChainUnavailable.
    """
    device = require_device(await chain.device(device_key_hash))
    return check_device(
        device,
        op=CapOp.FETCH,
        operator_omni=device.operator_omni,
        actor_omni=device.actor_omni,
    )


async def chain_master_device(
    chain: CachedChainView,
    site: SiteSettings,
    operator: str,
    device_key_hash: str,
    credential_id: bytes,
    k11_point: bytes | None = None,
) -> DeviceEntry:
    """The operator's live master device ``device_key_hash`` whose registered passkey is
    ``credential_id`` (and, when given, ``k11_point``) for this broker's rpId.

    Raises:
        PasskeyNotChainMaster: no such device, or another passkey / operator / rpId.
        ChainUnavailable: the chain cannot be read.
    """
    device = await chain.device(device_key_hash)
    if (
        device is None
        or device.revoked
        or device.tier != Tier.MASTER
        or device.operator_omni != operator
        or device.k11_credential_id_hash != hashlib.sha256(credential_id).hexdigest()
        or (k11_point is not None and device.k11_point != k11_point)
        or device.rp_id_hash != hashlib.sha256(site.rp_id.encode()).hexdigest()
    ):
        raise PasskeyNotChainMaster(
            "this operator has a master on chain, and this passkey is not the one "
            "registered for a live master device of it"
        )
    return device


async def verify_enrolled_assertion(
    store: StateStore,
    site: SiteSettings,
    credential: PasskeyCredential,
    assertion: Mapping[str, Any],
    challenge: bytes,
) -> None:
    """``assertion`` by the enrolled ``credential`` over ``challenge`` (origin included),
    then its sign count advanced (compare-and-set, so two uses of one count fail once).

    Raises:
        PasskeyAssertionRejected: the assertion does not verify.
        PasskeySignCountReplayed: a concurrent assertion used this sign count.
    """
    verified = pk.verify_assertion(
        assertion,
        challenge=challenge,
        public_key=credential.public_key,
        stored_sign_count=credential.sign_count,
        rp_id=site.rp_id,
        origin=site.origin,
    )
    if not await store.update_sign_count(
        credential.credential_id, old=credential.sign_count, new=verified.new_sign_count
    ):
        raise PasskeySignCountReplayed("a concurrent assertion used this sign count")
