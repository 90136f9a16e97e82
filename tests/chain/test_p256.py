"""The P-256 verification the contracts use, against published and generated vectors.

Runs on anvil's default hardfork (``verify`` takes the 0x100 precompile) and on prague (no
precompile: ``verify`` falls back to Solidity); ``verify_solidity`` is checked on both.

Published vectors:
* RFC 6979 appendix A.2.5 (P-256, SHA-256): the key and the signatures of "sample" and "test".
  The "sample" signature has a high s: valid ECDSA, refused by the contracts (malleability);
  its low-s twin (r, n - s) is accepted.
* Wycheproof ecdsa_secp256r1_sha256 (the small r = 5, s = 1 case that OpenZeppelin's
  P256.sol also uses to probe for the precompile).
Generated with ``cryptography``: r or s = 0, = n, > n, high s, key off the curve, key
coordinate >= p, wrong message.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agentkeys.chain.artifacts import load_artifact
from attest.k10_signature import P256_N
from tests.chain.conftest import Chain

N = P256_N
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF

RFC6979_X = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_Y = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
SAMPLE_R = 0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716
SAMPLE_S = 0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8
TEST_R = 0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367
TEST_S = 0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083

WYCHEPROOF_X = 0xA71AF64DE5126A4A4E02B7922D66CE9415CE88A4C9D25514D91082C8725AC957
WYCHEPROOF_Y = 0x5D47723C8FBE580BB369FEC9C2665D8E30A435B9932645482E7C9F11E872296B


def _h(message: bytes) -> int:
    return int.from_bytes(hashlib.sha256(message).digest(), "big")


def _generated() -> tuple[int, int, int, int, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(b"agentkeys vector", ec.ECDSA(hashes.SHA256())))
    s = min(s, N - s)  # low s
    pub = key.public_key().public_numbers()
    return _h(b"agentkeys vector"), r, s, pub.x, pub.y


def vectors() -> dict[str, tuple[tuple[int, int, int, int, int], bool]]:
    """name -> ((h, r, s, qx, qy), expected)."""
    h, r, s, x, y = _generated()
    sample = _h(b"sample")
    return {
        "rfc6979-test": ((_h(b"test"), TEST_R, TEST_S, RFC6979_X, RFC6979_Y), True),
        "rfc6979-sample-high-s": ((sample, SAMPLE_R, SAMPLE_S, RFC6979_X, RFC6979_Y), False),
        "rfc6979-sample-low-s": ((sample, SAMPLE_R, N - SAMPLE_S, RFC6979_X, RFC6979_Y), True),
        "wycheproof-small-r-s": ((_h(b"123400"), 5, 1, WYCHEPROOF_X, WYCHEPROOF_Y), True),
        "generated-valid": ((h, r, s, x, y), True),
        "generated-high-s": ((h, r, N - s, x, y), False),
        "r-zero": ((h, 0, s, x, y), False),
        "s-zero": ((h, r, 0, x, y), False),
        "r-equals-n": ((h, N, s, x, y), False),
        "s-equals-n": ((h, r, N, x, y), False),
        "r-plus-n": ((h, r + N, s, x, y), False)
        if r + N < 2**256
        else ((h, 2**256 - 1, s, x, y), False),
        "s-max": ((h, r, 2**256 - 1, x, y), False),
        "key-off-curve": ((h, r, s, x, (y + 1) % P), False),
        "key-x-at-least-p": ((h, r, s, x + P, y), False)
        if x + P < 2**256
        else ((h, r, s, P, y), False),
        "key-zero": ((h, r, s, 0, 0), False),
        "wrong-message": ((h ^ 1, r, s, x, y), False),
        "wrong-key": ((h, r, s, RFC6979_X, RFC6979_Y), False),
    }


async def _deploy_probe(chain: Chain) -> str:
    receipt = await chain.client.send_transaction(
        chain.deployer, None, load_artifact("P256Probe").bytecode, context="deploy P256Probe"
    )
    assert receipt.contract_address is not None
    return receipt.contract_address


async def test_p256_vectors(chain: Chain) -> None:
    probe = await _deploy_probe(chain)
    (has_precompile,) = await chain.client.call("P256Probe", "has_precompile", address=probe)
    assert has_precompile is (chain.anvil.hardfork is None)

    expected = {name: want for name, (_, want) in vectors().items()}
    for function in ("verify", "verify_solidity"):
        got = {}
        for name, (args, _) in vectors().items():
            words = [v.to_bytes(32, "big") for v in args]
            (ok,) = await chain.client.call("P256Probe", function, *words, address=probe)
            got[name] = ok
        assert got == expected, function
