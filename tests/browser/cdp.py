"""Headless Debian Chromium driven through the DevTools protocol (tests only).

``start_chromium`` launches ``/usr/bin/chromium`` headless with a fresh profile and remote
debugging on 127.0.0.1 (port chosen by Chromium, read from DevToolsActivePort), opens one tab
and gives it a CDP virtual authenticator (CTAP2, internal transport, resident keys, user
verification). The DevTools websocket is driven with websockets' synchronous client in worker
threads. Chromium's whole process group is killed on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


class CdpSession:
    """One DevTools websocket; calls are serialised by a lock (any thread)."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(url, max_size=2**24, open_timeout=10)
        )
        self._lock = threading.Lock()
        self._next = 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ident = self._next
            self._ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
            while True:
                message = json.loads(self._ws.recv(timeout=20))
                if message.get("id") != ident:
                    continue  # an event
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def close(self) -> None:
        self._stack.close()


class Browser:
    """A headless Chromium tab with a virtual authenticator."""

    def __init__(self, port: int, page: CdpSession, authenticator_id: str) -> None:
        self.port = port
        self.page = page
        self.authenticator_id = authenticator_id
        self.visited: list[str] = []

    async def open_url(self, url: str) -> None:
        """The passkey page opener: navigate the tab to ``url``."""
        self.visited.append(url)
        await trio.to_thread.run_sync(self.page.call, "Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the tab (the page as it is now)."""
        result = await trio.to_thread.run_sync(
            self.page.call,
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
        )
        return result["result"].get("value")

    async def credentials(self) -> list[dict[str, Any]]:
        result = await trio.to_thread.run_sync(
            self.page.call, "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        creds: list[dict[str, Any]] = result["credentials"]
        return creds

    async def clear_credentials(self) -> None:
        await trio.to_thread.run_sync(
            self.page.call, "WebAuthn.clearCredentials", {"authenticatorId": self.authenticator_id}
        )


def _launch(profile: Path) -> subprocess.Popen[bytes]:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(profile.parent / "chromium.log").open("wb"),
        start_new_session=True,
    )


async def _debug_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    with trio.fail_after(20):
        while True:
            if process.poll() is not None:
                raise RuntimeError("chromium exited at start-up; see chromium.log")
            try:
                text = marker.read_text()
            except FileNotFoundError:
                text = ""
            if text.strip():
                return int(text.splitlines()[0])
            await trio.sleep(0.05)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _open_tab(port: int) -> tuple[CdpSession, str]:
    version = json.loads(_http_get(port, "/json/version"))
    browser = CdpSession(version["webSocketDebuggerUrl"])
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    finally:
        browser.close()
    page = CdpSession(f"ws://127.0.0.1:{port}/devtools/page/{target}")
    page.call("Page.enable")
    page.call("WebAuthn.enable", {"enableUI": False})
    authenticator = page.call(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )["authenticatorId"]
    return page, authenticator


def _http_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@asynccontextmanager
async def start_chromium(workdir: Path) -> AsyncIterator[Browser]:
    """Chromium with one tab and a virtual authenticator; killed (process group) on exit."""
    profile = workdir / "chromium-profile"
    profile.mkdir(mode=0o700)
    process = _launch(profile)
    page: CdpSession | None = None
    try:
        port = await _debug_port(profile, process)
        opened, authenticator = await trio.to_thread.run_sync(_open_tab, port)
        page = opened
        yield Browser(port, opened, authenticator)
    finally:
        if page is not None:
            page.close()
        _kill(process)
