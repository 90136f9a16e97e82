"""``agentkeys sidecar setup <agent> --agent-user USER``: one command, run once by the operator
(as root), that leaves a sidecar daemon ready to run under its own service user.

SPEC.md section 8 ("the sidecar's own identity"); docs/daemon.md, "Layout"; docs/quickstart.md.
In order (each step reuses what exists, so running it again changes nothing it need not):

1. the agent device: its K10 (``<home>/agents/<agent>/k10.pem``, or ``--agent-key``) is
   registered on chain by the code of ``agent create`` (passkey prompt, wallet sends), or
   reused when it is registered and live;
2. the daemon user ``agentkeys-<agent>`` (system user, no login) and the socket group
   ``agentkeys-<agent>-sock`` whose members are the agent user (and the daemon user, so it
   can give its socket to the group);
3. the daemon's files, all private to the daemon user (0600 in 0700, owned by it): the
   config ``/etc/agentkeys/sidecar/<agent>/daemon.toml`` (identity, K10 path, broker, worker,
   chain; no session: the daemon signs in with its K10), a copy of the deployment record,
   the starter ``policy.toml`` (the agent user's uid and the resolved executables of
   ``--allow-exe``; kept when it exists), the agent's K10 copied to
   ``/var/lib/agentkeys-sidecar/<agent>/k10.pem`` (never overwritten) next to the audit log;
4. the runtime directory ``/run/agentkeys-sidecar/<agent>/`` (0710, socket group) with the
   env file the agent sources (0640: base URLs and placeholders only); the daemon's socket
   appears there 0660 of the socket group; with ``--tcp-port`` the daemon also listens on
   ``127.0.0.1:<port>`` and the env file's base URLs point there, so an unmodified SDK
   reaches it (any local user can connect to that port: the policy, not a file mode,
   refuses the ones it does not name; the caller is attested as on the socket);
5. the systemd unit ``agentkeys-sidecar@<agent>.service`` in ``--unit-dir``, or with
   ``--no-systemd`` the command that starts the daemon by hand.

The daemon reads other uids' ``/proc/<pid>/exe`` and descriptor tables to attest its callers
(E1), which an unprivileged user may not: the unit (and the printed command) give it
``CAP_SYS_PTRACE`` and ``CAP_DAC_READ_SEARCH`` as ambient capabilities, and nothing else.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from agentkeys._files import write_private, write_public
from agentkeys.chain.profiles import ChainSettings, load_chain_profile
from agentkeys.cli._arguments import label_arg, service_arg
from agentkeys.cli._bootstrap import load_session
from agentkeys.cli._errors import CliError, Rejected, UsageError
from agentkeys.cli._operator_session import add_session_options
from agentkeys.cli._operator_state import CHAIN_FILE, agentkeys_home, load_operator_state
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli.agent import AgentDevice, ensure_agent_device
from agentkeys.config import load_config
from agentkeys.daemon.config import SOCKET_NAME
from agentkeys.daemon.envfile import render_env
from agentkeys.daemon.policy import parse_policy
from agentkeys.daemon.presets import PRESETS
from attest._files import read_private_file

__all__ = [
    "STARTER_ROUTES",
    "ResolvedExe",
    "SidecarLayout",
    "daemon_toml",
    "manual_start",
    "register",
    "resolve_exe",
    "sidecar_unit",
    "starter_policy",
    "tcp_port_owner",
]

#: routes the starter policy allows per preset (deny by default: edit policy.toml to widen)
STARTER_ROUTES: dict[str, tuple[str, ...]] = {
    "openai": ("POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models"),
    "anthropic": ("POST /v1/messages",),
    "openrouter": ("POST /api/v1/chat/completions", "GET /api/v1/models"),
    "github": ("GET /user", "GET /repos/**"),
}
MAX_NAME = 32  # user and group names (shadow-utils)
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
CONFIG_ROOT = Path("/etc/agentkeys/sidecar")  # one directory per agent's sidecar
TCP_HOST = "127.0.0.1"  # the loopback listener's address (listen.tcp_host's default)
CAPABILITIES = ("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")  # E1 of another uid's processes


class SetupFailed(CliError):
    """A system step of the setup failed (useradd, groupadd, systemctl, not root)."""


@dataclass(frozen=True)
class SidecarLayout:
    """Names and paths of one agent's sidecar (docs/daemon.md, "Layout")."""

    agent: str
    daemon_user: str
    socket_group: str

    @classmethod
    def for_agent(cls, agent: str, daemon_user: str | None = None) -> SidecarLayout:
        """The default names: ``agentkeys-<agent>`` and ``agentkeys-<agent>-sock``.

        Raises:
            UsageError: a name would be longer than 32 characters.
        """
        user = daemon_user or f"agentkeys-{agent}"
        layout = cls(agent, user, f"{user}-sock")
        if len(layout.socket_group) > MAX_NAME:
            raise UsageError(
                f"the daemon user {user!r} leaves no room for its socket group "
                f"({layout.socket_group!r} exceeds {MAX_NAME} characters); pass a shorter "
                "--daemon-user"
            )
        return layout

    @property
    def config_dir(self) -> Path:
        return CONFIG_ROOT / self.agent

    @property
    def state_dir(self) -> Path:
        return Path("/var/lib/agentkeys-sidecar") / self.agent

    @property
    def runtime_dir(self) -> Path:
        return Path("/run/agentkeys-sidecar") / self.agent

    @property
    def config_path(self) -> Path:
        return self.config_dir / "daemon.toml"

    @property
    def policy_path(self) -> Path:
        return self.config_dir / "policy.toml"

    @property
    def deployment_path(self) -> Path:
        return self.config_dir / "deployment.json"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "k10.pem"

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / SOCKET_NAME

    @property
    def env_path(self) -> Path:
        return self.runtime_dir / "env"

    @property
    def unit_name(self) -> str:
        return f"agentkeys-sidecar@{self.agent}.service"


