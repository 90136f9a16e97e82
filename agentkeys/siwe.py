"""Sign-In with Ethereum (EIP-4361): the message model, its exact text form, and verification.

Used by the broker's SIWE stage (SPEC section 7, bootstrap stage 3). The text form follows
the EIP-4361 ABNF line by line::

    [ scheme "://" ] domain " wants you to sign in with your Ethereum account:" LF
    address LF
    LF
    [ statement LF ]
    LF
    "URI: " uri LF
    "Version: " version LF
    "Chain ID: " chain-id LF
    "Nonce: " nonce LF
    "Issued At: " issued-at
    [ LF "Expiration Time: " expiration-time ]
    [ LF "Not Before: " not-before ]
    [ LF "Request ID: " request-id ]
    [ LF "Resources:" *( LF "- " URI ) ]

* ``domain`` is an RFC 3986 authority, ``scheme`` an RFC 3986 scheme, ``uri`` and each
  resource an RFC 3986 URI (absolute, with scheme).
* ``address`` is ``0x`` + 40 hex digits in its EIP-55 checksum form (the only accepted form).
* ``statement`` is ``*( reserved / unreserved / " " )`` of RFC 3986 (no LF, may be empty;
  an absent statement and an empty one have different text forms).
* ``version`` is ``1``; ``chain-id`` is ``1*DIGIT``; ``nonce`` is at least 8 ASCII letters or
  digits.
* ``IP-literal`` hosts are RFC 3986 ``IPv6address`` (all nine forms) or ``IPvFuture``.
* Timestamps are RFC 3339 ``date-time``; the text is kept exactly as written (so
  ``parse(text).to_text() == text``) and compared as instants.
* ``request-id`` is ``*pchar``.
* No CR anywhere, no trailing LF, fields in exactly this order, each at most once.

Deliberately stricter than the ABNF (each refusal raises the field's leaf, and
tests/fuzz/test_siwe_grammar.py pins it): a chain id with leading zeros (one chain id has
one text form, so ``parse(text).to_text() == text``) or above 2^256-1 (the EVM ``CHAINID``
is a uint256); an empty ``domain`` (an authority with no characters at all names no
origin); a date-time whose year is 0000 (no instant in Python's calendar); a message longer
than :data:`MAX_MESSAGE_CHARS`.

Parsing raises a leaf of :class:`SiweFormatError` (a :class:`~agentkeys.errors.FormatError`);
:func:`verify_siwe` raises a leaf of :class:`SiweRejected` (401). All pure.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import ClassVar

from eth_utils.address import to_checksum_address

from agentkeys.errors import AgentkeysError, FormatError
from agentkeys.wallet import recover_eip191

__all__ = [
    "MAX_MESSAGE_CHARS",
    "SiweAddressMismatch",
    "SiweChainMismatch",
    "SiweDomainMismatch",
    "SiweExpired",
    "SiweFormatError",
    "SiweInvalidAddress",
    "SiweInvalidChainId",
    "SiweInvalidDomain",
    "SiweInvalidNonce",
    "SiweInvalidRequestId",
    "SiweInvalidResource",
    "SiweInvalidStatement",
    "SiweInvalidTimestamp",
    "SiweInvalidUri",
    "SiweInvalidVersion",
    "SiweMalformed",
    "SiweMessage",
    "SiweNonceMismatch",
    "SiweNotYetValid",
    "SiweRejected",
    "SiweSignatureInvalid",
    "SiweUriMismatch",
    "VerifiedSiwe",
    "parse_rfc3339",
    "parse_siwe",
    "verify_siwe",
]

MAX_MESSAGE_CHARS = 8192

# --- errors -------------------------------------------------------------------------------------


class SiweFormatError(FormatError):
    """Branch: text that is not an EIP-4361 message."""

    error: ClassVar[str] = "siwe_format_error"


class SiweMalformed(SiweFormatError):
    """Wrong line structure: missing, repeated, reordered or unknown lines, CR, trailing LF."""

    error: ClassVar[str] = "siwe_malformed"


class SiweInvalidDomain(SiweFormatError):
    """The scheme or domain is not an RFC 3986 scheme / authority."""

    error: ClassVar[str] = "siwe_invalid_domain"


class SiweInvalidAddress(SiweFormatError):
    """The address is not ``0x`` + 40 hex digits in EIP-55 checksum form."""

    error: ClassVar[str] = "siwe_invalid_address"


class SiweInvalidStatement(SiweFormatError):
    """The statement has characters outside RFC 3986 reserved / unreserved / space."""

    error: ClassVar[str] = "siwe_invalid_statement"


class SiweInvalidUri(SiweFormatError):
    """The URI is not an absolute RFC 3986 URI."""

    error: ClassVar[str] = "siwe_invalid_uri"


class SiweInvalidVersion(SiweFormatError):
    """The version is not ``1``."""

    error: ClassVar[str] = "siwe_invalid_version"


class SiweInvalidChainId(SiweFormatError):
    """The chain id is not a decimal integer without leading zeros."""

    error: ClassVar[str] = "siwe_invalid_chain_id"


class SiweInvalidNonce(SiweFormatError):
    """The nonce is not at least 8 ASCII letters or digits."""

    error: ClassVar[str] = "siwe_invalid_nonce"


class SiweInvalidTimestamp(SiweFormatError):
    """A timestamp is not an RFC 3339 date-time."""

    error: ClassVar[str] = "siwe_invalid_timestamp"


class SiweInvalidRequestId(SiweFormatError):
    """The request id has characters outside RFC 3986 ``pchar``."""

    error: ClassVar[str] = "siwe_invalid_request_id"


class SiweInvalidResource(SiweFormatError):
    """A resource line is not ``- `` followed by an RFC 3986 URI."""

    error: ClassVar[str] = "siwe_invalid_resource"


class SiweRejected(AgentkeysError):
    """Branch: a well-formed SIWE message that fails verification (401)."""

    error: ClassVar[str] = "siwe_rejected"
    status: ClassVar[int] = 401


class SiweDomainMismatch(SiweRejected):
    """The message is for another domain (or scheme)."""

    error: ClassVar[str] = "siwe_domain_mismatch"


class SiweUriMismatch(SiweRejected):
    """The message's URI is not the one this service expects."""

    error: ClassVar[str] = "siwe_uri_mismatch"


