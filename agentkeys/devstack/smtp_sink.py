"""A local SMTP sink for development and tests (SPEC section 10: "a local SMTP sink").

``async with run_smtp_sink() as sink:`` starts an aiosmtpd server on a free 127.0.0.1 port in
its own thread (its own asyncio loop), keeps every received message in memory (bounded) and,
optionally, in a maildir (0700 directory, 0600 files), and stops it on exit. Tests and
``agentkeys dev up`` read the magic link with :meth:`SmtpSink.wait_for` or
:func:`find_link`. It accepts mail for anyone and relays nothing; it only ever binds loopback.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trio
from aiosmtpd.controller import Controller

from agentkeys._files import write_private
from agentkeys.devstack import pick_port

__all__ = ["ReceivedMail", "SmtpSink", "find_link", "run_smtp_sink"]

_MAX_MESSAGES = 1000
_MAX_MESSAGE_BYTES = 1024 * 1024
_URL = re.compile(r"https?://[^\s<>\"']+", re.ASCII)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted."""

    mail_from: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    raw: bytes


def find_link(mail: ReceivedMail, contains: str = "") -> str | None:
    """The first http(s) URL in the body that contains ``contains``, or ``None``."""
    for url in _URL.findall(mail.body):
        if contains in url:
            return str(url)
    return None


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content or b"")
        if len(raw) > _MAX_MESSAGE_BYTES:
            return "552 message too large"
        self._sink._add(str(envelope.mail_from), tuple(str(r) for r in envelope.rcpt_tos), raw)
        return "250 OK"


class SmtpSink:
    """An in-process SMTP server that keeps what it receives (see the module docstring).

    Args:
        port: the port to bind (default: a free one).
        maildir: also store messages in this maildir.
    """

    def __init__(self, *, port: int | None = None, maildir: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else pick_port()
        self._maildir = maildir
        if maildir is not None:
            for directory in (maildir, maildir / "tmp", maildir / "new", maildir / "cur"):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(directory, 0o700)
        self._stored = 0
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, data_size_limit=_MAX_MESSAGE_BYTES
        )

    def _add(self, mail_from: str, recipients: tuple[str, ...], raw: bytes) -> None:
        parsed = message_from_bytes(raw, policy=policy.default)
        body = ""
        if isinstance(parsed, EmailMessage):
            part = parsed.get_body(preferencelist=("plain",))
            if part is not None and isinstance(part, EmailMessage):
                body = str(part.get_content())
        mail = ReceivedMail(mail_from, recipients, str(parsed.get("Subject", "")), body, raw)
        with self._lock:
            self._messages.append(mail)
            if len(self._messages) > _MAX_MESSAGES:
                del self._messages[0]
            if self._maildir is not None:
                self._stored += 1
                self._store_in_maildir(self._maildir, raw, self._stored)

    @staticmethod
    def _store_in_maildir(maildir: Path, raw: bytes, sequence: int) -> None:
        name = f"{time.time_ns()}.P{os.getpid()}Q{sequence}.agentkeys-sink"
        write_private(maildir / "new" / name, raw, exclusive=True)

    def start(self) -> None:
        """Start listening (blocking; returns once the server answers)."""
        self._controller.start()

    def stop(self) -> None:
        """Stop listening (blocking)."""
        self._controller.stop()

    def messages(self, to: str | None = None) -> list[ReceivedMail]:
        """Messages received so far, optionally only those for recipient ``to``."""
        with self._lock:
            found = list(self._messages)
        if to is None:
            return found
        wanted = to.lower()
        return [m for m in found if wanted in (r.lower() for r in m.recipients)]

    async def wait_for(self, to: str, *, count: int = 1, poll: float = 0.02) -> ReceivedMail:
        """The ``count``-th message for ``to``, waiting for it (wrap in ``trio.fail_after``)."""
        while True:
            found = self.messages(to)
            if len(found) >= count:
                return found[count - 1]
            await trio.sleep(poll)


@asynccontextmanager
async def run_smtp_sink(*, maildir: Path | None = None) -> AsyncIterator[SmtpSink]:
    """Run an :class:`SmtpSink` for the duration of the block."""
    sink = SmtpSink(maildir=maildir)
    await trio.to_thread.run_sync(sink.start)
    try:
        yield sink
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(sink.stop)
