"""Launchers for the real components agentkeys develops and tests against (SPEC section 10).

Each launcher is a Trio async context manager that picks free 127.0.0.1 ports,
waits until the component answers, yields a frozen description of it, and
always stops what it started (normal exit, exception, cancellation, Ctrl-C):

    async with start_anvil(hardfork="prague") as anvil: ...
    async with start_seaweedfs(iam=dev_iam_config(...), bucket="b") as s3: ...
    async with start_swtpm() as tpm: ...
    async with start_postgres() as pg: ...       # pg.dsn(), pg.password_file
    async with start_nginx(upstream, authorization="Bearer x") as proxy: ...  # proxy.url

Used by tests (tests/stack_fixtures.py), ``agentkeys dev up`` and benchmarks.
"""

from agentkeys.devstack._binaries import (
    anvil_binary,
    nginx_binary,
    postgres_bin_dir,
    repo_root,
    swtpm_binary,
    weed_binary,
)
from agentkeys.devstack._ports import pick_port, pick_ports, port_is_free
from agentkeys.devstack._process import started_sessions
from agentkeys.devstack.anvil import DEFAULT_CHAIN_ID, Anvil, DevAccount, start_anvil
from agentkeys.devstack.errors import (
    BinaryNotFound,
    ComponentStartFailed,
    DevstackError,
    NoFreePort,
)
from agentkeys.devstack.iam import (
    DEV_CLIENT_ID,
    DEV_PROVIDER_NAME,
    DEV_ROLE_NAME,
    AdminCredentials,
    IamConfig,
    IamConfigError,
    IamPolicy,
    IamRole,
    OidcProvider,
    StsSettings,
    actor_policy_document,
    dev_iam_config,
    s3_identities_document,
)
from agentkeys.devstack.nginx import Nginx, start_nginx
from agentkeys.devstack.postgres import Postgres, start_postgres
from agentkeys.devstack.seaweedfs import SeaweedFS, SeaweedPorts, s3_client, start_seaweedfs
from agentkeys.devstack.swtpm import Swtpm, start_swtpm
from agentkeys.web_identity import ACTOR_TAG, WALLET_TAG

__all__ = [
    "ACTOR_TAG",
    "DEFAULT_CHAIN_ID",
    "DEV_CLIENT_ID",
    "DEV_PROVIDER_NAME",
    "DEV_ROLE_NAME",
    "WALLET_TAG",
    "AdminCredentials",
    "Anvil",
    "BinaryNotFound",
    "ComponentStartFailed",
    "DevAccount",
    "DevstackError",
    "IamConfig",
    "IamConfigError",
    "IamPolicy",
    "IamRole",
    "Nginx",
    "NoFreePort",
    "OidcProvider",
    "Postgres",
    "SeaweedFS",
    "SeaweedPorts",
    "StsSettings",
    "Swtpm",
    "actor_policy_document",
    "anvil_binary",
    "dev_iam_config",
    "nginx_binary",
    "pick_port",
    "pick_ports",
    "port_is_free",
    "postgres_bin_dir",
    "repo_root",
    "s3_client",
    "s3_identities_document",
    "start_anvil",
    "start_nginx",
    "start_postgres",
    "start_seaweedfs",
    "start_swtpm",
    "started_sessions",
    "swtpm_binary",
    "weed_binary",
]