class SiweChainMismatch(SiweRejected):
    """The message names another chain id."""

    error: ClassVar[str] = "siwe_chain_mismatch"


class SiweNonceMismatch(SiweRejected):
    """The message's nonce is not the one issued for this sign-in."""

    error: ClassVar[str] = "siwe_nonce_mismatch"


class SiweExpired(SiweRejected):
    """``now`` is at or past the expiration time, or the message is older than allowed."""

    error: ClassVar[str] = "siwe_expired"


class SiweNotYetValid(SiweRejected):
    """``now`` is before ``Not Before``, or ``Issued At`` lies in the future."""

    error: ClassVar[str] = "siwe_not_yet_valid"


class SiweSignatureInvalid(SiweRejected):
    """The signature is malformed or does not recover."""

    error: ClassVar[str] = "siwe_signature_invalid"


class SiweAddressMismatch(SiweRejected):
    """The signature recovers to another address than the message's."""

    error: ClassVar[str] = "siwe_address_mismatch"


# --- grammar (RFC 3986 / RFC 3339 pieces) -------------------------------------------------------

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*", re.ASCII)
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"


def _ipv6_forms() -> str:
    """RFC 3986 ``IPv6address``: its nine forms, written out as the ABNF lists them."""

    def groups(n: int) -> str:  # n( h16 ":" )
        return f"(?:{_H16}:){{{n}}}" if n else ""

    def head(n: int) -> str:  # [ *n( h16 ":" ) h16 ]
        return f"(?:(?:{_H16}:){{0,{n}}}{_H16})?" if n else f"(?:{_H16})?"

    forms = [f"{groups(6)}{_LS32}", f"::{groups(5)}{_LS32}"]
    forms += [f"{head(k)}::{groups(4 - k)}{_LS32}" for k in range(4)]
    forms += [f"{head(4)}::{_LS32}", f"{head(5)}::{_H16}", f"{head(6)}::"]
    return "|".join(f"(?:{form})" for form in forms)


_IPV6 = _ipv6_forms()
_IP_LITERAL = rf"\[(?:{_IPV6}|[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+)\]"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_HOST = rf"(?:{_IP_LITERAL}|{_IPV4}|{_REG_NAME})"
_AUTHORITY = re.compile(rf"(?:{_USERINFO}@)?{_HOST}(?::[0-9]*)?", re.ASCII)
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_PATH_ABEMPTY = rf"(?:/{_PCHAR}*)*"
_PATH_ROOTLESS = rf"{_PCHAR}+(?:/{_PCHAR}*)*"
_PATH_ABSOLUTE = rf"/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_URI = re.compile(
    rf"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):"
    rf"(?://(?P<authority>[^/?#]*){_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?",
    re.ASCII,
)
_STATEMENT = re.compile(rf"[{_UNRESERVED}:/?#\[\]@{_SUB_DELIMS} ]*", re.ASCII)
_REQUEST_ID = re.compile(rf"{_PCHAR}*", re.ASCII)
_NONCE = re.compile(r"[A-Za-z0-9]{8,}", re.ASCII)
_CHAIN_ID = re.compile(r"0|[1-9][0-9]{0,77}", re.ASCII)
_MAX_CHAIN_ID = 2**256 - 1  # the EVM CHAINID opcode returns a uint256
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)

_HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
_URI_TAG = "URI: "
_VERSION_TAG = "Version: "
_CHAIN_TAG = "Chain ID: "
_NONCE_TAG = "Nonce: "
_ISSUED_TAG = "Issued At: "
_EXPIRATION_TAG = "Expiration Time: "
_NOT_BEFORE_TAG = "Not Before: "
_REQUEST_TAG = "Request ID: "
_RESOURCES_LINE = "Resources:"
_RESOURCE_PREFIX = "- "


def _check_uri(value: str, error: type[SiweFormatError], what: str) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string")
    match = _URI.fullmatch(value)
    if match is None:
        raise error(f"{what} is not an absolute RFC 3986 URI")
    authority = match.group("authority")
    if authority is not None and _AUTHORITY.fullmatch(authority) is None:
        raise error(f"{what} has an invalid authority")
    return value


def _check_domain(value: str) -> str:
    if not isinstance(value, str) or not value or _AUTHORITY.fullmatch(value) is None:
        raise SiweInvalidDomain("domain must be an RFC 3986 authority")
    return value


def parse_rfc3339(text: str) -> datetime.datetime:
    """The instant an RFC 3339 ``date-time`` names (leap second 60 read as :59.999999).

    Raises:
        SiweInvalidTimestamp: not an RFC 3339 date-time, or a field out of range.
    """
    match = _DATE_TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise SiweInvalidTimestamp("timestamp must be an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    if match.group(8):
        offset = datetime.timedelta(0)
    else:
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise SiweInvalidTimestamp("timestamp offset out of range")
        offset = datetime.timedelta(hours=off_h, minutes=off_m)
        if match.group(9) == "-":
            offset = -offset
    if second == 60:
        second, micro = 59, 999_999
    try:
        return datetime.datetime(
            year, month, day, hour, minute, second, micro, tzinfo=datetime.timezone(offset)
        )
    except ValueError:
        raise SiweInvalidTimestamp("timestamp field out of range") from None


def _check_timestamp(value: str | None) -> str | None:
    if value is not None:
        parse_rfc3339(value)
    return value


@dataclass(frozen=True, kw_only=True)
class SiweMessage:
    """One EIP-4361 message, validated on construction (see the module docstring).

    Raises:
        SiweFormatError: a field outside its grammar.
    """

    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    scheme: str | None = None
    statement: str | None = None
    version: str = "1"
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.scheme is not None and (
            not isinstance(self.scheme, str) or _SCHEME.fullmatch(self.scheme) is None
        ):
            raise SiweInvalidDomain("scheme must be an RFC 3986 scheme")
        _check_domain(self.domain)
        if not isinstance(self.address, str) or _ADDRESS.fullmatch(self.address) is None:
            raise SiweInvalidAddress("address must be 0x followed by 40 hex digits")
        if to_checksum_address(self.address) != self.address:
            raise SiweInvalidAddress("address must be in EIP-55 checksum form")
        if self.statement is not None and (
            not isinstance(self.statement, str) or _STATEMENT.fullmatch(self.statement) is None
        ):
            raise SiweInvalidStatement("statement has characters outside RFC 3986 and space")
        _check_uri(self.uri, SiweInvalidUri, "URI")
        if self.version != "1":
            raise SiweInvalidVersion("version must be 1")
        if (
            isinstance(self.chain_id, bool)
            or not isinstance(self.chain_id, int)
            or not 0 <= self.chain_id <= _MAX_CHAIN_ID
        ):
            raise SiweInvalidChainId("chain id must be an integer in 0..2^256-1")
        if not isinstance(self.nonce, str) or _NONCE.fullmatch(self.nonce) is None:
            raise SiweInvalidNonce("nonce must be at least 8 ASCII letters or digits")
        if self.issued_at is None:
            raise SiweInvalidTimestamp("Issued At is required")
        _check_timestamp(self.issued_at)
        _check_timestamp(self.expiration_time)
        _check_timestamp(self.not_before)
        if self.request_id is not None and (
            not isinstance(self.request_id, str) or _REQUEST_ID.fullmatch(self.request_id) is None
        ):
            raise SiweInvalidRequestId("request id must be RFC 3986 pchar characters")
        if self.resources is not None:
            if not isinstance(self.resources, tuple):
                raise SiweInvalidResource("resources must be a tuple of URIs")
            for resource in self.resources:
                _check_uri(resource, SiweInvalidResource, "resource")

    @property
    def issued_at_time(self) -> datetime.datetime:
        """``Issued At`` as an aware datetime."""
        return parse_rfc3339(self.issued_at)

    @property
    def expiration(self) -> datetime.datetime | None:
        """``Expiration Time`` as an aware datetime, if present."""
        return None if self.expiration_time is None else parse_rfc3339(self.expiration_time)

    @property
    def not_before_time(self) -> datetime.datetime | None:
        """``Not Before`` as an aware datetime, if present."""
        return None if self.not_before is None else parse_rfc3339(self.not_before)

    def to_text(self) -> str:
        """The exact EIP-4361 text (what the wallet signs with EIP-191)."""
        prefix = f"{self.scheme}://" if self.scheme is not None else ""
        lines = [f"{prefix}{self.domain}{_HEADER_SUFFIX}", self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines += [
            "",
            _URI_TAG + self.uri,
            _VERSION_TAG + self.version,
            _CHAIN_TAG + str(self.chain_id),
            _NONCE_TAG + self.nonce,
            _ISSUED_TAG + self.issued_at,
        ]
        if self.expiration_time is not None:
            lines.append(_EXPIRATION_TAG + self.expiration_time)
        if self.not_before is not None:
            lines.append(_NOT_BEFORE_TAG + self.not_before)
        if self.request_id is not None:
            lines.append(_REQUEST_TAG + self.request_id)
        if self.resources is not None:
            lines.append(_RESOURCES_LINE)
            lines += [_RESOURCE_PREFIX + r for r in self.resources]
        return "\n".join(lines)


def _take(lines: list[str], index: int, tag: str) -> str:
    if index >= len(lines) or not lines[index].startswith(tag):
        raise SiweMalformed(f"expected a {tag.strip()!r} line at line {index + 1}")
    return lines[index][len(tag) :]


def parse_siwe(text: str) -> SiweMessage:
    """Parse EIP-4361 text strictly (see the module docstring).

    Raises:
        SiweFormatError: a leaf naming the first violation.
    """
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise SiweMalformed(f"a SIWE message is a string of at most {MAX_MESSAGE_CHARS} chars")
    if not text.isascii() or "\r" in text:
        raise SiweMalformed("a SIWE message is ASCII text with LF line ends only")
    lines = text.split("\n")
    header = lines[0]
    if not header.endswith(_HEADER_SUFFIX):
        raise SiweMalformed("first line must end with the EIP-4361 sign-in sentence")
    origin = header[: -len(_HEADER_SUFFIX)]
    scheme: str | None = None
    if "://" in origin:
        scheme, origin = origin.split("://", 1)
        if _SCHEME.fullmatch(scheme) is None:
            raise SiweInvalidDomain("scheme must be an RFC 3986 scheme")
    domain = _check_domain(origin)
    if len(lines) < 9:
        raise SiweMalformed("message is missing required lines")
    address = lines[1]
    if lines[2] != "":
        raise SiweMalformed("line 3 must be empty")
    if lines[3] == "":
        statement = None
        index = 4
    else:
        statement = lines[3]
        if lines[4] != "":
            raise SiweMalformed("the statement must be followed by an empty line")
        index = 5
    if index < len(lines) and lines[index] == "" and statement is None:
        # "address LF LF LF LF URI": an empty statement line
        statement = ""
        index += 1
    uri = _take(lines, index, _URI_TAG)
    version = _take(lines, index + 1, _VERSION_TAG)
    chain_text = _take(lines, index + 2, _CHAIN_TAG)
    nonce = _take(lines, index + 3, _NONCE_TAG)
    issued_at = _take(lines, index + 4, _ISSUED_TAG)
    index += 5
    if _CHAIN_ID.fullmatch(chain_text) is None:
        raise SiweInvalidChainId("chain id must be decimal digits without leading zeros")
    optional: dict[str, str | None] = {"exp": None, "nbf": None, "rid": None}
    for key, tag in (("exp", _EXPIRATION_TAG), ("nbf", _NOT_BEFORE_TAG), ("rid", _REQUEST_TAG)):
        if index < len(lines) and lines[index].startswith(tag):
            optional[key] = lines[index][len(tag) :]
            index += 1
    resources: tuple[str, ...] | None = None
    if index < len(lines) and lines[index] == _RESOURCES_LINE:
        index += 1
        collected = []
        while index < len(lines) and lines[index].startswith(_RESOURCE_PREFIX):
            collected.append(lines[index][len(_RESOURCE_PREFIX) :])
            index += 1
        resources = tuple(collected)
    if index != len(lines):
        raise SiweMalformed(f"unexpected content at line {index + 1}")
    return SiweMessage(
        scheme=scheme,
        domain=domain,
        address=address,
        statement=statement,
        uri=uri,
        version=version if version == "1" else _bad_version(),
        chain_id=int(chain_text),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=optional["exp"],
        not_before=optional["nbf"],
        request_id=optional["rid"],
        resources=resources,
    )


def _bad_version() -> str:
    raise SiweInvalidVersion("version must be 1")


@dataclass(frozen=True)
class VerifiedSiwe:
    """A SIWE message whose fields, validity window and signature have been checked.

    ``wallet`` is the signer's address in lowercase ``0x`` form (SPEC section 3).
    """

    message: SiweMessage
    wallet: str


def _hex_signature(signature: str) -> bytes:
    if not isinstance(signature, str):
        raise SiweSignatureInvalid("signature must be a hex string")
    text = signature[2:] if signature[:2] in ("0x", "0X") else signature
    if len(text) != 130:
        raise SiweSignatureInvalid("signature must be 65 bytes as hex")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SiweSignatureInvalid("signature is not hex") from None


def verify_siwe(
    text: str,
    signature: str,
    *,
    expected_domain: str,
    expected_nonce: str,
    expected_chain_id: int,
    now: float,
    expected_scheme: str | None = None,
    expected_uri: str | None = None,
    max_age: int = 600,
    max_skew: int = 60,
) -> VerifiedSiwe:
    """Parse and verify a signed SIWE message (EOA signatures, EIP-191).

    Args:
        text: the message exactly as signed.
        signature: 65-byte r ‖ s ‖ v as hex (``0x`` optional; v 0/1 or 27/28).
        expected_domain: this service's domain (authority), compared exactly.
        expected_nonce: the nonce this service issued for this sign-in.
        expected_chain_id: the chain this deployment uses.
        now: current Unix time.
        expected_scheme: when set, the message's scheme must be exactly this (when the message
            carries one).
        expected_uri: when set, the URI must be exactly this.
        max_age: seconds after ``Issued At`` the message stays acceptable.
        max_skew: seconds ``Issued At`` may lie in the future.

    Raises:
        SiweFormatError: not an EIP-4361 message.
        SiweDomainMismatch, SiweUriMismatch, SiweChainMismatch, SiweNonceMismatch,
        SiweExpired, SiweNotYetValid, SiweSignatureInvalid, SiweAddressMismatch.
    """
    message = parse_siwe(text)
    if message.domain != expected_domain:
        raise SiweDomainMismatch("the message is for another domain")
    if (
        message.scheme is not None
        and expected_scheme is not None
        and (message.scheme != expected_scheme)
    ):
        raise SiweDomainMismatch("the message is for another scheme")
    if expected_uri is not None and message.uri != expected_uri:
        raise SiweUriMismatch("the message names another URI")
    if message.chain_id != expected_chain_id:
        raise SiweChainMismatch("the message names another chain id")
    if len(message.nonce) != len(expected_nonce) or message.nonce != expected_nonce:
        raise SiweNonceMismatch("the message's nonce was not issued for this sign-in")
    issued = message.issued_at_time.timestamp()
    if issued > now + max_skew:
        raise SiweNotYetValid("Issued At lies in the future")
    if now - issued > max_age:
        raise SiweExpired("the message is too old")
    expiration = message.expiration
    if expiration is not None and now >= expiration.timestamp():
        raise SiweExpired("the message has expired")
    not_before = message.not_before_time
    if not_before is not None and now < not_before.timestamp():
        raise SiweNotYetValid("the message is not valid yet")
    raw = _hex_signature(signature)
    try:
        wallet = recover_eip191(text.encode("ascii"), raw)
    except FormatError:
        raise SiweSignatureInvalid("signature does not recover") from None
    if wallet != message.address.lower():
        raise SiweAddressMismatch("signature is by another address than the message's")
    return VerifiedSiwe(message=message, wallet=wallet)
