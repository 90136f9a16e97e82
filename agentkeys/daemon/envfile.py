"""The environment file clients ``source`` to reach the daemon (SPEC.md section 8).

``$XDG_CONFIG_HOME/agentkeys/env`` (0600 in a 0700 directory, replaced atomically; 0640 of
``listen.socket_group`` when that is set) holds,
per policy service, the base-URL variable its official SDK reads and a placeholder key
(the names come from the service's preset, agentkeys/daemon/presets.py):

* ``openai`` → ``OPENAI_BASE_URL=<daemon>/openai/v1``, ``OPENAI_API_KEY=agentkeys-placeholder``
* ``anthropic`` → ``ANTHROPIC_BASE_URL=<daemon>/anthropic``, ``ANTHROPIC_API_KEY=…``
* ``openrouter`` → ``OPENROUTER_BASE_URL=<daemon>/openrouter/api/v1``, ``OPENROUTER_API_KEY=…``
* every service also ``AGENTKEYS_<SVC>_BASE_URL`` and ``AGENTKEYS_<SVC>_API_KEY``
  (``<SVC>``: the name uppercased, ``.``/``-`` → ``_``); a policy ``env_prefix`` /
  ``sdk_base_path`` overrides the preset.
* ``github`` → ``GITHUB_API_BASE_URL=<daemon>/github``, ``GH_TOKEN``/``GITHUB_TOKEN``
  placeholders (read by ``gh`` and most GitHub tooling).

``<daemon>`` is ``http://127.0.0.1:<port>`` when the TCP listener is on. For a Unix-socket
only daemon it is ``http://agentkeys.localhost`` and ``AGENTKEYS_PROXY_SOCKET`` names the
socket: clients must connect through it (``curl --unix-socket``, or an httpx
``HTTPTransport(uds=…)`` passed as the SDK's ``http_client``); see docs/daemon.md.
The placeholder is not a secret: the daemon strips it and injects the real key.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from agentkeys._files import write_private
from agentkeys.daemon.policy import Policy

__all__ = ["PLACEHOLDER_KEY", "render_env", "write_env_file"]

PLACEHOLDER_KEY = "agentkeys-placeholder"
UNIX_BASE = "http://agentkeys.localhost"


def _generic(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def render_env(policy: Policy, *, base_url: str | None, socket_path: Path) -> str:
    """The env file's text for ``policy``.

    Args:
        base_url: the TCP listener's URL (``http://127.0.0.1:9090``), or None for a
            Unix-socket-only daemon.
        socket_path: the daemon's socket.
    """
    base = (base_url or UNIX_BASE).rstrip("/")
    lines = [
        "# written by agentkeys daemon; placeholders only, no secrets",
        f"export AGENTKEYS_PROXY_SOCKET={shlex.quote(str(socket_path))}",
        f"export AGENTKEYS_PROXY_URL={shlex.quote(base)}",
    ]
    for name in sorted(policy.services):
        svc = policy.services[name]
        url = f"{base}/{name}{svc.sdk_base_path or ''}"
        names = [_generic(f"AGENTKEYS_{name}")]
        if svc.env_prefix is not None:
            names.insert(0, svc.env_prefix)
        for var in dict.fromkeys(names):
            lines.append(f"export {var}_BASE_URL={shlex.quote(url)}")
            lines.append(f"export {var}_API_KEY={PLACEHOLDER_KEY}")
        lines.extend(f"export {var}={PLACEHOLDER_KEY}" for var in svc.key_env)
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str, *, group: int | None = None) -> None:
    """Write ``text`` to ``path`` atomically, 0600 in a 0700 directory (created if needed);
    with ``group`` (``listen.socket_group``: the agent user's) 0640 in a 0710 directory of
    that group, so the agent can read it and nothing else of the daemon's.

    Raises:
        InsecureFileError: ``path`` is a symbolic link, or the directory is not ours.
        OSError: the directory cannot be created or written.
    """
    write_private(path, text, group=group)
