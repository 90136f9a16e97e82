"""Policies as data: deploy/aws/*.json rendered for AWS.

SPEC.md section 9 step 4 and section 10. The JSON documents in ``deploy/aws/`` are the one
source (installed as the package data ``agentkeys._aws``); placeholders are written
``{{name}}`` (never ``${…}``, which is IAM's own variable syntax and stays as is).
:func:`render_policy` substitutes them, refusing values that could change a pattern
(``* ? $ { } "`` or whitespace) and any placeholder left unfilled. The SeaweedFS
development IAM is built from the same documents by
:func:`agentkeys.devstack.deployed_iam.deployed_iam_config`, so what is tested is what is
deployed.

* ``actor-role-policy.json``: the actor role's identity policy (``_v1_wallet_keyed`` and
  ``_v2_omni_keyed`` statements side by side, and the deny for keys containing ``${``);
* ``role-trust-policy.json``: the role's trust policy (the actor tag required non-empty;
  the wallet tag either ``0x…`` or absent: the operator's own sessions carry it, an
  agent's do not);
* ``bucket-lifecycle.json`` expires the worker's spent-nonce markers (``pop-nonces/``,
  written only with ``[storage] shared_nonces``) after a day; they matter for 65 s;
* ``bucket-policy.json`` carries the same statements for AWS, where the principal is the
  role's ARN; SeaweedFS' development store has no account to name there, so the role's
  identity policy is what it enforces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from agentkeys.errors import AgentkeysError

__all__ = [
    "DOCUMENTS",
    "POLICY_DIR",
    "V1_SID",
    "V2_SID",
    "PolicyRenderError",
    "render_all",
    "render_policy",
]

#: deploy/aws, wherever the package is installed (package data ``agentkeys._aws``).
POLICY_DIR: Traversable = resources.files("agentkeys._aws")
DOCUMENTS = (
    "actor-role-policy",
    "bucket-policy",
    "role-trust-policy",
    "worker-policy",
    "daemon-policy",
    "bucket-lifecycle",
)
V1_SID = "_v1_wallet_keyed"
V2_SID = "_v2_omni_keyed"
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@+=,-]{1,256}", re.ASCII)


class PolicyRenderError(AgentkeysError):
    """A policy document could not be rendered (unsafe value, missing value, bad JSON)."""

    error = "policy_render_error"
    status = 500


def render_policy(
    name: str, values: Mapping[str, str], *, policy_dir: Traversable = POLICY_DIR
) -> dict[str, Any]:
    """Render ``deploy/aws/<name>.json`` with ``values``.

    Raises:
        PolicyRenderError: unknown document, unsafe or missing value, invalid JSON.
    """
    if name not in DOCUMENTS:
        raise PolicyRenderError(f"unknown policy document {name!r}")
    for key, value in values.items():
        if not isinstance(value, str) or _SAFE_VALUE.fullmatch(value) is None:
            raise PolicyRenderError(f"unsafe value for placeholder {key!r}")
    try:
        text = (policy_dir / f"{name}.json").read_text(encoding="utf-8")
    except OSError:
        raise PolicyRenderError(f"cannot read policy document {name!r}") from None
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise PolicyRenderError(f"{name}: no value for placeholders {missing}")
    rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    try:
        document = json.loads(rendered)
    except ValueError:
        raise PolicyRenderError(f"{name}: not valid JSON after rendering") from None
    if not isinstance(document, dict):
        raise PolicyRenderError(f"{name}: not a JSON object")
    return document


def render_all(
    values: Mapping[str, str], *, policy_dir: Traversable = POLICY_DIR
) -> dict[str, dict[str, Any]]:
    """Every document of :data:`DOCUMENTS`, rendered (for ``deploy/aws/generate.py``)."""
    return {name: render_policy(name, values, policy_dir=policy_dir) for name in DOCUMENTS}
