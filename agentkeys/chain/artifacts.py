"""The compiled contract artifacts (contracts/artifacts/*.json, built by contracts/build.py).

They install as the package data ``agentkeys._contracts`` (pyproject.toml), so the same
``importlib.resources`` lookup finds them in a checkout and in an installed wheel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from pydantic import TypeAdapter, with_config

from agentkeys.chain._abi import ContractAbi
from agentkeys.chain.errors import ChainConfigError
from agentkeys.config import validate_document
from agentkeys.errors import AgentkeysError
from agentkeys.strict_json import StrictJsonError, loads_object
from agentkeys.strict_schema import STRICT

__all__ = ["ARTIFACT_DIR", "CONTRACT_NAMES", "Artifact", "load_artifact"]

#: contracts/artifacts, wherever the package is installed.
ARTIFACT_DIR: Traversable = resources.files("agentkeys._contracts")

#: The contracts a deployment consists of, in deployment order.
CONTRACT_NAMES = ("SidecarRegistry", "ScopeContract", "K3EpochCounter")


@with_config(STRICT)
@dataclass(frozen=True)
class _ArtifactFile:
    """What contracts/build.py writes (strict: no other member; the file's member names)."""

    contractName: str
    abi: list[dict[str, object]]
    bytecode: str
    deployedBytecode: str
    compiler: dict[str, object]


_ARTIFACT = TypeAdapter(_ArtifactFile)


@dataclass(frozen=True)
class Artifact:
    """One contract's ABI and creation bytecode, with the sha256 of the artifact file."""

    name: str
    abi: ContractAbi
    bytecode: bytes
    sha256: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``contracts/artifacts/<name>.json``.

    Raises:
        ChainConfigError: missing or malformed artifact.
    """
    if not name.isidentifier():
        raise ChainConfigError("artifact name must be a contract identifier")
    path = ARTIFACT_DIR / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ChainConfigError(f"artifact {name} not built (run make contracts)") from None
    try:
        data = validate_document(_ARTIFACT, loads_object(raw, what="the artifact"))
        if data.contractName != name:
            raise ChainConfigError(f"it holds {data.contractName[:64]!r}")
        return Artifact(
            name=name,
            abi=ContractAbi(data.abi),
            bytecode=bytes.fromhex(data.bytecode.removeprefix("0x")),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except (StrictJsonError, AgentkeysError) as exc:
        raise ChainConfigError(f"artifact {name} is malformed: {exc.reason}") from None
    except (ValueError, KeyError, TypeError):
        raise ChainConfigError(f"artifact {name} is malformed") from None
