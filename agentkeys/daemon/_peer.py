"""The answers of the broker and the worker to the daemon: JSON objects, or refusals logged.

Both peers answer ``{error, reason}`` when they refuse; the daemon logs each refusal with the
status, the code and a printable, bounded reason (the peers' reasons name identifiers and
rules, never a secret; the daemon's own session and proofs are never logged).
"""

from __future__ import annotations

import json
import logging
import re

import httpx

from agentkeys.daemon.errors import CredentialRefused, CredentialUnavailable

__all__ = ["MAX_ANSWER_BYTES", "peer_answer"]

MAX_ANSWER_BYTES = 64 * 1024

_log = logging.getLogger("agentkeys.daemon")
_CODE = re.compile(r"[a-z0-9_]{1,64}")


_REASON_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _error_field(response: httpx.Response, name: str) -> object:
    try:
        return response.json().get(name)
    except (ValueError, AttributeError):
        return None


def _error_code(response: httpx.Response, default: str) -> str:
    """The peer's ``error`` code when it is a plain snake_case word, else ``default``."""
    code = _error_field(response, "error")
    return code if isinstance(code, str) and _CODE.fullmatch(code) else default


def _log_refusal(response: httpx.Response, who: str, code: str) -> None:
    """Log a peer's refusal: status, code and its (printable, bounded) reason.

    The peers' reasons name identifiers and rules, never a secret; this request's own
    session and proofs are never logged.
    """
    reason = _error_field(response, "reason")
    text = _REASON_UNSAFE.sub("?", reason[:200]) if isinstance(reason, str) else "-"
    _log.warning("the %s refused: HTTP %d %s (%s)", who, response.status_code, code, text)


def peer_answer(response: httpx.Response, who: str) -> dict[str, object]:
    """The JSON object of a 200 answer.

    Raises:
        CredentialRefused: a 401, 403 or 404 (with the peer's code when registered).
        CredentialUnavailable: any other status, an oversized or non-object answer.
    """
    if response.status_code in (401, 403, 404):
        code = _error_code(response, "refused")
        _log_refusal(response, who, code)
        raise CredentialRefused(f"the {who} refused: {code}", code=code)
    if response.status_code != 200:
        code = _error_code(response, "no error code")
        _log_refusal(response, who, code)
        raise CredentialUnavailable(f"the {who} answered HTTP {response.status_code} ({code})")
    if len(response.content) > MAX_ANSWER_BYTES:
        raise CredentialUnavailable(f"the {who}'s answer is too large")
    try:
        doc = json.loads(response.content)
    except ValueError as exc:
        raise CredentialUnavailable(f"the {who}'s answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise CredentialUnavailable(f"the {who}'s answer is not a JSON object")
    return doc
