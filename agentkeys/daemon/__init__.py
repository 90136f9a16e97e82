"""The sidecar daemon (SPEC.md section 8): an attested local proxy that injects credentials.

See docs/daemon.md. Public API (pinned by tests/daemon/test_exports.py):

* core: :class:`Daemon`, :class:`DaemonAddress`, :class:`AuditRelay`; configuration
  :class:`DaemonConfig`;
* request path: :class:`ProxyApp`, :class:`ProxyLimits`;
* policy: :class:`Policy`, :func:`parse_policy`, :func:`load_policy`;
* quotas: :class:`QuotaBook`, :class:`QuotaKey`, :class:`QuotaLimits`;
* usage: :class:`Usage`, :class:`UsageScanner`;
* audit: :class:`AuditLog`, :class:`AuditRow`, :class:`AuditRelayQueue`, :func:`verify_log`;
* credentials: :class:`Credential`, :class:`CredentialSource`, :class:`BrokerWorkerSource`
  (the only source: broker cap mint + worker fetch), :class:`CredentialCache`;
* liveness: :class:`BrokerLiveness`, :class:`BrokerProbe`, :class:`HttpBrokerProbe`;
* the daemon's own broker session: :class:`DeviceSession` (K10 sign-in, renewed by the
  daemon), :class:`SessionProblem`;
* chain: :class:`RevocationState`;
* env file: :func:`render_env`, :func:`write_env_file`, :data:`PLACEHOLDER_KEY`.
"""

from agentkeys.daemon.auditlog import AuditLog, AuditRelayQueue, AuditRow, VerifiedLog, verify_log
from agentkeys.daemon.cache import CredentialCache
from agentkeys.daemon.config import DaemonConfig
from agentkeys.daemon.credentials import (
    BrokerWorkerSource,
    Credential,
    CredentialSource,
)
from agentkeys.daemon.envfile import PLACEHOLDER_KEY, render_env, write_env_file
from agentkeys.daemon.heartbeat import BrokerLiveness, BrokerProbe, HttpBrokerProbe
from agentkeys.daemon.policy import Policy, load_policy, parse_policy
from agentkeys.daemon.proxy import ProxyApp, ProxyLimits
from agentkeys.daemon.quota import QuotaBook, QuotaKey, QuotaLimits
from agentkeys.daemon.revocation import RevocationState
from agentkeys.daemon.service import AuditRelay, Daemon, DaemonAddress
from agentkeys.daemon.session import DeviceSession, SessionProblem
from agentkeys.daemon.usage import Usage, UsageScanner

__all__ = [
    "PLACEHOLDER_KEY",
    "AuditLog",
    "AuditRelay",
    "AuditRelayQueue",
    "AuditRow",
    "BrokerLiveness",
    "BrokerProbe",
    "BrokerWorkerSource",
    "Credential",
    "CredentialCache",
    "CredentialSource",
    "Daemon",
    "DaemonAddress",
    "DaemonConfig",
    "DeviceSession",
    "HttpBrokerProbe",
    "Policy",
    "ProxyApp",
    "ProxyLimits",
    "QuotaBook",
    "QuotaKey",
    "QuotaLimits",
    "RevocationState",
    "SessionProblem",
    "Usage",
    "UsageScanner",
    "VerifiedLog",
    "load_policy",
    "parse_policy",
    "render_env",
    "verify_log",
    "write_env_file",
]
