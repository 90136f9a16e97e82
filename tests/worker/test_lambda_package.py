"""deploy/lambda/build.py: the deployable zip is self-contained (imports in a fresh venv)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import agentkeys.worker as worker
from agentkeys.chain.artifacts import load_artifact
import boto3
assert worker.__file__.startswith(sys.argv[1]), worker.__file__
load_artifact("SidecarRegistry")
boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
answer = worker.lambda_handler(
    {"rawPath": "/v1/cred/fetch", "requestContext": {"http": {"method": "POST"}}}, None
)
print(json.dumps(answer))
"""


def test_zip_imports_cleanly_in_a_fresh_venv(tmp_path: Path) -> None:
    archive = tmp_path / "worker.zip"
    subprocess.run(
        [sys.executable, str(REPO / "deploy/lambda/build.py"), "--out", str(archive), "--store"],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
        assert "agentkeys/worker/_lambda.py" in names
        assert "attest/p256.py" in names  # agentkeys builds on attest
        assert "agentkeys/_contracts/SidecarRegistry.json" in names
        assert "agentkeys/_aws/actor-role-policy.json" in names
        assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
        assert {info.date_time for info in opened.infolist()} == {(2020, 1, 1, 0, 0, 0)}
        opened.extractall(tmp_path / "task")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", _PROBE, str(tmp_path / "task")],
        capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["statusCode"] == 500
    assert json.loads(answer["body"]) == {
        "error": "config_error",
        "reason": "worker is misconfigured",
    }
