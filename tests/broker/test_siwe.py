"""EIP-4361 parsing, building and verification (agentkeys.siwe).

The base vector is the example message of the EIP-4361 text; every mutation must raise its
exact leaf.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from agentkeys.errors import FormatError
from agentkeys.siwe import (
    SiweAddressMismatch,
    SiweChainMismatch,
    SiweDomainMismatch,
    SiweExpired,
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
    SiweNonceMismatch,
    SiweNotYetValid,
    SiweSignatureInvalid,
    parse_rfc3339,
    parse_siwe,
    verify_siwe,
)

# EIP-4361, "Example message" (provenance: the EIP text).
EXAMPLE = (
    "service.invalid wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
    "\n"
    "I accept the ServiceOrg Terms of Service: https://service.invalid/tos\n"
    "\n"
    "URI: https://service.invalid/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json"
)


def test_example_parses_and_round_trips() -> None:
    message = parse_siwe(EXAMPLE)
    assert message.domain == "service.invalid"
    assert message.scheme is None
    assert message.address == "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
    assert (
        message.statement == "I accept the ServiceOrg Terms of Service: https://service.invalid/tos"
    )
    assert message.chain_id == 1
    assert message.nonce == "32891756"
    assert message.resources is not None
    assert len(message.resources) == 2
    assert message.to_text() == EXAMPLE


def test_all_optional_fields_round_trip() -> None:
    text = (
        "https://example.com:8443 wants you to sign in with your Ethereum account:\n"
        "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
        "\n"
        "\n"
        "URI: https://example.com:8443/login?x=1#y\n"
        "Version: 1\n"
        "Chain ID: 31337\n"
        "Nonce: abcDEF123456\n"
        "Issued At: 2021-09-30T16:25:24.123+02:00\n"
        "Expiration Time: 2021-09-30t17:25:24z\n"
        "Not Before: 2021-09-30T16:25:24-05:30\n"
        "Request ID: some-id:@!$&'()*+,;=%20\n"
        "Resources:"
    )
    message = parse_siwe(text)
    assert message.scheme == "https"
    assert message.domain == "example.com:8443"
    assert message.statement is None
    assert message.resources == ()
    assert message.request_id == "some-id:@!$&'()*+,;=%20"
    assert message.to_text() == text


def test_absent_and_empty_statements_differ() -> None:
    absent = parse_siwe(
        EXAMPLE.replace(
            "I accept the ServiceOrg Terms of Service: https://service.invalid/tos\n\n", "\n"
        )
    )
    assert absent.statement is None
    empty = SiweMessage(**{**_fields(absent), "statement": ""})
    assert empty.to_text() != absent.to_text()
    assert parse_siwe(empty.to_text()).statement == ""
    assert parse_siwe(absent.to_text()).statement is None


def _fields(message: SiweMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


def _replace(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            _replace(
                "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
                "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2",
            ),
            SiweInvalidAddress,
            id="address-not-checksummed",
        ),
        pytest.param(
            _replace(
                "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
                "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756CC2",
            ),
            SiweInvalidAddress,
            id="address-bad-checksum",
        ),
        pytest.param(
            _replace("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39"),
            SiweInvalidAddress,
            id="address-short",
        ),
        pytest.param(_replace("Version: 1", "Version: 2"), SiweInvalidVersion, id="version"),
        pytest.param(
            _replace("Chain ID: 1", "Chain ID: 01"), SiweInvalidChainId, id="chain-id-leading-zero"
        ),
        pytest.param(_replace("Chain ID: 1", "Chain ID: x"), SiweInvalidChainId, id="chain-id"),
        pytest.param(
            _replace("Nonce: 32891756", "Nonce: 3289175"), SiweInvalidNonce, id="nonce-short"
        ),
        pytest.param(
            _replace("Nonce: 32891756", "Nonce: 32891756!"), SiweInvalidNonce, id="nonce-char"
        ),
        pytest.param(
            _replace("2021-09-30T16:25:24Z", "2021-09-30 16:25:24Z"),
            SiweInvalidTimestamp,
            id="timestamp-space",
        ),
        pytest.param(
            _replace("2021-09-30T16:25:24Z", "2021-02-30T16:25:24Z"),
            SiweInvalidTimestamp,
            id="timestamp-day",
        ),
        pytest.param(
            _replace("2021-09-30T16:25:24Z", "2021-09-30T16:25:24"),
            SiweInvalidTimestamp,
            id="timestamp-no-offset",
        ),
        pytest.param(
            _replace("2021-09-30T16:25:24Z", "2021-09-30T16:25:24+24:00"),
            SiweInvalidTimestamp,
            id="timestamp-offset",
        ),
        pytest.param(
            _replace("URI: https://service.invalid/login", "URI: /login"),
            SiweInvalidUri,
            id="uri-relative",
        ),
        pytest.param(
            _replace("URI: https://service.invalid/login", "URI: https://a b/"),
            SiweInvalidUri,
            id="uri-space",
        ),
        pytest.param(
            _replace("Terms of Service:", 'Terms of "Service":'),
            SiweInvalidStatement,
            id="statement-quote",
        ),
        pytest.param(
            _replace("Terms of Service:", "Terms of 100%:"),
            SiweInvalidStatement,
            id="statement-percent",
        ),
        pytest.param(
            _replace("service.invalid wants", "service invalid wants"),
            SiweInvalidDomain,
            id="domain-space",
        ),
        pytest.param(
            _replace("service.invalid wants", "1http://service.invalid wants"),
            SiweInvalidDomain,
            id="scheme",
        ),
        pytest.param(
            _replace("- https://example.com/my-web2-claim.json", "- not a uri"),
            SiweInvalidResource,
            id="resource",
        ),
        pytest.param(
            _replace(
                "Issued At: 2021-09-30T16:25:24Z",
                "Issued At: 2021-09-30T16:25:24Z\nRequest ID: a b",
            ),
            SiweInvalidRequestId,
            id="request-id",
        ),
        pytest.param(EXAMPLE + "\n", SiweMalformed, id="trailing-lf"),
        pytest.param(EXAMPLE.replace("\n", "\r\n"), SiweMalformed, id="crlf"),
        pytest.param(
            _replace("Chain ID: 1\nNonce: 32891756", "Nonce: 32891756\nChain ID: 1"),
            SiweMalformed,
            id="reordered",
        ),
        pytest.param(
            _replace("Version: 1\n", "Version: 1\nVersion: 1\n"), SiweMalformed, id="duplicated"
        ),
        pytest.param(
            _replace("Resources:", "Extra: x\nResources:"), SiweMalformed, id="unknown-line"
        ),
        pytest.param(_replace("- ipfs", "-ipfs"), SiweMalformed, id="resource-prefix"),
        pytest.param(
            _replace(" wants you to sign in", " wants to sign in"), SiweMalformed, id="header"
        ),
        pytest.param(_replace("\n\nURI:", "\nURI:"), SiweMalformed, id="missing-blank"),
        pytest.param("", SiweMalformed, id="empty"),
        pytest.param(_replace("Terms", "Térms"), SiweMalformed, id="non-ascii"),
        pytest.param(
            _replace(
                "Issued At: 2021-09-30T16:25:24Z",
                "Issued At: 2021-09-30T16:25:24Z\nNot Before: 2021-09-30T16:25:24Z\n"
                "Expiration Time: 2021-09-30T16:25:24Z",
            ),
            SiweMalformed,
            id="optional-fields-reordered",
        ),
    ],
)
def test_mutations_raise_their_leaf(text: str, error: type[FormatError]) -> None:
    with pytest.raises(error):
        parse_siwe(text)


def test_parser_never_leaks_other_exceptions() -> None:
    # every prefix and every single-character deletion is either valid or a FormatError
    for cut in range(len(EXAMPLE)):
        for text in (EXAMPLE[:cut], EXAMPLE[:cut] + EXAMPLE[cut + 1 :]):
            with contextlib.suppress(FormatError):
                parse_siwe(text)


def test_rfc3339() -> None:
    base = parse_rfc3339("2021-09-30T16:25:24Z")
    assert parse_rfc3339("2021-09-30T18:25:24+02:00") == base
    assert parse_rfc3339("2021-09-30t16:25:24.5z").microsecond == 500_000
    assert parse_rfc3339("2016-12-31T23:59:60Z").second == 59
    assert calendar.timegm(base.utctimetuple()) == 1633019124


def _signed(text: str) -> tuple[str, str]:
    account = Account.create()
    message = parse_siwe(text)
    fields = _fields(message)
    fields["address"] = account.address
    text = SiweMessage(**fields).to_text()
    signature = Account.sign_message(encode_defunct(text=text), private_key=account.key)
    return text, "0x" + bytes(signature.signature).hex()


_NOW = datetime.datetime(2021, 9, 30, 16, 26, tzinfo=datetime.UTC).timestamp()


def _verify(text: str, signature: str, **changes: Any) -> Any:
    expectations: dict[str, Any] = {
        "expected_domain": "service.invalid",
        "expected_nonce": "32891756",
        "expected_chain_id": 1,
        "now": _NOW,
    }
    expectations.update(changes)
    return verify_siwe(text, signature, **expectations)


def test_verify_accepts_the_wallets_signature() -> None:
    text, signature = _signed(EXAMPLE)
    verified = _verify(text, signature)
    assert verified.wallet == verified.message.address.lower()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"expected_domain": "other.invalid"}, SiweDomainMismatch, id="domain"),
        pytest.param({"expected_nonce": "32891757"}, SiweNonceMismatch, id="nonce"),
        pytest.param({"expected_chain_id": 5}, SiweChainMismatch, id="chain"),
        pytest.param({"now": _NOW + 3600}, SiweExpired, id="too-old"),
        pytest.param({"now": _NOW - 3600}, SiweNotYetValid, id="issued-in-future"),
    ],
)
def test_verify_faults(changes: dict[str, Any], error: type[Exception]) -> None:
    text, signature = _signed(EXAMPLE)
    with pytest.raises(error):
        _verify(text, signature, **changes)


def test_verify_expiration_and_not_before() -> None:
    text, signature = _signed(
        _replace(
            "Issued At: 2021-09-30T16:25:24Z",
            "Issued At: 2021-09-30T16:25:24Z\nExpiration Time: 2021-09-30T16:25:30Z",
        )
    )
    with pytest.raises(SiweExpired):
        _verify(text, signature)
    text, signature = _signed(
        _replace(
            "Issued At: 2021-09-30T16:25:24Z",
            "Issued At: 2021-09-30T16:25:24Z\nNot Before: 2021-09-30T16:30:00Z",
        )
    )
    with pytest.raises(SiweNotYetValid):
        _verify(text, signature)


def test_verify_signature_faults() -> None:
    text, _signature = _signed(EXAMPLE)
    with pytest.raises(SiweSignatureInvalid):
        _verify(text, "0x1234")
    other_text, other_signature = _signed(EXAMPLE)
    with pytest.raises(SiweAddressMismatch):
        _verify(text, other_signature)
    del other_text
