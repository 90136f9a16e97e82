"""docs/quickstart.md, run as written: its ``sh`` blocks, extracted from the markdown, in order,
as root, with two real uids (the agent's ``alice`` and the daemon's ``agentkeys-coder``) made
by the doc's own commands and removed afterwards, and a third (``mallory``, made and removed
here) whom the daemon's loopback TCP listener must refuse by policy.

``sh background`` blocks are long-running commands the doc runs in a terminal of their own
(``dev up``, the daemon): they are started and left running; every other ``sh`` block runs in
one bash session (``set -euo pipefail``; exported variables carry over, as in a terminal).

The agent's and the daemon's users cannot run this checkout's interpreter when it lives
under /root (0700, as pyenv's does here), so the test puts on PATH an ``agentkeys`` and a
``python3`` every user can run: a venv of the system ``/usr/bin/python3.11`` that loads the
checkout's site-packages. A host that installs agentkeys system-wide needs nothing of this.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "quickstart.md"
AGENT_USER, DAEMON_USER, SOCKET_GROUP = "alice", "agentkeys-coder", "agentkeys-coder-sock"
OTHER_USER = "mallory"  # a local user the policy does not name
SIDECAR_DIRS = (
    Path("/etc/agentkeys/sidecar/coder"),
    Path("/var/lib/agentkeys-sidecar/coder"),
    Path("/run/agentkeys-sidecar/coder"),
)
SOCKET = Path("/run/agentkeys-sidecar/coder/agentkeys-proxy.sock")
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
LIFETIME = 5  # seconds: the broker's device session lifetime in this test

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the quickstart's setup step runs as root"),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3.11 for the users"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv missing"),
    pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="no /usr/bin/curl"),
]


@dataclass(frozen=True)
class Block:
    background: bool
    text: str


def doc_blocks(path: Path = DOC) -> list[Block]:
    """The ``sh`` / ``sh background`` fenced blocks of ``path``, in order."""
    found = re.findall(r"^```(sh(?: background)?)\n(.*?)^```$", path.read_text(), re.M | re.S)
    return [Block(kind == "sh background", text) for kind, text in found]


def doc_tcp_port(blocks: list[Block]) -> int:
    """The ``--tcp-port`` of the doc's ``sidecar setup`` block."""
    setup = next(b.text for b in blocks if "sidecar setup" in b.text)
    found = re.search(r"--tcp-port (\d+)", setup)
    assert found is not None, "the quickstart's setup turns the loopback listener on"
    return int(found.group(1))


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _exists(kind: str, name: str) -> bool:
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


def _remove_sidecar() -> None:
    subprocess.run(["userdel", "--remove", AGENT_USER], capture_output=True, check=False)
    subprocess.run(["userdel", DAEMON_USER], capture_output=True, check=False)
    subprocess.run(["userdel", OTHER_USER], capture_output=True, check=False)
    for group in (SOCKET_GROUP, DAEMON_USER, AGENT_USER, OTHER_USER):
        subprocess.run(["groupdel", group], capture_output=True, check=False)
    for directory in SIDECAR_DIRS:
        shutil.rmtree(directory, ignore_errors=True)
        for parent in directory.parents:
            if parent in (Path("/etc"), Path("/var/lib"), Path("/run"), Path("/var")):
                break
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break


def _shared_interpreter(top: Path) -> Path:
    """``<top>/bin`` holding ``agentkeys`` and ``python3`` that every user can run."""
    venv = top / "py"
    subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True
    )  # fmt: skip
    site = Path(sysconfig.get_paths()["purelib"])
    (venv / "lib" / "python3.11" / "site-packages" / "agentkeys-checkout.pth").write_text(
        f"import site; site.addsitedir({str(site)!r})\n"
    )
    weed = Path(sys.prefix) / "bin" / "weed"  # dev up looks for it beside the interpreter
    if weed.exists():
        (venv / "bin" / "weed").symlink_to(weed)
    bin_dir = top / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(venv / "bin" / "python3")
    launcher = bin_dir / "agentkeys"
    launcher.write_text(
        f"#!{venv / 'bin' / 'python3'}\nimport sys\nfrom agentkeys.cli import main\n"
        "sys.exit(main())\n"
    )
    for path in (top, *top.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path == launcher else 0o644)
    (venv / "bin").chmod(0o755)
    return bin_dir


