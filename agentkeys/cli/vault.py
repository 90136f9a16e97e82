"""``agentkeys store|read|list|teardown`` (SPEC.md sections 4, 7 and 9).

Two backends (``--credential-backend``):

* ``s3`` (deprecated; the default for an operator with v1 data, :func:`default_backend`):
  the legacy client-side backend
  (:class:`agentkeys.legacy_s3.LegacyS3Backend`): S3 credentials from the broker's
  ``/v1/mint-oidc-jwt`` exchanged at STS (:class:`BrokerOidcCredentials`), v1 KEKs from the
  signer, envelopes written as ``--envelope-version v1`` (0x01 at ``bots/<wallet>/…``) or
  ``v2`` (0x02 at ``bots/<actor_omni>/…``). It prints a deprecation warning. Once the
  operator has a master on chain the broker mints only with a fresh assertion by that
  master's passkey: ``--dev-authenticator`` supplies the development one of operator.json.
* ``sidecar``: cap mint at the broker with this master device's K10, then the worker
  (:class:`agentkeys.cli._sidecar.SidecarVault`). ``--agent LABEL`` acts on an agent's vault
  under its chain scope. A read of a legacy credential names the ``legacy_identity_omni``
  recorded by ``device register --upgrade-from-v1``; the worker copies it to 0x04.

The credential value for ``store`` never comes from argv: ``--from-file FILE`` (0600), the
first line of stdin (``--stdin``), or a prompt. ``read`` prints the value only with
``--show-secret``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from agentkeys.cli._bootstrap import load_session
from agentkeys.cli._errors import Rejected, UsageError
from agentkeys.cli._names import known_names, remember_names
from agentkeys.cli._operator_session import _dev_passkey, open_session
from agentkeys.cli._operator_state import (
    STATE_FILE,
    OperatorState,
    agentkeys_home,
    load_operator_state,
)
from agentkeys.cli._output import add_output_options, emit, run
from agentkeys.cli._secrets import read_secret
from agentkeys.cli._sidecar import LIST_SERVICE, SidecarVault
from agentkeys.clients import BrokerClient, SignerClient
from agentkeys.legacy_s3 import (
    DEPRECATION_MESSAGE,
    Assert,
    BrokerOidcCredentials,
    EnvelopeChoice,
    LegacyS3Backend,
)
from agentkeys.omni import actor_omni_for_wallet, agent_omni, identity_omni, normalize_service
from agentkeys.pki import Role
from agentkeys.service import mtls_client
from agentkeys.signer import StsExchanger
from attest.device_key import open_device_key

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store``, ``read``, ``list`` and ``teardown``."""
    store = sub.add_parser(
        "store",
        epilog="example: agentkeys store openai --from-file openai.key",
        allow_abbrev=False,
        help="store a credential",
    )
    store.add_argument("service", help="service name, e.g. openai")
    source = store.add_mutually_exclusive_group()
    source.add_argument("--from-file", type=Path, metavar="FILE", help="file (0600) with it")
    source.add_argument("--stdin", action="store_true", help="read it from the first stdin line")
    store.set_defaults(func=_store)
    read = sub.add_parser(
        "read",
        epilog="example: agentkeys read openai --show-secret",
        allow_abbrev=False,
        help="read a credential",
    )
    read.add_argument("service")
    read.add_argument("--show-secret", action="store_true", help="print the credential value")
    read.set_defaults(func=_read)
    listing = sub.add_parser(
        "list",
        epilog="example: agentkeys list --agent research-bot",
        allow_abbrev=False,
        help="list stored services",
    )
    listing.set_defaults(func=_list)
    teardown = sub.add_parser(
        "teardown",
        allow_abbrev=False,
        help="delete one credential (or every one with --all)",
        description="Delete exactly SERVICE's credential, or with --all every listed one.",
        epilog="example: agentkeys teardown github --credential-backend sidecar --agent coder",
    )
    which = teardown.add_mutually_exclusive_group(required=True)
    which.add_argument("service", nargs="?", help="the service whose credential goes")
    which.add_argument(
        "--all", action="store_true", help="delete every credential `list` shows, one by one"
    )
    teardown.set_defaults(func=_teardown)
    for parser in (store, read, listing, teardown):
        _add_backend_options(parser)
        add_output_options(parser)


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--home", type=Path, metavar="DIR", help="agentkeys home")
    parser.add_argument(
        "--credential-backend",
        choices=("s3", "sidecar"),
        default=None,
        help="sidecar: broker + worker (the default for an operator set up by `init`); s3: "
        "the deprecated direct-to-S3 backend (the default for an operator with v1 data)",
    )
    parser.add_argument(
        "--envelope-version",
        choices=("v1", "v2"),
        default="v1",
        help="s3 backend: write 0x01 at the wallet key (v1) or 0x02 at the actor key (v2)",
    )
    parser.add_argument("--agent", metavar="LABEL", help="sidecar: act on this agent's vault")
    parser.add_argument("--broker-url", help="the broker (default: the one of the session)")
    parser.add_argument(
        "--worker-url",
        default=env("AGENTKEYS_WORKER_URL") or env("AGENTKEYS_DEV_WORKER_URL"),
        help="sidecar: the worker (default $AGENTKEYS_WORKER_URL / $AGENTKEYS_DEV_WORKER_URL)",
    )
    legacy = parser.add_argument_group("s3 backend (legacy; defaults from `dev up`'s env.sh)")
    legacy.add_argument("--legacy-email", help="the email identity behind the v1 wallet")
    legacy.add_argument("--s3-endpoint", default=env("AGENTKEYS_DEV_S3_ENDPOINT"))
    legacy.add_argument("--bucket", default=env("AGENTKEYS_BUCKET") or env("AGENTKEYS_DEV_BUCKET"))
    legacy.add_argument("--role-arn", default=env("AGENTKEYS_DEV_ROLE_ARN"))
    legacy.add_argument("--signer-url", default=env("AGENTKEYS_DEV_SIGNER_URL"))
    legacy.add_argument(
        "--pki-dir",
        type=Path,
        default=env("AGENTKEYS_DEV_PKI_DIR"),
        help="CA and client certificate for the signer (development PKI)",
    )
    legacy.add_argument(
        "--dev-authenticator",
        action="store_true",
        help="assert with the development software passkey of operator.json (the broker "
        "wants the master passkey once the operator has a master on chain)",
    )


