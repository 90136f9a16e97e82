"""Typed, frozen configuration built once at start-up (STYLE.md item 13).

A service describes its configuration as a frozen dataclass whose fields are
*sections* (frozen dataclasses) whose fields are scalar options; sections may
nest. :func:`load_config` builds it from an optional TOML file and then
overlays environment variables named ``AGENTKEYS_<SECTION>_<OPTION>``
(uppercase, nested section names joined by ``_``): for a field ``port`` in
section ``signer`` the variable is ``AGENTKEYS_SIGNER_PORT``. The overlay
happens here and only here; code that needs a setting receives the built
object explicitly.

Validation is pydantic v2's, strict (:data:`STRICT`): an unknown section or option
is refused, and so is a value of the wrong type (``bool`` is not an ``int``); duplicate
keys are refused by ``tomllib``. An environment value is a string: an int is decimal
digits, a bool one of ``1 true yes on`` / ``0 false no off``, other types convert the way
pydantic's lax mode converts strings, a tuple is comma-separated, an empty value unsets an
optional option. Option types: ``str``,
``int``, ``float``, ``bool``, ``pathlib.Path``, ``tuple[str, ...]``, a ``StrEnum``,
``Literal[...]`` of strings, and any of these ``| None``. Relative paths in a file are
resolved against the file's directory, in the environment against the working directory.
Every refusal names the file and the option (``[section]`` or ``section.option``) or the
variable.

Files others can write are refused (:func:`check_not_writable_by_others`);
secret files must not be readable by others either (:func:`check_private_file`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import TypeAdapter, ValidationError

from agentkeys.errors import AgentkeysError
from agentkeys.strict_schema import MISSING_MEMBER, STRICT, UNKNOWN_MEMBER, location

__all__ = [
    "ConfigError",
    "InsecureFileError",
    "check_not_writable_by_others",
    "check_private_file",
    "env_names",
    "load_config",
    "validate_document",
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


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _fields(cls: type[Any], trail: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every field of ``cls`` and of its sections, a section before its own fields: the
    field's path of names and its declared type (a section's is a dataclass)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        yield (*trail, field.name), tp
        if _is_section(tp):
            yield from _fields(tp, (*trail, field.name))


def env_names(cls: type[Any]) -> dict[str, tuple[str, ...]]:
    """Every environment variable ``cls`` reads, mapped to its path of field names.

    Raises:
        ConfigError: two options map to the same variable name.
    """
    names: dict[str, tuple[str, ...]] = {}
    for path, tp in _fields(cls):
        if _is_section(tp):
            continue
        if len(path) < 2:
            raise ConfigError(f"option {path[0]!r} of {cls.__name__} is outside a section")
        name = _env_name(path)
        if name in names:
            raise ConfigError(f"two options map to {name}")
        names[name] = path
    return names


def _env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(path).upper()


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """The validator of configuration ``cls`` (built once): :data:`STRICT` on every
    section."""
    found = _ADAPTERS.get(cls)
    if found is None:
        if not _is_section(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        sections = [cls, *(tp for _, tp in _fields(cls) if _is_section(tp))]
        for section in sections:
            section.__pydantic_config__ = STRICT
        found = _ADAPTERS[cls] = TypeAdapter(cls)
    return found


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
    validator: TypeAdapter[T] = _adapter(cls)
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
    where = f"{path}: " if path is not None else ""
    names = {trail: name for name, trail in env_names(cls).items()}
    for trail, tp in _fields(cls):
        table, key = _table(data, trail[:-1]), trail[-1]
        if table is None:
            continue  # within a section that is not a table: refused below
        if _is_section(tp):
            table.setdefault(key, {})  # an absent section is an empty one
        elif names[trail] in env:
            table[key] = _from_env(tp, env[names[trail]], names[trail])
        elif key in table:
            table[key] = _from_file(tp, table[key], where + ".".join(trail), base)
    try:
        return validate_document(validator, data, env_hint=True)
    except ConfigError as exc:  # also a section's own check (its __post_init__)
        raise type(exc)(where + exc.reason) from None


def validate_document(
    validator: TypeAdapter[T], data: Mapping[str, Any], *, env_hint: bool = False
) -> T:
    """``data`` (a parsed TOML or JSON document) validated strictly (:data:`STRICT`).

    The document is validated as the JSON it would be, so that a string is a path, an
    enum member or a tuple's item exactly as it would be in a request body.

    Args:
        validator: the adapter of a dataclass that carries :data:`STRICT`.
        data: the document.
        env_hint: a missing option's reason names its environment variable.

    Raises:
        ConfigError: the first problem, naming the option (``section.option``) or the
            section (``[section]``) whose unknown options it lists.
    """
    try:
        document = json.dumps(data, allow_nan=False, default=_not_an_option_value)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    except ValueError:
        raise ConfigError("nan and inf are no option's value") from None
    try:
        return validator.validate_json(document)
    except ValidationError as exc:
        raise ConfigError(_refusal(exc, env_hint=env_hint)) from None


def _table(data: dict[str, Any], trail: tuple[str, ...]) -> dict[str, Any] | None:
    for name in trail:
        data = data.get(name, {})
        if not isinstance(data, dict):
            return None
    return data


def _not_an_option_value(value: object) -> Any:
    raise TypeError(f"a TOML {type(value).__name__} is no option's value")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``T`` of ``T | None`` (and True), else ``tp`` itself (and False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _from_file(tp: Any, value: Any, label: str, base: Path) -> Any:
    """A file's value, a relative path resolved against the file's directory."""
    if _unwrap_optional(tp)[0] is not Path or not isinstance(value, str):
        return value  # validated as it is
    if not value:
        raise ConfigError(f"{label} must be a non-empty path string")
    resolved = Path(value).expanduser()
    return str(resolved if resolved.is_absolute() else base / resolved)


def _from_env(tp: Any, raw: str, name: str) -> Any:
    """An environment variable's value as the JSON value of option type ``tp``.

    An int is decimal digits only (not ``8.0``); a bool is one of ``1 true yes on`` or
    ``0 false no off`` (any case); other strings convert as pydantic's lax mode does; a
    tuple is comma-separated; an empty value unsets an optional option; a relative path
    is resolved against the working directory.
    """
    inner, optional = _unwrap_optional(tp)
    if optional and raw == "":
        return None
    if inner is bool:
        word = raw.strip().lower()
        if word in _ENV_TRUE or word in _ENV_FALSE:
            return word in _ENV_TRUE
        raise ConfigError(f"{name}: must be one of 1/true/yes/on or 0/false/no/off")
    if inner is int:
        if _ENV_INT.fullmatch(raw.strip()) is None:
            raise ConfigError(f"{name}: must be a whole number in decimal digits")
        return int(raw)
    if inner is Path:
        if not raw:
            raise ConfigError(f"{name} must be a non-empty path")
        return str(Path(raw).expanduser().absolute())
    value: Any = raw
    if typing.get_origin(inner) is tuple:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    lax = _lax_adapter(inner)
    try:
        return lax.dump_python(lax.validate_python(value), mode="json")
    except ValidationError as exc:
        raise ConfigError(f"{name}: {exc.errors()[0]['msg']}") from None


_ENV_TRUE = frozenset({"1", "true", "yes", "on"})
_ENV_FALSE = frozenset({"0", "false", "no", "off"})
_ENV_INT = re.compile(r"[+-]?[0-9]+")


@functools.cache
def _lax_adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _refusal(exc: ValidationError, *, env_hint: bool) -> str:
    """The reason for the first problem: the unknown options of a section first."""
    errors = exc.errors(include_url=False, include_input=False)
    unknown = [e["loc"] for e in errors if e["type"] in UNKNOWN_MEMBER]
    if unknown:
        section = unknown[0][:-1]
        names = sorted(str(loc[-1]) for loc in unknown if loc[:-1] == section)
        return f"unknown option(s) in [{location(section) or 'top level'}]: {', '.join(names)}"
    first = errors[0]
    label = location(first["loc"]) or "the value"
    if first["type"] in MISSING_MEMBER and env_hint:
        name = _env_name(tuple(map(str, first["loc"])))
        return f"{label} is required (set it in the file or {name})"
    if first["type"] in MISSING_MEMBER:
        return f"{label} is required"
    if first["type"] in ("dataclass_type", "dataclass_exact_type"):
        return f"{label} must be a table"
    return f"{label}: {first['msg']}"