@dataclass(frozen=True)
class ResolvedExe:
    """An ``--allow-exe`` program: as named, and the real file ``/proc/<pid>/exe`` shows."""

    named: str
    found: Path  # where PATH found it
    path: Path  # that, symbolic links resolved


def resolve_exe(name: str) -> ResolvedExe:
    """``name`` looked up like a shell does (``shutil.which``), symbolic links resolved.

    Raises:
        UsageError: no such executable.
    """
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"--allow-exe {name}: no such executable on PATH")
    return ResolvedExe(name, Path(found), Path(os.path.realpath(found)))


def _toml_str(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def starter_policy(
    layout: SidecarLayout,
    *,
    agent_user: str,
    agent_uid: int,
    exes: list[ResolvedExe],
    services: list[str],
    upstreams: dict[str, str],
) -> str:
    """The first ``policy.toml``: the agent user's uid with each resolved executable (any
    executable of that uid when none is named) → ``services``, with the starter routes."""
    lines = [
        f"# agentkeys sidecar policy for agent {layout.agent} (written by `agentkeys sidecar "
        'setup`; edit freely, it is kept on later runs). docs/daemon.md, "Policy file".',
        "",
    ]
    quoted = ", ".join(_toml_str(s) for s in services)
    choices: list[ResolvedExe | None] = [*exes] or [None]
    for exe in choices:
        lines.append("[[caller]]")
        if exe is None:
            lines += [
                f"name = {_toml_str(agent_user)}",
                f"uid = {agent_uid}",
                "any_exe = true  # no --allow-exe: every program of this uid",
            ]
        else:
            lines += [
                f"# --allow-exe {exe.named}: {exe.found} resolves to {exe.path}",
                f"name = {_toml_str(f'{agent_user}-{exe.path.name}')}",
                f"uid = {agent_uid}",
                f"exe = {_toml_str(exe.path)}",
            ]
        lines += [f"services = [{quoted}]", ""]
    for service in services:
        lines.append(f"[service.{service}]")
        if service in upstreams:
            lines.append(f"upstream = {_toml_str(upstreams[service])}")
        routes = ", ".join(_toml_str(r) for r in STARTER_ROUTES.get(service, ()))
        lines += [f"allow = [{routes}]", ""]
    return "\n".join(lines)


def daemon_toml(
    layout: SidecarLayout,
    *,
    operator_omni: str,
    actor_omni: str,
    broker_url: str,
    worker_url: str,
    rpc_url: str | None,
    confirmations: int,
    legacy_identity_omni: str | None,
    tcp_port: int | None = None,
) -> str:
    """The daemon's configuration: every path explicit, no session (it signs in with K10);
    ``tcp_port``: the loopback listener on ``127.0.0.1:<port>`` too (off when None)."""
    identity = [
        f"operator_omni = {_toml_str(operator_omni)}",
        f"actor_omni = {_toml_str(actor_omni)}",
    ]
    if legacy_identity_omni is not None:
        identity.append(f"legacy_identity_omni = {_toml_str(legacy_identity_omni)}")
    chain = (
        []
        if rpc_url is None
        else [
            "",
            "[chain]",
            f"rpc_url = {_toml_str(rpc_url)}",
            f"deployment = {_toml_str(layout.deployment_path)}",
            f"confirmations = {confirmations}",
        ]
    )
    lines = [
        f"# agentkeys sidecar daemon for agent {layout.agent}, run as {layout.daemon_user}",
        "# (written by `agentkeys sidecar setup`; rewritten by it). docs/daemon.md.",
        "",
        "[identity]",
        *identity,
        "",
        "[device]",
        'backend = "software"',
        f"key_path = {_toml_str(layout.key_path)}",
        "",
        "[broker]",
        f"url = {_toml_str(broker_url)}",
        "",
        "[credentials]",
        f"worker_url = {_toml_str(worker_url)}",
        *chain,
        "",
        "[listen]",
        f"socket = {_toml_str(layout.socket_path)}",
        f"socket_group = {_toml_str(layout.socket_group)}",
        *(
            []
            if tcp_port is None
            else [f"tcp_host = {_toml_str(TCP_HOST)}", f"tcp_port = {tcp_port}"]
        ),
        "",
        "[policy]",
        f"path = {_toml_str(layout.policy_path)}",
        "",
        "[audit]",
        f"path = {_toml_str(layout.audit_path)}",
        "",
        "[env]",
        f"path = {_toml_str(layout.env_path)}",
    ]
    return "\n".join(lines) + "\n"


def tcp_port_owner(port: int, agent: str, *, root: Path = CONFIG_ROOT) -> str | None:
    """The other agent whose sidecar config (``<root>/<other>/daemon.toml``) already has
    ``listen.tcp_port = port``, or None. A config that cannot be read or parsed claims no
    port (the daemon would refuse it anyway)."""
    for config in sorted(root.glob("*/daemon.toml")):
        other = config.parent.name
        if other == agent:
            continue
        try:
            listen = tomllib.loads(config.read_text()).get("listen", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(listen, dict) and listen.get("tcp_port") == port:
            return other
    return None


def _port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1..65535)")
    return port


_SANDBOX = """\
# --- sandboxing ------------------------------------------------------------------------
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=no
DeviceAllow=/dev/tpmrm0 rw
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
KeyringMode=private
LimitCORE=0
"""


def sidecar_unit(layout: SidecarLayout, agentkeys: str) -> str:
    """The system unit running ``layout``'s daemon as its user (``%i`` names give the
    template deploy/systemd/agentkeys-sidecar@.service, which a test keeps equal)."""
    caps = " ".join(CAPABILITIES)
    return f"""\
# agentkeys sidecar daemon for agent {layout.agent}, as its own user (SPEC.md section 8).
# Written by `agentkeys sidecar setup {layout.agent}` (docs/quickstart.md, docs/daemon.md).
#
# Daemon user:  {layout.daemon_user}: config, K10, audit log, 0600 in 0700, only it reads them
# Agent user:   members of {layout.socket_group} reach the socket and read the env file
# Config:       {layout.config_path}
# State:        {layout.state_dir}/ (K10, audit log)
# Socket, env:  {layout.runtime_dir}/ (0710; socket 0660, env 0640 of that group)
# Capabilities: {caps}, to attest callers of other uids
#               through /proc (E1); nothing else.

[Unit]
Description=agentkeys sidecar daemon for agent {layout.agent}
Documentation=file:///usr/share/doc/agentkeys/daemon.md
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={layout.daemon_user}
Group={layout.daemon_user}
SupplementaryGroups={layout.socket_group}
ExecStart={agentkeys} daemon --config {layout.config_path}
RuntimeDirectory=agentkeys-sidecar/{layout.agent}
RuntimeDirectoryMode=0710
StateDirectory=agentkeys-sidecar/{layout.agent}
StateDirectoryMode=0700
Restart=on-failure
RestartSec=2s
# graceful stop: in-flight requests and streams get listen.graceful_timeout (30 s)
KillSignal=SIGTERM
TimeoutStopSec=45s
UMask=0077
AmbientCapabilities={caps}
CapabilityBoundingSet={caps}

{_SANDBOX}
[Install]
WantedBy=multi-user.target
"""


def manual_start(layout: SidecarLayout, agentkeys: str) -> str:
    """The shell command that starts the daemon by hand as its user (what the unit does)."""
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in CAPABILITIES)
    user = layout.daemon_user
    words = [
        "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
        "env", "-i", f"HOME={layout.state_dir}", "PATH=/usr/local/bin:/usr/bin:/bin",
        *shlex.split(agentkeys), "daemon", "--config", str(layout.config_path),
    ]  # fmt: skip
    return shlex.join(words)


