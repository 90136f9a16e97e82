"""The signer: K3 epochs, v1/v2 KEKs, K4 wallets and SIWE, STS credentials, K10/K11 checks.

SPEC.md sections 2, 4 and 7 (signer); docs/signer.md. Mutual TLS only; the
broker and the worker are its only callers, each limited to its routes by
:data:`AUTHORIZATION`.
"""

from agentkeys.signer._kek import Purpose, check_epoch
from agentkeys.signer._keystore import KeyStore, Sealer
from agentkeys.signer._oidc import check_tag_value, mint_web_identity_token, public_jwks
from agentkeys.signer._run import run_signer, siwe_pin
from agentkeys.signer._service import (
    AUTHORIZATION,
    EpochSource,
    RegistrySource,
    SignerService,
)
from agentkeys.signer._siwe import SiwePin
from agentkeys.signer._sts import StsExchanger
from agentkeys.signer.config import (
    ChainSettings,
    KeysSettings,
    OidcSettings,
    SignerConfig,
    SiweSettings,
    StsSettings,
)

__all__ = [
    "AUTHORIZATION",
    "ChainSettings",
    "EpochSource",
    "KeyStore",
    "KeysSettings",
    "OidcSettings",
    "Purpose",
    "RegistrySource",
    "Sealer",
    "SignerConfig",
    "SignerService",
    "SiwePin",
    "SiweSettings",
    "StsExchanger",
    "StsSettings",
    "check_epoch",
    "check_tag_value",
    "mint_web_identity_token",
    "public_jwks",
    "run_signer",
    "siwe_pin",
]
