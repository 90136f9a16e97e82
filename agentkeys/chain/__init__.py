"""The on-chain identity layer: contracts' client, signing helpers, deployment, watcher.

SPEC.md sections 2, 3 and 6; contract layouts in docs/contracts.md. Everything here is
Trio-native (JSON-RPC over an injected ``httpx.AsyncClient``).
"""

from agentkeys.chain.artifacts import ARTIFACT_DIR, CONTRACT_NAMES, Artifact, load_artifact
from agentkeys.chain.challenge import NewAgent, NewMaster, master_challenge
from agentkeys.chain.client import (
    ChainClient,
    ContractAddresses,
    DeviceEntry,
    Receipt,
    ScopeEntry,
    SignedMutation,
    Tier,
    account_from_key,
)
from agentkeys.chain.deploy import Deployment, deploy_all, read_deployment_record
from agentkeys.chain.errors import (
    AbiError,
    ChainConfigError,
    ChainError,
    ContractReverted,
    InsufficientFunds,
    ReorgTooDeep,
    RpcError,
    RpcUnavailable,
    TransactionFailed,
)
from agentkeys.chain.events import (
    ChainEvent,
    DeviceKeyRotated,
    DeviceRegistered,
    DeviceRevoked,
    EpochAdvanced,
    EventPosition,
    GovernanceChanged,
    MasterWalletBound,
    ScopeRevoked,
    ScopeSet,
)
from agentkeys.chain.profiles import ChainProfile, load_chain_profile
from agentkeys.chain.signing import (
    K10Signer,
    MasterAuthority,
    PasskeyAuthenticator,
    SoftwareK10Signer,
    WebAuthnAssertion,
    encode_k10_sig,
    encode_k11_assertion,
    k10_digest,
)
from agentkeys.chain.watcher import ChainWatcher

ROLE_CAP_MINT = 1
ROLE_RECOVERY = 2
ROLE_SCOPE_MGMT = 4

__all__ = [
    "ARTIFACT_DIR",
    "CONTRACT_NAMES",
    "ROLE_CAP_MINT",
    "ROLE_RECOVERY",
    "ROLE_SCOPE_MGMT",
    "AbiError",
    "Artifact",
    "ChainClient",
    "ChainConfigError",
    "ChainError",
    "ChainEvent",
    "ChainProfile",
    "ChainWatcher",
    "ContractAddresses",
    "ContractReverted",
    "Deployment",
    "DeviceEntry",
    "DeviceKeyRotated",
    "DeviceRegistered",
    "DeviceRevoked",
    "EpochAdvanced",
    "EventPosition",
    "GovernanceChanged",
    "InsufficientFunds",
    "K10Signer",
    "MasterAuthority",
    "MasterWalletBound",
    "NewAgent",
    "NewMaster",
    "PasskeyAuthenticator",
    "Receipt",
    "ReorgTooDeep",
    "RpcError",
    "RpcUnavailable",
    "ScopeEntry",
    "ScopeRevoked",
    "ScopeSet",
    "SignedMutation",
    "SoftwareK10Signer",
    "Tier",
    "TransactionFailed",
    "WebAuthnAssertion",
    "account_from_key",
    "deploy_all",
    "encode_k10_sig",
    "encode_k11_assertion",
    "k10_digest",
    "load_artifact",
    "load_chain_profile",
    "master_challenge",
    "read_deployment_record",
]