def _agentkeys_command() -> str:
    found = shutil.which("agentkeys")
    if found is not None:
        return os.path.abspath(found)
    return f"{shlex.quote(sys.executable)} -m agentkeys.cli"


# ---------------------------------------------------------------------------- the command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sidecar setup``."""
    sidecar = sub.add_parser(
        "sidecar",
        allow_abbrev=False,
        help="set up an agent's sidecar daemon under its own user (run as root)",
    )
    sidecar_sub = sidecar.add_subparsers(
        dest="sidecar_command", metavar="SIDECAR_COMMAND", required=True
    )
    setup = sidecar_sub.add_parser(
        "setup",
        allow_abbrev=False,
        help="agent device, daemon user, config, policy, env file and systemd unit",
        description="Run once, as root: registers (or reuses) the agent's device, creates the "
        "daemon's user and the socket group of the agent user, writes the daemon's config, "
        "starter policy and K10 where only the daemon user reads them, the env file the "
        "agent sources, and the systemd unit. Running it again reuses what exists.",
        epilog="example: agentkeys sidecar setup coder --agent-user alice --allow-exe python3 "
        "--wallet-key-file wallet.key",
    )
    setup.add_argument("agent", type=label_arg, help="the agent's label, e.g. coder")
    where = setup.add_mutually_exclusive_group(required=True)
    where.add_argument("--agent-user", metavar="USER", help="the user the agent runs as")
    where.add_argument(
        "--dev-stack",
        action="store_true",
        help="development: the running `dev up` serves the agent with its own daemon, for "
        "an agent of this user (no users, files or unit; $AGENTKEYS_DEV_STATE_DIR)",
    )
    setup.add_argument(
        "--allow-exe",
        action="append",
        default=[],
        metavar="PROG",
        help="a program the agent runs (looked up on PATH, symbolic links resolved); "
        "repeatable; none: any program of the agent user",
    )
    setup.add_argument(
        "--service",
        action="append",
        type=service_arg,
        metavar="NAME",
        help=f"a preset service to allow ({', '.join(PRESETS)}); repeatable; default openai",
    )
    setup.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="another upstream for a service (e.g. the local stack's stand-in API)",
    )
    setup.add_argument(
        "--tcp-port",
        type=_port_arg,
        metavar="PORT",
        help=f"also listen on {TCP_HOST}:PORT and point the env file's base URLs there, so an "
        "unmodified SDK reaches the daemon (callers still attested; other local users are "
        "refused by the policy); default: the Unix socket only",
    )
    setup.add_argument(
        "--daemon-user", metavar="NAME", help="the daemon's user (default agentkeys-<agent>)"
    )
    setup.add_argument(
        "--agent-key",
        type=Path,
        metavar="FILE",
        help="the agent's K10 key file (default <home>/agents/<agent>/k10.pem)",
    )
    setup.add_argument(
        "--broker-url", help="the broker (default: the one of the operator's session)"
    )
    setup.add_argument(
        "--worker-url",
        default=os.environ.get("AGENTKEYS_WORKER_URL")
        or os.environ.get("AGENTKEYS_DEV_WORKER_URL"),
        help="the worker (default $AGENTKEYS_WORKER_URL / $AGENTKEYS_DEV_WORKER_URL)",
    )
    setup.add_argument(
        "--unit-dir",
        type=Path,
        default=DEFAULT_UNIT_DIR,
        metavar="DIR",
        help=f"where the systemd unit goes (default {DEFAULT_UNIT_DIR})",
    )
    setup.add_argument(
        "--no-systemd",
        action="store_true",
        help="install no unit; print the command that starts the daemon by hand",
    )
    add_session_options(setup)
    add_output_options(setup)
    setup.set_defaults(func=_setup)


