"""Hypothesis strategies that generate EIP-4361 messages from the ABNF itself.

Written from the EIP-4361 ABNF and the RFC 3986 / RFC 3339 rules it imports, independently
of agentkeys.siwe (no regex or code shared with the parser), so the parser is checked
against the grammar rather than against itself. Each strategy is one ABNF rule; the message
strategy returns the text together with the fields it wrote, so a test can compare what
the parser read.

Not generated (agentkeys.siwe refuses them on purpose; the module docstring lists why):
chain ids with leading zeros or above 2^256-1, an empty domain, year 0000.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from hypothesis import strategies as st

ALPHA = string.ascii_letters
DIGIT = string.digits
HEXDIG = string.hexdigits
UNRESERVED = ALPHA + DIGIT + "-._~"
SUB_DELIMS = "!$&'()*+,;="
GEN_DELIMS = ":/?#[]@"
RESERVED = GEN_DELIMS + SUB_DELIMS


def _chars(alphabet: str, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=min_size, max_size=max_size)


pct_encoded = st.tuples(st.sampled_from(HEXDIG), st.sampled_from(HEXDIG)).map(
    lambda p: "%" + p[0] + p[1]
)


def _star(
    atom: st.SearchStrategy[str], min_size: int = 0, max_size: int = 8
) -> st.SearchStrategy[str]:
    return st.lists(atom, min_size=min_size, max_size=max_size).map("".join)


pchar = st.one_of(st.sampled_from(UNRESERVED + SUB_DELIMS + ":@"), pct_encoded)
scheme = st.tuples(st.sampled_from(ALPHA), _chars(ALPHA + DIGIT + "+-.", max_size=8)).map("".join)
userinfo = _star(st.one_of(st.sampled_from(UNRESERVED + SUB_DELIMS + ":"), pct_encoded))
dec_octet = st.integers(0, 255).map(str)
ipv4 = st.lists(dec_octet, min_size=4, max_size=4).map(".".join)
h16 = _chars(HEXDIG, 1, 4)
ls32 = st.one_of(st.tuples(h16, h16).map(":".join), ipv4)


@st.composite
def ipv6(draw: st.DrawFn) -> str:
    """One of the nine RFC 3986 IPv6address forms."""
    form = draw(st.integers(0, 8))
    if form == 0:
        return "".join(draw(h16) + ":" for _ in range(6)) + draw(ls32)
    if form == 1:
        return "::" + "".join(draw(h16) + ":" for _ in range(5)) + draw(ls32)
    # forms 2..8: [ *(k-1)( h16 ":" ) h16 ] "::" tail, k = form - 2
    k = form - 2
    head = ""
    if draw(st.booleans()):
        head = "".join(draw(h16) + ":" for _ in range(draw(st.integers(0, k)))) + draw(h16)

    def groups(n: int) -> str:
        return "".join(draw(h16) + ":" for _ in range(n))

    tail = {4: draw(ls32), 5: draw(h16), 6: ""}.get(k)
    if tail is None:  # k in 0..3: (4 - k)( h16 ":" ) ls32, except k = 3: h16 ":" ls32
        tail = groups(4 - k) + draw(ls32)
    return head + "::" + tail


ipvfuture = st.tuples(_chars(HEXDIG, 1, 3), _chars(UNRESERVED + SUB_DELIMS + ":", 1, 8)).map(
    lambda p: f"v{p[0]}.{p[1]}"
)
ip_literal = st.one_of(ipv6(), ipvfuture).map(lambda h: f"[{h}]")
reg_name = _star(st.one_of(st.sampled_from(UNRESERVED + SUB_DELIMS), pct_encoded))
host = st.one_of(ip_literal, ipv4, reg_name)
port = _chars(DIGIT, 0, 5)


@st.composite
def authority(draw: st.DrawFn) -> str:
    text = ""
    if draw(st.booleans()):
        text += draw(userinfo) + "@"
    text += draw(host)
    if draw(st.booleans()):
        text += ":" + draw(port)
    return text


domain = authority().filter(bool)  # agentkeys refuses an empty domain
segment = _star(pchar, 0, 6)
segment_nz = _star(pchar, 1, 6)
path_abempty = _star(segment.map(lambda s: "/" + s), 0, 3)
path_absolute = st.one_of(
    st.just("/"), st.tuples(segment_nz, path_abempty).map(lambda p: "/" + p[0] + p[1])
)
path_rootless = st.tuples(segment_nz, path_abempty).map("".join)
query = _star(st.one_of(pchar, st.sampled_from("/?")), 0, 8)


@st.composite
def uri(draw: st.DrawFn) -> str:
    """RFC 3986 ``URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ]``."""
    hier = draw(
        st.one_of(
            st.tuples(authority(), path_abempty).map(lambda p: "//" + p[0] + p[1]),
            path_absolute,
            path_rootless,
            st.just(""),
        )
    )
    text = draw(scheme) + ":" + hier
    if draw(st.booleans()):
        text += "?" + draw(query)
    if draw(st.booleans()):
        text += "#" + draw(query)
    return text


def _checksummed(raw: bytes) -> str:
    return str(to_checksum_address("0x" + raw.hex()))


address = st.binary(min_size=20, max_size=20).map(_checksummed)
statement = _chars(RESERVED + UNRESERVED + " ", 0, 40)
nonce = _chars(ALPHA + DIGIT, 8, 20)
chain_id = st.one_of(st.just("0"), st.integers(1, 2**256 - 1).map(str))
request_id = _star(pchar, 0, 10)


@st.composite
def date_time(draw: st.DrawFn) -> str:
    """RFC 3339 ``date-time`` (T/t, Z/z or a numeric offset, optional fraction, second 60)."""
    import calendar

    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    second = draw(st.integers(0, 60))
    text = f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from('Tt'))}"
    text += f"{hour:02d}:{minute:02d}:{second:02d}"
    if draw(st.booleans()):
        text += "." + draw(_chars(DIGIT, 1, 9))
    offset = draw(
        st.one_of(
            st.sampled_from(["Z", "z"]),
            st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)).map(
                lambda o: f"{o[0]}{o[1]:02d}:{o[2]:02d}"
            ),
        )
    )
    return text + offset


@dataclass(frozen=True)
class Generated:
    """A generated message: its text and the field values written into it."""

    text: str
    scheme: str | None
    domain: str
    address: str
    statement: str | None
    uri: str
    chain_id: str
    nonce: str
    issued_at: str
    expiration_time: str | None
    not_before: str | None
    request_id: str | None
    resources: tuple[str, ...] | None


@st.composite
def message(draw: st.DrawFn) -> Generated:
    """``sign-in-with-ethereum`` exactly as the EIP-4361 ABNF writes it."""
    fields: dict[str, Any] = {
        "scheme": draw(st.none() | scheme),
        "domain": draw(domain),
        "address": draw(address),
        "statement": draw(st.none() | statement),
        "uri": draw(uri()),
        "chain_id": draw(chain_id),
        "nonce": draw(nonce),
        "issued_at": draw(date_time()),
        "expiration_time": draw(st.none() | date_time()),
        "not_before": draw(st.none() | date_time()),
        "request_id": draw(st.none() | request_id),
        "resources": draw(st.none() | st.lists(uri(), max_size=3).map(tuple)),
    }
    prefix = "" if fields["scheme"] is None else fields["scheme"] + "://"
    text = f"{prefix}{fields['domain']} wants you to sign in with your Ethereum account:\n"
    text += fields["address"] + "\n"
    text += "\n"
    if fields["statement"] is not None:
        text += fields["statement"] + "\n"
    text += "\n"
    text += f"URI: {fields['uri']}\n"
    text += "Version: 1\n"
    text += f"Chain ID: {fields['chain_id']}\n"
    text += f"Nonce: {fields['nonce']}\n"
    text += f"Issued At: {fields['issued_at']}"
    if fields["expiration_time"] is not None:
        text += f"\nExpiration Time: {fields['expiration_time']}"
    if fields["not_before"] is not None:
        text += f"\nNot Before: {fields['not_before']}"
    if fields["request_id"] is not None:
        text += f"\nRequest ID: {fields['request_id']}"
    if fields["resources"] is not None:
        text += "\nResources:" + "".join(f"\n- {r}" for r in fields["resources"])
    return Generated(text=text, **fields)