class _Backend:
    """What the four commands need, whichever backend serves them."""

    async def store(self, service: str, secret: bytes) -> dict[str, Any]:
        raise NotImplementedError

    async def read(self, service: str) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    async def list(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def teardown(self, service: str) -> dict[str, Any]:
        raise NotImplementedError


class _Sidecar(_Backend):
    def __init__(
        self, vault: SidecarVault, legacy_identity: str | None, list_service: str = LIST_SERVICE
    ) -> None:
        self.vault = vault
        self.legacy = legacy_identity
        self.list_service = list_service

    async def store(self, service: str, secret: bytes) -> dict[str, Any]:
        return await self.vault.store(service, secret)

    async def read(self, service: str) -> tuple[bytes, dict[str, Any]]:
        return await self.vault.fetch(service, legacy_identity_omni=self.legacy)

    async def list(self) -> list[dict[str, Any]]:
        return await self.vault.list(self.list_service)

    async def teardown(self, service: str) -> dict[str, Any]:
        return await self.vault.teardown(service)


class _S3(_Backend):
    def __init__(self, backend: LegacyS3Backend) -> None:
        self.backend = backend

    async def store(self, service: str, secret: bytes) -> dict[str, Any]:
        key = await self.backend.store(service, secret)
        version = 1 if self.backend.envelope_version is EnvelopeChoice.V1 else 2
        return {"service": normalize_service(service), "key": key, "envelope_version": version}

    async def read(self, service: str) -> tuple[bytes, dict[str, Any]]:
        secret = await self.backend.fetch(service)
        return secret, {"service": normalize_service(service), "key": self.backend.key_for(service)}

    async def list(self) -> list[dict[str, Any]]:
        return [{"service": s, "source": "s3"} for s in await self.backend.list()]

    async def teardown(self, service: str) -> dict[str, Any]:
        raise UsageError(
            "the s3 backend cannot tear down; use --credential-backend sidecar (master only)"
        )


def default_backend(state: OperatorState | None) -> str:
    """``s3`` for an operator with v1 data (no operator.json, or one upgraded with
    ``device register --upgrade-from-v1``: SPEC.md section 9 steps 7-8 keep it), else
    ``sidecar`` (an operator set up fresh by ``init``)."""
    if state is None or state.legacy_identity_omni is not None:
        return "s3"
    return "sidecar"


@asynccontextmanager
async def _backend(args: argparse.Namespace) -> AsyncIterator[_Backend]:
    home = agentkeys_home(args.home)
    session = load_session(home)
    broker_url = args.broker_url or session.broker_url
    has_state = (home / STATE_FILE).exists()
    state = load_operator_state(home) if has_state or args.credential_backend == "sidecar" else None
    if args.credential_backend is None:
        args.credential_backend = default_backend(state)
    legacy_identity: str | None = None
    if args.legacy_email is not None:
        legacy_identity = identity_omni("email", args.legacy_email)
    elif state is not None:
        legacy_identity = state.legacy_identity_omni
    async with httpx.AsyncClient(base_url=broker_url, trust_env=False, timeout=30) as broker:
        if args.credential_backend == "sidecar":
            assert state is not None
            if not args.worker_url:
                raise UsageError("no worker: pass --worker-url (or source `dev up`'s env.sh)")
            actor = state.operator_omni
            if args.agent is not None:
                actor = agent_omni(state.operator_omni, args.agent)
            key = await open_device_key(
                state.k10_backend, key_path=state.k10_key_file, tcti=state.k10_tcti, create=False
            )
            try:
                async with httpx.AsyncClient(
                    base_url=args.worker_url, trust_env=False, timeout=30
                ) as worker:
                    vault = SidecarVault(
                        broker=broker,
                        worker=worker,
                        device_key=key,
                        session=session.token,
                        operator_omni=state.operator_omni,
                        actor_omni=actor,
                    )
                    list_service = LIST_SERVICE
                    lists = args.command == "list" or getattr(args, "all", False)
                    if args.agent is not None and lists:
                        list_service = await _a_scope_service(args, actor)
                    yield _Sidecar(vault, legacy_identity, list_service)
            finally:
                await key.aclose()
            return
        print(f"agentkeys: warning: {DEPRECATION_MESSAGE}", file=sys.stderr, flush=True)
        missing = [
            name
            for name in ("s3_endpoint", "bucket", "role_arn", "signer_url", "pki_dir")
            if not getattr(args, name)
        ]
        if missing:
            flags = ", ".join("--" + m.replace("_", "-") for m in missing)
            raise UsageError(f"the s3 backend needs {flags} (or source `dev up`'s env.sh)")
        if legacy_identity is None:
            raise UsageError("the s3 backend needs the identity behind the wallet: --legacy-email")
        pki: Path = args.pki_dir
        device_key_hash: str | None = None
        assert_: Assert | None = None
        if state is not None and args.dev_authenticator:
            passkey = _dev_passkey(state.passkey)
            device_key_hash = state.device_key_hash

            async def assert_(challenge: bytes) -> dict[str, Any]:
                return dict(passkey.get(challenge).to_json())

        async with mtls_client(
            base_url=args.signer_url,
            ca=pki / "ca.crt",
            cert=pki / f"{Role.WORKER.value}.crt",
            key=pki / f"{Role.WORKER.value}.key",
        ) as signer_http:
            backend = LegacyS3Backend(
                identity_omni=legacy_identity,
                wallet=session.wallet,
                actor_omni=actor_omni_for_wallet(session.wallet),
                source=BrokerOidcCredentials(
                    BrokerClient(broker),
                    session.token,
                    StsExchanger(
                        endpoint=args.s3_endpoint,
                        role_arn=args.role_arn,
                        region="us-east-1",
                        duration_seconds=900,
                    ),
                    device_key_hash=device_key_hash,
                    assert_=assert_,
                ),
                signer=SignerClient(signer_http),
                bucket=args.bucket,
                endpoint=args.s3_endpoint,
                envelope_version=EnvelopeChoice(args.envelope_version),
                warn=lambda _message: None,  # printed above, once
            )
            yield _S3(backend)


async def _a_scope_service(args: argparse.Namespace, actor: str) -> str:
    """A service name of the agent's chain scope (a list cap must name one).

    Raises:
        Rejected: the agent has no scope, or none of its services is in the local name table.
    """
    async with open_session(args, signing=False) as session:
        entry = await session.chain.get_scope(session.state.operator_omni, actor)
        names = known_names(session.home)
    if entry is None or not entry.services:
        raise Rejected(
            f"agent {args.agent} has no scope, so its vault is empty; grant one with "
            f"`agentkeys scope add {args.agent} <service…>`"
        )
    for digest in sorted(entry.services):
        if digest in names:
            return names[digest]
    raise Rejected(
        f"none of {args.agent}'s scope services is named in this home's services.json; run "
        f"`agentkeys scope add {args.agent} <service>` for one of them from this home"
    )


def _store(args: argparse.Namespace) -> int:
    async def command() -> None:
        secret = read_secret(
            path=args.from_file,
            use_stdin=args.stdin,
            prompt=f"Credential for {args.service}: ",
            what="credential",
        )
        async with _backend(args) as backend:
            answer = await backend.store(args.service, secret)
        remember_names(agentkeys_home(args.home), [args.service])
        emit(args, answer, [f"stored {args.service} at {answer.get('key')}"])

    return run(args, command)


def _read(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with _backend(args) as backend:
            secret, answer = await backend.read(args.service)
        data = dict(answer)
        if args.show_secret:
            data["secret"] = secret.decode("utf-8", errors="replace")
            # the value alone on stdout, for `$(agentkeys read … --show-secret)`
            emit(args, data, [data["secret"]])
            return
        lines = [f"{args.service}: {len(secret)} bytes at {answer.get('key')}"]
        if answer.get("source"):
            migration = json.dumps(answer.get("migration"), sort_keys=True)
            lines.append(f"  source {answer['source']}, migration {migration}")
        lines.append("  (pass --show-secret to print the value)")
        emit(args, data, lines)

    return run(args, command)


def _list(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with _backend(args) as backend:
            services = await backend.list()
        lines = [f"{s.get('service')}  ({s.get('source')})" for s in services]
        emit(args, {"services": services}, lines or ["no credentials stored"])

    return run(args, command)


def _deleted_line(answer: dict[str, Any]) -> str:
    deleted = answer.get("deleted")
    counts = deleted if isinstance(deleted, dict) else {}
    objects = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()) if n)
    return f"deleted {answer.get('service')} ({objects or 'nothing stored'})"


def _teardown(args: argparse.Namespace) -> int:
    async def command() -> None:
        async with _backend(args) as backend:
            if not args.all:
                answer = await backend.teardown(args.service)
                emit(args, answer, [_deleted_line(answer)])
                return
            services = sorted({str(s.get("service")) for s in await backend.list()})
            answers = [await backend.teardown(service) for service in services]
        lines = [_deleted_line(a) for a in answers] or ["no credentials stored"]
        emit(args, {"torn_down": answers}, lines)

    return run(args, command)
