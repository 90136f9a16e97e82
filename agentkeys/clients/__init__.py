"""Typed async clients of agentkeys' own services, over an injected ``httpx.AsyncClient``.

* :class:`BrokerClient` (:mod:`agentkeys.clients.broker`): cap minting with a K10 PoP,
  device sign-in, session info, the legacy backend's web-identity token;
* :class:`WorkerClient` (:mod:`agentkeys.clients.worker`): fetch / store / list / teardown
  presenting a cap with the worker PoP;
* :class:`SignerClient` (:mod:`agentkeys.clients.signer`, over mutual TLS): KEKs and S3
  credentials for the worker, K4 and the OIDC JWKS for the broker.

Every failure is one of :mod:`agentkeys.clients.errors`; the caller owns the httpx clients.
"""

from agentkeys.clients.broker import (
    BrokerClient,
    DeviceChallenge,
    DeviceGrant,
    MintedCap,
    OidcChallenge,
    SessionInfo,
)
from agentkeys.clients.errors import (
    AnswerMalformed,
    ClientError,
    PeerRefused,
    PeerUnreachable,
    PeerUntrusted,
)
from agentkeys.clients.signer import AwsCredentials, SignerClient
from agentkeys.clients.worker import (
    Fetched,
    Listed,
    ListedService,
    Stored,
    TornDown,
    WorkerClient,
)

__all__ = [
    "AnswerMalformed",
    "AwsCredentials",
    "BrokerClient",
    "ClientError",
    "DeviceChallenge",
    "DeviceGrant",
    "Fetched",
    "Listed",
    "ListedService",
    "MintedCap",
    "OidcChallenge",
    "PeerRefused",
    "PeerUnreachable",
    "PeerUntrusted",
    "SessionInfo",
    "SignerClient",
    "Stored",
    "TornDown",
    "WorkerClient",
]
