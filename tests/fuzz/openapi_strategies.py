"""Hypothesis strategies for HTTP requests, generated from a service's OpenAPI document.

Our own schema-driven generator (instead of schemathesis, which drives a sync client and
would pull a second HTTP stack into the lock): for each operation of the document it
draws a request whose body mostly conforms to the operation's JSON Schema and, with some
probability, breaks it in one targeted way (a missing required member, an unknown member,
a wrong type, ``null``), with string values biased towards the hostile ones (``*``,
``${…}``, path traversal, long, non-ASCII, almost-hex). Headers (content type, bearer
token) and the path/method are varied too, and a few requests go to routes or methods
that do not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "*",
    "?",
    "${aws:username}",
    "${jwt:sub}",
    "${aws:PrincipalTag/agentkeys_actor_omni}",
    "a/../../b",
    "/",
    "{",
    "}",
    "%2a",
    "\u212a",
    "0x" + "AB" * 32,
    "ab" * 32,
    "ab" * 33,
    "0x" + "11" * 20,
    "openai",
    "OpenAI",
    "a@b.c",
    "agent-1",
    "",
    " ",
    "\x00",
    "x" * 5000,
    "é",
    "\ud800",
    "null",
    "true",
    "1e999",
    "-1",
]

_text = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40))
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_any_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


def from_schema(
    schema: dict[str, Any],
    components: dict[str, Any],
    depth: int = 0,
    text: st.SearchStrategy[str] = _text,
) -> st.SearchStrategy[Any]:
    """Values that conform to ``schema`` (the subset agentkeys.service._openapi emits)."""
    if depth > 4:
        return _json_scalar
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(components[name], components, depth + 1, text)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, depth + 1, text) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return text
    if kind == "integer":
        return st.one_of(st.integers(-5, 2**32), st.integers(-(2**70), 2**70))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(from_schema(items, components, depth + 1, text), max_size=4)
    if kind == "object":
        return _object(schema, components, depth, text)
    return _any_json


@st.composite
def _object(
    draw: st.DrawFn,
    schema: dict[str, Any],
    components: dict[str, Any],
    depth: int,
    text: st.SearchStrategy[str],
) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    out: dict[str, Any] = {}
    for name, sub in properties.items():
        if name in required or draw(st.booleans()):
            out[name] = draw(from_schema(sub, components, depth + 1, text))
    extra = schema.get("additionalProperties", True)
    if isinstance(extra, dict) and extra and not properties:
        values = from_schema(extra, components, depth + 1, text)
        out.update(draw(st.dictionaries(text, values, max_size=3)))
    elif extra is True and not properties:
        out.update(draw(st.dictionaries(_text, _any_json, max_size=3)))
    return out


@st.composite
def broken(draw: st.DrawFn, value: dict[str, Any]) -> Any:
    """``value`` with one targeted schema violation (or a non-object body)."""
    how = draw(st.sampled_from(["drop", "unknown", "wrong_type", "null", "not_object"]))
    out = dict(value)
    if how == "drop" and out:
        del out[draw(st.sampled_from(sorted(out)))]
    elif how == "unknown":
        out[draw(st.sampled_from(["scope", "admin", "__proto__", "x"]))] = draw(_any_json)
    elif how == "wrong_type" and out:
        name = draw(st.sampled_from(sorted(out)))
        out[name] = draw(_any_json.filter(lambda v: type(v) is not type(out[name])))
    elif how == "null" and out:
        out[draw(st.sampled_from(sorted(out)))] = None
    elif how == "not_object":
        return draw(st.one_of(_json_scalar, st.lists(_any_json, max_size=3)))
    return out


@dataclass(frozen=True)
class Request:
    """One generated request (kept printable for failure reports)."""

    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None

    def describe(self) -> str:
        body = (self.content or b"")[:200]
        return f"{self.method} {self.path} {self.headers} {body!r}"


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(method, path, operation)`` for every operation of the document."""
    return [
        (method.upper(), path, operation)
        for path, item in sorted(doc["paths"].items())
        for method, operation in sorted(item.items())
    ]


@st.composite
def requests(draw: st.DrawFn, doc: dict[str, Any], bearer: list[str], known: list[str]) -> Request:
    """A request for some operation of ``doc``; ``bearer`` are tokens worth trying and
    ``known`` strings that mean something to this service (real identifiers, proofs)."""
    text = st.one_of(st.sampled_from(known), _text) if known else _text
    components = doc.get("components", {}).get("schemas", {})
    ops = operations(doc)
    method, path, operation = draw(st.sampled_from(ops))
    if draw(st.integers(0, 19)) == 0:  # a route or method that does not exist
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
        path = draw(
            st.sampled_from(
                [
                    path,
                    path + "/",
                    path + "x",
                    "/v1/credential/fetch",
                    "/../etc/passwd",
                    "/v1/cap/%2e%2e/jwks.json",
                ]
            )
        )
    query: list[str] = []
    for parameter in operation.get("parameters", []):
        value = draw(st.sampled_from(["x", "*", "%24%7B", "a" * 300]))
        if parameter["in"] == "query":
            if draw(st.booleans()):
                query.append(f"{parameter['name']}={value}")
        else:
            path = path.replace("{" + parameter["name"] + "}", value)
    if query:
        path += "?" + "&".join(query)
    headers: dict[str, str] = {}
    token = draw(st.sampled_from([None, "garbage", "a.b.c", *bearer]))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    content: bytes | None = None
    if method in ("POST", "PUT"):
        body_schema = (
            operation.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema", {"type": "object"})
        )
        value = draw(from_schema(body_schema, components, text=text))
        if draw(st.integers(0, 2)) == 0:
            value = draw(broken(value if isinstance(value, dict) else {}))
        content = json.dumps(value).encode("utf-8", "surrogatepass")
        headers["content-type"] = draw(
            st.sampled_from(
                ["application/json"] * 8
                + [
                    "text/plain",
                    "application/json; charset=latin-1",
                    "multipart/form-data; boundary=x",
                ]
            )
        )
        if draw(st.integers(0, 9)) == 0:
            content = draw(
                st.sampled_from(
                    [
                        b"",
                        b"{",
                        b"[" * 40,
                        b'{"a":1,"a":2}',
                        b"NaN",
                        b'{"x": NaN}',
                        b"\xff\xfe",
                        b"{}" * 10,
                    ]
                )
            )
    if draw(st.integers(0, 9)) == 0:
        path += "?" + draw(st.sampled_from(["token=x", "token=" + "a" * 200, "a=%ff", "&&="]))
    return Request(method=method, path=path, headers=headers, content=content)
