"""Ethereum JSON-RPC over an injected ``httpx.AsyncClient`` (Trio-native, no web3 provider)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx

from agentkeys.chain.errors import AbiError, RpcError, RpcUnavailable

__all__ = ["JsonRpc", "RevertData", "quantity"]

#: Bound on a response body: logs of a wide range are the largest thing we read.
_MAX_RESPONSE = 32 * 1024 * 1024


class RevertData(RpcError):
    """The node reported an execution revert; ``data`` is the raw revert data."""

    def __init__(self, reason: str, *, data: bytes) -> None:
        super().__init__(reason, code=3)
        self.data = data


@contextlib.contextmanager
def _map_transport_errors(method: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException:
        raise RpcUnavailable(f"chain RPC {method} timed out") from None
    except httpx.TransportError as exc:
        raise RpcUnavailable(f"chain RPC {method} unreachable: {type(exc).__name__}") from None


class JsonRpc:
    """Calls one JSON-RPC endpoint. The caller owns (and closes) ``http``."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self.url = url
        self._ids = itertools.count(1)

    async def call(self, method: str, *params: Any) -> Any:
        """Return ``result`` of ``method(params)``.

        Raises:
            RpcUnavailable: transport failure or HTTP 5xx.
            RevertData: an execution revert (with its data).
            RpcError: any other JSON-RPC error or malformed answer.
        """
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        with _map_transport_errors(method):
            async with self._http.stream("POST", self.url, json=body) as response:
                if response.status_code >= 500:
                    raise RpcUnavailable(f"chain RPC {method} answered HTTP {response.status_code}")
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > _MAX_RESPONSE:
                        raise RpcError(f"chain RPC {method} answer too large")
        try:
            answer = json.loads(content)
        except ValueError:
            raise RpcError(f"chain RPC {method} answered non-JSON") from None
        if not isinstance(answer, dict):
            raise RpcError(f"chain RPC {method} answered a non-object")
        error = answer.get("error")
        if error is not None:
            raise _rpc_error(method, error)
        if "result" not in answer:
            raise RpcError(f"chain RPC {method} answered without result")
        return answer["result"]


def _rpc_error(method: str, error: Any) -> RpcError:
    if not isinstance(error, dict):
        return RpcError(f"chain RPC {method} failed")
    code = error.get("code")
    message = str(error.get("message", ""))[:200]
    data = error.get("data")
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    if (
        isinstance(data, str)
        and data.startswith("0x")
        and ("revert" in message.lower() or code == 3)
    ):
        try:
            return RevertData(f"{method}: {message}", data=bytes.fromhex(data[2:]))
        except ValueError:
            pass
    if "revert" in message.lower():
        return RevertData(f"{method}: {message}", data=b"")
    return RpcError(
        f"chain RPC {method} failed: {message}", code=code if isinstance(code, int) else None
    )


def quantity(value: Any) -> int:
    """A JSON-RPC hex quantity (``"0x1a"``) as an int.

    Raises:
        AbiError: not a hex string.
    """
    if not isinstance(value, str):
        raise AbiError("expected a hex quantity from the node")
    try:
        return int(value, 16)
    except ValueError:
        raise AbiError("expected a hex quantity from the node") from None
