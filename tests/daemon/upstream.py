"""A real OpenAI-compatible upstream HTTP server for the daemon tests (127.0.0.1).

Serves ``POST /v1/chat/completions`` (plain JSON, or SSE with ``stream: true``, whose last
data chunk carries ``usage``) and ``GET /v1/models``. Every request must carry
``Authorization: Bearer <REAL_KEY>``; anything else gets 401. It records each request's
headers so tests can check what the daemon forwarded. ``gate``, when set, holds a stream
after its first chunk until the test releases it (proves chunks arrive incrementally).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

REAL_KEY = "sk-real-upstream-key-0123456789abcdef"
PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 500


@dataclass
class Upstream:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    gate: trio.Event | None = None
    first_chunk_sent: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            {"method": scope["method"], "path": scope["path"], "headers": headers, "body": body}
        )
        if headers.get("authorization") != f"Bearer {REAL_KEY}":
            await _json(send, 401, {"error": {"message": "invalid api key"}})
            return
        if scope["path"] == "/v1/models" and scope["method"] == "GET":
            await _json(send, 200, {"object": "list", "data": [{"id": "test-model"}]})
            return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await _json(send, 404, {"error": {"message": "not found"}})
            return
        request = json.loads(body)
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        model = request.get("model", "test-model")
        if not request.get("stream"):
            await _json(
                send,
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "hello there"},
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            doc = {
                "id": "chatcmpl-2",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                if delta is not None
                else [],
                **extra,
            }
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": chunk({"role": "assistant", "content": "hel"}),
            }
        )
        self.first_chunk_sent.set()
        if self.gate is not None:
            await self.gate.wait()
        for part in (
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            b"data: "
            + json.dumps(
                {
                    "id": "chatcmpl-2",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            ).encode()
            + b"\n\n",
            b"data: [DONE]\n\n",
        ):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _json(send: Any, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def running(app: Any, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:``port``; yields its base URL; stops on exit."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        yield binds[0]
        nursery.cancel_scope.cancel()
