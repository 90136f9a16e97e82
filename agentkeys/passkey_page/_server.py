"""The one-time local web server behind the passkey page.

It listens on 127.0.0.1 (random port by default) and answers only under a random path token:

    GET  /<token>/          the page (static/page.html)
    GET  /<token>/page.js   its script;  GET /<token>/page.css its style sheet
    GET  /<token>/request   the ceremony: {kind: create|get, purpose, publicKey: {...}}
    POST /<token>/result    {ok: true, credential: {...}} or {ok: false, error: "<DOMException>"}

The first accepted result spends the token (later requests get 410). Every answer carries a
strict Content-Security-Policy (no external resources, no inline script), ``no-store`` and
``nosniff``; requests with a Host other than the page's (DNS rebinding) or a POST from another
Origin are refused. The whole ceremony runs under a deadline (:class:`PasskeyTimeout`).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from agentkeys.passkey_page.errors import PasskeyCancelled, PasskeyResponseInvalid, PasskeyTimeout

__all__ = ["CSP", "MAX_RESULT_BYTES", "PageResult", "UrlOpener", "run_page"]

#: Content-Security-Policy of every answer: same-origin script, style and fetch only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Largest result body accepted (a registration with attestation is a few KiB).
MAX_RESULT_BYTES = 64 * 1024

UrlOpener = Callable[[str], Awaitable[None]]

_STATIC = {
    "": ("page.html", b"text/html; charset=utf-8"),
    "page.js": ("page.js", b"text/javascript; charset=utf-8"),
    "page.css": ("page.css", b"text/css; charset=utf-8"),
}


def _static(name: str) -> bytes:
    return resources.files("agentkeys.passkey_page").joinpath("static", name).read_bytes()


@dataclass(frozen=True)
class PageResult:
    """The credential JSON the browser posted, and the origin the page was served from."""

    credential: Mapping[str, Any]
    origin: str


class _Page:
    """ASGI app of one ceremony (single use)."""

    def __init__(self, ceremony: Mapping[str, Any]) -> None:
        self.token = secrets.token_urlsafe(24)
        self.ceremony = json.dumps(ceremony).encode()
        self.origin = ""  # set once the port is known
        self.hosts: tuple[bytes, ...] = ()
        self.result: Mapping[str, Any] | None = None
        self.done = trio.Event()
        self.files = {path: (_static(name), ctype) for path, (name, ctype) in _STATIC.items()}

    def bind(self, port: int) -> None:
        self.origin = f"http://localhost:{port}"
        self.hosts = (f"localhost:{port}".encode(), f"127.0.0.1:{port}".encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, body, ctype = await self._handle(scope, receive)
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, bytes]:
        text = b"text/plain; charset=utf-8"
        headers = dict(scope.get("headers") or ())
        if headers.get(b"host") not in self.hosts:
            return 421, b"wrong host\n", text
        path: str = scope.get("path", "")
        prefix, _, rest = path.lstrip("/").partition("/")
        if not hmac.compare_digest(prefix.encode(), self.token.encode()):
            return 404, b"not found\n", text
        if self.done.is_set():
            return 410, b"this page was already used\n", text
        method = scope.get("method")
        if method == "GET" and rest in self.files:
            body, ctype = self.files[rest]
            return 200, body, ctype
        if method == "GET" and rest == "request":
            return 200, self.ceremony, b"application/json"
        if method == "POST" and rest == "result":
            if headers.get(b"origin", b"") != self.origin.encode():
                return 403, b"wrong origin\n", text
            posted = await _read_body(receive)
            if posted is None:
                return 413, b"too large\n", text
            try:
                data = json.loads(posted)
            except ValueError:
                return 400, b"not JSON\n", text
            if not isinstance(data, dict):
                return 400, b"not an object\n", text
            self.result = data
            self.done.set()
            return 200, b"ok\n", text
        return 404, b"not found\n", text


async def _read_body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_RESULT_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def run_page(
    ceremony: Mapping[str, Any],
    *,
    open_url: UrlOpener,
    expires_in: float,
    port: int = 0,
) -> PageResult:
    """Serve the page for one ceremony, hand its URL to ``open_url``, wait for the result.

    Args:
        ceremony: ``{kind, purpose, publicKey}`` as the page script expects it.
        open_url: awaited with the page URL (open a browser, print it, drive a test browser).
        expires_in: seconds until the page expires.
        port: TCP port on 127.0.0.1; 0 picks a free one.

    Returns:
        The posted credential and the page's origin (for verifying clientDataJSON).

    Raises:
        PasskeyTimeout: no result within ``expires_in``.
        PasskeyCancelled: the browser reported that the WebAuthn call failed.
        PasskeyResponseInvalid: the posted answer has no credential object.
    """
    page = _Page(ceremony)
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve, page, config, stop)
        bound_port = int(str(binds[0]).rsplit(":", 1)[1])
        page.bind(bound_port)
        try:
            with trio.move_on_after(expires_in) as deadline:
                await open_url(f"{page.origin}/{page.token}/")
                await page.done.wait()
        finally:
            page.done.set()  # spend the token whatever happened
            stop.set()
    if deadline.cancelled_caught or page.result is None:
        raise PasskeyTimeout(f"no passkey answer within {expires_in:.0f} s; run the command again")
    return _result(page.result, page.origin)


async def _serve(
    page: _Page,
    config: HypercornConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(
        cast(ASGIFramework, page), config, shutdown_trigger=stop.wait, task_status=task_status
    )


def _result(data: Mapping[str, Any], origin: str) -> PageResult:
    if data.get("ok") is not True:
        error = data.get("error")
        name = error if isinstance(error, str) and error.isalnum() and len(error) < 64 else "Error"
        raise PasskeyCancelled(f"the browser's passkey call failed ({name}); run the command again")
    credential = data.get("credential")
    if not isinstance(credential, dict):
        raise PasskeyResponseInvalid("the page posted no credential")
    return PageResult(credential, origin)
