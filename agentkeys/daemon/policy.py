"""The host-local policy of the sidecar (SPEC.md section 8): pure parsing and matching.

A TOML file, **deny by default**. Example::

    [[caller]]
    name = "coder"                      # quota key and audit label
    uid = 1000
    exe = "/usr/bin/python3.11"         # and/or exe_sha256 = "<64 hex>"
    services = ["openai"]

    [service.openai]                    # a preset's name (agentkeys/daemon/presets.py),
    upstream = "https://api.openai.com" # so these three are implied; or preset = "openai"
    inject_header = "Authorization"     # default: the preset's, else Authorization
    inject_format = "Bearer {key}"      # default: the preset's, else Bearer; one {key}
    allow = ["POST /v1/chat/completions", "GET /v1/models"]
    per_minute = 60                     # quotas per (caller, service); 0 = no limit
    per_hour = 1000
    daily_usd = 5.0

    [service.openai.prices]             # USD per million tokens (required with daily_usd)
    default = { prompt = 2.5, completion = 10.0 }
    "gpt-4o-mini" = { prompt = 0.15, completion = 0.6 }

A caller entry matches when its ``uid`` equals the attested uid and every executable
constraint it names holds (``exe``: the path, its symlinks resolved when the policy is
loaded, equals that of ``/proc/<pid>/exe``; ``exe_sha256``: the
digest of those bytes). An entry must name at least one of them, or say ``any_exe = true``
explicitly. ``pod_wide = true`` (and nothing else) matches E2 callers accepted as "some
process in this pod". The first matching entry wins. Allowlist patterns are ``METHOD PATH``
where a path segment ``*`` matches one segment, ``*`` inside a segment any characters but
``/``, and a final ``**`` any rest (one or more segments).

The document is validated strictly (pydantic, :data:`agentkeys.strict_schema.STRICT`): an
unknown table or option, a value of the wrong type (``per_minute = true``, ``uid = 1.0``), a
negative quota and a duplicate key are refused, the reason naming the entry and the option
(``caller[0].uid``, ``[service.openai]``).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, with_config

from agentkeys.config import (
    ConfigError,
    check_not_writable_by_others,
    validate_document,
)
from agentkeys.daemon.errors import (
    CallerNotAllowed,
    PolicyInvalid,
    RouteNotAllowed,
    ServiceNotAllowed,
    UnknownService,
)
from agentkeys.daemon.presets import PRESETS, Preset
from agentkeys.errors import FormatError
from agentkeys.omni import normalize_service
from agentkeys.strict_schema import STRICT
from attest.caller import CallerIdentity

__all__ = [
    "CallerRule",
    "Decision",
    "Policy",
    "Price",
    "RoutePattern",
    "ServicePolicy",
    "load_policy",
    "parse_policy",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_ENV_PREFIX = re.compile(r"[A-Z][A-Z0-9_]{0,31}", re.ASCII)
_SEGMENT = re.compile(r"[A-Za-z0-9._~*:@!$&'()+,;=-]+", re.ASCII)
MAX_POLICY_BYTES = 1024 * 1024
_NO_PRESET = Preset(upstream="")


@dataclass(frozen=True)
class RoutePattern:
    """One allowlist entry: a method and a compiled path pattern."""

    method: str
    pattern: str
    regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> RoutePattern:
        """Parse ``"METHOD /path/pattern"``.

        Raises:
            PolicyInvalid: unknown method or malformed pattern.
        """
        method, _, path = text.strip().partition(" ")
        method = method.upper()
        path = path.strip()
        if method not in _METHODS:
            raise PolicyInvalid(f"allow entry {text!r}: unknown method")
        if not path.startswith("/") or "//" in path or "?" in path:
            raise PolicyInvalid(f"allow entry {text!r}: path must be /segment/... without query")
        segments = path[1:].split("/") if path != "/" else []
        parts: list[str] = []
        for i, segment in enumerate(segments):
            if segment == "**":
                if i != len(segments) - 1:
                    raise PolicyInvalid(f"allow entry {text!r}: ** only as the last segment")
                parts.append("/.+")
                continue
            if segment == "*":
                parts.append("/[^/]+")
                continue
            if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
                raise PolicyInvalid(f"allow entry {text!r}: invalid path segment")
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
        regex = re.compile("".join(parts) or "/", re.ASCII)
        return cls(method=method, pattern=path, regex=regex)

    def matches(self, method: str, path: str) -> bool:
        """Whether ``method`` and the (already validated) ``path`` are allowed."""
        return method == self.method and self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class Price:
    """USD per million prompt and completion tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost in USD of one call's usage."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


