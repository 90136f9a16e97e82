"""Run by test_sdk.py in a fresh process after ``source ~/.config/agentkeys/env``.

Uses the unmodified official ``openai`` SDK, configured only by the environment: one chat
completion and one streamed one. Prints a JSON report of everything the client saw.
"""

from __future__ import annotations

import json
import os

import openai


def main() -> None:
    client = openai.OpenAI()
    raw = client.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    chat = raw.parse()
    pieces = []
    stream = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    print(
        json.dumps(
            {
                "chat": chat.choices[0].message.content,
                "chat_headers": dict(raw.headers),
                "chat_body": raw.http_response.text,
                "stream": "".join(pieces),
                "stream_usage": usage,
                "env": dict(os.environ),
            }
        )
    )


if __name__ == "__main__":
    main()
