"""Typed async clients of agentkeys' own services, over an injected ``httpx.AsyncClient``.

* :class:`BrokerClient` (:mod:`agentkeys.clients.broker`): cap minting with a K10 PoP,
  device sign-in, session info;
* :class:`WorkerClient` (:mod:`agentkeys.clients.worker`): fetch / store / list / teardown
  presenting a cap with the worker PoP.

(The signer already has its typed client, ``agentkeys.worker._signer.SignerClient``.)
Every failure is one of :mod:`agentkeys.clients.errors`; the caller owns the httpx clients.
"""

from agentkeys.clients.broker import (
    BrokerClient,
    DeviceChallenge,
    DeviceGrant,
    MintedCap,
    SessionInfo,
)
from agentkeys.clients.errors import AnswerMalformed, ClientError, PeerRefused, PeerUnreachable
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
    "BrokerClient",
    "ClientError",
    "DeviceChallenge",
    "DeviceGrant",
    "Fetched",
    "Listed",
    "ListedService",
    "MintedCap",
    "PeerRefused",
    "PeerUnreachable",
    "SessionInfo",
    "Stored",
    "TornDown",
    "WorkerClient",
]
