"""The OpenAI-shaped upstreams of the sidecar runs: an SSE completion, and a plain one.

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

:func:`completion_handler` frames requests the same way and answers each with the
non-streamed ``chat.completion`` object (:data:`COMPLETION`, ``Content-Length`` framed):
what the LiteLLM peer needs from its upstream, since it parses the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from functools import partial

import trio

__all__ = [
    "BODY",
    "COMPLETION",
    "COMPLETION_REQUEST_BODY",
    "EVENTS",
    "MODEL",
    "PATH",
    "REQUEST_BODY",
    "completion_handler",
    "sse_handler",
]

PATH = "/v1/chat/completions"
EVENTS = 20
MODEL = "gpt-4o-mini"
_MESSAGES = [{"role": "user", "content": "Count from one to seventeen."}]
REQUEST_BODY = json.dumps(
    {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": _MESSAGES,
    },
    separators=(",", ":"),
).encode("ascii")
COMPLETION_REQUEST_BODY = json.dumps(
    {"model": MODEL, "messages": _MESSAGES}, separators=(",", ":")
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


COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(map(str, range(1, 18)))},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 17, "total_tokens": 31},
    },
    separators=(",", ":"),
).encode("ascii")
"""The body :func:`completion_handler` answers."""
_COMPLETION_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(COMPLETION), COMPLETION)
)

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
    """Serve streamed completions on ``stream`` until the client closes it; closes it."""

    async def respond() -> None:
        await stream.send_all(_HEAD)
        for chunk in _CHUNKS:
            await stream.send_all(chunk)
        await stream.send_all(_LAST_CHUNK)

    await _serve(stream, respond)


async def completion_handler(stream: trio.SocketStream) -> None:
    """Serve plain completions on ``stream`` until the client closes it; closes it."""
    await _serve(stream, partial(stream.send_all, _COMPLETION_RESPONSE))


async def _serve(stream: trio.SocketStream, respond: Callable[[], Awaitable[None]]) -> None:
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
                await respond()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
