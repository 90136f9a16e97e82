"""docs/production.md: its checked blocks run or load, and every command it shows is real.

A block preceded by ``<!-- doc-test: run -->`` is run, command by command, in a fresh
directory (``python`` is this interpreter, ``agentkeys`` the CLI of this checkout); one
preceded by ``<!-- doc-test: config NAME -->`` is loaded as that service's configuration.
In every other shell block, ``agentkeys`` lines must parse with the real CLI parser,
``python -m`` modules and ``python`` scripts must exist, and the files the AWS CLI lines
upload must be ones the run blocks (or the Lambda build line) produce.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkeys.broker.config import BrokerConfig
from agentkeys.cli import build_parser
from agentkeys.config import load_config
from agentkeys.signer.config import SignerConfig
from agentkeys.worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "production.md"
CONFIGS: dict[str, type] = {"broker": BrokerConfig, "signer": SignerConfig, "worker": WorkerConfig}
_BLOCK = re.compile(
    r"(?:<!-- doc-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    mark: str | None
    lang: str
    body: str

    def commands(self) -> list[list[str]]:
        """Each command (backslash continuations joined, comments dropped) as argv."""
        text = self.body.replace("\\\n", " ")
        return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


def _blocks() -> list[Block]:
    return [
        Block(m.group("mark"), m.group("lang"), m.group("body"))
        for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8"))
    ]


def _marked(prefix: str) -> list[Block]:
    return [b for b in _blocks() if b.mark is not None and b.mark.startswith(prefix)]


def _local(argv: list[str]) -> list[str]:
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "agentkeys":
        return [sys.executable, "-m", "agentkeys.cli", *argv[1:]]
    raise AssertionError(f"a checked block runs only python or agentkeys: {argv}")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the run blocks ran in (once for this module)."""
    directory = tmp_path_factory.mktemp("production-doc")
    (directory / "deploy").symlink_to(ROOT / "deploy")
    env = {"PATH": os.environ["PATH"], "HOME": os.fspath(directory), "LC_ALL": "C.UTF-8"}
    for block in _marked("run"):
        for argv in block.commands():
            done = subprocess.run(
                _local(argv), cwd=directory, env=env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (argv, done.stderr[-2000:])
    return directory


def test_the_doc_has_checked_blocks_of_each_kind() -> None:
    assert len(_marked("run")) >= 2
    assert {b.mark for b in _marked("config")} == {f"config {name}" for name in CONFIGS}


def test_run_blocks_succeed_and_render_every_aws_document(ran: Path) -> None:
    rendered = sorted(p.name for p in (ran / "build" / "aws").iterdir())
    assert rendered == sorted(
        f"{name}.json"
        for name in (
            "actor-role-policy", "bucket-lifecycle", "bucket-policy", "daemon-policy",
            "role-trust-policy", "worker-policy",
        )
    )  # fmt: skip
    trust = json.loads((ran / "build" / "aws" / "role-trust-policy.json").read_text())
    principals = {s["Principal"]["Federated"] for s in trust["Statement"]}
    assert principals == {"arn:aws:iam::123456789012:oidc-provider/broker.example.com"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_blocks_load_as_the_service_reads_them(name: str, tmp_path: Path) -> None:
    (block,) = _marked(f"config {name}")
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o700)
    path = directory / f"{name}.toml"
    path.write_text(block.body, encoding="utf-8")
    path.chmod(0o600)
    config: object = load_config(CONFIGS[name], path=path)
    assert config is not None


def test_every_command_shown_is_real(ran: Path) -> None:
    produced = {p.relative_to(ran).as_posix() for p in (ran / "build").rglob("*.json")}
    parser = build_parser()
    seen: set[str] = set()
    for block in _blocks():
        if block.lang != "sh":
            continue
        for argv in block.commands():
            program = argv[0]
            seen.add(program)
            if program == "agentkeys":
                if "--help" not in argv:  # help lines are run; a usage error exits here
                    parser.parse_args(argv[1:])
            elif program == "python" and argv[1] == "-m":
                assert importlib.util.find_spec(argv[2]) is not None, argv
            elif program == "python":
                assert (ROOT / argv[1]).is_file(), argv
                if argv[1] == "deploy/lambda/build.py":
                    produced.add(argv[argv.index("--out") + 1])
            elif program == "aws":
                for word in argv:
                    for ref in re.findall(r"fileb?://(\S+)", word):
                        assert ref in produced, (ref, argv)
            else:
                raise AssertionError(f"{program}: not a command this project documents")
    assert {"agentkeys", "python", "aws"} <= seen
