"""Service presets: how the real APIs take their key, so a policy names one and says no more.

A policy service table that says ``preset = "<name>"`` (or whose name *is* a preset's name)
takes the preset's upstream, injected header and format, and env-file names; any of them
the table sets itself wins. The allowlist is never preset: deny by default, the operator
lists the routes.

To add a preset, append one :class:`Preset` to :data:`PRESETS` (and a row to the table in
docs/daemon.md); ``tests/daemon/test_presets.py`` checks every entry.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """One API's defaults.

    Attributes:
        upstream: the API's base URL.
        inject_header: the header the real key goes in (every other auth header is dropped).
        inject_format: its value, with ``{key}`` once.
        env_prefix: the SDK's variables ``<prefix>_BASE_URL`` / ``<prefix>_API_KEY``.
        sdk_base_path: appended to the daemon's service URL in ``<prefix>_BASE_URL``.
        key_env: further variables the SDK or CLI reads its key from (placeholder written).
    """

    upstream: str
    inject_header: str = "Authorization"
    inject_format: str = "Bearer {key}"
    env_prefix: str | None = None
    sdk_base_path: str = ""
    key_env: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    "openai": Preset(upstream="https://api.openai.com", env_prefix="OPENAI", sdk_base_path="/v1"),
    # x-api-key only; the caller's anthropic-version header passes through unchanged
    "anthropic": Preset(
        upstream="https://api.anthropic.com",
        inject_header="x-api-key",
        inject_format="{key}",
        env_prefix="ANTHROPIC",
    ),
    "openrouter": Preset(
        upstream="https://openrouter.ai", env_prefix="OPENROUTER", sdk_base_path="/api/v1"
    ),
    # GitHub takes "Bearer" and the older "token" scheme (inject_format = "token {key}")
    "github": Preset(
        upstream="https://api.github.com",
        env_prefix="GITHUB_API",
        key_env=("GH_TOKEN", "GITHUB_TOKEN"),
    ),
}
"""The shipped presets, by name."""
