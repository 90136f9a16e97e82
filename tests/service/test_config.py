"""agentkeys.config: TOML + AGENTKEYS_<SECTION>_<OPTION> overlay into frozen typed objects."""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from agentkeys.config import (
    ConfigError,
    InsecureFileError,
    check_private_file,
    env_names,
    load_config,
)
from agentkeys.service import ServerSettings


class Mode(enum.StrEnum):
    A = "a"
    B = "b"


@dataclass(frozen=True)
class Extra:
    name: str
    ratio: float = 0.5
    mode: Mode = Mode.A
    level: Literal["low", "high"] = "low"
    hosts: tuple[str, ...] = ()
    state_dir: Path | None = None
    enabled: bool = False


@dataclass(frozen=True)
class AppConfig:
    server: ServerSettings
    extra: Extra


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_file_then_environment(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.toml",
        '[server]\nport = 4431\ntls_cert = "pki/s.crt"\ntls_key = "/k"\ntls_client_ca = "/ca"\n'
        '[extra]\nname = "n"\nhosts = ["a", "b"]\nmode = "b"\n',
    )
    env = {
        "AGENTKEYS_SERVER_PORT": "5000",
        "AGENTKEYS_EXTRA_ENABLED": "yes",
        "AGENTKEYS_EXTRA_RATIO": "2",
        "AGENTKEYS_EXTRA_HOSTS": "x, y",
        "AGENTKEYS_UNRELATED": "ignored",
    }
    cfg = load_config(AppConfig, path=path, environ=env)
    assert cfg.server.port == 5000
    assert cfg.server.tls_cert == tmp_path / "pki" / "s.crt"
    assert cfg.extra == Extra(name="n", ratio=2.0, mode=Mode.B, hosts=("x", "y"), enabled=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.extra.name = "other"  # type: ignore[misc]


def test_defaults_and_required(tmp_path: Path) -> None:
    cfg = load_config(AppConfig, environ={"AGENTKEYS_EXTRA_NAME": "x"})
    assert cfg.server == ServerSettings()
    with pytest.raises(ConfigError, match="AGENTKEYS_EXTRA_NAME"):
        load_config(AppConfig, environ={})


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ('[extra]\nname = "n"\nbogus = 1\n', {}),
        ('[extra]\nname = "n"\n[bogus]\n', {}),
        ("[extra]\nname = 5\n", {}),
        ('[extra]\nname = "n"\nenabled = "true"\n', {}),
        ('[extra]\nname = "n"\nmode = "c"\n', {}),
        ('[extra]\nname = "n"\nlevel = "mid"\n', {}),
        ('[extra]\nname = "n"\n[server]\nport = true\n', {}),
        ('[extra]\nname = "n"\n[server]\nhost = "0.0.0.0"\n', {}),
        ('[extra]\nname = "n"\n', {"AGENTKEYS_SERVER_PORT": "80a"}),
        ('[extra]\nname = "n"\n', {"AGENTKEYS_EXTRA_ENABLED": "maybe"}),
        ("[extra\n", {}),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    path = _write(tmp_path / "c.toml", toml)
    with pytest.raises(ConfigError):
        load_config(AppConfig, path=path, environ=env)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_config_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "c.toml", '[extra]\nname = "n"\n', mode)
    with pytest.raises(InsecureFileError):
        load_config(AppConfig, path=path, environ={})


def test_config_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103 - the unsafe case under test
    path = _write(shared / "c.toml", '[extra]\nname = "n"\n', 0o644)
    with pytest.raises(InsecureFileError):
        load_config(AppConfig, path=path, environ={})


