"""Typed, frozen configuration built once at start-up (STYLE.md item 13).

A service describes its configuration as a frozen dataclass whose fields are
*sections* (frozen dataclasses) whose fields are scalar options; sections may
nest. :func:`load_config` builds it from an optional TOML file and then
overlays environment variables named ``AGENTKEYS_<SECTION>_<OPTION>``
(uppercase, nested section names joined by ``_``): for a field ``port`` in
section ``signer`` the variable is ``AGENTKEYS_SIGNER_PORT``. The overlay
happens here and only here; code that needs a setting receives the built
object explicitly.

Supported option types: ``str``, ``int``, ``float``, ``bool``,
``pathlib.Path``, ``tuple[str, ...]`` (comma-separated in the environment), a
``StrEnum``, ``Literal[...]`` of strings, and any of these ``| None``.
Relative paths in a file are resolved against the file's directory, in the
environment against the working directory.

Files others can write are refused (:func:`check_not_writable_by_others`);
secret files must not be readable by others either (:func:`check_private_file`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from agentkeys.errors import AgentkeysError

__all__ = [
    "ConfigError",
    "InsecureFileError",
    "check_not_writable_by_others",
    "check_private_file",
    "env_names",
    "load_config",
]

ENV_PREFIX = "AGENTKEYS_"

T = TypeVar("T")


class ConfigError(AgentkeysError):
    """The configuration is missing, malformed or names an unknown option."""

    error: ClassVar[str] = "config_error"
    status: ClassVar[int] = 500


class InsecureFileError(ConfigError):
    """A configuration or key file (or its directory) can be changed or read by others."""

    error: ClassVar[str] = "insecure_file"


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid not in (os.geteuid(), 0):
        raise InsecureFileError(f"{path} is owned by uid {st.st_uid}, not by this user or root")


def check_not_writable_by_others(path: Path) -> None:
    """Refuse a file others can modify: owned by someone else, or group/other-writable.

    The containing directory must not be group/other-writable either (a
    writable directory lets others replace the file).

    Raises:
        InsecureFileError: the file or its directory is unsafe.
        ConfigError: the file does not exist.
    """
    try:
        st = path.stat()
        parent = path.parent.stat()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    _check_owner(path, st)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureFileError(f"{path} is writable by group or others (chmod go-w)")
    if parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not parent.st_mode & stat.S_ISVTX:
        raise InsecureFileError(f"{path.parent} is writable by group or others (chmod go-w)")


def check_private_file(path: Path) -> None:
    """Refuse a secret file unless only its owner (this user or root) can read or write it.

    Raises:
        InsecureFileError: the file has any group/other permission bit or a foreign owner.
        ConfigError: the file does not exist.
    """
    check_not_writable_by_others(path)
    if path.stat().st_mode & 0o077:
        raise InsecureFileError(f"{path} is accessible by group or others (chmod 600)")


def _section_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def env_names(cls: type[Any]) -> dict[str, tuple[str, ...]]:
    """Every environment variable ``cls`` reads, mapped to its path of field names.

    Raises:
        ConfigError: two options map to the same variable name.
    """
    names: dict[str, tuple[str, ...]] = {}

    def walk(section: type[Any], trail: tuple[str, ...]) -> None:
        hints = _section_types(section)
        for field in dataclasses.fields(section):
            tp = hints[field.name]
            path = (*trail, field.name)
            if _is_section(tp):
                walk(tp, path)
                continue
            if len(path) < 2:
                raise ConfigError(f"option {field.name!r} of {cls.__name__} is outside a section")
            name = ENV_PREFIX + "_".join(path).upper()
            if name in names:
                raise ConfigError(f"two options map to {name}")
            names[name] = path

    walk(cls, ())
    return names


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def load_config(
    cls: type[T],
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build the frozen configuration ``cls`` from ``path`` (TOML) and the environment.

    Args:
        cls: a frozen dataclass whose fields are sections (dataclasses).
        path: TOML file; ``None`` uses defaults and the environment only. The
            file must not be writable by others.
        environ: the environment to overlay (default ``os.environ``); only
            variables named after known options are read.

    Raises:
        ConfigError: unreadable/malformed file, unknown section or option,
            wrong type, or a required option with no value.
        InsecureFileError: the file is writable by others.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        check_not_writable_by_others(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        base = path.parent.absolute()
    overlay: dict[tuple[str, ...], str] = {
        trail: env[name] for name, trail in env_names(cls).items() if name in env
    }
    return _build(cls, data, (), base, overlay)


def _build(
    section: type[T],
    data: Mapping[str, Any],
    trail: tuple[str, ...],
    base: Path,
    overlay: Mapping[tuple[str, ...], str],
) -> T:
    where = ".".join(trail) or "top level"
    hints = _section_types(section)
    known = {f.name for f in dataclasses.fields(section)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) in [{where}]: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(section):  # type: ignore[arg-type]
        tp = hints[field.name]
        path = (*trail, field.name)
        label = ".".join(path)
        if _is_section(tp):
            sub = data.get(field.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{label} must be a table")
            values[field.name] = _build(tp, sub, path, base, overlay)
            continue
        if path in overlay:
            values[field.name] = _from_env(tp, overlay[path], label)
        elif field.name in data:
            values[field.name] = _from_toml(tp, data[field.name], label, base)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            name = ENV_PREFIX + "_".join(path).upper()
            raise ConfigError(f"{label} is required (set it in the file or {name})")
    try:
        return section(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [{where}]: {exc}") from exc


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _from_toml(tp: Any, value: Any, label: str, base: Path) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    if inner is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{label} must be a non-empty path string")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if typing.get_origin(inner) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{label} must be a list of strings")
        return tuple(value)
    return _check_scalar(inner, value, label)


def _from_env(tp: Any, raw: str, label: str) -> Any:
    inner, optional = _unwrap_optional(tp)
    if optional and raw == "":
        return None
    if inner is Path:
        if not raw:
            raise ConfigError(f"{label} must be a non-empty path")
        return Path(raw).expanduser().absolute()
    if typing.get_origin(inner) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if inner is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{label} must be true or false")
    if inner is int:
        try:
            return int(raw.strip(), 10)
        except ValueError as exc:
            raise ConfigError(f"{label} must be an integer") from exc
    if inner is float:
        try:
            return float(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{label} must be a number") from exc
    return _check_scalar(inner, raw, label)


def _check_scalar(tp: Any, value: Any, label: str) -> Any:
    if typing.get_origin(tp) is typing.Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{label} must be one of: {allowed}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as exc:
            allowed = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{label} must be one of: {allowed}") from exc
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{label} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string")
        return value
    raise ConfigError(f"{label} has an unsupported option type {tp!r}")
