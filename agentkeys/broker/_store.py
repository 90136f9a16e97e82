"""The broker's state: one small interface, the records it holds, and how to open a backend.

Everything the broker must remember between requests lives behind :class:`StateStore`, so
several broker replicas can share one store. Each method is one atomic step, and every
single-use rule is one atomic statement in the store (insert-if-absent, delete-returning,
compare-and-set), never a read followed by a write:

* email sign-in requests: the magic-link token and the poll handle, both stored as sha256;
* sessions (J0/J1): jti → subject, stage, expiry, revoked;
* challenges (WebAuthn, SIWE nonces): single use, bound to a session, expiring;
* device sign-in challenges: single use, bound to one device_key_hash, expiring;
* passkey credentials and their sign counts (compare-and-set, never backwards);
* PoP nonces (single use until their window ends);
* the legacy local scope table (SPEC section 9, dual mode);
* mint records (which scope source decided);
* the shared signing-key set (K1, K2, session key; sealed, see ``agentkeys.broker._keys``).

Two backends implement it with the same SQL (``agentkeys.broker._store_sql``):
:class:`~agentkeys.broker._store_sqlite.SqliteStateStore`, the embedded default (one file
0600 in a 0700 directory, one host), and
:class:`~agentkeys.broker._store_postgres.PostgresStateStore` (psycopg 3 and psycopg_pool in
worker threads, for replicas). Both apply their versioned schema migrations when opened.
Secrets are never stored in the clear: tokens only as hashes, private keys only sealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "EmailRequest",
    "LegacyScope",
    "MintRecord",
    "PasskeyCredential",
    "SessionRecord",
    "SigningKeyRecord",
    "StateStore",
]


@dataclass(frozen=True)
class EmailRequest:
    """A pending email sign-in: who, until when, and whether the link was followed."""

    email: str
    identity_omni: str
    expires_at: int
    verified: bool


@dataclass(frozen=True)
class SessionRecord:
    """What the store knows of a session."""

    jti: str
    stage: str
    subject: str
    expires_at: int
    revoked: bool


@dataclass(frozen=True)
class PasskeyCredential:
    """An enrolled WebAuthn credential, bound to the K10 key it was enrolled with."""

    identity_omni: str
    credential_id: bytes
    public_key: bytes  # COSE_Key
    sign_count: int
    k10_point: bytes
    rp_id: str
    created_at: int


@dataclass(frozen=True)
class LegacyScope:
    """A legacy local scope entry (used only where the chain has none)."""

    services: tuple[str, ...]
    read_only: bool


@dataclass(frozen=True)
class MintRecord:
    """One minted cap: identifiers only, and which scope source decided."""

    cap_nonce: str
    op: str
    operator_omni: str
    actor_omni: str
    service: str
    device_key_hash: str
    k3_epoch: int
    scope_source: str
    issued_at: int


@dataclass(frozen=True)
class SigningKeyRecord:
    """One key of the shared signing-key set (``agentkeys.broker._keys``).

    ``generation`` numbers the keys of a purpose (1, 2, ...); ``sealed`` is the private key
    sealed at rest; the key is published from when it is stored, signs from
    ``activates_at`` (until a later generation activates) and is published until
    ``retires_at`` (``None``: not scheduled to retire).
    """

    purpose: str
    generation: int
    kid: str
    sealed: bytes
    created_at: int
    activates_at: int
    retires_at: int | None


class StateStore(Protocol):
    """The broker's persistent state (see the module docstring). Methods are atomic."""

    async def add_email_request(
        self,
        *,
        token_hash: bytes,
        request_hash: bytes,
        email: str,
        identity_omni: str,
        expires_at: int,
    ) -> None:
        """Record a new sign-in request."""
        ...

    async def pending_email_requests(self, identity_omni: str, *, now: int) -> int:
        """How many unexpired, uncollected requests the identity has."""
        ...

    async def follow_email_link(self, token_hash: bytes, *, now: int) -> EmailRequest | None:
        """Forget the token (single use) and, unless expired, mark its request verified.

        Returns the request as it was before (so ``verified`` is False: a request keeps its
        token only until it is followed), or ``None`` for an unknown or used token.
        """
        ...

    async def get_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """The request for a poll handle, or ``None``."""
        ...

    async def collect_email_request(self, request_hash: bytes) -> EmailRequest | None:
        """Delete and return a *verified* request (its J0 is issued once), else ``None``."""
        ...

    async def add_session(self, record: SessionRecord) -> None:
        """Record an issued session."""
        ...

    async def get_session(self, jti: str) -> SessionRecord | None:
        """The session record, or ``None``."""
        ...

    async def revoke_session(self, jti: str) -> bool:
        """Revoke one session; True when it existed."""
        ...

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every session of ``subject``; returns how many."""
        ...

    async def add_challenge(
        self,
        *,
        challenge_id: str,
        purpose: str,
        session_jti: str,
        payload: dict[str, str],
        expires_at: int,
    ) -> None:
        """Record a single-use challenge."""
        ...

    async def take_challenge(
        self, *, challenge_id: str, purpose: str, session_jti: str, now: int
    ) -> dict[str, str] | None:
        """Delete and return the payload if it exists for this purpose and session, unexpired."""
        ...

    async def add_device_challenge(
        self, challenge: bytes, *, device_key_hash: str, expires_at: int, now: int, limit: int
    ) -> bool:
        """Record a device sign-in challenge unless the device already holds ``limit``
        unexpired ones (one statement); False when it does (nothing recorded)."""
        ...

    async def take_device_challenge(
        self, challenge: bytes, *, device_key_hash: str, now: int
    ) -> bool:
        """Delete the challenge if it was issued for this device; True only when it was, and
        is unexpired (single use: one statement, whichever replica asks)."""
        ...

    async def add_credential(self, credential: PasskeyCredential) -> None:
        """Store an enrolled credential (replacing none: ids are unique)."""
        ...

    async def credentials_of(self, identity_omni: str) -> list[PasskeyCredential]:
        """The identity's credentials."""
        ...

    async def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        """Set the sign count to ``new`` if it is still ``old`` (compare-and-set).

        Never backwards: refused unless ``new`` > ``old``, or both are 0 (an authenticator
        without a counter).
        """
        ...

    async def consume_nonce(self, key: bytes, *, expires_at: int, now: int) -> bool:
        """Record ``key`` until ``expires_at``; False when it is already held (a replay)."""
        ...

    async def set_legacy_scope(
        self, operator_omni: str, actor_omni: str, services: tuple[str, ...], read_only: bool
    ) -> None:
        """Write a legacy scope entry."""
        ...

    async def get_legacy_scope(self, operator_omni: str, actor_omni: str) -> LegacyScope | None:
        """The legacy scope entry, or ``None``."""
        ...

    async def delete_legacy_scope(self, operator_omni: str, actor_omni: str) -> bool:
        """Remove a legacy scope entry; True when it existed."""
        ...

    async def add_mint_record(self, record: MintRecord) -> None:
        """Record a minted cap."""
        ...

    async def mint_records(self, limit: int = 100) -> list[MintRecord]:
        """The most recent mint records, newest first."""
        ...

    async def add_signing_key(
        self, record: SigningKeyRecord, *, retire_others_at: int | None
    ) -> bool:
        """Insert ``record`` unless its (purpose, generation) or kid exists; False if so.

        When it was inserted and ``retire_others_at`` is given, every older key of the
        purpose not yet scheduled to retire gets that ``retires_at`` (same transaction).
        """
        ...

    async def signing_keys(self, purpose: str) -> list[SigningKeyRecord]:
        """The purpose's keys, oldest generation first."""
        ...

    async def purge_expired(self, now: int) -> None:
        """Drop expired requests, challenges, nonces, sessions and retired signing keys."""
        ...

    async def aclose(self) -> None:
        """Release the connection(s)."""
        ...
