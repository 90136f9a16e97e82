"""K4 signs SIWE only for the pinned relying party (domain,
URI, chain id) and only short-lived, current messages; unpinned, it signs none."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import trio
from eth_utils.address import to_checksum_address

from agentkeys.config import ConfigError, load_config
from agentkeys.signer import SignerConfig, SiwePin, SiweSettings, siwe_pin
from agentkeys.signer._siwe import check_siwe_message
from agentkeys.signer.errors import SiweMessageRejected
from agentkeys.siwe import SiweMessage
from agentkeys.wallet import recover_eip191
from attest.seal import SoftwareSealer
from tests.service.conftest import Pki
from tests.services import Chain, RunningSigner, start_signer
from tests.signer.conftest import kek_vectors, seed_state

V1 = kek_vectors()["v1_chain"][0]
WALLET = "0x" + "ab" * 20
PIN = SiwePin(domain="broker.example:8443", uri="https://broker.example:8443", chain_id=31337)


def _rfc3339(moment: float) -> str:
    return datetime.datetime.fromtimestamp(int(moment), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(
    *, wallet: str = WALLET, domain: str = PIN.domain, uri: str = PIN.uri,
    chain_id: int = PIN.chain_id, issued: float | None = None, lifetime: int | None = 300,
    scheme: str | None = None,
) -> str:  # fmt: skip
    now = time.time() if issued is None else issued
    return SiweMessage(
        domain=domain, address=to_checksum_address(wallet), uri=uri, chain_id=chain_id,
        nonce="abcdefgh1234", issued_at=_rfc3339(now), scheme=scheme,
        statement="Sign in to agentkeys.",
        expiration_time=None if lifetime is None else _rfc3339(now + lifetime),
    ).to_text()  # fmt: skip


def test_pinned_current_message_is_accepted() -> None:
    text = _message()
    assert check_siwe_message(text, wallet=WALLET, pin=PIN, now=time.time()) == text.encode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_message(domain="evil.example"), id="other-domain"),
        pytest.param(_message(scheme="https"), id="scheme-prefix"),
        pytest.param(_message(uri="https://evil.example/"), id="other-uri"),
        pytest.param(_message(chain_id=1), id="other-chain"),
        pytest.param(_message(lifetime=None), id="no-expiration"),
        pytest.param(_message(lifetime=86_400), id="long-lived"),
        pytest.param(_message(issued=time.time() - 3600), id="expired"),
        pytest.param(_message(issued=time.time() + 3600), id="issued-in-the-future"),
        pytest.param(_message(wallet="0x" + "cd" * 20), id="other-wallet"),
        pytest.param("agentkeys.kek.v1:" + WALLET + ":openai", id="kek-message"),
    ],
)
def test_unpinned_or_stale_messages_are_refused(text: str) -> None:
    with pytest.raises(SiweMessageRejected):
        check_siwe_message(text, wallet=WALLET, pin=PIN, now=time.time())


def test_pin_defaults_come_from_the_issuer_and_the_deployment(tmp_path: Path) -> None:
    path = tmp_path / "signer.toml"
    path.write_text(
        f"""
[signer]
tls_cert = "{tmp_path / "c"}"
tls_key = "{tmp_path / "k"}"
tls_client_ca = "{tmp_path / "ca"}"
[keys]
state_dir = "{tmp_path / "state"}"
[chain]
rpc_url = "http://127.0.0.1:8545"
deployment = "{tmp_path / "deployment.json"}"
[oidc]
issuer = "https://broker.example:8443"
[sts]
endpoint = "http://127.0.0.1:9"
role_arn = "arn:aws:iam::role/none"
"""
    )
    path.chmod(0o600)
    config = load_config(SignerConfig, path=path, environ={})
    assert config.siwe == SiweSettings()
    assert siwe_pin(config, 31337) == PIN
    pinned = load_config(
        SignerConfig, path=path,
        environ={"AGENTKEYS_SIWE_DOMAIN": "other.example", "AGENTKEYS_SIWE_CHAIN_ID": "5"},
    )  # fmt: skip
    assert siwe_pin(pinned, 31337).domain == "other.example"
    assert siwe_pin(pinned, 31337).chain_id == 5
    with pytest.raises(ConfigError):
        SiweSettings(max_lifetime=10**6)


@pytest.fixture
async def unpinned(
    nursery: trio.Nursery, pki: Pki, chain: Chain, tmp_path: Path, sealer: SoftwareSealer
) -> RunningSigner:
    state = tmp_path / "signer-state"
    await seed_state(state, sealer)
    return await start_signer(
        nursery, pki=pki, chain=chain, state_dir=state, sealer=sealer, siwe=None
    )


async def test_unpinned_signer_signs_no_siwe(unpinned: RunningSigner, pki: Pki) -> None:
    async with unpinned.client(pki, "broker") as broker:
        r = await broker.post(
            "/k4/siwe-sign",
            json={"identity_omni": V1["identity_omni"], "message": _message(wallet=V1["wallet"])},
        )
        assert r.status_code == 503
        assert r.json()["error"] == "siwe_pin_unset"


async def test_pinned_signer_signs_only_its_relying_party(signer: RunningSigner, pki: Pki) -> None:
    """The test signer is pinned to tests.services.SIWE_PIN."""
    identity = V1["identity_omni"]
    good = _message(
        wallet=V1["wallet"], domain="app.example", uri="https://app.example/login", chain_id=1
    )
    async with signer.client(pki, "broker") as broker:
        r = await broker.post("/k4/siwe-sign", json={"identity_omni": identity, "message": good})
        assert r.status_code == 200, r.text
        signature = bytes.fromhex(r.json()["signature"].removeprefix("0x"))
        assert recover_eip191(good.encode(), signature) == V1["wallet"]
        elsewhere = _message(wallet=V1["wallet"], domain="evil.example",
                             uri="https://app.example/login", chain_id=1)  # fmt: skip
        r = await broker.post(
            "/k4/siwe-sign", json={"identity_omni": identity, "message": elsewhere}
        )
        assert r.status_code == 400
        assert r.json()["error"] == "siwe_message_rejected"
