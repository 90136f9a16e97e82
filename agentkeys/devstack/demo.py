"""``agentkeys dev demo``: the whole stack, one scripted scenario a new user can read.

docs/demo.md walks through it. Everything is real: ``dev up`` runs in-process (anvil and the
contracts, SeaweedFS with IAM/STS, the signer over mutual TLS, the SMTP sink, the broker, the
worker, then the daemon), the chain mutations go through the ``agentkeys`` CLI as separate
processes, and the agent is a separate process using the official OpenAI SDK. The only
pieces that are not agentkeys components are development tools: a local OpenAI-compatible
upstream (:class:`DemoUpstream`, standing in for api.openai.com) and the development
passkey (``--dev-authenticator``, a software authenticator, never used silently).

Steps: dev up → master bootstrap (email link, passkey, SIWE, master device on chain) →
agent creation → scope grant (K10 + K11) → store a key → the agent's SDK call through the
sidecar, plain and streamed → a denied call → fail-closed while the broker is down (the
daemon's window is shortened to a few seconds for the demo; production default 60 s) and
recovery → migration of a legacy v1 credential (legacy s3 backend writes 0x01 → ``device
register --upgrade-from-v1`` → the sidecar backend reads it, migrating lazily → the eager
tool migrates the rest).

``python -m agentkeys.devstack.demo agent`` is the agent process (reads only its environment).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account.signers.local import LocalAccount

from agentkeys._files import write_private
from agentkeys.b64url import b64url_decode
from agentkeys.chain import ChainClient, account_from_key, read_deployment_record
from agentkeys.cli._bootstrap import BrokerSignIn, email_sign_in, write_session
from agentkeys.cli._operator_state import OperatorState, PasskeyRecord, load_operator_state
from agentkeys.devstack.softauthn import SoftAuthenticator
from agentkeys.devstack.up import DevUpOptions, StackStatus, run_dev_stack
from agentkeys.devstack.upstream import REPLY, DemoUpstream, run_upstream
from agentkeys.errors import DOMAIN_ERRORS, AgentkeysError
from agentkeys.migrate import migrate_operator
from agentkeys.omni import actor_omni_for_wallet, agent_omni, identity_omni
from attest.device_key import SoftwareDeviceKey

__all__ = ["DEMO_KEY", "DemoStep", "DemoUpstream", "agent_main", "run_demo"]

DEMO_KEY = "sk-demo-real-key-" + "0123456789abcdef"  # the "real" credential the demo stores
LEGACY_KEY = "sk-legacy-v1-key-" + "fedcba9876543210"
LEGACY_OTHER_KEY = "ghp_legacy-v1-token-" + "00112233"
AGENT_LABEL = "coder"
OPERATOR_EMAIL = "operator@example.com"
LEGACY_EMAIL = "legacy-user@example.com"
FAIL_CLOSED_WINDOW = 3.0  # seconds; the daemon's production default is 60


# ---------------------------------------------------------------------------- steps


@dataclass
class DemoStep:
    """One line of the summary table."""

    title: str
    ok: bool = False
    detail: str = ""
    seconds: float = 0.0


class DemoFailed(AgentkeysError):
    """A demo step did not show what it should."""

    error = "demo_failed"
    status = 500


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


def _new_dev_passkey(home: Path, origin: str) -> tuple[SoftAuthenticator, PasskeyRecord]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = home / "passkey-dev.pem"
    write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    soft = SoftAuthenticator(rp_id="localhost", origin=origin, private_key=key, counting=False)
    record = PasskeyRecord(
        credential_id=soft.credential_id,
        public_point=soft.public_point,
        rp_id="localhost",
        origin=origin,
        dev_key_file=key_file,
    )
    return soft, record


def _chain_toml(home: Path, env: Mapping[str, str]) -> None:
    write_private(
        home / "chain.toml",
        (
            "[chain]\n"
            'profile = "anvil"\n'
            f'rpc_url = "{env["AGENTKEYS_CHAIN_RPC_URL"]}"\n'
            f"chain_id = {env['AGENTKEYS_CHAIN_CHAIN_ID']}\n"
            f'deployment = "{env["AGENTKEYS_CHAIN_DEPLOYMENT"]}"\n'
        ).encode(),
    )


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTKEYS_")}


def _parse_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            out[name] = value
    return out


@dataclass
class _Operator:
    home: Path
    wallet: LocalAccount
    wallet_file: Path
    state: OperatorState


class Demo:
    """The scenario; ``out`` gets the progress lines and the summary table."""

    def __init__(self, out: TextIO, workdir: Path) -> None:
        self.out = out
        self.work = workdir
        self.steps: list[DemoStep] = []
        self.total = 12
        self.status: StackStatus | None = None
        self.upstream = DemoUpstream(key=DEMO_KEY)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def cli(self, *argv: str, stdin: bytes = b"") -> dict[str, Any]:
        """Run ``agentkeys <argv> --json`` as its own process, in the environment ``dev up``'s
        env.sh sets (as a user who sourced it); echo the command; the parsed JSON answer."""
        shown = " ".join(shlex.quote(a) for a in argv)
        self.say(f"        $ agentkeys {shown}")
        done = await trio.run_process(
            [sys.executable, "-m", "agentkeys.cli", *argv, "--json"],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**_cli_env(), **self.env},
        )
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise DemoFailed(f"agentkeys {argv[0]} exited {done.returncode}: {last[0]}")
        answer: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        return answer

    async def step(self, title: str, action: Callable[[], Awaitable[str]]) -> None:
        step = DemoStep(title)
        self.steps.append(step)
        self.say(f"[{len(self.steps):>2}/{self.total}] {title} …")
        started = time.monotonic()
        try:
            step.detail = await action()
            step.ok = True
        except DOMAIN_ERRORS as exc:
            step.detail = f"{exc.error}: {exc.reason}"
        step.seconds = time.monotonic() - started
        mark = "ok" if step.ok else "FAILED"
        self.say(f"        {mark} ({step.seconds:.1f} s) {step.detail}")
        if not step.ok:
            raise DemoFailed(f"step {title!r} failed")

    def summary(self) -> None:
        width = max(len(s.title) for s in self.steps)
        self.say("")
        self.say(f"  {'step':<{width}}  result  time")
        self.say(f"  {'-' * width}  ------  ------")
        for s in self.steps:
            self.say(f"  {s.title:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:5.1f}s")

    @property
    def env(self) -> dict[str, str]:
        assert self.status is not None
        return self.status.env

    # ------------------------------------------------------------------ the scenario

    async def run(self) -> None:
        async with run_upstream(self.upstream) as upstream_url, trio.open_nursery() as nursery:
            self.upstream_url = upstream_url

            async def up() -> str:
                options = DevUpOptions(
                    state_dir=self.work / "state",
                    daemon_unreachable_after=FAIL_CLOSED_WINDOW,
                    daemon_heartbeat_interval=0.5,
                )
                self.status = await nursery.start(run_dev_stack, options)
                running = [n for n, c in self.status.components.items() if c["state"] == "running"]
                return "running: " + ", ".join(running)

            await self.step("dev up: the whole stack", up)
            assert self.status is not None
            assert self.status.controls is not None
            self.controls = self.status.controls
            async with httpx.AsyncClient(
                base_url=self.controls.broker_url, trust_env=False, timeout=30
            ) as broker:
                self.broker = broker
                await self.step("master bootstrap (dev authenticator)", self.bootstrap)
                await self.step(f"agent create {AGENT_LABEL}", self.agent_create)
                await self.step("scope grant openai with K10 + K11", self.scope_grant)
                await self.step("store a key (sidecar backend)", self.store_key)
                await self.step("daemon started for the agent", self.start_daemon)
                await self.step("agent: OpenAI SDK call through the sidecar", self.agent_calls)
                await self.step("agent: streamed call", self.streamed)
                await self.step("agent: denied call (outside the chain scope)", self.denied)
                await self.step(
                    f"fail closed while the broker is down ({FAIL_CLOSED_WINDOW:.0f} s window)",
                    self.fail_closed,
                )
                await self.step("legacy v1 credential: write, upgrade, read", self.migration)
                await self.step("eager migration tool", self.eager)
            nursery.cancel_scope.cancel()

    async def bootstrap(self) -> str:
        home = self.work / "home"
        await trio.Path(home).mkdir(mode=0o700, parents=True)
        wallet = account_from_key(secrets.token_bytes(32))  # the operator's own wallet (K5)
        wallet_file = home / "wallet.key"
        write_private(wallet_file, wallet.key.hex().encode() + b"\n")
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            chain = await self._chain(http)
            await chain.rpc.call("anvil_setBalance", wallet.address, hex(10**20))
        answer = await self.cli(
            "init", "--email", OPERATOR_EMAIL, "--home", str(home),
            "--wallet-key-file", str(wallet_file), "--dev-authenticator",
        )  # fmt: skip
        _check(
            answer["agentkeys_actor_omni"] == actor_omni_for_wallet(wallet.address), "actor_omni"
        )
        state = load_operator_state(home)
        self.operator = _Operator(home, wallet, wallet_file, state)
        return (
            f"wallet {state.wallet}, agentkeys_actor_omni {state.operator_omni[:16]}…, "
            f"device {state.device_key_hash[:16]}…, session until {answer['session_expires_at']}"
        )

    async def _chain(self, http: httpx.AsyncClient) -> ChainClient:
        record = read_deployment_record(Path(self.env["AGENTKEYS_CHAIN_DEPLOYMENT"]))
        return ChainClient(http, self.env["AGENTKEYS_CHAIN_RPC_URL"], record.addresses)

    def _mutation_args(self) -> list[str]:
        op = self.operator
        return [
            "--home",
            str(op.home),
            "--wallet-key-file",
            str(op.wallet_file),
            "--dev-authenticator",
        ]

    async def agent_create(self) -> str:
        answer = await self.cli("agent", "create", AGENT_LABEL, *self._mutation_args())
        _check(bool(answer.get("registered")), "the agent device is not registered")
        self.agent_omni = str(answer["agent_omni"])
        _check(
            self.agent_omni == agent_omni(self.operator.state.operator_omni, AGENT_LABEL),
            "agent_omni",
        )
        self.agent_key = Path(str(answer["agent_key_file"]))
        return f"agent_omni {self.agent_omni[:16]}…, tx {str(answer['tx_hash'])[:18]}…"

    async def scope_grant(self) -> str:
        answer = await self.cli("scope", "add", AGENT_LABEL, "openai", *self._mutation_args())
        services = answer.get("services") or answer.get("scope", {}).get("services")
        _check(services is not None and "openai" in services, f"scope after grant: {answer}")
        return f"scope[{AGENT_LABEL}] = {services}, tx {str(answer.get('tx_hash', ''))[:18]}…"

    async def store_key(self) -> str:
        answer = await self.cli(
            "store", "openai", "--credential-backend", "sidecar", "--agent", AGENT_LABEL,
            "--stdin", "--home", str(self.operator.home), stdin=DEMO_KEY.encode() + b"\n",
        )  # fmt: skip
        _check(answer.get("envelope_version") == 4, "not stored as 0x04")
        return f"stored at {answer.get('key')} (0x04, K3 epoch {answer.get('k3_epoch')})"

    async def start_daemon(self) -> str:
        answer = await self.cli(
            "sidecar", "setup", AGENT_LABEL, "--dev-stack", "--allow-exe", sys.executable,
            "--service", "openai", "--service", "openrouter",
            "--upstream", f"openai={self.upstream_url}",
            "--upstream", f"openrouter={self.upstream_url}",
            "--home", str(self.operator.home),
        )  # fmt: skip
        _check(answer.get("daemon", {}).get("state") == "running", f"daemon: {answer}")
        address = self.controls.daemon_address
        _check(address is not None, "the stack did not start the daemon")
        assert address is not None
        self.daemon_socket = address.socket_path
        await self._wait_ready(200)
        assert self.status is not None
        return f"socket {address.socket_path}, {self.status.agent_source_line}"

    def _daemon_client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=self.daemon_socket)
        return httpx.AsyncClient(
            transport=transport, base_url="http://agentkeys.localhost", trust_env=False, timeout=20
        )

    async def _wait_ready(self, want: int, limit: float = 30.0) -> None:
        async with self._daemon_client() as client:
            with trio.move_on_after(limit):
                while True:
                    if (await client.get("/readyz")).status_code == want:
                        return
                    await trio.sleep(0.1)
        raise DemoFailed(f"the daemon's /readyz did not answer {want} within {limit:.0f} s")

    async def _agent(self) -> dict[str, Any]:
        assert self.status is not None
        assert self.status.agent_env is not None
        env = {**_cli_env(), **_parse_env_file(self.status.agent_env)}
        _check(DEMO_KEY not in json.dumps(env), "the real key reached the agent's environment")
        done = await trio.run_process(
            [sys.executable, "-m", "agentkeys.devstack.demo", "agent"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise DemoFailed(f"the agent process failed: {tail[0]}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    async def agent_calls(self) -> str:
        self.report = await self._agent()
        _check(self.report["chat"] == REPLY, f"chat answer {self.report['chat']!r}")
        _check(self.report["api_key"] != DEMO_KEY, "the agent held the real key")
        _check(DEMO_KEY in self.upstream.seen_keys, "the upstream never saw the real key")
        return (
            f"agent used key {self.report['api_key']!r} → upstream got the real key; "
            f"reply {self.report['chat']!r}"
        )

    async def streamed(self) -> str:
        _check(self.report["stream"] == REPLY, f"streamed answer {self.report['stream']!r}")
        return f"{self.report['chunks']} chunks, usage {self.report['stream_usage']} tokens"

    async def denied(self) -> str:
        _check(self.report["denied_status"] == 403, f"denied call: {self.report}")
        return f"HTTP 403 {self.report['denied_error']} (openrouter is in no chain scope)"

    async def fail_closed(self) -> str:
        await self.controls.broker.stop()
        await self._wait_ready(503, limit=FAIL_CLOSED_WINDOW + 20)
        async with self._daemon_client() as client:
            refused = await client.post(
                "/openai/v1/chat/completions", json={"model": "m", "messages": []}
            )
            _check(refused.status_code == 503, f"while down: HTTP {refused.status_code}")
            error = refused.json().get("error")
            await self.controls.broker.start()
            await self._wait_ready(200)
            back = await client.post(
                "/openai/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            _check(back.status_code == 200, f"after recovery: HTTP {back.status_code}")
        return f"broker stopped → HTTP 503 {error}; broker back → served again"

    async def migration(self) -> str:
        home = self.work / "legacy-home"
        identity = identity_omni("email", LEGACY_EMAIL)
        # 1. the legacy user signs in by email; SIWE is signed by the signer-held K4
        await trio.Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
        k10 = SoftwareDeviceKey.open(home / "device" / "k10.pem")
        origin = self.controls.passkey_origin
        soft, _record = _new_dev_passkey(home, origin)
        signin = BrokerSignIn(self.broker)
        j0 = await email_sign_in(signin, LEGACY_EMAIL, maildir=self.controls.maildir)

        async def create(options: Mapping[str, Any]) -> Mapping[str, Any]:
            return soft.create(b64url_decode(str(options["challenge"]))).to_json()

        async def get(options: Mapping[str, Any]) -> Mapping[str, Any]:
            return soft.get(b64url_decode(str(options["challenge"]))).to_json()

        await signin.enroll(j0, k10, create)
        answer = await signin.siwe_k4(j0, get)
        k4_wallet = str(answer["wallet"]).lower()
        write_session(home, answer, self.controls.broker_url)
        # 2. the deprecated s3 backend (the stage-1 default) writes two v1 envelopes
        v1_key = "?"
        for service, value in (("openai", LEGACY_KEY), ("github", LEGACY_OTHER_KEY)):
            stored = await self.cli(
                "store", service, "--credential-backend", "s3", "--envelope-version", "v1",
                "--legacy-email", LEGACY_EMAIL, "--stdin", "--home", str(home),
                stdin=value.encode() + b"\n",
            )  # fmt: skip
            _check(stored.get("envelope_version") == 1, f"legacy store: {stored}")
            v1_key = str(stored["key"]) if service == "openai" else v1_key
        _check(k4_wallet in v1_key, f"the v1 key {v1_key} is not under the K4 wallet")
        # 3. the operator upgrades: K11 + master device on chain through the broker's relay,
        #    the signer-held K4 approving the registration (no wallet key leaves the signer)
        _chain_toml(home, self.env)
        upgraded = await self.cli(
            "device", "register", "--upgrade-from-v1", "--legacy-email", LEGACY_EMAIL,
            "--home", str(home), "--dev-authenticator",
        )  # fmt: skip
        _check(upgraded.get("legacy_identity_omni") == identity, f"upgrade: {upgraded}")
        _check(upgraded.get("wallet") == k4_wallet, f"upgrade wallet: {upgraded}")
        # 4. the sidecar backend reads it through broker + worker (lazy copy to 0x04)
        read = await self.cli(
            "read", "openai", "--credential-backend", "sidecar", "--home", str(home),
            "--show-secret",
        )  # fmt: skip
        _check(read.get("secret") == LEGACY_KEY, "the sidecar read returned another value")
        _check(read.get("source") == "v1", f"read source {read.get('source')}")
        self.legacy_operator = upgraded["operator_omni"]
        self.legacy_identity = identity
        return (
            f"0x01 at {v1_key} → upgraded (K11 + master on chain) → sidecar read "
            f"from {read.get('source')}, migrated: {read.get('migration', {}).get('migrated')}"
        )

    async def eager(self) -> str:
        out = StringIO()
        reports = await migrate_operator(
            self.controls.worker_config,
            operator_omni=self.legacy_operator,
            identity=self.legacy_identity,
            delete_v1=False,
            dry_run=False,
            out=out,
            progress=None,
        )
        actions = {r.service: r.action.value for r in reports}
        _check("github" in actions and actions["github"] != "failed", f"eager: {actions}")
        return "agentkeys-migrate-s3-prefix: " + ", ".join(f"{s} {a}" for s, a in actions.items())


async def run_demo(out: TextIO, *, workdir: Path | None = None) -> bool:
    """Run the scenario; True when every step is green. Everything started is stopped."""
    with tempfile.TemporaryDirectory(prefix="agentkeys-demo-") as tmp:
        demo = Demo(out, workdir or Path(tmp))
        demo.say("agentkeys demo: every component is real and local; nothing leaves this machine")
        ok = True
        try:
            await demo.run()
        except* DemoFailed:
            ok = False
        if demo.steps:
            demo.summary()
        demo.say("all steps green" if ok else "some steps FAILED")
        return ok and all(s.ok for s in demo.steps)


# ---------------------------------------------------------------------------- the agent


def agent_main() -> int:
    """The agent process: the unmodified OpenAI SDK, configured only by its environment."""
    import openai

    client = openai.OpenAI()
    chat = client.chat.completions.create(
        model="demo-model", messages=[{"role": "user", "content": "hi"}]
    )
    pieces: list[str] = []
    usage = None
    chunks = 0
    stream = client.chat.completions.create(
        model="demo-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
    denied_status, denied_error = 0, ""
    other = openai.OpenAI(base_url=os.environ["OPENROUTER_BASE_URL"])
    try:
        other.chat.completions.create(model="demo-model", messages=[])
    except openai.APIStatusError as exc:
        denied_status = exc.status_code
        try:
            denied_error = str(exc.response.json().get("error", ""))
        except (ValueError, AttributeError):
            denied_error = exc.response.text[:80]
    print(
        json.dumps(
            {
                "api_key": client.api_key,
                "chat": chat.choices[0].message.content,
                "stream": "".join(pieces),
                "chunks": chunks,
                "stream_usage": usage,
                "denied_status": denied_status,
                "denied_error": denied_error,
            }
        )
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["agent"]:
        sys.exit(agent_main())
    print("usage: python -m agentkeys.devstack.demo agent (run `agentkeys dev demo` instead)")
    sys.exit(2)
