"""Email magic links: the single-use token, its hashing, and SMTP delivery.

Bootstrap stage 1 (SPEC section 7, broker). A sign-in request creates two random values of
256 bits each: the *link token*, sent only by email, and the *request handle*, returned to the
client that polls. The store keeps only their sha256. Following the link (once, within
``link_lifetime`` ≤ 10 minutes) marks the request verified; the poll then collects one J0
session and the request is gone.

:class:`SmtpMailer` sends through any SMTP relay with :mod:`smtplib` in a worker thread.
"""

from __future__ import annotations

import hashlib
import secrets
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

import trio

from agentkeys.broker.errors import EmailDeliveryFailed

__all__ = ["Mailer", "SmtpMailer", "hash_secret", "new_secret"]


def new_secret() -> str:
    """256 random bits as unpadded base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    """sha256 of a link token or request handle (what the store keeps)."""
    return hashlib.sha256(b"agentkeys.broker.secret.v1\x00" + secret.encode("utf-8")).digest()


class Mailer(Protocol):
    """Sends one plain-text email."""

    async def send(self, *, to: str, subject: str, body: str) -> None:
        """Deliver or raise :class:`EmailDeliveryFailed`."""
        ...


class SmtpMailer:
    """:class:`Mailer` over SMTP (optionally STARTTLS), one connection per message.

    Args:
        host, port: the relay.
        sender: the From address.
        starttls: upgrade with STARTTLS (system trust store).
        timeout: seconds per SMTP operation.
    """

    def __init__(
        self, *, host: str, port: int, sender: str, starttls: bool = False, timeout: float = 10.0
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(4)

    def _send_blocking(self, message: EmailMessage, to: str) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            smtp.send_message(message, from_addr=self._sender, to_addrs=[to])

    async def send(self, *, to: str, subject: str, body: str) -> None:
        """See :class:`Mailer`."""
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await trio.to_thread.run_sync(self._send_blocking, message, to, limiter=self._limiter)
        except (OSError, smtplib.SMTPException) as exc:
            raise EmailDeliveryFailed(
                f"the SMTP relay refused or is unreachable ({type(exc).__name__})"
            ) from None
