"""Errors of the local passkey page.

PasskeyPageError (AgentkeysError, 400 passkey_page_error)
├── PasskeyCancelled       the browser reported an error (user cancelled, no authenticator)
├── PasskeyTimeout         nobody completed the ceremony before the page expired
├── PasskeyResponseInvalid the posted credential is malformed or fails verification
└── PasskeyWrongCredential an assertion by another passkey than the one registered
"""

from __future__ import annotations

from agentkeys.errors import AgentkeysError

__all__ = [
    "PasskeyCancelled",
    "PasskeyPageError",
    "PasskeyResponseInvalid",
    "PasskeyTimeout",
    "PasskeyWrongCredential",
]


class PasskeyPageError(AgentkeysError):
    """The passkey ceremony through the local page did not produce a usable answer."""

    error = "passkey_page_error"
    status = 400


class PasskeyCancelled(PasskeyPageError):
    """The browser's WebAuthn call failed (cancelled, timed out in the browser, no device)."""

    error = "passkey_cancelled"


class PasskeyTimeout(PasskeyPageError):
    """The page expired before a result was posted."""

    error = "passkey_timeout"


class PasskeyResponseInvalid(PasskeyPageError):
    """The posted credential is malformed, or its challenge/origin/rpId/flags are wrong."""

    error = "passkey_response_invalid"


class PasskeyWrongCredential(PasskeyPageError):
    """The assertion comes from another passkey, or its signature does not verify."""

    error = "passkey_wrong_credential"