def _give_agent_the_sdk() -> None:
    """What ``pip install --user openai`` would do for alice: the checkout's site-packages
    (openai, httpx) in her user site of the system Python."""
    user = pwd.getpwnam(AGENT_USER)
    site = Path(user.pw_dir) / ".local" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    pth = site / "agentkeys-checkout.pth"
    pth.write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    for path in (pth, site, *site.parents):
        if path == Path(user.pw_dir).parent:
            break
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class Session:
    """One operator terminal: bash per block, exported variables kept between blocks."""

    cwd: Path
    env: dict[str, str]
    carry: Path
    background: list[tuple[subprocess.Popen[bytes], Path]]

    def run(self, text: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        script = f"set -euo pipefail\nsource {self.carry}\n{text}\nexport -p > {self.carry}\n"
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True,
            text=True, timeout=240, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"block failed:\n{text}\n{done.stdout}\n{done.stderr}"
        return done

    def start(self, text: str, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        process = subprocess.Popen(
            ["bash", "-c", f"source {self.carry}\nexec {text.strip()}"],
            cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.background.append((process, log))
        return process


def _wait(predicate: object, what: str, limit: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        assert process.poll() is None, f"{what}: the process exited ({process.returncode})"
        time.sleep(0.2)
    raise AssertionError(f"{what} within {limit:.0f} s")


def _ready() -> bool:
    if not SOCKET.exists():
        return False
    transport = httpx.HTTPTransport(uds=str(SOCKET))
    with httpx.Client(transport=transport, base_url="http://agentkeys.localhost") as client:
        try:
            return client.get("/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def _audit_rows() -> list[dict[str, object]]:
    path = Path("/var/lib/agentkeys-sidecar/coder/audit.log")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _readyz() -> tuple[int, str]:
    transport = httpx.HTTPTransport(uds=str(SOCKET))
    with httpx.Client(transport=transport, base_url="http://agentkeys.localhost") as client:
        answer = client.get("/readyz", timeout=5)
    return answer.status_code, answer.text


_CALLER = """
import json, os, sys, time
import httpx
end = time.monotonic() + float(sys.argv[1])
with httpx.Client(base_url=os.environ["OPENAI_BASE_URL"], trust_env=False) as client:
    while True:
        answer = client.post("/chat/completions", json={"model": "m", "messages": []})
        ready = client.get(os.environ["AGENTKEYS_PROXY_URL"] + "/readyz")
        print(json.dumps([answer.status_code, ready.status_code]), flush=True)
        if time.monotonic() >= end:
            break
        time.sleep(0.5)
"""


def _agent_calls(*, seconds: float, env: dict[str, str]) -> list[tuple[int, int]]:
    """(call status, /readyz status) of the agent's calls, made as alice for ``seconds``
    over the loopback TCP listener (the env file's base URLs)."""
    done = subprocess.run(
        ["runuser", "-u", AGENT_USER, "--", "sh", "-c",
         ". /run/agentkeys-sidecar/coder/env && exec python3 -c \"$0\" \"$1\"",
         _CALLER, str(seconds)],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pairs = [json.loads(line) for line in done.stdout.splitlines()]
    return [(int(call), int(ready)) for call, ready in pairs]


_CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"


def _as_agent(
    *argv: str, env: dict[str, str], user: str = AGENT_USER
) -> subprocess.CompletedProcess[str]:
    """``argv`` run as ``user`` (``agentkeys`` by its absolute path: runuser resets PATH)."""
    if argv[0] == "agentkeys":
        found = shutil.which("agentkeys", path=env["PATH"])
        assert found is not None
        argv = (found, *argv[1:])
    return subprocess.run(
        ["runuser", "-u", user, "--", *argv], env=env, capture_output=True, text=True,
        timeout=60, check=False, cwd="/",
    )  # fmt: skip


@pytest.fixture
def quickstart() -> Iterator[Session]:
    if any(_exists("user", n) for n in (AGENT_USER, DAEMON_USER, OTHER_USER)) or any(
        d.exists() for d in SIDECAR_DIRS
    ):
        pytest.skip("alice / agentkeys-coder / mallory or the coder sidecar already exist")
    port = doc_tcp_port(doc_blocks())
    if not _port_free(port):
        pytest.skip(f"127.0.0.1:{port} (the quickstart's --tcp-port) is in use on this host")
    top = Path(tempfile.mkdtemp(prefix="ak-quickstart-", dir="/tmp"))
    top.chmod(0o755)
    work = top / "work"
    work.mkdir(mode=0o700)
    env = {
        "PATH": f"{_shared_interpreter(top)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
        "/sbin:/bin",
        "HOME": str(work / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(work),
        "AGENTKEYS_DEV_DEVICE_LIFETIME": str(LIFETIME),
    }
    carry = work / ".exports"
    carry.write_text("")
    session = Session(work, env, carry, [])
    try:
        yield session
    finally:
        for process, log in reversed(session.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            sys.stderr.write(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
        _remove_sidecar()
        shutil.rmtree(top, ignore_errors=True)


def test_the_quickstart_runs_as_written_and_the_agent_uid_gets_no_secret(
    quickstart: Session,
) -> None:
    blocks = doc_blocks()
    assert [b.background for b in blocks].count(True) == 2  # dev up, the daemon
    session, logs = quickstart, quickstart.cwd
    outputs: list[str] = []
    for index, block in enumerate(blocks):
        if block.background and "dev up" in block.text:
            up = session.start(block.text, logs / "dev-up.log")
            status_file = session.cwd / ".agentkeys-state" / "status.json"

            def stack_ready(status: Path = status_file) -> bool:
                try:
                    found = json.loads(status.read_text())
                except (OSError, ValueError):
                    return False
                return bool(found["components"].get("worker", {}).get("state") == "running")

            _wait(stack_ready, "dev up serves", 120, up)
        elif block.background:
            daemon = session.start(block.text, logs / "daemon.log")
            _wait(_ready, "the daemon answers /readyz 200", 60, daemon)
        elif "agent revoke" in block.text:
            revoke_block = block.text  # the last step: run after the checks below
            assert index == len(blocks) - 1
        else:
            outputs.append(session.run(block.text).stdout)
            if "useradd" in block.text:
                _give_agent_the_sdk()
    exports = session.run("env").stdout
    real_key = re.search(r"^AGENTKEYS_DEV_OPENAI_KEY=(.+)$", exports, re.M)
    assert real_key is not None
    secret = real_key.group(1)
    port = doc_tcp_port(blocks)
    sdk_block = next(b.text for b in blocks if "the agent held:" in b.text)
    assert "openai.OpenAI()" in sdk_block  # the unmodified SDK: everything from the env file
    assert "http_client" not in sdk_block
    assert "base_url" not in sdk_block
    call = next(o for o in outputs if "the agent held:" in o)
    assert "hello from the upstream" in call  # the stand-in accepted only the real key
    assert "the agent held: agentkeys-placeholder" in call
    assert secret not in call
    setup_said = next(o for o in outputs if "sidecar for agent coder set up" in o)
    assert f"loopback TCP  http://127.0.0.1:{port}" in setup_said
    assert "the caller is still attested" in setup_said
    assert "(uid and exe via sock_diag + /proc)" in setup_said
    over_socket = next(o for o in outputs if "over the socket:" in o)
    assert "over the socket: hello from the upstream" in over_socket
    agent_rows = [r for r in _audit_rows() if r["caller_uid"] == pwd.getpwnam(AGENT_USER).pw_uid]
    assert [r["decision"] for r in agent_rows] == ["allow", "allow"]  # TCP, then the socket
    assert {r["caller_exe"] for r in agent_rows} == {str(SYSTEM_PYTHON)}

    # running the setup again reuses everything and never touches the K10
    key_before = Path("/var/lib/agentkeys-sidecar/coder/k10.pem").read_bytes()
    setup = next(b.text for b in blocks if "sidecar setup" in b.text)
    again = session.run(setup).stdout
    assert "(device registered now)" not in again
    assert re.search(r"K10 .* \(kept\)", again)
    assert re.search(r"policy .* \(kept\)", again)
    assert Path("/var/lib/agentkeys-sidecar/coder/k10.pem").read_bytes() == key_before

    # the layout: what the agent's uid can and cannot reach
    agent_env = {"PATH": session.env["PATH"], "LANG": "C.UTF-8"}
    env_file = _as_agent("cat", "/run/agentkeys-sidecar/coder/env", env=agent_env)
    assert env_file.returncode == 0
    assert "OPENAI_API_KEY=agentkeys-placeholder" in env_file.stdout
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{port}/openai/v1" in env_file.stdout
    assert secret not in env_file.stdout
    for private in (
        "/var/lib/agentkeys-sidecar/coder/k10.pem",
        "/var/lib/agentkeys-sidecar/coder/audit.log",
        "/etc/agentkeys/sidecar/coder/daemon.toml",
        "/etc/agentkeys/sidecar/coder/policy.toml",
        f"{session.env['HOME']}/.config/agentkeys/session.jwt",
        f"{session.env['HOME']}/.config/agentkeys/agents/coder/k10.pem",
        f"{session.cwd}/.agentkeys-state/env.sh",
    ):
        refused = _as_agent("cat", private, env=agent_env)
        assert refused.returncode != 0, private
        assert "Permission denied" in refused.stderr, (private, refused.stderr)
    listing = _as_agent("ls", "/run/agentkeys-sidecar/coder", env=agent_env)
    assert listing.returncode != 0  # 0710: reach the socket and env by name, list nothing
    searched = _as_agent(
        "grep", "-rsF", secret, "/etc/agentkeys", "/var/lib/agentkeys-sidecar",
        "/run/agentkeys-sidecar", "/tmp", env=agent_env,
    )  # fmt: skip
    assert searched.stdout == ""
    for argv in (
        ("agentkeys", "read", "openai", "--agent", "coder", "--show-secret"),
        ("agentkeys", "read", "openai", "--agent", "coder", "--show-secret",
         "--home", f"{session.env['HOME']}/.config/agentkeys"),
        ("agentkeys", "list", "--agent", "coder"),
        ("agentkeys", "daemon", "--config", "/etc/agentkeys/sidecar/coder/daemon.toml", "env"),
    ):  # fmt: skip
        tried = _as_agent(*argv, env={**agent_env, "HOME": "/home/alice"})
        assert tried.returncode not in (0, 126, 127), (argv, tried.stdout, tried.stderr)
        assert tried.stderr.startswith("agentkeys"), (argv, tried.stderr)  # it ran, refused
        assert secret not in tried.stdout + tried.stderr
    socket_stat, runtime_stat = SOCKET.stat(), SOCKET.parent.stat()
    assert (socket_stat.st_mode & 0o777, runtime_stat.st_mode & 0o777) == (0o660, 0o710)
    assert socket_stat.st_gid == runtime_stat.st_gid == grp.getgrnam(SOCKET_GROUP).gr_gid
    assert set(grp.getgrnam(SOCKET_GROUP).gr_mem) == {AGENT_USER, DAEMON_USER}
    daemon_uid = pwd.getpwnam(DAEMON_USER).pw_uid
    for path in (*SIDECAR_DIRS[:2], *SIDECAR_DIRS[0].iterdir(), *SIDECAR_DIRS[1].iterdir()):
        st = path.stat()
        assert st.st_uid == daemon_uid, path
        assert st.st_mode & 0o077 == 0, path

    # another local user: no socket, no env file; the loopback port answers, the policy refuses
    subprocess.run(["useradd", "--no-create-home", OTHER_USER], check=True, capture_output=True)
    other_uid = pwd.getpwnam(OTHER_USER).pw_uid
    for attempt in (
        ("cat", "/run/agentkeys-sidecar/coder/env"),
        (str(SYSTEM_PYTHON), "-c", _CONNECT, str(SOCKET)),
    ):
        tried = _as_agent(*attempt, env=agent_env, user=OTHER_USER)
        assert tried.returncode != 0, (attempt, tried.stdout)
        assert "Permission denied" in tried.stderr, (attempt, tried.stderr)
    tried = _as_agent(
        "curl", "-s", "-H", "authorization: Bearer x", "-d", "{}", "-w", "\n%{http_code}",
        f"http://127.0.0.1:{port}/openai/v1/chat/completions", env=agent_env, user=OTHER_USER,
    )  # fmt: skip
    refused_body, _, http_code = tried.stdout.rpartition("\n")
    assert http_code == "403", tried.stdout
    refusal = json.loads(refused_body)
    assert refusal["error"] == "caller_not_allowed"
    assert f"uid {other_uid}, exe '/usr/bin/curl'" in refusal["reason"]
    (row,) = [r for r in _audit_rows() if r["caller_uid"] == other_uid]
    assert (row["decision"], row["reason"], row["caller_exe"], row["status"]) == (
        "deny",
        "caller_not_allowed",
        "/usr/bin/curl",
        403,
    )
    assert row["path"] == "/openai/v1/chat/completions"

    # the daemon's own session: renewed by itself across several lifetimes, never lapsing
    renewals_before = (logs / "daemon.log").read_text().count("device session renewed")
    calls = _agent_calls(seconds=LIFETIME * 3.5, env=agent_env)
    assert len(calls) >= 3
    assert all(status == 200 for status, _ in calls), calls
    assert all(answer == 200 for _, answer in calls), calls  # /readyz each time
    renewals = (logs / "daemon.log").read_text().count("device session renewed")
    assert renewals - renewals_before >= 3

    # revoked on chain: the daemon stops serving within one session lifetime
    session.run(revoke_block)
    revoked_at = time.monotonic()
    while _readyz()[0] == 200:
        assert time.monotonic() - revoked_at < LIFETIME, "still ready one lifetime after revoke"
        time.sleep(0.2)
    stopped_after = time.monotonic() - revoked_at
    status, body = _readyz()
    sys.stderr.write(
        f"quickstart: {len(calls)} calls as {AGENT_USER} over 127.0.0.1:{port} in "
        f"{LIFETIME * 3.5:.1f} s, all 200, /readyz 200, "
        f"{renewals - renewals_before} renewals; not ready {stopped_after:.1f} s after revoke\n"
    )
    assert status == 503
    assert "device_revoked" in body
    ((last, _),) = _agent_calls(seconds=0, env=agent_env)
    assert last in (403, 503)
