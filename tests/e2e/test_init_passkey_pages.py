"""``agentkeys init`` through the real passkey page in headless Chromium: each page says which
step of init it is ("step k of n", n counted before the first page: 4 when the identity's
enrolled passkey must approve the new one), what it does and for which operator (issue 16)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
import trio

from agentkeys.chain import account_from_key
from agentkeys.cli import build_parser
from agentkeys.cli._errors import EXIT_OK
from tests.browser.cdp import Browser, chromium_available, start_chromium
from tests.browser.test_passkey_page_chromium import page_details
from tests.e2e.conftest import DevStack

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium")


async def _init_pages(browser: Browser, *argv: str) -> list[dict[str, str]]:
    """Run ``init`` with the page in ``browser`` → the details each page showed."""
    return await _pages(browser, "init", *argv)


async def _pages(browser: Browser, *argv: str) -> list[dict[str, str]]:
    """Run a command with the passkey page in ``browser`` → the details each page showed."""
    shown: list[dict[str, str]] = []
    pages_before = len(browser.visited)

    async def opener(url: str) -> None:
        if len(browser.visited) > pages_before:  # the page before is done: keep what it showed
            shown.append(await page_details(browser))
        await browser.open_url(url)

    args = build_parser().parse_args([*argv, "--no-browser", "--passkey-timeout", "20", "--json"])
    args.passkey_opener = opener
    assert await trio.to_thread.run_sync(args.func, args) == EXIT_OK
    shown.append(await page_details(browser))
    return shown


async def test_init_pages_say_step_k_of_n(
    dev_stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    email = "paged@example.com"
    async with start_chromium(tmp_path) as browser:
        shown = await _init_pages(browser, "--email", email, "--home", str(tmp_path / "home"))
        done = json.loads(capsys.readouterr().out)
        assert done["tx_hash"].startswith("0x")
        assert [(d["Step"], d["Operation"]) for d in shown] == [
            ("1 of 3 (agentkeys init)", "create your passkey"),
            ("2 of 3 (agentkeys init)", "sign in"),
            ("3 of 3 (agentkeys init)", "register this device as your master"),
        ]
        assert {d["Operator"] for d in shown} == {email}
        # the email-only operator's mutations go through the relay with this same page passkey:
        # the broker checks the assertion's origin, so the page is served on the enrolled one
        agent = await _pages(browser, "agent", "create", "bot", "--home", str(tmp_path / "home"))
        assert json.loads(capsys.readouterr().out)["registered"] is True
        assert [(d["Operation"], d["Agent"]) for d in agent] == [("agent create", "bot")]

        # the same email, now with a wallet of its own: the enrolled passkey (in this
        # browser's authenticator) approves the new one, and every page says "of 4"
        wallet = account_from_key(secrets.token_bytes(32))
        async with httpx.AsyncClient(timeout=10) as http:
            rpc = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                   "params": [wallet.address, hex(10**20)]}  # fmt: skip
            url = dev_stack.status.env["AGENTKEYS_CHAIN_RPC_URL"]
            assert (await http.post(url, json=rpc)).status_code == 200
        wallet_file = tmp_path / "wallet.key"
        wallet_file.write_text(wallet.key.hex())
        wallet_file.chmod(0o600)
        shown = await _init_pages(
            browser, "--email", email, "--home", str(tmp_path / "second"),
            "--wallet-key-file", str(wallet_file),
        )  # fmt: skip
    assert [(d["Step"], d["Operation"]) for d in shown] == [
        ("1 of 4 (agentkeys init)", "create your passkey"),
        ("2 of 4 (agentkeys init)", "approve the new passkey with your old one"),
        ("3 of 4 (agentkeys init)", "sign in"),
        ("4 of 4 (agentkeys init)", "register this device as your master"),
    ]
