"""base64url without padding (RFC 7515 section 2): the one text form of bytes on our wire.

Every signature, key coordinate, nonce and token part travels as unpadded base64url.
Decoding is strict: no padding, nothing outside ``[A-Za-z0-9_-]``, no impossible lengths
and no non-canonical encodings (unused bits set), so one byte string has one text form.
"""

from __future__ import annotations

import base64
import binascii
import re

from agentkeys.errors import InvalidEncoding

__all__ = ["b64url_decode", "b64url_encode"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


def b64url_encode(data: bytes) -> str:
    """base64url of ``data`` without ``=`` padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strictly decode unpadded base64url.

    Refuses padding, characters outside ``[A-Za-z0-9_-]``, impossible lengths and
    non-canonical encodings (non-zero unused bits), so one byte string has one text form.

    Raises:
        InvalidEncoding: anything but canonical unpadded base64url.
    """
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise InvalidEncoding("expected unpadded base64url ([A-Za-z0-9_-], no '=')")
    if len(text) % 4 == 1:
        raise InvalidEncoding("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidEncoding("invalid base64url") from None
    if b64url_encode(data) != text:
        raise InvalidEncoding("non-canonical base64url (unused bits set)")
    return data
