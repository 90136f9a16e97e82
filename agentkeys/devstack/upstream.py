"""A stand-in for an OpenAI-compatible API, served on 127.0.0.1 (a development tool).

``dev up`` serves one (``AGENTKEYS_DEV_OPENAI_UPSTREAM``, accepting only the key in
``AGENTKEYS_DEV_OPENAI_KEY``) so that a sidecar on the local stack has an upstream to call
without the network (docs/quickstart.md); ``dev demo`` serves its own, and the daemon tests
serve it as their upstream. It is not an agentkeys component: it stands in for
api.openai.com, as the SMTP sink stands in for a mail server.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

__all__ = [
    "COMPLETION_TOKENS",
    "PROMPT_TOKENS",
    "REPLY",
    "DemoUpstream",
    "SeenRequest",
    "run_upstream",
    "serve_upstream",
]

REPLY = "hello from the upstream"
PROMPT_TOKENS = 12  # the usage every completion reports
COMPLETION_TOKENS = 5
_REMEMBERED = 1024  # requests kept in ``DemoUpstream.requests`` (the oldest are dropped)


@dataclass(frozen=True)
class SeenRequest:
    """One request as the upstream received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class DemoUpstream:
    """A minimal OpenAI-compatible API (a development tool, standing in for the real API).

    ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``, whose last data chunk
    carries ``usage``) and ``GET /v1/models``; every request must carry
    ``Authorization: Bearer <key>`` (else 401). It records the last requests it received
    (``requests``), so the demo and the tests can show what reached it and that the agent
    never held the key. ``gate``, when set, holds a stream after its first chunk until the
    event fires (so a caller can see chunks arrive one by one). ``url`` is set by
    :func:`serve_upstream` once it listens.
    """

    key: str
    url: str = ""
    requests: deque[SeenRequest] = field(default_factory=lambda: deque(maxlen=_REMEMBERED))
    gate: trio.Event | None = None

    @property
    def seen_keys(self) -> list[str]:
        """The bearer keys of the remembered requests, oldest first."""
        return [r.headers.get("authorization", "").removeprefix("Bearer ") for r in self.requests]

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
            if not message.get("more_body") or len(body) > 1 << 20:
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(SeenRequest(scope["method"], scope["path"], headers, body))
        if headers.get("authorization") != f"Bearer {self.key}":
            await _json(send, 401, {"error": {"message": "invalid api key"}})
            return
        if scope["path"] == "/v1/models" and scope["method"] == "GET":
            await _json(send, 200, {"object": "list", "data": [{"id": "demo-model"}]})
            return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await _json(send, 404, {"error": {"message": "not found"}})
            return
        try:
            request = json.loads(body)
        except ValueError:
            await _json(send, 400, {"error": {"message": "not json"}})
            return
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        model = str(request.get("model", "demo-model"))
        if not request.get("stream"):
            await _json(
                send,
                200,
                {
                    "id": "chatcmpl-demo",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": REPLY},
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
        words = REPLY.split(" ")
        for index, word in enumerate(words):
            delta = {"content": word if index == 0 else " " + word}
            await send(
                {"type": "http.response.body", "body": _sse(model, delta), "more_body": True}
            )
            if index == 0 and self.gate is not None:
                await self.gate.wait()
        tail = [_sse(model, {}, finish="stop"), _sse(model, None, usage=usage), b"data: [DONE]\n\n"]
        for part in tail:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _sse(
    model: str, delta: dict[str, Any] | None, *, finish: str | None = None, **extra: Any
) -> bytes:
    doc = {
        "id": "chatcmpl-demo-stream",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def _json(send: Any, status: int, doc: Mapping[str, Any]) -> None:
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


async def serve_upstream(
    app: DemoUpstream, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` on a free 127.0.0.1 port until cancelled; ``started`` gets its URL."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(hypercorn_serve, app, config)
        app.url = binds[0].replace("0.0.0.0", "127.0.0.1")
        task_status.started(app.url)


@asynccontextmanager
async def run_upstream(app: DemoUpstream) -> AsyncIterator[str]:
    """Serve ``app`` (:func:`serve_upstream`); yields its base URL; stops on exit."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_upstream, app)
        nursery.cancel_scope.cancel()
