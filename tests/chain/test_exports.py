"""The public surface of agentkeys.chain is pinned (STYLE.md item 14)."""

from __future__ import annotations

import agentkeys.chain

EXPECTED = {
    "ARTIFACT_DIR", "CONTRACT_NAMES", "ROLE_CAP_MINT", "ROLE_RECOVERY", "ROLE_SCOPE_MGMT",
    "AbiError", "Artifact", "ChainClient", "ChainConfigError", "ChainError", "ChainEvent",
    "ChainProfile", "ChainWatcher", "ContractAddresses", "ContractReverted", "Deployment",
    "InsufficientFunds",
    "DeviceEntry", "DeviceKeyRotated", "DeviceRegistered", "DeviceRevoked", "EpochAdvanced",
    "EventPosition", "GovernanceChanged", "K10Signer", "MasterAuthority", "MasterWalletBound",
    "NewAgent", "NewMaster", "PasskeyAuthenticator", "Receipt", "ReorgTooDeep", "RpcError",
    "RpcUnavailable", "ScopeEntry", "ScopeRevoked", "ScopeSet", "SignedMutation",
    "SoftwareK10Signer", "Tier", "TransactionFailed", "WebAuthnAssertion", "account_from_key",
    "deploy_all", "encode_k10_sig", "encode_k11_assertion", "k10_digest", "load_artifact",
    "load_chain_profile", "master_challenge", "read_deployment_record",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(agentkeys.chain.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(agentkeys.chain, name), name


def test_errors_subclass_the_root() -> None:
    from agentkeys.errors import AgentkeysError

    for name in ("ChainError", "ContractReverted", "RpcUnavailable", "ReorgTooDeep"):
        assert issubclass(getattr(agentkeys.chain, name), AgentkeysError)
