"""Storage keys of credential envelopes (SPEC.md section 4, storage layout).

    v1 key: bots/<master wallet, lowercase 0x hex>/credentials/<service>.enc
    v2 key: bots/<actor_omni, 64 lowercase hex>/credentials/<service>.enc

and, outside ``bots/``, the shared single-use markers of K10 proof nonces (optional, see
docs/worker.md)::

    pop-nonces/<actor_omni>/<device_key_hash>/<nonce, 32 lowercase hex>

Every value substituted into a key goes through :mod:`agentkeys.omni`'s normalisers, so
no ``*``, ``?``, ``$``, ``/`` or ``{`` can reach a key. :func:`service_of_key` is the
inverse used when listing: keys that are not exactly of this form are ignored.
"""

from __future__ import annotations

from agentkeys.errors import FormatError
from agentkeys.omni import normalize_hex32, normalize_service, normalize_wallet

__all__ = [
    "POP_NONCE_PREFIX",
    "pop_nonce_key",
    "service_of_key",
    "v1_key",
    "v1_prefix",
    "v2_key",
    "v2_prefix",
]

_SUFFIX = ".enc"
POP_NONCE_PREFIX = "pop-nonces/"


def v1_prefix(wallet: str) -> str:
    """``bots/<wallet>/credentials/`` (raises InvalidIdentifier for a bad wallet)."""
    return f"bots/{normalize_wallet(wallet)}/credentials/"


def v2_prefix(actor_omni: str) -> str:
    """``bots/<actor_omni>/credentials/`` (raises InvalidIdentifier for a bad omni)."""
    return f"bots/{normalize_hex32(actor_omni)}/credentials/"


def v1_key(wallet: str, service: str) -> str:
    """The v1 key of (master wallet, service)."""
    return v1_prefix(wallet) + normalize_service(service) + _SUFFIX


def v2_key(actor_omni: str, service: str) -> str:
    """The v2 key of (actor, service)."""
    return v2_prefix(actor_omni) + normalize_service(service) + _SUFFIX


def service_of_key(prefix: str, key: str) -> str | None:
    """The service a listed key under ``prefix`` stores, or ``None`` if it is not one.

    Only ``<prefix><service>.enc`` with a canonical service name qualifies.
    """
    if not key.startswith(prefix) or not key.endswith(_SUFFIX):
        return None
    name = key[len(prefix) : -len(_SUFFIX)]
    try:
        service = normalize_service(name)
    except FormatError:
        return None
    return service if service == name else None


def pop_nonce_key(actor_omni: str, device_key_hash: str, nonce: bytes) -> str:
    """The marker key of one K10 proof nonce (16 bytes) spent for ``actor_omni``."""
    if len(nonce) != 16:
        raise FormatError("a PoP nonce is 16 bytes")
    return (
        f"{POP_NONCE_PREFIX}{normalize_hex32(actor_omni)}/{normalize_hex32(device_key_hash)}/"
        f"{nonce.hex()}"
    )
