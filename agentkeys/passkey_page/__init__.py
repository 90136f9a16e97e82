"""The local passkey page: WebAuthn ceremonies in the operator's browser (SPEC sections 6, 7).

The CLI serves a small page on 127.0.0.1 under a one-time path token; the page runs
``navigator.credentials.create`` (enrollment) or ``.get`` (approval of a master mutation, whose
challenge the contract rebuilds) and posts the result back. :class:`PagePasskey` implements
agentkeys.chain's ``PasskeyAuthenticator`` on top of it. A software authenticator
(agentkeys.devstack.softauthn) is used instead only when the operator asks for it
(``--dev-authenticator``); this package never falls back to one.
"""

from agentkeys.passkey_page._authenticator import (
    DEFAULT_TIMEOUT,
    PagePasskey,
    browser_opener,
    enroll_passkey,
)
from agentkeys.passkey_page._ceremony import (
    DEFAULT_RP_ID,
    EnrolledPasskey,
    PageAssertion,
    assertion_ceremony,
    cose_es256,
    enrollment_ceremony,
    verify_assertion,
    verify_enrollment,
)
from agentkeys.passkey_page._server import CSP, MAX_RESULT_BYTES, PageResult, UrlOpener, run_page
from agentkeys.passkey_page.errors import (
    PasskeyCancelled,
    PasskeyPageError,
    PasskeyResponseInvalid,
    PasskeyTimeout,
    PasskeyWrongCredential,
)

__all__ = [
    "CSP",
    "DEFAULT_RP_ID",
    "DEFAULT_TIMEOUT",
    "MAX_RESULT_BYTES",
    "EnrolledPasskey",
    "PageAssertion",
    "PagePasskey",
    "PageResult",
    "PasskeyCancelled",
    "PasskeyPageError",
    "PasskeyResponseInvalid",
    "PasskeyTimeout",
    "PasskeyWrongCredential",
    "UrlOpener",
    "assertion_ceremony",
    "browser_opener",
    "cose_es256",
    "enroll_passkey",
    "enrollment_ceremony",
    "run_page",
    "verify_assertion",
    "verify_enrollment",
]
