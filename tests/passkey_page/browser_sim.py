"""An HTTP client acting as the browser for the passkey page, with a software authenticator.

It fetches the page's request exactly as page.js does and posts what a browser would; the
authenticator is agentkeys.devstack.softauthn (the real page is exercised with Chromium in
tests/browser/).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from agentkeys.b64url import b64url_decode
from agentkeys.devstack.softauthn import SoftAuthenticator


def origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def soft_browser(
    passkey: SoftAuthenticator, *, tamper: Callable[[dict[str, Any]], Any] | None = None
) -> Callable[[str], Awaitable[None]]:
    """An opener that completes the ceremony at ``url`` with ``passkey``."""

    async def open_url(url: str) -> None:
        origin = origin_of(url)
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(url)
            assert page.status_code == 200
            request = (await http.get(url + "request")).json()
            challenge = b64url_decode(request["publicKey"]["challenge"])
            if request["kind"] == "create":
                passkey.origin = origin
                body: dict[str, Any] = {
                    "ok": True,
                    "credential": passkey.create(challenge).to_json(),
                }
            else:
                body = {
                    "ok": True,
                    "credential": passkey.get(challenge, origin=origin).to_json(),
                }
            if tamper is not None:
                body = tamper(body)
            answer = await http.post(url + "result", json=body, headers={"Origin": origin})
            assert answer.status_code == 200, answer.text

    return open_url
