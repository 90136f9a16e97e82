"""The K4 SIWE signing guard (bootstrap stage of SPEC.md section 7, broker).

The signer signs, with an email identity's K4, only text that parses as an
EIP-4361 message (:func:`agentkeys.siwe.parse_siwe`, strict ABNF) whose
address is that K4 wallet. This matters: K4 also produces v1 KEKs by signing
``agentkeys.kek.v1:…`` (SPEC.md section 4), so a signer that signed arbitrary
text for the broker would hand the broker every v1 KEK.

It also signs only for the one relying party it is configured for (:class:`SiwePin`: the
broker's SIWE domain, URI and chain id), with no URI scheme prefix other than the pinned one,
and only a short-lived message (``Expiration Time`` present, at most ``max_lifetime`` after
``Issued At``, and ``now`` inside that window): a broker (or anyone holding its client
certificate) cannot obtain from K4 a sign-in to another site or chain, nor one that stays
valid for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeys.signer.errors import SiweMessageRejected
from agentkeys.siwe import SiweFormatError, parse_rfc3339, parse_siwe

__all__ = ["SiwePin", "check_siwe_message"]

_SKEW = 30  # seconds a broker clock may run ahead of the signer's


@dataclass(frozen=True)
class SiwePin:
    """What K4 SIWE messages must name (the broker's ``site.siwe_domain``, ``site.siwe_uri``
    and ``site.chain_id``) and how long they may live."""

    domain: str
    uri: str
    chain_id: int
    max_lifetime: int = 600


def check_siwe_message(message: str, *, wallet: str, pin: SiwePin, now: float) -> bytes:
    """The bytes to sign, if ``message`` is a pinned, fresh SIWE message for ``wallet``.

    Args:
        message: the full EIP-4361 text.
        wallet: the identity's K4 address (lowercase ``0x`` hex).
        pin: the relying party K4 signs for.
        now: Unix seconds.

    Raises:
        SiweMessageRejected: not EIP-4361, for another address, domain, URI or chain, or not
            short-lived and current.
    """
    try:
        parsed = parse_siwe(message)
    except SiweFormatError as exc:
        raise SiweMessageRejected(f"not an EIP-4361 message: {exc.reason}") from exc
    if parsed.address.lower() != wallet.lower():
        raise SiweMessageRejected("the message is not for this identity's wallet")
    if parsed.scheme is not None or parsed.domain != pin.domain:
        raise SiweMessageRejected("the message is for another domain than the pinned one")
    if parsed.uri != pin.uri:
        raise SiweMessageRejected("the message is for another URI than the pinned one")
    if parsed.chain_id != pin.chain_id:
        raise SiweMessageRejected("the message is for another chain than the pinned one")
    if parsed.expiration_time is None:
        raise SiweMessageRejected("the message has no expiration time")
    try:
        issued = parse_rfc3339(parsed.issued_at).timestamp()
        expires = parse_rfc3339(parsed.expiration_time).timestamp()
    except SiweFormatError as exc:
        raise SiweMessageRejected(f"a timestamp is malformed: {exc.reason}") from exc
    if expires - issued > pin.max_lifetime or expires <= issued:
        raise SiweMessageRejected("the message lives longer than the signer allows")
    if not issued - _SKEW <= now < expires:
        raise SiweMessageRejected("the message is not current")
    return message.encode("utf-8")
