#!/usr/bin/env python3
"""Render the AWS policy documents of deploy/aws for one deployment.

    python deploy/aws/generate.py --out build/aws --bucket B --account-id 123456789012 \\
        --role-name AgentkeysActor --oidc-host broker.example.com --audience agentkeys-s3 \\
        --worker-function agentkeys-worker

Writes one JSON file per document (bucket policy, the actor role's identity and trust
policies, the worker's and the daemon's IAM policies, the bucket lifecycle rule expiring
the worker's spent-nonce markers: ``aws s3api put-bucket-lifecycle-configuration``). The
SeaweedFS development IAM is built from the same documents by
``agentkeys.devstack.deployed_iam.deployed_iam_config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agentkeys.worker.iam import render_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render deploy/aws policy documents.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--account-id", required=True)
    parser.add_argument("--role-name", default="AgentkeysActor")
    parser.add_argument("--oidc-host", required=True, help="the broker's issuer host (no https)")
    parser.add_argument("--audience", default="agentkeys-s3")
    parser.add_argument("--worker-function", default="agentkeys-worker")
    options = parser.parse_args(argv)
    values = {
        "bucket": options.bucket,
        "account_id": options.account_id,
        "role_name": options.role_name,
        "oidc_host": options.oidc_host,
        "oidc_provider_arn": f"arn:aws:iam::{options.account_id}:oidc-provider/{options.oidc_host}",
        "audience": options.audience,
        "worker_function": options.worker_function,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    for name, document in render_all(values).items():
        path = options.out / f"{name}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
