"""Usage extraction from JSON and SSE bodies (pure, incremental)."""

from __future__ import annotations

import json

from agentkeys.daemon.usage import Usage, UsageScanner


def test_json_body_in_pieces() -> None:
    body = json.dumps(
        {"model": "gpt-x", "usage": {"prompt_tokens": 12, "completion_tokens": 5}}
    ).encode()
    scanner = UsageScanner("application/json; charset=utf-8")
    for i in range(0, len(body), 7):
        scanner.feed(body[i : i + 7])
    assert scanner.result() == Usage(12, 5, "gpt-x")


def test_sse_final_usage_chunk_split_across_reads() -> None:
    events = [
        {"model": "gpt-x", "choices": [{"delta": {"content": "hi"}}]},
        {"model": "gpt-x", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
    ]
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    stream += b"data: [DONE]\n\n"
    scanner = UsageScanner("text/event-stream")
    for i in range(0, len(stream), 5):
        scanner.feed(stream[i : i + 5])
    assert scanner.result() == Usage(3, 9, "gpt-x")


def test_anthropic_split_usage_keeps_both_counts() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude",'
        b'"usage":{"input_tokens":20,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":15}}\n\n'
    )
    scanner = UsageScanner("text/event-stream")
    scanner.feed(stream)
    assert scanner.result() == Usage(20, 15, "claude")


def test_no_usage_and_garbage() -> None:
    scanner = UsageScanner("text/event-stream")
    scanner.feed(b"data: {not json\n\ndata: [DONE]\n\n")
    assert scanner.result() is None
    big = UsageScanner("application/json", max_json_bytes=10)
    big.feed(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}')
    assert big.result() is None
    other = UsageScanner("text/plain")
    other.feed(b'{"usage": {"prompt_tokens": 1}}')
    assert other.result() is None


def test_overlong_sse_line_is_skipped_then_recovers() -> None:
    scanner = UsageScanner("text/event-stream", max_line_bytes=64)
    scanner.feed(b"data: " + b"x" * 200)
    scanner.feed(b"y" * 100 + b"\n")
    scanner.feed(b'data: {"usage":{"prompt_tokens":1,"completion_tokens":2}}\n')
    assert scanner.result() == Usage(1, 2, None)
