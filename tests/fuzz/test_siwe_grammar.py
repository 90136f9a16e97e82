"""agentkeys.siwe against the EIP-4361 grammar: acceptance and rejection.

Acceptance: every message generated from the ABNF (tests/fuzz/siwe_grammar.py) parses, the
parser reads exactly the fields that were written, and ``to_text`` gives the text back; a
signed one verifies. Rejection: each targeted mutation breaks one rule of the grammar (field
order, line structure, URI, address (EIP-55), timestamp, nonce, chain id, …) and must raise
that rule's exact leaf.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import assume, given
from hypothesis import strategies as st

from agentkeys.siwe import (
    SiweFormatError,
    SiweInvalidAddress,
    SiweInvalidChainId,
    SiweInvalidDomain,
    SiweInvalidNonce,
    SiweInvalidRequestId,
    SiweInvalidResource,
    SiweInvalidStatement,
    SiweInvalidTimestamp,
    SiweInvalidUri,
    SiweInvalidVersion,
    SiweMalformed,
    SiweMessage,
    parse_rfc3339,
    parse_siwe,
    verify_siwe,
)
from tests.fuzz import siwe_grammar as g
from tests.fuzz._budget import budget

_ACCOUNT = Account.from_key(b"\x07" * 32)


@budget(60)
@given(generated=g.message())
def test_every_grammar_message_parses_to_what_was_written(generated: g.Generated) -> None:
    message = parse_siwe(generated.text)
    assert message.scheme == generated.scheme
    assert message.domain == generated.domain
    assert message.address == generated.address
    assert message.statement == generated.statement
    assert message.uri == generated.uri
    assert message.chain_id == int(generated.chain_id)
    assert message.nonce == generated.nonce
    assert message.issued_at == generated.issued_at
    assert message.expiration_time == generated.expiration_time
    assert message.not_before == generated.not_before
    assert message.request_id == generated.request_id
    assert message.resources == generated.resources
    assert message.to_text() == generated.text


@budget(10)
@given(generated=g.message())
def test_grammar_messages_signed_by_their_wallet_verify(generated: g.Generated) -> None:
    parsed = parse_siwe(generated.text)
    message = dataclasses.replace(
        parsed, address=_ACCOUNT.address, expiration_time=None, not_before=None
    )
    text = message.to_text()
    signature = Account.sign_message(encode_defunct(text=text), private_key=_ACCOUNT.key)
    now = message.issued_at_time.timestamp()
    verified = verify_siwe(
        text,
        "0x" + bytes(signature.signature).hex(),
        expected_domain=message.domain,
        expected_nonce=message.nonce,
        expected_chain_id=message.chain_id,
        now=now,
    )
    assert verified.wallet == _ACCOUNT.address.lower()


@budget(200)
@given(host=st.one_of(g.ipv6(), st.text(st.sampled_from("0123456789abcdefABCDEF:."), max_size=45)))
def test_ip_literals_follow_rfc_3986_ipv6address(host: str) -> None:
    # differential: Python's ipaddress implements the same RFC 4291 text forms
    try:
        ipaddress.IPv6Address(host)
        valid = True
    except ValueError:
        valid = False
    fields: dict[str, Any] = {
        "domain": f"[{host}]",
        "address": _ACCOUNT.address,
        "uri": "https://a/",
        "chain_id": 1,
        "nonce": "abcdefgh",
        "issued_at": "2021-09-30T16:25:24Z",
    }
    if valid:
        assert SiweMessage(**fields).domain == f"[{host}]"
    else:
        with pytest.raises(SiweInvalidDomain):
            SiweMessage(**fields)


# -- targeted mutations: each must raise its rule's leaf ---------------------------------------

Mutation = Callable[[g.Generated, st.DataObject], str | None]


def _line(text: str, tag: str, value: str) -> str:
    lines = text.split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(tag))
    lines[index] = tag + value
    return "\n".join(lines)


def _insert(value: str, data: st.DataObject, chars: str) -> str:
    at = data.draw(st.integers(0, len(value)))
    return value[:at] + data.draw(st.sampled_from(chars)) + value[at:]


def _address_lowercase(m: g.Generated, data: st.DataObject) -> str | None:
    if m.address[2:] == m.address[2:].lower():
        return None
    return m.text.replace(m.address, m.address.lower(), 1)


def _address_case_flip(m: g.Generated, data: st.DataObject) -> str | None:
    letters = [i for i, c in enumerate(m.address) if i > 1 and c.isalpha()]
    if not letters:
        return None
    i = data.draw(st.sampled_from(letters))
    flipped = m.address[:i] + m.address[i].swapcase() + m.address[i + 1 :]
    return m.text.replace(m.address, flipped, 1)


def _address_length(m: g.Generated, data: st.DataObject) -> str:
    return m.text.replace(
        m.address,
        data.draw(
            st.sampled_from(
                [m.address[:-1], m.address + "0", "0X" + m.address[2:], m.address[2:] + "00"]
            )
        ),
        1,
    )


def _nonce(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(
        st.one_of(st.just(m.nonce[:7]), st.just(""), st.just(_insert(m.nonce, data, "-_ .!%")))
    )
    return _line(m.text, "Nonce: ", bad)


def _chain(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(
        st.sampled_from(
            ["0" + m.chain_id, m.chain_id + "a", "", "-1", "+1", " 1", "1 ", str(2**256)]
        )
    )
    return _line(m.text, "Chain ID: ", bad)


def _version(m: g.Generated, data: st.DataObject) -> str:
    return _line(m.text, "Version: ", data.draw(st.sampled_from(["2", "1.0", "", "01", " 1"])))


def _timestamp(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(
        st.sampled_from(
            [
                "2021-13-01T00:00:00Z",
                "2021-02-29T00:00:00Z",
                "2021-01-32T00:00:00Z",
                "2021-01-01T24:00:00Z",
                "2021-01-01T00:60:00Z",
                "2021-01-01T00:00:61Z",
                "2021-01-01T00:00:00",
                "2021-01-01 00:00:00Z",
                "2021-01-01T00:00:00+24:00",
                "2021-01-01T00:00:00+01:60",
                "2021-01-01T00:00:00.Z",
                "21-01-01T00:00:00Z",
                "2021-1-01T00:00:00Z",
                "0000-01-01T00:00:00Z",
                "2021-01-01T00:00:00+0100",
            ]
        )
    )
    tag = data.draw(
        st.sampled_from(
            ["Issued At: "]
            + (["Expiration Time: "] if m.expiration_time is not None else [])
            + (["Not Before: "] if m.not_before is not None else [])
        )
    )
    return _line(m.text, tag, bad)


def _statement(m: g.Generated, data: st.DataObject) -> str:
    bad = _insert(m.statement or "", data, '"%<>\\^`{|}\t\x7f\x00')
    if m.statement is None:
        return m.text.replace("\n\n\nURI: ", f"\n\n{bad}\n\nURI: ", 1)
    lines = m.text.split("\n")
    lines[3] = bad
    return "\n".join(lines)


def _uri(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(
        st.one_of(
            st.just(_insert(m.uri, data, ' "<>\\^`{|}')),
            st.just("/relative/path"),
            st.just("1http://a/"),
            st.just("noscheme"),
            st.just(""),
            st.just("http://[::1/"),
            st.just("http://a b/"),
        )
    )
    return _line(m.text, "URI: ", bad)


def _resource(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(st.sampled_from(["not a uri", "", "/relative", "http://a/ b", "%zz:x"]))
    if m.resources is None:
        return m.text + f"\nResources:\n- {bad}"
    return m.text + f"\n- {bad}"


def _request_id(m: g.Generated, data: st.DataObject) -> str:
    bad = _insert(m.request_id or "", data, ' #?/[]"<>')
    if m.request_id is not None:
        return _line(m.text, "Request ID: ", bad)
    lines = m.text.split("\n")
    at = next((i for i, line in enumerate(lines) if line == "Resources:"), len(lines))
    lines.insert(at, "Request ID: " + bad)
    return "\n".join(lines)


def _domain(m: g.Generated, data: st.DataObject) -> str:
    bad = _insert(m.domain, data, ' <>"{}|\\^`')
    return m.text.replace(m.domain + " wants you", bad + " wants you", 1)


def _scheme(m: g.Generated, data: st.DataObject) -> str:
    bad = data.draw(st.sampled_from(["1http", "", "ht tp", "http_s", "-x"]))
    prefix = "" if m.scheme is None else m.scheme + "://"
    return bad + "://" + m.text[len(prefix) :]


_TAGGED = ("URI: ", "Version: ", "Chain ID: ", "Nonce: ", "Issued At: ")


def _swap(m: g.Generated, data: st.DataObject) -> str:
    lines = m.text.split("\n")
    tagged = [i for i, line in enumerate(lines) if line.startswith(_TAGGED)]
    i = data.draw(st.sampled_from(tagged[:-1]))
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return "\n".join(lines)


def _duplicate(m: g.Generated, data: st.DataObject) -> str:
    lines = m.text.split("\n")
    candidates = [
        i
        for i, line in enumerate(lines)
        if line.startswith((*_TAGGED, "Expiration Time: ", "Not Before: ", "Request ID: "))
    ]
    i = data.draw(st.sampled_from(candidates))
    lines.insert(i + 1, lines[i])
    return "\n".join(lines)


def _optional_order(m: g.Generated, data: st.DataObject) -> str:
    optional = ("Expiration Time: ", "Not Before: ", "Request ID: ")
    values = {
        "Expiration Time: ": m.expiration_time or m.issued_at,
        "Not Before: ": m.not_before or m.issued_at,
        "Request ID: ": m.request_id or "r",
    }
    lines = [line for line in m.text.split("\n") if not line.startswith(optional)]
    chosen = data.draw(st.lists(st.sampled_from(optional), min_size=2, max_size=3, unique=True))
    if sorted(chosen, key=optional.index) == chosen:
        chosen.reverse()
    at = next(i for i, line in enumerate(lines) if line.startswith("Issued At: ")) + 1
    lines[at:at] = [tag + values[tag] for tag in chosen]
    return "\n".join(lines)


def _line_structure(m: g.Generated, data: st.DataObject) -> str:
    how = data.draw(
        st.sampled_from(
            [
                "cr",
                "trailing",
                "blank",
                "unknown",
                "extra_blank",
                "header",
                "resource_prefix",
                "missing",
            ]
        )
    )
    lines = m.text.split("\n")
    if how == "cr":
        i = data.draw(st.integers(0, len(lines) - 2))
        lines[i] += "\r"
    elif how == "trailing":
        lines.append("")
    elif how == "blank":  # (with an empty statement, one blank less is the absent form)
        del lines[2 : 4 if m.statement == "" else 3]
    elif how == "unknown":
        lines.insert(data.draw(st.integers(5, len(lines))), "Foo: bar")
    elif how == "extra_blank":
        lines.insert(data.draw(st.integers(6, len(lines))), "")
    elif how == "header":
        lines[0] = lines[0].replace(" wants you to sign in", " wants to sign in")
    elif how == "resource_prefix":
        lines.append("Resources:" if m.resources is None else "-http://x/")
        if m.resources is None:
            lines.append("-http://x/")
    else:
        tagged = [i for i, line in enumerate(lines) if line.startswith(_TAGGED)]
        del lines[data.draw(st.sampled_from(tagged))]
    return "\n".join(lines)


def _non_ascii(m: g.Generated, data: st.DataObject) -> str:
    at = data.draw(st.integers(0, len(m.text)))
    return m.text[:at] + data.draw(st.sampled_from("é\u212a\u0660\ufeff")) + m.text[at:]


MUTATIONS: dict[str, tuple[Mutation, type[SiweFormatError]]] = {
    "address-lowercase": (_address_lowercase, SiweInvalidAddress),
    "address-checksum": (_address_case_flip, SiweInvalidAddress),
    "address-form": (_address_length, SiweInvalidAddress),
    "nonce": (_nonce, SiweInvalidNonce),
    "chain-id": (_chain, SiweInvalidChainId),
    "version": (_version, SiweInvalidVersion),
    "timestamp": (_timestamp, SiweInvalidTimestamp),
    "statement": (_statement, SiweInvalidStatement),
    "uri": (_uri, SiweInvalidUri),
    "resource": (_resource, SiweInvalidResource),
    "request-id": (_request_id, SiweInvalidRequestId),
    "domain": (_domain, SiweInvalidDomain),
    "scheme": (_scheme, SiweInvalidDomain),
    "required-order": (_swap, SiweMalformed),
    "duplicate-line": (_duplicate, SiweMalformed),
    "optional-order": (_optional_order, SiweMalformed),
    "line-structure": (_line_structure, SiweMalformed),
    "non-ascii": (_non_ascii, SiweMalformed),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@budget(25)
@given(generated=g.message(), data=st.data())
def test_each_grammar_violation_raises_its_leaf(
    name: str, generated: g.Generated, data: st.DataObject
) -> None:
    mutate, leaf = MUTATIONS[name]
    text = mutate(generated, data)
    assume(text is not None and text != generated.text)
    assert text is not None
    with pytest.raises(SiweFormatError) as refused:
        parse_siwe(text)
    assert type(refused.value) is leaf, (name, text, refused.value)


@budget(100)
@given(text=g.date_time())
def test_rfc3339_grammar_timestamps_parse(text: str) -> None:
    assert parse_rfc3339(text).tzinfo is not None


@budget(50)
@given(text=st.text(max_size=40))
def test_rfc3339_refuses_anything_else_with_its_leaf(text: str) -> None:
    try:
        parse_rfc3339(text)
    except SiweInvalidTimestamp:
        return
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", text, re.ASCII
    )


@pytest.mark.parametrize(
    ("old", "new", "leaf"),
    [
        pytest.param("service.invalid wants", " wants", SiweInvalidDomain, id="empty-domain"),
        pytest.param("Chain ID: 1\n", "Chain ID: 01\n", SiweInvalidChainId, id="leading-zero"),
        pytest.param(
            "Chain ID: 1\n", f"Chain ID: {2**256}\n", SiweInvalidChainId, id="above-uint256"
        ),
        pytest.param("Issued At: 2021", "Issued At: 0000", SiweInvalidTimestamp, id="year-0"),
    ],
)
def test_deliberate_tightenings_of_the_abnf(old: str, new: str, leaf: type[Exception]) -> None:
    # ABNF-valid, refused on purpose (agentkeys.siwe module docstring says why)
    from tests.fuzz.targets import SIWE_EXAMPLE

    assert old in SIWE_EXAMPLE
    with pytest.raises(leaf):
        parse_siwe(SIWE_EXAMPLE.replace(old, new, 1))
