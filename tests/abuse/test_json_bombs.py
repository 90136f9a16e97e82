"""Deeply nested JSON must never take a service process down.

Every agentkeys service imports eth_account, whose py_ecc dependency raises the recursion
limit to 100000; CPython's C JSON decoder recurses once per nesting level, so 64 KiB of
``[`` (one maximum-size request body) overflows the C stack: a segfault, not a
RecursionError. Importing agentkeys puts the limit back (agentkeys/__init__.py), which
covers our parsers and the ones inside libraries (py_webauthn's clientDataJSON). Run in
a subprocess, since the failure mode kills the interpreter.
"""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import eth_account  # noqa: F401  (what every service imports; raises the recursion limit)
assert sys.getrecursionlimit() >= 100000
{setup}
try:
    {call}
except Exception as exc:
    print(type(exc).__name__)
"""


def _survives(setup: str, call: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup, call=call)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"interpreter died (status {result.returncode})"
    return result.stdout.strip()


def test_request_body_of_nested_brackets_is_a_400_not_a_crash() -> None:
    out = _survives(
        "from agentkeys.service import parse_json_object", "parse_json_object(b'[' * 65536)"
    )
    assert out == "MalformedJson"


def test_jwks_bundles_pins_and_cap_tokens_of_nested_brackets_are_refused() -> None:
    out = _survives(
        "from agentkeys.b64url import b64url_encode\n"
        "from agentkeys.jwks import JsonWebKeySet\n"
        "from agentkeys.cap import parse_cap_token\n"
        "from attest.bundle import AttestationBundle\n"
        "from attest.pin import CallerPin\n"
        "def each(*calls):\n"
        "    for call in calls:\n"
        "        try:\n"
        "            call()\n"
        "        except Exception as exc:\n"
        "            print(type(exc).__name__)\n",
        "each(lambda: JsonWebKeySet.from_json(b'[' * 65536),\n"
        "         lambda: AttestationBundle.from_json(b'[' * 1_000_000),\n"
        "         lambda: CallerPin.from_json(b'{\"kind\": ' + b'[' * 1_000_000),\n"
        "         lambda: parse_cap_token(b64url_encode(b'[' * 6000)))",
    )
    assert out.split() == [
        "InvalidEncoding",
        "AttestationMalformed",
        "AttestationMalformed",
        "CapInvalid",
    ]


def test_importing_agentkeys_undoes_py_ecc_recursion_limit() -> None:
    out = _survives(
        "import agentkeys.broker  # pulls in eth_account, hence py_ecc\n"
        "import json\n"
        "print(sys.getrecursionlimit())",
        "json.loads('[' * 65536)",
    )
    assert out.split() == ["1000", "RecursionError"]
