"""The config file (TOML): parse, load, dump and save, every error a :class:`ConfigError`
naming the dotted field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from esc.config.node import EscConfig
from esc.config.types import RuleError
from esc.errors import ConfigError
from esc.files import write_atomic


def config_error(err: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """The first error as a :class:`ConfigError` naming the dotted field: pydantic's location,
    and for a rule over several fields the field its :class:`RuleError` names (``kad_vip`` in
    ``ha``: ``ha.kad_vip``)."""
    first = err.errors()[0]
    loc = [*prefix, *(str(p) for p in first["loc"])]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, RuleError):
        loc += cause.field.split(".")
        message = cause.message
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    return ConfigError(".".join(loc) or "config", message)


def parse_config(data: dict[str, Any]) -> EscConfig:
    """Validate a dict into an :class:`EscConfig`; errors name the dotted field."""
    try:
        return EscConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc) from None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table; a missing or unparsable file is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "no such config file") from None
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def load_config(path: Path) -> EscConfig:
    return parse_config(read_toml(path))


def dump_config(cfg: EscConfig) -> str:
    data = cfg.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)


def save_config(cfg: EscConfig, path: Path) -> None:
    """Write atomically (:func:`esc.files.write_atomic`: a new file, fsync, rename, fsync of the
    directory), mode 0600: it holds secrets."""
    write_atomic(path, dump_config(cfg), mode=0o600)
