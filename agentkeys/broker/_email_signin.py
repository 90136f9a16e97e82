"""Sign-in stage 1: the email magic link that yields a J0 (SPEC.md section 7).

``start`` mails a single-use link to a plain address (at most :data:`MAX_PENDING_LINKS`
unexpired at once) and answers the handle the client polls with; ``verify`` is the link
followed in a browser; ``poll`` answers :class:`EmailPending` until the link was followed,
then :class:`EmailSignedIn` once (the request is collected in one store statement).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agentkeys.broker._email import Mailer, hash_secret, new_secret
from agentkeys.broker._sessions import J0, SessionIssuer
from agentkeys.broker._store import StateStore
from agentkeys.broker.config import EmailSettings, SiteSettings
from agentkeys.broker.errors import (
    EmailRateLimited,
    EmailRequestUnknown,
    EmailTokenExpired,
    EmailTokenInvalid,
)
from agentkeys.errors import InvalidIdentifier
from agentkeys.omni import IdentityType, identity_omni
from agentkeys.service._audit import AuditValue

__all__ = [
    "MAX_PENDING_LINKS",
    "EmailPending",
    "EmailPollRequest",
    "EmailSignIn",
    "EmailSignedIn",
    "EmailStartRequest",
    "EmailStarted",
    "EmailVerified",
]

# Addresses we send links to: no quoting, comments, lists or display names, so the SMTP
# recipient is exactly the identity the link signs in.
_MAILBOX = re.compile(
    r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?", re.ASCII
)
MAX_PENDING_LINKS = 5
"""Unexpired sign-in links one address may have at once (bounds mail sent to a victim)."""


@dataclass(frozen=True)
class EmailStartRequest:
    email: str


@dataclass(frozen=True)
class EmailStarted:
    request: str  # the handle to poll with
    expires_at: int


@dataclass(frozen=True)
class EmailVerified:
    verified: bool
    message: str


@dataclass(frozen=True)
class EmailPollRequest:
    request: str


@dataclass(frozen=True)
class EmailPending:
    """The link was not followed yet (answered with 202)."""

    status: Literal["pending"] = "pending"


@dataclass(frozen=True)
class EmailSignedIn:
    status: Literal["verified"]
    session: str
    stage: str
    identity_omni: str
    expires_at: int


class EmailSignIn:
    """The magic-link core: the store's email requests, the mailer, the J0 issuer."""

    def __init__(
        self,
        *,
        site: SiteSettings,
        email: EmailSettings,
        store: StateStore,
        mailer: Mailer,
        sessions: SessionIssuer,
        clock: Callable[[], float],
    ) -> None:
        self._site = site
        self._email = email
        self._store = store
        self._mailer = mailer
        self._sessions = sessions
        self._clock = clock

    async def start(self, request: EmailStartRequest, audit: dict[str, AuditValue]) -> EmailStarted:
        """Mail a sign-in link to ``request.email``.

        Raises:
            InvalidIdentifier: not a plain ``local@domain`` address.
            EmailRateLimited: :data:`MAX_PENDING_LINKS` links are pending for it.
        """
        if _MAILBOX.fullmatch(request.email) is None:
            raise InvalidIdentifier("email must be a plain address local@domain")
        identity = identity_omni(IdentityType.EMAIL, request.email)
        email = request.email.lower()
        audit["identity"] = identity
        now = int(self._clock())
        if await self._store.pending_email_requests(identity, now=now) >= MAX_PENDING_LINKS:
            raise EmailRateLimited("too many pending sign-in links for this address")
        token, handle = new_secret(), new_secret()
        expires_at = now + self._email.link_lifetime
        await self._store.add_email_request(
            token_hash=hash_secret(token),
            request_hash=hash_secret(handle),
            email=email,
            identity_omni=identity,
            expires_at=expires_at,
        )
        link = f"{self._site.public_url}/v1/auth/email/verify?token={token}"
        minutes = self._email.link_lifetime // 60
        await self._mailer.send(
            to=email,
            subject="Your agentkeys sign-in link",
            body=(
                "Follow this link to sign in to agentkeys:\n\n"
                f"{link}\n\n"
                f"It works once and expires in {minutes} minutes. If you did not ask to sign "
                "in, ignore this message.\n"
            ),
        )
        return EmailStarted(request=handle, expires_at=expires_at)

    async def verify(self, token: str, audit: dict[str, AuditValue]) -> EmailVerified:
        """Follow the link carrying ``token``.

        Raises:
            EmailTokenInvalid: unknown, too long or already followed.
            EmailTokenExpired: the link expired.
        """
        if not token or len(token) > 128:
            raise EmailTokenInvalid("the sign-in link is invalid or was already used")
        now = int(self._clock())
        request = await self._store.follow_email_link(hash_secret(token), now=now)
        if request is None or request.verified:
            raise EmailTokenInvalid("the sign-in link is invalid or was already used")
        audit["identity"] = request.identity_omni
        if request.expires_at < now:
            raise EmailTokenExpired("the sign-in link has expired")
        return EmailVerified(verified=True, message="Signed in: you may return to agentkeys.")

    async def poll(
        self, request: EmailPollRequest, audit: dict[str, AuditValue]
    ) -> EmailSignedIn | EmailPending:
        """The J0 once the link of ``request.request`` was followed.

        Raises:
            EmailRequestUnknown: no such request (or it was collected already).
            EmailTokenExpired: the request expired.
        """
        handle = hash_secret(request.request)
        pending = await self._store.get_email_request(handle)
        now = int(self._clock())
        if pending is None:
            raise EmailRequestUnknown("no such sign-in request")
        audit["identity"] = pending.identity_omni
        if pending.expires_at < now:
            raise EmailTokenExpired("the sign-in request has expired")
        if not pending.verified:
            return EmailPending()
        collected = await self._store.collect_email_request(handle)
        if collected is None:
            raise EmailRequestUnknown("no such sign-in request")
        token, session = await self._sessions.issue(
            stage=J0,
            subject=collected.identity_omni,
            now=now,
            lifetime=self._site.j0_lifetime,
            extra={"email": collected.email},
        )
        return EmailSignedIn(
            status="verified",
            session=token,
            stage=J0,
            identity_omni=collected.identity_omni,
            expires_at=session.expires_at,
        )
