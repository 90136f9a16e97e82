"""The public surface of agentkeys.devstack is exactly this list."""

from __future__ import annotations

import agentkeys.devstack as devstack

EXPECTED = {
    "ACTOR_TAG", "AdminCredentials", "Anvil", "BinaryNotFound", "ComponentStartFailed",
    "DEFAULT_CHAIN_ID", "DEV_CLIENT_ID", "DEV_PROVIDER_NAME", "DEV_ROLE_NAME", "DevAccount",
    "DevstackError", "IamConfig", "IamConfigError", "IamPolicy", "IamRole", "Nginx", "NoFreePort",
    "OidcProvider", "Postgres", "SeaweedFS", "SeaweedPorts", "StsSettings", "Swtpm", "WALLET_TAG",
    "actor_policy_document", "anvil_binary", "dev_iam_config", "nginx_binary", "pick_port",
    "pick_ports", "port_is_free", "postgres_bin_dir", "repo_root", "s3_client",
    "s3_identities_document", "start_anvil", "start_nginx", "start_postgres", "start_seaweedfs",
    "start_swtpm", "started_sessions", "swtpm_binary", "weed_binary",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(devstack.__all__) == EXPECTED
    for name in devstack.__all__:
        assert getattr(devstack, name) is not None


def test_errors_subclass_the_root() -> None:
    from agentkeys.errors import AgentkeysError

    for name in ("BinaryNotFound", "ComponentStartFailed", "NoFreePort", "IamConfigError"):
        error = getattr(devstack, name)
        assert issubclass(error, devstack.DevstackError)
        assert issubclass(error, AgentkeysError)
        assert error.error.startswith("devstack_")
