"""The LiteLLM proxy, the second named peer of the sidecar rows (docs/performance.md).

LiteLLM is no dependency of agentkeys: :func:`litellm_executable` installs the pinned
``litellm[proxy]`` (:data:`VERSION`) into its own virtual environment, ``.cache/venv-litellm``
under the repository (gitignored), once; later runs reuse it. When it cannot be installed
(no package index, a failed build) it raises :class:`LiteLLMUnavailable` with the reason,
which the bench prints in place of the rows.

:func:`start_litellm` runs ``litellm --config`` on 127.0.0.1 at a free port with one uvicorn
worker and one model, :data:`MODEL_NAME`, an ``openai/`` model whose ``api_base`` is the
given upstream: LiteLLM parses the request, calls the upstream's ``/v1/chat/completions``
with the API key and parses its answer, as it would for OpenAI. The key reaches LiteLLM
through its environment (the configuration names ``os.environ/...``), never a command line;
the configuration lives in a private temporary directory, removed afterwards. Its model
cost map is the copy shipped in the package (``LITELLM_LOCAL_MODEL_COST_MAP``): no network.
It runs without a master key (no caller authentication, like the nginx peer), which
LiteLLM refuses unless told so: ``dangerously_permit_weak_or_unset_master_key``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from agentkeys.devstack import pick_port
from agentkeys.devstack._process import LaunchPlan, group_members, launch

__all__ = [
    "MODEL_NAME",
    "VENV",
    "VERSION",
    "LiteLLM",
    "LiteLLMUnavailable",
    "litellm_executable",
    "litellm_installed",
    "start_litellm",
]

VERSION = "1.108.7"
"""The pinned ``litellm[proxy]`` release (the one measured in docs/performance.md)."""
MODEL_NAME = "gpt-4o-mini"
"""The one model of the proxy (the name the load generator's requests carry)."""
VENV = Path(__file__).resolve().parent.parent / ".cache" / "venv-litellm"
_INSTALL_TIMEOUT = 900.0
_STARTUP_TIMEOUT = 180.0  # importing the proxy takes tens of seconds on a busy machine
_KEY_VARIABLE = "AGENTKEYS_BENCH_UPSTREAM_KEY"


class LiteLLMUnavailable(Exception):
    """The LiteLLM proxy cannot be installed or started here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _installed_marker(venv: Path) -> Path:
    return venv / f".agentkeys-litellm-{VERSION}"


def litellm_installed(venv: Path = VENV) -> bool:
    """Whether the pinned release is installed in ``venv``."""
    return _installed_marker(venv).exists() and (venv / "bin" / "litellm").exists()


async def litellm_executable(venv: Path = VENV) -> Path:
    """The ``litellm`` command of the pinned release, installing it first if needed.

    Raises:
        LiteLLMUnavailable: the venv or the package could not be installed.
    """
    executable = venv / "bin" / "litellm"
    if litellm_installed(venv):
        return executable
    shutil.rmtree(venv, ignore_errors=True)  # a partial or older install
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "venv-litellm-install.log"
    steps = [
        [sys.executable, "-m", "venv", os.fspath(venv)],
        [
            os.fspath(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"litellm[proxy]=={VERSION}",
        ],
    ]
    print(f"bench: installing litellm[proxy]=={VERSION} into {venv} (once)", file=sys.stderr)
    with log.open("wb") as output:
        for argv in steps:
            try:
                with trio.fail_after(_INSTALL_TIMEOUT):
                    done = await trio.run_process(argv, stdout=output, stderr=output, check=False)
            except (OSError, trio.TooSlowError) as exc:
                raise LiteLLMUnavailable(f"{argv[0]} failed: {exc!r}") from exc
            if done.returncode != 0:
                lines = log.read_text(errors="replace").strip().splitlines()
                last = lines[-1][:200] if lines else "no output"
                raise LiteLLMUnavailable(
                    f"installing litellm[proxy]=={VERSION} failed ({last}; log {log})"
                )
    _installed_marker(venv).touch()
    return executable


@dataclass(frozen=True)
class LiteLLM:
    """A running LiteLLM proxy.

    Attributes:
        port: the TCP port on 127.0.0.1 it listens on.
        log_path: its output.
    """

    port: int
    log_path: Path
    _process: trio.Process = field(repr=False, compare=False)

    def pids(self) -> list[int]:
        """Pids of its live processes, for CPU accounting."""
        return group_members(self._process.pid)


def litellm_config(upstream: str) -> str:
    """The proxy configuration (JSON, which is YAML): one model served by ``upstream``."""
    model = {
        "model_name": MODEL_NAME,
        "litellm_params": {
            "model": f"openai/{MODEL_NAME}",
            "api_base": f"{upstream}/v1",
            "api_key": f"os.environ/{_KEY_VARIABLE}",
        },
    }
    # no master key: like nginx, no caller authentication (and no database of keys)
    settings = {"dangerously_permit_weak_or_unset_master_key": True}
    return json.dumps({"model_list": [model], "general_settings": settings}, indent=2)


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            response = await client.get(f"http://127.0.0.1:{port}/health/liveliness")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@asynccontextmanager
async def start_litellm(
    executable: Path, upstream: str, *, api_key: str, run_dir: Path
) -> AsyncIterator[LiteLLM]:
    """Run the LiteLLM proxy in front of ``upstream`` (``http://host:port``) until the block
    ends; its log is ``run_dir/litellm.log``.

    Raises:
        ComponentStartFailed: it exited or did not answer ``/health/liveliness`` in time.
    """
    home = Path(tempfile.mkdtemp(prefix="ak-litellm-", dir="/tmp"))
    try:
        config = home / "config.yaml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(litellm_config(upstream))

        def plan() -> LaunchPlan[int]:
            port = pick_port()
            argv = (os.fspath(executable), "--config", os.fspath(config), "--host", "127.0.0.1")
            return LaunchPlan(ports=port, argv=(*argv, "--port", str(port), "--num_workers", "1"))

        env = {
            "PATH": f"{executable.parent}:/usr/bin:/bin",
            "HOME": os.fspath(home),
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            _KEY_VARIABLE: api_key,
        }
        log_path = run_dir / "litellm.log"
        async with launch(
            "litellm",
            plan=plan,
            ready=_ready,
            log_path=log_path,
            startup_timeout=_STARTUP_TIMEOUT,
            grace=10.0,
            attempts=3,
            env=env,
            cwd=home,
            stop_signal=signal.SIGTERM,
        ) as (port, process):
            yield LiteLLM(port=port, log_path=log_path, _process=process)
    finally:
        shutil.rmtree(home, ignore_errors=True)
