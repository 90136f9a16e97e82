"""Unpadded base64url (agentkeys.b64url): strict decoding, one text form per byte string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeys import b64url
from agentkeys.errors import InvalidEncoding


@pytest.mark.parametrize(
    "text",
    ["AA==", "AA=", "A+", "A/", "A", "AB", "A A", "Zg\n", "ü"],
)
def test_b64url_decode_is_strict(text: str) -> None:
    with pytest.raises(InvalidEncoding):
        b64url.b64url_decode(text)


def test_b64url_known_values() -> None:
    assert b64url.b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url.b64url_decode("-_8") == b"\xfb\xff"
    assert b64url.b64url_decode("") == b""


@settings(deadline=None)
@given(st.binary(max_size=100))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url.b64url_decode(b64url.b64url_encode(data)) == data


@settings(deadline=None)
@given(st.text(max_size=40))
def test_b64url_decode_only_raises_invalid_encoding(text: str) -> None:
    try:
        data = b64url.b64url_decode(text)
    except InvalidEncoding:
        return
    assert b64url.b64url_encode(data) == text