@dataclass(frozen=True)
class ServicePolicy:
    """How one service is reached: upstream, injection, allowlist, quotas and prices."""

    name: str
    upstream: str
    inject_header: str
    inject_format: str
    allow: tuple[RoutePattern, ...]
    per_minute: int = 0
    per_hour: int = 0
    daily_usd: float = 0.0
    prices: Mapping[str, Price] = field(default_factory=dict)
    env_prefix: str | None = None
    sdk_base_path: str | None = None
    key_env: tuple[str, ...] = ()

    def allows(self, method: str, path: str) -> bool:
        """Whether the allowlist admits ``method path``."""
        return any(p.matches(method, path) for p in self.allow)

    def price_for(self, model: str | None) -> Price | None:
        """The price of ``model``, else the ``default`` price, else None."""
        if model is not None and model in self.prices:
            return self.prices[model]
        return self.prices.get("default")

    def header_value(self, secret: bytes) -> str:
        """The injected header's value for the credential ``secret`` (ASCII, no CR/LF)."""
        return self.inject_format.replace("{key}", secret.decode("ascii"))


@dataclass(frozen=True)
class CallerRule:
    """One caller entry (see the module docstring)."""

    name: str
    services: frozenset[str]
    uid: int | None = None
    exe: str | None = None
    exe_sha256: str | None = None
    any_exe: bool = False
    pod_wide: bool = False

    def matches(self, caller: CallerIdentity) -> bool:
        """Whether the attested ``caller`` is this entry's caller."""
        if self.pod_wide:
            return caller.process is None and caller.pod_wide
        process = caller.process
        if process is None or process.uid != self.uid:
            return False
        if self.exe is not None and process.exe_path != self.exe:
            return False
        return self.exe_sha256 is None or hmac.compare_digest(
            process.exe_sha256.encode("ascii"), self.exe_sha256.encode("ascii")
        )


@dataclass(frozen=True)
class Decision:
    """What the policy allowed: the caller entry and the service."""

    caller: CallerRule
    service: ServicePolicy


class _CallerIndex:
    """The caller entries indexed by uid, then executable path (built once per policy).

    Only entries that could match are looked at: for an attested process, those of its
    uid that name its ``exe`` path or no path at all, in policy order; for a pod-wide
    E2 caller, the first ``pod_wide`` entry. The first entry (in file order) whose
    :meth:`CallerRule.matches` holds wins, exactly as a linear scan would decide.
    """

    __slots__ = ("_by_exe", "_pod_wide", "_without_exe")

    def __init__(self, callers: Sequence[CallerRule]) -> None:
        self._by_exe: dict[tuple[int, str], list[tuple[int, CallerRule]]] = {}
        self._without_exe: dict[int, list[tuple[int, CallerRule]]] = {}
        self._pod_wide: CallerRule | None = None
        for position, rule in enumerate(callers):
            if rule.pod_wide:
                if self._pod_wide is None:
                    self._pod_wide = rule
            elif rule.uid is None:
                continue  # matches no process (parse_policy never builds one)
            elif rule.exe is not None:
                self._by_exe.setdefault((rule.uid, rule.exe), []).append((position, rule))
            else:
                self._without_exe.setdefault(rule.uid, []).append((position, rule))

    def first_match(self, caller: CallerIdentity) -> CallerRule | None:
        process = caller.process
        if process is None:
            return self._pod_wide if caller.pod_wide else None
        named = self._by_exe.get((process.uid, process.exe_path), ())
        unnamed = self._without_exe.get(process.uid, ())
        candidates = (
            heapq.merge(named, unnamed, key=_position) if named and unnamed else (named or unnamed)
        )
        for _, rule in candidates:
            if rule.matches(caller):
                return rule
        return None


def _seen(caller: CallerIdentity) -> str:
    """What the daemon saw of ``caller``, for the refusal's reason."""
    process = caller.process
    if process is None:
        return "pod-wide caller" if caller.pod_wide else "no attested process"
    return f"uid {process.uid}, exe {process.exe_path[:256]!r}"


def _position(item: tuple[int, CallerRule]) -> int:
    return item[0]