def test_readable_config_is_fine_but_readable_key_is_not(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", '[extra]\nname = "n"\n', 0o644)
    load_config(AppConfig, path=path, environ={})
    with pytest.raises(InsecureFileError):
        check_private_file(path)
    os.chmod(path, 0o600)
    check_private_file(path)


def test_env_names_are_section_option() -> None:
    names = env_names(AppConfig)
    assert names["AGENTKEYS_SERVER_MAX_BODY_BYTES"] == ("server", "max_body_bytes")
    assert names["AGENTKEYS_EXTRA_STATE_DIR"] == ("extra", "state_dir")


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        ('[extra]\nname = "n"\nbogus = 1\nzz = 2\n', "unknown option(s) in [extra]: bogus, zz"),
        ('[extra]\nname = "n"\n[bogus]\n', "unknown option(s) in [top level]: bogus"),
        ('[extra]\nname = "n"\n[server]\nport = true\n', "server.port:"),  # bool is not int
        ('[extra]\nname = "n"\n[server]\nport = 4431.0\n', "server.port:"),
        ('[extra]\nname = "n"\nratio = "0.5"\n', "extra.ratio:"),
        ('[extra]\nname = "n"\nhosts = ["a", 1]\n', "extra.hosts[1]:"),
        ('[extra]\nname = "n"\nstate_dir = ""\n', "extra.state_dir must be a non-empty path"),
        ("extra = 5\n", "extra must be a table"),
        ("[extra]\nname = 1979-05-27\n", "a TOML date is no option's value"),
        ('[extra]\nname = "n"\nratio = nan\n', "nan and inf are no option's value"),
        ("[server]\n", "extra.name is required (set it in the file or AGENTKEYS_EXTRA_NAME)"),
        ('[extra]\nname = "n"\n[server]\nhost = "0.0.0.0"\n', "host '0.0.0.0' is not a loopback"),
    ],
)
def test_a_file_refusal_names_the_file_and_the_option(
    tmp_path: Path, toml: str, reason: str
) -> None:
    path = _write(tmp_path / "c.toml", toml)
    with pytest.raises(ConfigError) as caught:
        load_config(AppConfig, path=path, environ={})
    assert caught.value.reason.startswith(f"{path}: {reason}")


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", '[extra]\nname = "n"\nname = "m"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(AppConfig, path=path, environ={})


def test_environment_values_are_typed_and_named_in_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "AGENTKEYS_EXTRA_NAME": "n",
        "AGENTKEYS_SERVER_PORT": "4431",
        "AGENTKEYS_EXTRA_ENABLED": "off",
        "AGENTKEYS_EXTRA_MODE": "b",
        "AGENTKEYS_EXTRA_STATE_DIR": "state",
    }
    cfg = load_config(AppConfig, environ=env)
    assert cfg.server.port == 4431
    assert cfg.extra.enabled is False
    assert cfg.extra.mode is Mode.B
    assert cfg.extra.state_dir == tmp_path / "state"  # relative to the working directory
    assert load_config(AppConfig, environ={**env, "AGENTKEYS_EXTRA_STATE_DIR": ""}).extra == (
        Extra(name="n", mode=Mode.B)
    )
    for name, value in [
        ("AGENTKEYS_SERVER_PORT", "true"),
        ("AGENTKEYS_SERVER_PORT", "4431x"),
        ("AGENTKEYS_SERVER_PORT", "4431.0"),  # not rounded, not truncated
        ("AGENTKEYS_EXTRA_ENABLED", "t"),  # only the spelled-out words and 1/0
        ("AGENTKEYS_EXTRA_ENABLED", "2"),
        ("AGENTKEYS_EXTRA_RATIO", "half"),
        ("AGENTKEYS_EXTRA_LEVEL", "mid"),
    ]:
        with pytest.raises(ConfigError, match=f"^{name}: "):
            load_config(AppConfig, environ={**env, name: value})


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", '[extra]\nname = "n"\nratio = 0.25\n[server]\nport = 1\n')
    cfg = load_config(AppConfig, path=path, environ={"AGENTKEYS_SERVER_PORT": "2"})
    assert (cfg.server.port, cfg.extra.ratio) == (2, 0.25)
