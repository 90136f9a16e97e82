"""Token usage reported by OpenAI-compatible upstreams, read from response bodies.

Pure and incremental: the proxy feeds every response chunk it forwards (it never holds
the whole body back) and asks for the usage at the end.

* JSON responses: the top-level ``usage`` object (``prompt_tokens``,
  ``completion_tokens``; Anthropic-style ``input_tokens``/``output_tokens`` too) and
  ``model``. Bodies longer than ``max_json_bytes`` are not parsed (usage unknown).
* Server-sent events (``stream: true``): every ``data:`` line holding a JSON object is
  inspected; the last usage seen wins (OpenAI sends it in the final chunk when asked
  with ``stream_options.include_usage``). Lines longer than ``max_line_bytes`` are
  skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["Usage", "UsageScanner"]


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, and the model the upstream says it used."""

    prompt_tokens: int
    completion_tokens: int
    model: str | None = None


def _count(obj: dict[str, object], *names: str) -> int | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _usage_of(doc: object) -> tuple[Usage | None, str | None]:
    if not isinstance(doc, dict):
        return None, None
    model = doc.get("model")
    model = model if isinstance(model, str) and len(model) <= 128 else None
    raw = doc.get("usage")
    if not isinstance(raw, dict):
        message = doc.get("message")  # Anthropic message_start carries usage inside
        raw = message.get("usage") if isinstance(message, dict) else None
        if isinstance(message, dict) and model is None:
            m = message.get("model")
            model = m if isinstance(m, str) and len(m) <= 128 else None
    if not isinstance(raw, dict):
        return None, model
    prompt = _count(raw, "prompt_tokens", "input_tokens")
    completion = _count(raw, "completion_tokens", "output_tokens")
    if prompt is None and completion is None:
        return None, model
    return Usage(prompt_tokens=prompt or 0, completion_tokens=completion or 0, model=model), model


class UsageScanner:
    """Collects usage from a response body fed chunk by chunk.

    Args:
        content_type: the response's content type (decides JSON vs. SSE).
    """

    def __init__(
        self,
        content_type: str,
        *,
        max_json_bytes: int = 4 * 1024 * 1024,
        max_line_bytes: int = 256 * 1024,
    ) -> None:
        media = content_type.split(";", 1)[0].strip().lower()
        self._sse = media == "text/event-stream"
        self._json = media == "application/json" or media.endswith("+json")
        self._max_json = max_json_bytes
        self._max_line = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False
        self._overflow = False
        self._usage: Usage | None = None
        self._model: str | None = None

    def feed(self, chunk: bytes) -> None:
        """Inspect the next forwarded chunk."""
        if self._sse:
            self._feed_sse(chunk)
        elif self._json and not self._overflow:
            self._buffer += chunk
            if len(self._buffer) > self._max_json:
                self._overflow = True
                self._buffer.clear()

    def _feed_sse(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                rest = chunk[start:]
                if not self._skipping:
                    self._buffer += rest
                    if len(self._buffer) > self._max_line:
                        self._buffer.clear()
                        self._skipping = True
                return
            if self._skipping:
                self._skipping = False
            else:
                self._buffer += chunk[start:end]
                self._line(bytes(self._buffer))
            self._buffer.clear()
            start = end + 1

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return
        self._take(payload)

    def _take(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return
        usage, model = _usage_of(doc)
        if model is not None:
            self._model = model
        if usage is None:
            return
        prev = self._usage
        if self._sse and prev is not None:
            # Anthropic splits usage over message_start and message_delta: keep the maxima
            usage = Usage(
                max(prev.prompt_tokens, usage.prompt_tokens),
                max(prev.completion_tokens, usage.completion_tokens),
                usage.model or prev.model,
            )
        self._usage = usage

    def result(self) -> Usage | None:
        """The usage found, with the last model named, or None."""
        if self._json and not self._overflow and self._buffer:
            self._take(bytes(self._buffer))
            self._buffer.clear()
        elif self._sse and self._buffer and not self._skipping:
            self._line(bytes(self._buffer))
            self._buffer.clear()
        if self._usage is None:
            return None
        if self._usage.model is None and self._model is not None:
            return Usage(self._usage.prompt_tokens, self._usage.completion_tokens, self._model)
        return self._usage
