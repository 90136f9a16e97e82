"""ABI encoding and decoding for our contracts, from their compiled artifacts' ABI JSON.

A thin layer over eth-abi: function calls (selector + arguments), return values, event logs
(topics + data) and revert data (custom errors, ``Error(string)``, ``Panic(uint256)``).
Every decoding failure becomes :class:`AbiError`; nothing from eth-abi escapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_hash.auto import keccak

from agentkeys.chain.errors import AbiError, ContractReverted

__all__ = ["ContractAbi", "EventAbi", "FunctionAbi", "canonical_type", "decode_revert"]


def canonical_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type string of one ABI JSON parameter (tuples expanded)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class FunctionAbi:
    """One function: its selector and its input and output types."""

    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def encode_call(self, args: Sequence[object]) -> bytes:
        """Selector ‖ ABI-encoded arguments."""
        try:
            return self.selector + abi_encode(list(self.inputs), list(args))
        except (EncodingError, TypeError, ValueError, OverflowError) as exc:
            raise AbiError(
                f"arguments of {self.name} do not encode: {type(exc).__name__}"
            ) from None

    def decode_output(self, data: bytes) -> tuple[Any, ...]:
        """The decoded return values."""
        try:
            return tuple(abi_decode(list(self.outputs), data))
        except (DecodingError, TypeError, ValueError, OverflowError):
            raise AbiError(f"return data of {self.name} does not decode") from None


@dataclass(frozen=True)
class EventAbi:
    """One event: topic0, and which parameters are indexed."""

    name: str
    topic0: bytes
    params: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)

    def decode(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        """The event's arguments by name. Indexed dynamic values stay as their 32-byte hash."""
        indexed = [(n, t) for n, t, ix in self.params if ix]
        plain = [(n, t) for n, t, ix in self.params if not ix]
        if len(topics) != 1 + len(indexed) or topics[0] != self.topic0:
            raise AbiError(f"log does not match event {self.name}")
        out: dict[str, Any] = {}
        try:
            for (name, kind), topic in zip(indexed, topics[1:], strict=True):
                static = not (kind in ("string", "bytes") or kind.endswith("]") or "(" in kind)
                out[name] = abi_decode([kind], topic)[0] if static else bytes(topic)
            values = abi_decode([t for _, t in plain], data)
        except (DecodingError, TypeError, ValueError, OverflowError):
            raise AbiError(f"log data of {self.name} does not decode") from None
        out.update({name: value for (name, _), value in zip(plain, values, strict=True)})
        return out


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    inputs: tuple[str, ...]


class ContractAbi:
    """Functions, events and errors of one contract's ABI JSON."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self.functions: dict[str, FunctionAbi] = {}
        self.events: dict[str, EventAbi] = {}
        self.errors: dict[bytes, _ErrorAbi] = {}
        for item in abi:
            kind = item.get("type")
            if kind == "function":
                inputs = tuple(canonical_type(p) for p in item["inputs"])
                sig = f"{item['name']}({','.join(inputs)})"
                self.functions[item["name"]] = FunctionAbi(
                    name=item["name"],
                    selector=keccak(sig.encode())[:4],
                    inputs=inputs,
                    outputs=tuple(canonical_type(p) for p in item["outputs"]),
                )
            elif kind == "event":
                params = tuple(
                    (str(p["name"]), canonical_type(p), bool(p["indexed"])) for p in item["inputs"]
                )
                sig = f"{item['name']}({','.join(t for _, t, _ in params)})"
                self.events[item["name"]] = EventAbi(item["name"], keccak(sig.encode()), params)
            elif kind == "error":
                inputs = tuple(canonical_type(p) for p in item["inputs"])
                sig = f"{item['name']}({','.join(inputs)})"
                self.errors[keccak(sig.encode())[:4]] = _ErrorAbi(item["name"], inputs)
        self.constructor_inputs: tuple[str, ...] = next(
            (
                tuple(canonical_type(p) for p in item["inputs"])
                for item in abi
                if item.get("type") == "constructor"
            ),
            (),
        )

    def function(self, name: str) -> FunctionAbi:
        """The named function.

        Raises:
            AbiError: no such function.
        """
        try:
            return self.functions[name]
        except KeyError:
            raise AbiError(f"contract has no function {name}") from None

    def event_by_topic(self, topic0: bytes) -> EventAbi | None:
        """The event with this topic0, if any."""
        return next((e for e in self.events.values() if e.topic0 == topic0), None)


_ERROR_STRING = keccak(b"Error(string)")[:4]
_PANIC = keccak(b"Panic(uint256)")[:4]


def decode_revert(data: bytes, abis: Sequence[ContractAbi], context: str) -> ContractReverted:
    """Build the :class:`ContractReverted` for revert ``data`` (custom errors from ``abis``)."""
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            (message,) = abi_decode(["string"], body)
            return ContractReverted(
                f"{context} reverted: {str(message)[:200]}",
                revert_error="Error",
                revert_args=(message,),
            )
        if selector == _PANIC:
            (code,) = abi_decode(["uint256"], body)
            return ContractReverted(
                f"{context} reverted: panic {code:#x}", revert_error="Panic", revert_args=(code,)
            )
        for abi in abis:
            err = abi.errors.get(selector)
            if err is not None:
                args = tuple(abi_decode(list(err.inputs), body))
                return ContractReverted(
                    f"{context} reverted: {err.name}", revert_error=err.name, revert_args=args
                )
    except (DecodingError, TypeError, ValueError, OverflowError):
        pass
    return ContractReverted(f"{context} reverted", revert_error="unknown")
