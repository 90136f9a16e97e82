"""Rebuild the contract artifacts (ABI + bytecode) in contracts/artifacts/ from contracts/src/.

SPEC.md section 6: sources compile with the pinned npm ``solc`` (package.json) through its
standard-JSON interface, run by ``node``; OpenZeppelin imports resolve to
node_modules/@openzeppelin/contracts. The build is deterministic: the same sources and compiler
give byte-identical artifact files, and tests/chain/test_artifacts.py checks that the committed
artifacts equal a fresh build.

Usage: ``.venv/bin/python contracts/build.py`` (``make contracts``); ``--check`` exits 1 when
the committed artifacts are stale.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parent
REPO_DIR = CONTRACTS_DIR.parent
SOURCE_DIR = CONTRACTS_DIR / "src"
ARTIFACT_DIR = CONTRACTS_DIR / "artifacts"
NODE_MODULES = REPO_DIR / "node_modules"

#: Contracts that get an artifact (libraries are inlined into them).
CONTRACTS = ("SidecarRegistry", "ScopeContract", "K3EpochCounter", "P256Probe")

SETTINGS: dict[str, object] = {
    # cancun: OpenZeppelin 5.7 uses MCOPY; every target chain profile supports it.
    "evmVersion": "cancun",
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": True,
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}

# solcjs resolves imports through a callback; only node_modules/@openzeppelin/ is reachable.
_NODE_COMPILE = r"""
const fs = require('fs');
const path = require('path');
const solc = require(path.join(process.argv[1], 'solc'));
const root = path.resolve(process.argv[1]);
function findImports(p) {
  if (!p.startsWith('@openzeppelin/')) return { error: 'import outside @openzeppelin: ' + p };
  const full = path.resolve(root, p);
  if (!full.startsWith(root + path.sep)) return { error: 'import escapes node_modules: ' + p };
  try { return { contents: fs.readFileSync(full, 'utf8') }; }
  catch (e) { return { error: 'not found: ' + p }; }
}
const input = fs.readFileSync(0, 'utf8');
process.stdout.write(JSON.stringify({
  version: solc.version(),
  output: JSON.parse(solc.compile(input, { import: findImports })),
}));
"""


class BuildError(Exception):
    """The compiler failed or reported errors."""


def compiler_input() -> dict[str, object]:
    """The standard-JSON input: every contracts/src/*.sol, by its path under contracts/."""
    sources = {
        f"src/{path.name}": {"content": path.read_text(encoding="utf-8")}
        for path in sorted(SOURCE_DIR.glob("*.sol"))
    }
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def build() -> dict[str, bytes]:
    """Compile and return the artifact files' bytes by file name (``<Contract>.json``)."""
    proc = subprocess.run(
        ["node", "-e", _NODE_COMPILE, str(NODE_MODULES)],
        input=json.dumps(compiler_input()).encode(),
        capture_output=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise BuildError(proc.stderr.decode(errors="replace")[-4000:])
    result = json.loads(proc.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    files: dict[str, bytes] = {}
    for name in CONTRACTS:
        compiled = output["contracts"][f"src/{name}.sol"][name]
        artifact = {
            "contractName": name,
            "compiler": {"solc": result["version"], "settings": SETTINGS},
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
        }
        text = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
        files[f"{name}.json"] = text.encode()
    return files


def main(argv: list[str]) -> int:
    """Write the artifacts (or, with --check, compare them) and print their sha256s."""
    files = build()
    if "--check" in argv:
        stale = [n for n, data in files.items() if _read(ARTIFACT_DIR / n) != data]
        for name in stale:
            print(f"stale: {name}")
        return 1 if stale else 0
    ARTIFACT_DIR.mkdir(exist_ok=True)
    for name, data in files.items():
        (ARTIFACT_DIR / name).write_bytes(data)
        code_len = (len(json.loads(data)["deployedBytecode"]) - 2) // 2
        print(f"{name}: sha256 {hashlib.sha256(data).hexdigest()} runtime {code_len} bytes")
    return 0


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