@dataclass(frozen=True)
class Policy:
    """The whole host-local policy (immutable; a reload builds a new one)."""

    callers: tuple[CallerRule, ...]
    services: Mapping[str, ServicePolicy]
    digest: str = ""
    _index: _CallerIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _CallerIndex(self.callers))

    def match_caller(self, caller: CallerIdentity) -> CallerRule | None:
        """The first caller entry (in file order) matching ``caller``, or None."""
        return self._index.first_match(caller)

    def decide(self, caller: CallerIdentity, service: str, method: str, path: str) -> Decision:
        """Match a request against the policy; deny by default.

        Args:
            caller: the attested caller.
            service: the service named by the request path (normalised).
            method: the HTTP method (uppercase).
            path: the upstream path (validated by the proxy: no ``..``, no ``//``).

        Raises:
            CallerNotAllowed, UnknownService, ServiceNotAllowed, RouteNotAllowed.
        """
        rule = self._index.first_match(caller)
        if rule is None:
            raise CallerNotAllowed(f"no policy entry matches this caller ({_seen(caller)})")
        svc = self.services.get(service)
        if svc is None:
            raise UnknownService(f"no service {service!r} in the policy")
        if service not in rule.services:
            raise ServiceNotAllowed(f"caller {rule.name!r} may not use {service!r}")
        if not svc.allows(method, path):
            raise RouteNotAllowed(f"{method} {path[:128]} is not allowed for {service!r}")
        return Decision(caller=rule, service=svc)


# --- parsing ------------------------------------------------------------------------------
# The document's shape (tables, option names, types, non-negative quotas) is pydantic's,
# strict (agentkeys.strict_schema.STRICT); what a value means (URLs, header names, route
# patterns, presets, service names) is checked below, in the order of the file.

_NonNegativeInt = Annotated[int, Field(ge=0)]
_NonNegativeFloat = Annotated[float, Field(ge=0)]


@with_config(STRICT)
@dataclass(frozen=True)
class _PriceEntry:
    prompt: _NonNegativeFloat
    completion: _NonNegativeFloat


@with_config(STRICT)
@dataclass(frozen=True)
class _ServiceEntry:
    preset: str | None = None
    upstream: str | None = None
    inject_header: str | None = None
    inject_format: str | None = None
    allow: tuple[str, ...] = ()
    per_minute: _NonNegativeInt = 0
    per_hour: _NonNegativeInt = 0
    daily_usd: _NonNegativeFloat = 0.0
    prices: dict[str, _PriceEntry] = field(default_factory=dict)
    env_prefix: str | None = None
    sdk_base_path: str | None = None


@with_config(STRICT)
@dataclass(frozen=True)
class _CallerEntry:
    name: str | None = None
    uid: _NonNegativeInt | None = None
    exe: str | None = None
    exe_sha256: str | None = None
    any_exe: bool = False
    pod_wide: bool = False
    services: tuple[str, ...] = ()


@with_config(STRICT)
@dataclass(frozen=True)
class _PolicyDocument:
    service: dict[str, _ServiceEntry] = field(default_factory=dict)
    caller: tuple[_CallerEntry, ...] = ()


_DOCUMENT = TypeAdapter(_PolicyDocument)


def _service_name(value: str, where: str) -> str:
    try:
        return normalize_service(value)
    except FormatError as exc:
        raise PolicyInvalid(f"{where}: {exc.reason}") from exc


