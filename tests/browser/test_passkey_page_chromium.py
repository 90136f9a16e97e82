"""The real passkey page in headless Chromium with a CDP virtual authenticator (issue 9).

Enrolls a passkey through the page, registers the operator's first master with it (the
self-attestation is an assertion through the page), then approves an agent registration and a
scope change through the page via the CLI; the contracts on a real anvil accept them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkeys.cli._errors import EXIT_OK, EXIT_PASSKEY
from agentkeys.cli._operator_state import PasskeyRecord
from agentkeys.omni import agent_omni
from agentkeys.passkey_page import (
    PagePasskey,
    PasskeyPageError,
    assertion_ceremony,
    enroll_passkey,
    run_page,
)
from tests.browser.cdp import Browser, chromium_available, start_chromium
from tests.cli.operator_env import cli, deployed_chain, register_operator, write_chain_config

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium")


async def test_enroll_and_approve_scope_change_in_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        deployed_chain(tmp_path) as (anvil, client, record),
        start_chromium(tmp_path) as browser,
    ):
        enrolled = await enroll_passkey(
            user_name="operator", open_url=browser.open_url, expires_in=20
        )
        assert enrolled.rp_id == "localhost"
        (credential,) = await browser.credentials()
        assert credential["isResidentCredential"] is True

        passkey_record = PasskeyRecord(
            credential_id=enrolled.credential_id,
            public_point=enrolled.public_point,
            rp_id=enrolled.rp_id,
        )
        page_passkey = PagePasskey(
            credential_id=enrolled.credential_id,
            public_point=enrolled.public_point,
            open_url=browser.open_url,
            timeout=20,
        )
        home = tmp_path / "home"
        write_chain_config(home, anvil, client, record)
        op = await register_operator(
            client, anvil, home, passkey=page_passkey, passkey_record=passkey_record
        )
        master = await client.get_device(op.state.device_key_hash)
        assert master is not None
        assert not master.revoked

        browser_args = [*op.wallet_args, "--no-browser", "--passkey-timeout", "20"]
        operator, master_hash = op.state.operator_omni, op.state.device_key_hash
        assert (
            await cli(["agent", "create", "bot", *browser_args], passkey_opener=browser.open_url)
            == EXIT_OK
        )
        details = await page_details(browser)
        assert details["Operation"] == "agent create"
        assert details["Agent"] == "bot"
        assert (details["Operator"], details["Approving device"]) == (operator, master_hash)
        agent_device = details["Agent device"]
        assert await browser.evaluate(_PURPOSE) == "Approve with your passkey: agent create."
        assert (
            await cli(
                ["scope", "add", "bot", "openai", "--read-only", *browser_args],
                passkey_opener=browser.open_url,
            )
            == EXIT_OK
        )
        out = capsys.readouterr().out
        assert "openai (read-only)" in out
        assert await page_details(browser) == {
            "Operation": "scope add",
            "Agent": "bot",
            "Services": "openai",
            "Mode": "read-only",
            "Operator": operator,
            "Approving device": master_hash,
        }

        actor = agent_omni(op.state.operator_omni, "bot")
        scope = await client.get_scope(op.state.operator_omni, actor)
        assert scope is not None
        assert scope.read_only is True
        assert await client.is_service_in_scope(op.state.operator_omni, actor, "openai")
        master = await client.get_device(op.state.device_key_hash)
        assert master is not None
        # the virtual authenticator counts; the chain stored its latest count
        (credential,) = await browser.credentials()
        assert master.sign_count == credential["signCount"] > 0
        assert len(browser.visited) == 4  # enroll, register, agent create, scope add

        assert (
            await cli(
                ["scope", "add", "bot", "github", "anthropic", "--read-only", *browser_args],
                passkey_opener=browser.open_url,
            )
            == EXIT_OK
        )
        assert (await page_details(browser))["Services"] == "anthropic, github"
        assert (
            await cli(
                ["scope", "remove", "bot", "github", *browser_args], passkey_opener=browser.open_url
            )
            == EXIT_OK
        )
        details = await page_details(browser)
        assert (details["Operation"], details["Services"]) == ("scope remove", "github")
        assert details["Mode"] == "read-only"
        assert (
            await cli(
                ["scope", "remove", "bot", "--all", *browser_args], passkey_opener=browser.open_url
            )
            == EXIT_OK
        )
        details = await page_details(browser)
        assert details["Operation"] == "scope remove (revokes the whole scope)"
        assert details["Services"] == "all"
        assert (
            await cli(
                ["device", "revoke", agent_device, *browser_args], passkey_opener=browser.open_url
            )
            == EXIT_OK
        )
        details = await page_details(browser)
        assert details["Operation"] == "device revoke"
        assert details["Device to revoke"] == agent_device
        assert details["Its actor"] == agent_omni(operator, "bot")
        assert details["Operator"] == operator

        # without the passkey in the authenticator the approval fails and nothing is sent
        await browser.clear_credentials()
        nonce = await client.operator_nonce(op.state.operator_omni)
        code = await cli(
            [
                "agent",
                "create",
                "late",
                *op.wallet_args,
                "--no-browser",
                "--passkey-timeout",
                "8",
            ],
            passkey_opener=browser.open_url,
        )
        assert code == EXIT_PASSKEY
        assert await client.operator_nonce(op.state.operator_omni) == nonce
    # chromium is gone
    chromium_pids = [
        p
        for p in os.listdir("/proc")
        if p.isdigit()
        and _cmdline(p).startswith("/usr/lib/chromium/chromium")
        and str(tmp_path) in _cmdline(p)
    ]
    assert chromium_pids == []


_PURPOSE = "document.getElementById('purpose').textContent"
_DETAILS = (
    "Array.from(document.querySelectorAll('#details dt'))"
    ".map(dt => [dt.textContent, dt.nextElementSibling.textContent])"
)


async def page_details(browser: Browser) -> dict[str, str]:
    """What the last passkey page showed as approved (name → value)."""
    pairs = await browser.evaluate(_DETAILS)
    assert isinstance(pairs, list)
    return {str(name): str(value) for name, value in pairs}


async def test_the_page_shows_details_as_text_never_as_html(tmp_path: Path) -> None:
    hostile = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    ceremony = assertion_ceremony(
        challenge=b"\x01" * 32,
        rp_id="localhost",
        credential_id=b"\x02" * 16,
        purpose=f"Approve: {hostile}",
        timeout_ms=2000,
        details=[("Agent", hostile), (hostile, "x & y")],
    )
    async with start_chromium(tmp_path) as browser:
        with pytest.raises(PasskeyPageError):  # no such credential in the authenticator
            await run_page(ceremony, open_url=browser.open_url, expires_in=15)
        assert await browser.evaluate(_PURPOSE) == f"Approve: {hostile}"
        assert await page_details(browser) == {"Agent": hostile, hostile: "x & y"}
        assert await browser.evaluate("document.querySelectorAll('main img, main b').length") == 0
        assert await browser.evaluate("document.title") == "agentkeys passkey"


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
