"""Bounds-checked big-endian reader for TPM structures (never leaks struct.error)."""

from __future__ import annotations

from attest.errors import AttestationMalformed


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise AttestationMalformed(f"{self._what}: truncated")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def sized(self) -> bytes:
        """A TPM2B: u16 size, then that many bytes."""
        return self.take(self.u16())

    def end(self) -> None:
        if self._pos != len(self._data):
            raise AttestationMalformed(f"{self._what}: trailing bytes")
