"""The public API of agentkeys.daemon is pinned."""

from __future__ import annotations

import agentkeys.daemon as daemon


def test_exported_names() -> None:
    assert sorted(daemon.__all__) == sorted(
        [
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
    )
    for name in daemon.__all__:
        assert getattr(daemon, name) is not None
