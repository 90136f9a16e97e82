"""``agentkeys init`` through the real passkey page in headless Chromium: each page says which
step of init it is ("step k of n"), what it does and for which operator (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from agentkeys.cli import build_parser
from agentkeys.cli._common import EXIT_OK
from tests.browser.cdp import chromium_available, start_chromium
from tests.browser.test_passkey_page_chromium import page_details
from tests.e2e.conftest import DevStack

pytestmark = pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium")


async def test_init_pages_say_step_k_of_n(
    dev_stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    email = "paged@example.com"
    async with start_chromium(tmp_path) as browser:
        shown: list[dict[str, str]] = []

        async def opener(url: str) -> None:
            if browser.visited:  # the page before this one is done: keep what it showed
                shown.append(await page_details(browser))
            await browser.open_url(url)

        argv = ["init", "--email", email, "--home", str(tmp_path / "home"), "--no-browser",
                "--passkey-timeout", "20", "--json"]  # fmt: skip
        args = build_parser().parse_args(argv)
        args.passkey_opener = opener
        assert await trio.to_thread.run_sync(args.func, args) == EXIT_OK
        shown.append(await page_details(browser))
    done = json.loads(capsys.readouterr().out)
    assert done["tx_hash"].startswith("0x")
    assert [(d["Step"], d["Operation"]) for d in shown] == [
        ("1 of 3 (agentkeys init)", "create your passkey"),
        ("2 of 3 (agentkeys init)", "sign in"),
        ("3 of 3 (agentkeys init)", "register this device as your master"),
    ]
    assert {d["Operator"] for d in shown} == {email}
