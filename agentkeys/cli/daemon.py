"""``agentkeys daemon``: run the sidecar daemon (SPEC.md section 8), or write its env file."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import trio

from agentkeys.config import load_config
from agentkeys.daemon.config import DaemonConfig, ListenSection, default_config_path
from agentkeys.daemon.envfile import render_env, write_env_file
from agentkeys.daemon.policy import load_policy
from agentkeys.errors import DOMAIN_ERRORS, AgentkeysError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    daemon = sub.add_parser(
        "daemon",
        help="run the sidecar daemon (attested local proxy that injects credentials)",
        description="Settings come from --config (TOML) and AGENTKEYS_<SECTION>_<OPTION> "
        "variables; the flags below override both. See docs/daemon.md.",
        epilog="example: agentkeys daemon --config daemon.toml --tcp-port 9090",
    )
    daemon.add_argument(
        "--config",
        type=Path,
        default=None,
        help="daemon configuration (TOML; default $XDG_CONFIG_HOME/agentkeys/daemon.toml)",
    )
    daemon.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="Unix socket (default $XDG_RUNTIME_DIR/agentkeys-proxy.sock, env "
        "AGENTKEYS_LISTEN_SOCKET)",
    )
    daemon.add_argument(
        "--tcp-port",
        type=int,
        default=None,
        help="also listen on 127.0.0.1:PORT for container deployments (e.g. 9090)",
    )
    daemon.add_argument("--policy", type=Path, default=None, help="host-local policy (TOML)")
    daemon.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    daemon.set_defaults(func=_run)
    daemon_sub = daemon.add_subparsers(dest="daemon_command", metavar="DAEMON_COMMAND")
    env = daemon_sub.add_parser(
        "env",
        epilog="example: agentkeys daemon --config daemon.toml env",
        help="write the environment file and print its path",
    )
    env.set_defaults(func=_env)


def _config(args: argparse.Namespace) -> DaemonConfig:
    path = args.config
    if path is None and default_config_path().exists():
        path = default_config_path()
    config = load_config(DaemonConfig, path=path)
    listen: ListenSection = config.listen
    if args.socket is not None:
        listen = dataclasses.replace(listen, socket=args.socket.absolute())
    if args.tcp_port is not None:
        listen = dataclasses.replace(listen, tcp_port=args.tcp_port)
    config = dataclasses.replace(config, listen=listen)
    if args.policy is not None:
        config = dataclasses.replace(
            config, policy=dataclasses.replace(config.policy, path=args.policy.absolute())
        )
    return config


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from agentkeys.daemon.run import run_daemon

    try:
        config = _config(args)
        trio.run(run_daemon, config)
    except DOMAIN_ERRORS as exc:
        print(f"agentkeys daemon: {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"agentkeys daemon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _env(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        policy = load_policy(config.policy_path)
        port = config.listen.tcp_port
        base = f"http://{config.listen.tcp_host}:{port}" if port else None
        write_env_file(
            config.env_path,
            render_env(policy, base_url=base, socket_path=config.socket_path),
            group=config.socket_gid,
        )
    except AgentkeysError as exc:
        print(f"agentkeys daemon env: {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"agentkeys daemon env: {exc}", file=sys.stderr)
        return 1
    print(config.env_path)
    return 0