def _parse_upstream(value: str | None, where: str) -> str:
    if value is None:
        raise PolicyInvalid(f"{where}.upstream is required")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyInvalid(f"{where}.upstream must be an http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise PolicyInvalid(f"{where}.upstream must not carry query, fragment or userinfo")
    return value.rstrip("/")


def _parse_service(name: str, entry: _ServiceEntry) -> ServicePolicy:
    where = f"service.{name}"
    if entry.preset is not None and entry.preset not in PRESETS:
        raise PolicyInvalid(f"{where}.preset: no preset {entry.preset!r} ({', '.join(PRESETS)})")
    preset = PRESETS.get(entry.preset or name)
    upstream = _parse_upstream(entry.upstream or (preset.upstream if preset else None), where)
    default = preset or _NO_PRESET
    header = entry.inject_header or default.inject_header
    if not _HEADER_NAME.fullmatch(header):
        raise PolicyInvalid(f"{where}.inject_header is not a valid header name")
    fmt = entry.inject_format or default.inject_format
    if fmt.count("{key}") != 1 or any(c in fmt for c in "\r\n\x00"):
        raise PolicyInvalid(f"{where}.inject_format must contain {{key}} exactly once")
    if not entry.allow:
        raise PolicyInvalid(f"{where}.allow must list at least one 'METHOD /path'")
    allow = tuple(RoutePattern.parse(a) for a in entry.allow)
    prices = {k: Price(prompt=v.prompt, completion=v.completion) for k, v in entry.prices.items()}
    if entry.daily_usd > 0 and "default" not in prices:
        raise PolicyInvalid(f"{where}: daily_usd needs a prices.default entry (fail closed)")
    env_prefix = entry.env_prefix or default.env_prefix
    if env_prefix is not None and not _ENV_PREFIX.fullmatch(env_prefix):
        raise PolicyInvalid(f"{where}.env_prefix must match {_ENV_PREFIX.pattern}")
    base_path = entry.sdk_base_path
    if base_path is None and preset is not None:
        base_path = preset.sdk_base_path
    if base_path is not None and base_path and not base_path.startswith("/"):
        raise PolicyInvalid(f"{where}.sdk_base_path must start with /")
    return ServicePolicy(
        name=name,
        upstream=upstream,
        inject_header=header,
        inject_format=fmt,
        allow=allow,
        per_minute=entry.per_minute,
        per_hour=entry.per_hour,
        daily_usd=entry.daily_usd,
        prices=prices,
        env_prefix=env_prefix,
        sdk_base_path=base_path,
        key_env=default.key_env,
    )


def _parse_caller(
    index: int, entry: _CallerEntry, services: Mapping[str, ServicePolicy]
) -> CallerRule:
    where = f"caller[{index}]"
    name = entry.name or f"caller-{index}"
    if not _CALLER_NAME.fullmatch(name):
        raise PolicyInvalid(f"{where}.name must match {_CALLER_NAME.pattern}")
    names = frozenset(_service_name(s, f"{where}.services") for s in entry.services)
    unknown = sorted(names - set(services))
    if unknown:
        raise PolicyInvalid(f"{where}.services names unknown services: {', '.join(unknown)}")
    uid, exe, exe_sha256 = entry.uid, entry.exe, entry.exe_sha256
    if entry.pod_wide:
        if uid is not None or exe is not None or exe_sha256 is not None or entry.any_exe:
            raise PolicyInvalid(f"{where}: pod_wide entries name no uid or executable")
        return CallerRule(name=name, services=names, pod_wide=True)
    if uid is None:
        raise PolicyInvalid(f"{where}.uid is required")
    if exe is not None:
        if not exe.startswith("/"):
            raise PolicyInvalid(f"{where}.exe must be an absolute path")
        # /proc/<pid>/exe is always the resolved file: resolve symlinks (venv bin/python,
        # /usr/bin/python3) once, at load
        exe = os.path.realpath(exe)
    if exe_sha256 is not None:
        exe_sha256 = exe_sha256.lower()
        if not _SHA256.fullmatch(exe_sha256):
            raise PolicyInvalid(f"{where}.exe_sha256 must be 64 hex digits")
    if exe is None and exe_sha256 is None and not entry.any_exe:
        raise PolicyInvalid(f"{where} needs exe or exe_sha256 (or an explicit any_exe = true)")
    return CallerRule(
        name=name, services=names, uid=uid, exe=exe, exe_sha256=exe_sha256, any_exe=entry.any_exe
    )


def parse_policy(text: bytes) -> Policy:
    """Parse a policy document.

    Raises:
        PolicyInvalid: anything malformed or ambiguous (never a partial policy).
    """
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyInvalid("policy file too large")
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyInvalid(f"policy is not valid TOML: {exc}") from exc
    try:
        document = validate_document(_DOCUMENT, data)
    except ConfigError as exc:
        raise PolicyInvalid(exc.reason) from None
    services: dict[str, ServicePolicy] = {}
    for raw_name, entry in document.service.items():
        name = _service_name(raw_name, "service")
        if name in services or name != raw_name:
            raise PolicyInvalid(f"service {raw_name!r}: write names lowercase, once")
        services[name] = _parse_service(name, entry)
    callers = tuple(_parse_caller(i, raw, services) for i, raw in enumerate(document.caller))
    seen: set[str] = set()
    for rule in callers:
        if rule.name in seen:
            raise PolicyInvalid(f"two caller entries are named {rule.name!r}")
        seen.add(rule.name)
    return Policy(callers=callers, services=services, digest=hashlib.sha256(text).hexdigest())


def load_policy(path: Path) -> Policy:
    """Read and parse the policy at ``path`` (refused if others can write it).

    Raises:
        PolicyInvalid: unreadable, unsafe or malformed (the reason names the file).
    """
    try:
        check_not_writable_by_others(path)
        text = path.read_bytes()
    except ConfigError as exc:
        raise PolicyInvalid(exc.reason) from exc
    except OSError as exc:
        raise PolicyInvalid(f"cannot read the policy {path}: {exc.strerror}") from exc
    try:
        return parse_policy(text)
    except PolicyInvalid as exc:
        raise PolicyInvalid(f"{path}: {exc.reason}") from None


def services_of(policy: Policy) -> Sequence[ServicePolicy]:
    """The policy's services in name order."""
    return [policy.services[k] for k in sorted(policy.services)]
