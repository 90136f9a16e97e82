"""Passkeys through the local page: enrollment, and the chain's PasskeyAuthenticator."""

from __future__ import annotations

import os
import secrets
import sys
import webbrowser
from dataclasses import dataclass
from typing import TextIO

import trio

from agentkeys.passkey_page._ceremony import (
    DEFAULT_RP_ID,
    EnrolledPasskey,
    PageAssertion,
    assertion_ceremony,
    enrollment_ceremony,
    verify_assertion,
    verify_enrollment,
)
from agentkeys.passkey_page._server import UrlOpener, run_page

__all__ = ["DEFAULT_TIMEOUT", "PagePasskey", "browser_opener", "enroll_passkey"]

#: Seconds a page stays usable.
DEFAULT_TIMEOUT = 180.0

_OPEN_LIMITER = trio.CapacityLimiter(1)


def _graphical_session() -> bool:
    """False on a Linux/BSD console without X11/Wayland, where webbrowser would pick a text
    browser and take over the terminal."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def browser_opener(*, launch: bool = True, stream: TextIO | None = None) -> UrlOpener:
    """An opener that prints the URL (to stderr) and, when ``launch`` and a graphical session
    exists, opens the default browser."""

    async def open_url(url: str) -> None:
        out = stream if stream is not None else sys.stderr
        print(f"Approve with your passkey in the browser: {url}", file=out, flush=True)
        if launch and _graphical_session():
            await trio.to_thread.run_sync(
                webbrowser.open, url, limiter=_OPEN_LIMITER, abandon_on_cancel=True
            )

    return open_url


async def enroll_passkey(
    *,
    user_name: str,
    open_url: UrlOpener,
    challenge: bytes | None = None,
    rp_id: str = DEFAULT_RP_ID,
    expires_in: float = DEFAULT_TIMEOUT,
    port: int = 0,
) -> EnrolledPasskey:
    """Create a passkey through the page (``challenge``: the broker's, else random).

    Raises:
        PasskeyTimeout / PasskeyCancelled / PasskeyResponseInvalid: see agentkeys.passkey_page.
    """
    challenge = challenge if challenge is not None else secrets.token_bytes(32)
    ceremony = enrollment_ceremony(
        challenge=challenge,
        rp_id=rp_id,
        user_id=secrets.token_bytes(16),
        user_name=user_name,
        purpose=f"Create the agentkeys passkey for {user_name}.",
        timeout_ms=int(expires_in * 1000),
    )
    result = await run_page(ceremony, open_url=open_url, expires_in=expires_in, port=port)
    return verify_enrollment(
        result.credential, challenge=challenge, origin=result.origin, rp_id=rp_id
    )


@dataclass
class PagePasskey:
    """A registered passkey used through the page: agentkeys.chain's PasskeyAuthenticator.

    Each :meth:`get_assertion` serves a fresh one-time page and waits for the browser; the
    page shows :attr:`purpose` and :attr:`details` (what is approved), set by the caller.
    """

    credential_id: bytes
    public_point: bytes
    open_url: UrlOpener
    rp_id: str = DEFAULT_RP_ID
    purpose: str = "Approve this agentkeys change with your passkey."
    timeout: float = DEFAULT_TIMEOUT
    port: int = 0
    details: tuple[tuple[str, str], ...] = ()

    async def get_assertion(self, challenge: bytes) -> PageAssertion:
        """Assert over ``challenge`` with the registered passkey.

        Raises:
            PasskeyTimeout / PasskeyCancelled / PasskeyWrongCredential / PasskeyResponseInvalid.
        """
        ceremony = assertion_ceremony(
            challenge=challenge,
            rp_id=self.rp_id,
            credential_id=self.credential_id,
            purpose=self.purpose,
            timeout_ms=int(self.timeout * 1000),
            details=self.details,
        )
        result = await run_page(
            ceremony, open_url=self.open_url, expires_in=self.timeout, port=self.port
        )
        return verify_assertion(
            result.credential,
            challenge=challenge,
            origin=result.origin,
            rp_id=self.rp_id,
            credential_id=self.credential_id,
            public_point=self.public_point,
        )
