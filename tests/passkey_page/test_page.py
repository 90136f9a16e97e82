"""The local passkey page: one-time token, headers, single use, expiry, verification."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
import trio

import agentkeys.passkey_page as pp
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.passkey_page import (
    CSP,
    PagePasskey,
    PasskeyCancelled,
    PasskeyResponseInvalid,
    PasskeyTimeout,
    PasskeyWrongCredential,
    enroll_passkey,
    run_page,
)
from tests.passkey_page.browser_sim import origin_of, soft_browser

CEREMONY = {"kind": "get", "purpose": "test", "publicKey": {"challenge": "AA"}}


def test_exported_names() -> None:
    assert sorted(pp.__all__) == sorted(
        [
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
    )


async def test_page_serves_only_under_its_token_with_strict_headers() -> None:
    seen: dict[str, Any] = {}

    async def opener(url: str) -> None:
        origin = origin_of(url)
        host = origin.removeprefix("http://")
        port = host.rsplit(":", 1)[1]
        async with httpx.AsyncClient(timeout=5) as http:
            page = await http.get(url)
            seen["page"] = page
            seen["script"] = await http.get(url + "page.js")
            seen["request"] = (await http.get(url + "request")).json()
            seen["no_token"] = await http.get(origin + "/")
            seen["bad_token"] = await http.get(origin + "/x" + url.rsplit("/", 2)[1] + "/")
            seen["rebinding"] = await http.get(url, headers={"Host": f"evil.example:{port}"})
            seen["ip_host"] = await http.get(url.replace("localhost", "127.0.0.1"))
            seen["cross_origin"] = await http.post(
                url + "result",
                json={"ok": True, "credential": {}},
                headers={"Origin": "http://evil.example"},
            )
            seen["too_big"] = await http.post(
                url + "result",
                content=b"{" + b" " * (pp.MAX_RESULT_BYTES + 1),
                headers={"Origin": origin, "Content-Type": "application/json"},
            )
            seen["post"] = await http.post(
                url + "result",
                json={"ok": True, "credential": {"id": "x"}},
                headers={"Origin": origin},
            )
            seen["after"] = await http.get(url)
            seen["after_post"] = await http.post(
                url + "result", json={"ok": True, "credential": {}}, headers={"Origin": origin}
            )

    result = await run_page(CEREMONY, open_url=opener, expires_in=10)
    assert result.credential == {"id": "x"}
    assert result.origin.startswith("http://localhost:")
    page = seen["page"]
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP
    assert "default-src 'none'" in CSP
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert b'<script src="page.js">' in page.content
    assert b"http" not in page.content.replace(b"http-equiv", b"")  # no external resources
    assert seen["script"].headers["content-type"].startswith("text/javascript")
    assert seen["request"] == CEREMONY
    assert seen["no_token"].status_code == 404
    assert seen["bad_token"].status_code == 404
    assert seen["rebinding"].status_code == 421
    assert seen["ip_host"].status_code == 200
    assert seen["cross_origin"].status_code == 403
    assert seen["too_big"].status_code == 413
    assert seen["post"].status_code == 200
    assert seen["after"].status_code == 410  # single use
    assert seen["after_post"].status_code == 410


async def test_page_expires() -> None:
    urls: list[str] = []

    async def opener(url: str) -> None:
        urls.append(url)

    with pytest.raises(PasskeyTimeout):
        await run_page(CEREMONY, open_url=opener, expires_in=0.3)
    # the server is gone with the page
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(urls[0])


async def test_browser_error_is_reported() -> None:
    async def opener(url: str) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            await http.post(
                url + "result",
                json={"ok": False, "error": "NotAllowedError"},
                headers={"Origin": origin_of(url)},
            )

    with pytest.raises(PasskeyCancelled, match="NotAllowedError"):
        await run_page(CEREMONY, open_url=opener, expires_in=10)


async def test_enroll_then_assert_through_the_page() -> None:
    soft = SoftAuthenticator(rp_id="localhost", origin="unused")
    enrolled = await enroll_passkey(user_name="alice", open_url=soft_browser(soft), expires_in=10)
    assert enrolled.credential_id == soft.credential_id
    assert enrolled.public_point == soft.public_point
    assert enrolled.rp_id_hash == hashlib.sha256(b"localhost").digest()

    passkey = PagePasskey(
        credential_id=enrolled.credential_id,
        public_point=enrolled.public_point,
        open_url=soft_browser(soft),
        timeout=10,
    )
    challenge = bytes(range(32))
    assertion = await passkey.get_assertion(challenge)
    assert assertion.credential_id == soft.credential_id
    assert b'"type":"webauthn.get"' in assertion.client_data_json
    assert assertion.sign_count == soft.sign_count


async def test_wrong_passkey_and_tampered_answers_are_rejected() -> None:
    soft = SoftAuthenticator(rp_id="localhost", origin="unused")
    other = SoftAuthenticator(rp_id="localhost", origin="unused")
    passkey = PagePasskey(
        credential_id=soft.credential_id,
        public_point=soft.public_point,
        open_url=soft_browser(other),
        timeout=10,
    )
    with pytest.raises(PasskeyWrongCredential):
        await passkey.get_assertion(bytes(32))

    # right credential id, but signed by another key
    other.credential_id = soft.credential_id
    with pytest.raises(PasskeyWrongCredential):
        await passkey.get_assertion(bytes(32))

    def drop_response(body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "credential": {"rawId": body["credential"]["rawId"]}}

    passkey.open_url = soft_browser(soft, tamper=drop_response)
    with pytest.raises(PasskeyResponseInvalid):
        await passkey.get_assertion(bytes(32))

    # an enrollment answer for another rpId
    wrong_rp = SoftAuthenticator(rp_id="example.com", origin="unused")
    with pytest.raises(PasskeyResponseInvalid):
        await enroll_passkey(user_name="a", open_url=soft_browser(wrong_rp), expires_in=10)


async def test_two_pages_run_side_by_side() -> None:
    soft = SoftAuthenticator(rp_id="localhost", origin="unused", counting=False)
    passkey = PagePasskey(
        credential_id=soft.credential_id,
        public_point=soft.public_point,
        open_url=soft_browser(soft),
        timeout=10,
    )
    results: list[bytes] = []

    async def one(challenge: bytes) -> None:
        results.append((await passkey.get_assertion(challenge)).client_data_json)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, b"\x01" * 32)
        nursery.start_soon(one, b"\x02" * 32)
    assert len(results) == 2
    assert results[0] != results[1]


async def test_browser_opener_prints_the_url_without_launching() -> None:
    import io

    from agentkeys.passkey_page import browser_opener

    out = io.StringIO()
    await browser_opener(launch=False, stream=out)("http://localhost:1/t/")
    assert out.getvalue() == "Approve with your passkey in the browser: http://localhost:1/t/\n"
