"""The streamed upstream of the ``sidecar stream`` runs: an OpenAI-style SSE completion.

:func:`sse_handler` answers every request on a connection (a head, and a body framed by
``Content-Length``) with what ``POST /v1/chat/completions`` with ``"stream": true``
returns: ``200``, ``content-type: text/event-stream``, ``transfer-encoding: chunked``,
then :data:`EVENTS` server-sent events, each in its own chunk and its own write
(content deltas, a ``finish_reason`` event, the ``usage`` event OpenAI sends when asked
with ``stream_options.include_usage``, and ``data: [DONE]``), then the last chunk.
The events go out back to back, with no pause: a model's tens of milliseconds between
tokens would hide the proxy's cost per event behind the gaps, and the benchmark wants
that cost visible. Nothing is parsed beyond what framing needs (like
:func:`bench._servers.raw_handler`), so the upstream costs little next to the daemon.
"""

from __future__ import annotations

import json
import re

import trio

__all__ = ["BODY", "EVENTS", "PATH", "REQUEST_BODY", "sse_handler"]

PATH = "/v1/chat/completions"
EVENTS = 20
REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Count from one to seventeen."}],
    },
    separators=(",", ":"),
).encode("ascii")

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,9})[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def _event(choices: list[object], **extra: object) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_800_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode("ascii") + b"\n\n"


def _events() -> list[bytes]:
    words = EVENTS - 3  # the content deltas; then finish, usage and [DONE]
    events = [
        _event([{"index": 0, "delta": {"content": f" {n}"}, "finish_reason": None}])
        for n in range(1, words + 1)
    ]
    events.append(_event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 14, "completion_tokens": words, "total_tokens": 14 + words}
    events.append(_event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events


_EVENT_LIST = _events()
BODY = b"".join(_EVENT_LIST)
"""The response body a client receives (chunk framing removed)."""
_CHUNKS = [b"%x\r\n%s\r\n" % (len(event), event) for event in _EVENT_LIST]


_REFUSE = -1


def _request_end(pending: bytes) -> int | None:
    """Where the first complete request in ``pending`` ends: None when it is not complete
    yet, :data:`_REFUSE` for a request this upstream does not serve (head or body too
    large, a chunked body), on which the connection is closed."""
    end = pending.find(b"\r\n\r\n")
    if end < 0:
        return _REFUSE if len(pending) > _MAX_HEAD else None
    head = pending[: end + 2]
    if _CHUNKED.search(head):
        return _REFUSE
    match = _CONTENT_LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    if length > _MAX_BODY:
        return _REFUSE
    total = end + 4 + length
    return total if len(pending) >= total else None


async def sse_handler(stream: trio.SocketStream) -> None:
    """Serve requests on ``stream`` until the client closes it; closes ``stream``."""
    pending = b""
    async with stream:
        try:
            while True:
                end = _request_end(pending)
                if end == _REFUSE:
                    return
                if end is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    pending += data
                    continue
                pending = pending[end:]
                await stream.send_all(_HEAD)
                for chunk in _CHUNKS:
                    await stream.send_all(chunk)
                await stream.send_all(_LAST_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
