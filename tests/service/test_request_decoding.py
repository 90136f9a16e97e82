"""The request decoder's strictness (agentkeys.service._json: strict parse, then pydantic v2).

Each refusal is the exact leaf: duplicate keys, NaN/Infinity and deep nesting are the strict
parser's (pydantic's own JSON parser would take the last duplicate); unknown members at
any depth, missing fields and wrong types are pydantic's in strict mode.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from agentkeys.service import decode, decode_body
from agentkeys.service.errors import MalformedJson, MissingField, UnknownField, WrongType


class Mode(enum.StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Inner:
    n: int


@dataclass(frozen=True)
class Req:
    name: str
    count: int
    ratio: float
    flag: bool
    mode: Mode
    kind: Literal["a", "b"]
    tags: tuple[str, ...]
    inner: Inner
    extra: dict[str, object]
    maybe: int | None = None


GOOD = (
    b'{"name":"x","count":1,"ratio":2,"flag":true,"mode":"read","kind":"a","tags":["t"],'
    b'"inner":{"n":3},"extra":{"k":[1,{"z":null}]}}'
)


DEEP = b'"deep":' + b'{"a":' * 33 + b"1" + b"}" * 33


def _with(member: str) -> bytes:
    return GOOD[:-1] + b"," + member.encode() + b"}"


def test_a_good_body_decodes_to_the_frozen_dataclass() -> None:
    req = decode_body(Req, GOOD)
    assert req == Req(
        name="x", count=1, ratio=2.0, flag=True, mode=Mode.READ, kind="a", tags=("t",),
        inner=Inner(3), extra={"k": [1, {"z": None}]},
    )  # fmt: skip
    assert isinstance(req.mode, Mode)
    assert decode(Req, {**json.loads(GOOD), "maybe": None}).maybe is None


@pytest.mark.parametrize(
    ("body", "leaf"),
    [
        (_with('"name":"y"'), MalformedJson),  # duplicate key: refused, never last-wins
        (GOOD.replace(b'"n":3', b'"n":3,"n":4'), MalformedJson),  # nested duplicate
        (GOOD.replace(b'"ratio":2', b'"ratio":NaN'), MalformedJson),
        (GOOD.replace(b'"ratio":2', b'"ratio":Infinity'), MalformedJson),
        (b"[" + GOOD + b"]", MalformedJson),
        (GOOD.replace(b'"k":', DEEP + b',"k":'), MalformedJson),  # nested beyond 32
        (_with('"admin":true'), UnknownField),
        (GOOD.replace(b'"n":3', b'"n":3,"sneaky":1'), UnknownField),  # at any depth
        (GOOD.replace(b'"name":"x",', b""), MissingField),
        (GOOD.replace(b'"n":3', b""), MissingField),
        (GOOD.replace(b'"count":1', b'"count":true'), WrongType),  # bool is not an int
        (GOOD.replace(b'"count":1', b'"count":1.0'), WrongType),  # nor is 1.0
        (GOOD.replace(b'"count":1', b'"count":"1"'), WrongType),  # no coercion
        (GOOD.replace(b'"ratio":2', b'"ratio":true'), WrongType),
        (GOOD.replace(b'"ratio":2', b'"ratio":1e400'), WrongType),  # parses to inf
        (GOOD.replace(b'"flag":true', b'"flag":1'), WrongType),
        (GOOD.replace(b'"name":"x"', b'"name":5'), WrongType),
        (GOOD.replace(b'"mode":"read"', b'"mode":"READ"'), WrongType),
        (GOOD.replace(b'"kind":"a"', b'"kind":"c"'), WrongType),
        (GOOD.replace(b'"tags":["t"]', b'"tags":["t",1]'), WrongType),
        (GOOD.replace(b'"tags":["t"]', b'"tags":"t"'), WrongType),
        (GOOD.replace(b'"inner":{"n":3}', b'"inner":[3]'), WrongType),
        (_with('"maybe":false'), WrongType),
    ],
)
def test_each_violation_is_refused_with_its_leaf(body: bytes, leaf: type[Exception]) -> None:
    with pytest.raises(leaf) as refused:
        decode_body(Req, body)
    assert type(refused.value) is leaf


def test_unknown_members_win_over_other_problems() -> None:
    with pytest.raises(UnknownField):
        decode_body(Req, b'{"surprise": 1}')


def test_unsupported_field_types_fail_before_any_request() -> None:
    @dataclass(frozen=True)
    class Odd:
        raw: bytes

    with pytest.raises(TypeError):
        decode_body(Odd, b'{"raw": "x"}')