def _services(args: argparse.Namespace) -> list[str]:
    """The ``--service`` presets (default openai)."""
    services: list[str] = args.service or ["openai"]
    unknown = [s for s in services if s not in PRESETS]
    if unknown:
        raise UsageError(
            f"--service {unknown[0]} is not a preset ({', '.join(PRESETS)}); "
            "add other services to policy.toml by hand"
        )
    return services


def _upstreams(values: list[str], services: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or name not in services or not url.startswith(("http://", "https://")):
            raise UsageError(f"--upstream {value}: expected SERVICE=URL for a --service")
        out[name] = url
    return out


async def _system(*argv: str) -> None:
    done = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise SetupFailed(f"{argv[0]} exited {done.returncode}: {tail[0]}")


async def _ensure_users(
    layout: SidecarLayout, agent_user: pwd.struct_passwd
) -> tuple[pwd.struct_passwd, grp.struct_group, list[str]]:
    """The daemon user and the socket group (created when missing); what was created."""
    made: list[str] = []
    try:
        daemon = pwd.getpwnam(layout.daemon_user)
    except KeyError:
        shell = shutil.which("nologin", path="/usr/sbin:/sbin") or "/usr/sbin/nologin"
        await _system(
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", str(layout.state_dir), "--shell", shell, layout.daemon_user,
        )  # fmt: skip
        daemon = pwd.getpwnam(layout.daemon_user)
        made.append(f"user {layout.daemon_user}")
    if daemon.pw_uid == 0 or daemon.pw_uid == agent_user.pw_uid:
        raise UsageError(f"the daemon user {layout.daemon_user} must be neither root nor the agent")
    try:
        group = grp.getgrnam(layout.socket_group)
    except KeyError:
        await _system("groupadd", "--system", layout.socket_group)
        group = grp.getgrnam(layout.socket_group)
        made.append(f"group {layout.socket_group}")
    members = {agent_user.pw_name, layout.daemon_user}
    others = set(group.gr_mem) - members
    if others:
        raise Rejected(
            f"group {layout.socket_group} has other members ({', '.join(sorted(others))}); "
            "only the agent user may reach the socket"
        )
    for user in sorted(members - set(group.gr_mem)):
        await _system("usermod", "--append", "--groups", layout.socket_group, user)
        made.append(f"{user} in {layout.socket_group}")
    return daemon, grp.getgrnam(layout.socket_group), made


def _public_parents(*dirs: Path) -> None:
    """The shared parents (``/etc/agentkeys/sidecar`` …) as 0755 root directories."""
    for directory in dirs:
        missing = [p for p in (directory, *directory.parents) if not p.exists()]
        for path in reversed(missing):
            path.mkdir(mode=0o755)
            os.chmod(path, 0o755)  # noqa: S103 - a shared parent: others traverse, no more


def _place_key(source: Path, layout: SidecarLayout, owner: tuple[int, int]) -> str:
    """Copy the agent's K10 to the daemon's state directory; never overwrite another."""
    key = read_private_file(source)
    if layout.key_path.exists():
        if layout.key_path.read_bytes() != key:
            raise Rejected(
                f"{layout.key_path} holds another K10 than {source}; it is never overwritten "
                "(remove it only if that device is revoked)"
            )
        return "kept"
    write_private(layout.key_path, key, exclusive=True, owner=owner)
    return "placed"


@dataclass(frozen=True)
class _Plan:
    """What the command line asked for, checked before anything is changed."""

    layout: SidecarLayout
    agent_user: pwd.struct_passwd
    services: list[str]
    upstreams: dict[str, str]
    exes: list[ResolvedExe]
    operator_omni: str
    legacy_identity_omni: str | None
    broker_url: str
    worker_url: str
    deployment: Path | None
    rpc_url: str
    confirmations: int
    tcp_port: int | None

    @property
    def tcp_url(self) -> str | None:
        return None if self.tcp_port is None else f"http://{TCP_HOST}:{self.tcp_port}"


def _plan(args: argparse.Namespace) -> _Plan:
    if os.geteuid() != 0:
        raise SetupFailed("sidecar setup creates users and system files: run it as root")
    layout = SidecarLayout.for_agent(args.agent, args.daemon_user)
    try:
        agent_user = pwd.getpwnam(args.agent_user)
    except KeyError:
        raise UsageError(f"--agent-user {args.agent_user}: no such user") from None
    if agent_user.pw_uid == 0:
        raise UsageError("--agent-user must not be root")
    services = _services(args)
    if not args.worker_url:
        raise UsageError("no worker URL: pass --worker-url (or source dev up's env.sh)")
    upstreams = _upstreams(args.upstream, services)
    exes = [resolve_exe(name) for name in args.allow_exe]
    if args.tcp_port is not None:
        other = tcp_port_owner(args.tcp_port, layout.agent)
        if other is not None:
            raise UsageError(
                f"--tcp-port {args.tcp_port}: the sidecar of agent {other} already listens "
                f"there ({CONFIG_ROOT / other / 'daemon.toml'}); pick another port"
            )
    home = agentkeys_home(args.home)
    state = load_operator_state(home)
    legacy = state.legacy_identity_omni
    chain_file = home / CHAIN_FILE
    chain_path = chain_file if chain_file.exists() else None
    profile = load_chain_profile(path=chain_path)
    return _Plan(
        layout=layout,
        agent_user=agent_user,
        services=services,
        upstreams=upstreams,
        exes=exes,
        operator_omni=state.operator_omni,
        legacy_identity_omni=legacy if isinstance(legacy, str) else None,
        broker_url=args.broker_url or load_session(home, allow_expired=True).broker_url,
        worker_url=args.worker_url,
        deployment=load_config(ChainSettings, path=chain_path).chain.deployment,
        rpc_url=profile.rpc_url,
        confirmations=profile.confirmations,
        tcp_port=args.tcp_port,
    )


def _install(
    args: argparse.Namespace,
    plan: _Plan,
    device: AgentDevice,
    daemon: pwd.struct_passwd,
    group: grp.struct_group,
) -> tuple[dict[str, object], list[str]]:
    """Write the daemon's files, the env file and the unit; the answer to print."""
    layout = plan.layout
    owner = (daemon.pw_uid, daemon.pw_gid)
    _public_parents(layout.config_dir.parent, layout.state_dir.parent, layout.runtime_dir.parent)
    key_action = _place_key(device.key_file, layout, owner)
    if plan.deployment is not None:
        write_private(layout.deployment_path, plan.deployment.read_bytes(), owner=owner)
    config = daemon_toml(
        layout,
        operator_omni=plan.operator_omni,
        actor_omni=device.agent_omni,
        broker_url=plan.broker_url,
        worker_url=plan.worker_url,
        rpc_url=plan.rpc_url if plan.deployment is not None else None,
        confirmations=plan.confirmations,
        legacy_identity_omni=plan.legacy_identity_omni,
        tcp_port=plan.tcp_port,
    )
    write_private(layout.config_path, config, owner=owner)
    policy_action = "kept"
    if not layout.policy_path.exists():
        text = starter_policy(
            layout,
            agent_user=plan.agent_user.pw_name,
            agent_uid=plan.agent_user.pw_uid,
            exes=plan.exes,
            services=plan.services,
            upstreams=plan.upstreams,
        )
        parse_policy(text.encode())  # what the daemon will load, checked before writing
        write_private(layout.policy_path, text, owner=owner)
        policy_action = "written"
    policy = parse_policy(layout.policy_path.read_bytes())
    env_text = render_env(policy, base_url=plan.tcp_url, socket_path=layout.socket_path)
    write_private(layout.env_path, env_text, owner=owner, group=group.gr_gid)
    agentkeys = _agentkeys_command()
    start = manual_start(layout, agentkeys)
    unit: str | None = None
    if not args.no_systemd:
        unit_path = args.unit_dir / layout.unit_name
        write_public(unit_path, sidecar_unit(layout, agentkeys))
        unit = str(unit_path)
        start = f"systemctl daemon-reload && systemctl enable --now {layout.unit_name}"
    answer: dict[str, object] = {
        "agent": layout.agent,
        "agent_omni": device.agent_omni,
        "device_key_hash": device.device_key_hash,
        "registered_now": device.tx is not None,
        "tx_hash": None if device.tx is None else device.tx[0],
        "daemon_user": layout.daemon_user,
        "socket_group": layout.socket_group,
        "agent_user": plan.agent_user.pw_name,
        "config": str(layout.config_path),
        "policy": str(layout.policy_path),
        "policy_action": policy_action,
        "key_file": str(layout.key_path),
        "key_action": key_action,
        "socket": str(layout.socket_path),
        "tcp_url": plan.tcp_url,
        "env_file": str(layout.env_path),
        "unit": unit,
        "start": start,
        "allowed_exe": {e.named: str(e.path) for e in plan.exes},
    }
    lines = [
        f"sidecar for agent {layout.agent} set up"
        + (" (device registered now)" if device.tx is not None else ""),
        f"  agent_omni    {device.agent_omni}",
        f"  daemon user   {layout.daemon_user}  (config {layout.config_path})",
        f"  agent user    {plan.agent_user.pw_name}  (group {layout.socket_group})",
        f"  K10           {layout.key_path} ({key_action})",
        f"  policy        {layout.policy_path} ({policy_action})",
        *(f"  allow exe     {e.named} → {e.path}" for e in plan.exes),
        *([] if plan.tcp_url is None else _tcp_lines(plan.tcp_url)),
        *([f"  unit          {unit}"] if unit is not None else []),
        f"start the daemon: {start}",
        f"in the agent's shell: source {layout.env_path}",
    ]
    return answer, lines


def _tcp_lines(url: str) -> list[str]:
    return [
        f"  loopback TCP  {url}  (the env file's base URLs: an unmodified SDK reaches it)",
        "                every local user can connect to it: the caller is still attested",
        "                (uid and exe via sock_diag + /proc) and the policy, deny by default,",
        "                refuses the ones it does not name (no file mode guards a TCP port)",
    ]


async def _dev_stack(args: argparse.Namespace) -> None:
    """``--dev-stack``: the agent's K10 and a starter policy for this uid, handed to the
    running ``dev up`` (``<state>/daemon/setup.json``), which starts its daemon with them."""
    # the development stack's own format (and only for this development mode)
    from agentkeys.devstack.up import DAEMON_SETUP_FILE, DevDaemonSetup, read_status

    if args.tcp_port is not None:
        raise UsageError("--tcp-port is for a sidecar under its own user (--agent-user)")
    state_dir = os.environ.get("AGENTKEYS_DEV_STATE_DIR")
    if not state_dir:
        raise UsageError("--dev-stack: no dev stack (source .agentkeys-state/env.sh first)")
    layout = SidecarLayout.for_agent(args.agent, args.daemon_user)
    services = _services(args)
    home = agentkeys_home(args.home)
    state = load_operator_state(home)
    me = pwd.getpwuid(os.getuid())
    policy = starter_policy(
        layout,
        agent_user=me.pw_name,
        agent_uid=me.pw_uid,
        exes=[resolve_exe(name) for name in args.allow_exe],
        services=services,
        upstreams=_upstreams(args.upstream, services),
    )
    parse_policy(policy.encode())
    device = await ensure_agent_device(args, layout.agent, args.agent_key, reuse=True)
    setup = DevDaemonSetup(
        operator_omni=state.operator_omni,
        actor_omni=device.agent_omni,
        key_path=device.key_file.absolute(),
        policy=policy,
    )
    path = Path(state_dir) / "daemon" / DAEMON_SETUP_FILE
    write_private(path, json.dumps(setup.to_json(), indent=2))
    daemon: dict[str, str] = {}
    found: dict[str, Any] = {}
    with trio.move_on_after(30):  # dev up polls for the file; its status says when it runs
        while daemon.get("actor") != device.agent_omni:
            await trio.sleep(0.2)
            found = read_status(Path(state_dir)) or {}
            daemon = found.get("components", {}).get("daemon", {})
    env_file = found.get("env", {}).get("AGENTKEYS_DEV_AGENT_ENV")
    emit(
        args,
        {
            "agent": layout.agent,
            "agent_omni": device.agent_omni,
            "device_key_hash": device.device_key_hash,
            "registered_now": device.tx is not None,
            "setup": str(path),
            "daemon": daemon,
            "env_file": env_file,
        },
        [
            f"sidecar for agent {layout.agent} handed to the dev stack ({path})",
            f"  agent_omni    {device.agent_omni}",
            f"  daemon        {daemon.get('state', 'not started: is `agentkeys dev up` running?')}",
            *([f"in the agent's shell: source {env_file}"] if env_file else []),
        ],
    )


def _setup(args: argparse.Namespace) -> int:
    async def command() -> None:
        if args.dev_stack:
            await _dev_stack(args)
            return
        plan = _plan(args)
        device = await ensure_agent_device(args, plan.layout.agent, args.agent_key, reuse=True)
        daemon, group, made = await _ensure_users(plan.layout, plan.agent_user)
        answer, lines = _install(args, plan, device, daemon, group)
        answer["created"] = made
        emit(args, answer, [*lines[:1], *(f"  created       {m}" for m in made), *lines[1:]])

    return run(args, command)
