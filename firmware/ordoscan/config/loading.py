"""Reading the configuration: the file, environment overrides, and errors that name the key.

Environment variables `ORDOSCAN_<SECTION>__<KEY>` override the file. Any
problem raises one ConfigError whose message names the file (or variable),
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from ordoscan.config.sections import Config
from ordoscan.errors import ConfigError, SecurityError

DEFAULT_PATH = Path("/etc/ordoscan/ordoscan.toml")
ENV_PATH = "ORDOSCAN_CONFIG"
ENV_PREFIX = "ORDOSCAN_"

# Keys whose values are never shown (config show, logs): none of today's keys
# holds a secret itself (secrets are read from files), but an override could.
SECRET_KEYS = frozenset({"password"})


def config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path:
    """--config, else $ORDOSCAN_CONFIG, else /etc/ordoscan/ordoscan.toml."""
    env = os.environ if env is None else env
    if cli_path:
        return Path(cli_path)
    if env.get(ENV_PATH):
        return Path(env[ENV_PATH])
    return DEFAULT_PATH


def _is_text(annotation: Any) -> bool:
    """A key whose values are text: str, or a Literal of strings."""
    if annotation is str:
        return True
    args = get_args(annotation)
    return get_origin(annotation) is Literal and all(isinstance(a, str) for a in args)


def _env_value(raw: str, annotation: Any = None) -> Any:
    """An override is text: a text key takes it as it is (ORDOSCAN_DEVICE__ID=12345 is the id
    "12345"); any other key reads it as a TOML value (1883, true, [640, 480]), and text that is
    not one stays text, so the type check names the variable."""
    if _is_text(annotation):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Merge ORDOSCAN_<SECTION>__<KEY> variables into data; returns key path -> variable name."""
    origin: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in Config.model_fields:
            raise ConfigError(
                f"environment {name}: unknown section [{section}] (known: {', '.join(Config.model_fields)})"
            )
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"environment {name}: [{section}] is not a table in the file")
        fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        current[key] = _env_value(raw, fields[key].annotation if key in fields else None)
        origin[f"{section}.{key}"] = name
    return origin


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_errors(
    source: str, err: ValidationError, data: Mapping[str, Any], origin: Mapping[str, str]
) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc)
        where = f"environment {origin[key]}" if key in origin else source
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            section = loc[0] if len(loc) > 1 else None
            known = (
                ", ".join(Config.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
                if section in Config.model_fields
                else ", ".join(Config.model_fields)
            )
            lines.append(f"{where}: unknown key {key!r} (allowed here: {known})")
            continue
        if not loc:  # a model-level check on the whole file
            lines.append(f"{where}: {msg}")
            continue
        value: Any = data
        found = True
        for part in loc:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                found = False
                break
        shown = "<hidden>" if loc[-1] in SECRET_KEYS else _describe(value) if found else None
        if shown is None or (e["type"] == "value_error" and len(loc) == 1):
            lines.append(f"{where}: key {key!r}: {msg}")
        else:
            lines.append(f"{where}: key {key!r} = {shown}: {msg}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-parsed TOML table (plus environment overrides)."""
    env = os.environ if env is None else env
    data = json.loads(json.dumps(data, default=str))  # a private deep copy: env merges into it
    origin = _apply_env(data, env)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e, data, origin)) from None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration; raises ConfigError."""
    env = os.environ if env is None else env
    p = config_path(str(path) if path else None, env)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such configuration file (give --config PATH or set {ENV_PATH})"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError(
            f"{p}: permission denied (the service user must be able to read it)"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    return parse_config(data, str(p), env)


def check_files(cfg: Config, source: str | Path) -> None:
    """What `run` would refuse at start, refused now as a configuration error (exit 2): a
    missing or unreadable ca_file, cert_file or key_file, a password_file that is missing,
    empty or readable by others, a key that does not match its certificate."""
    from ordoscan.security import load_credentials  # security builds on this module

    try:
        load_credentials(cfg.mqtt)
    except SecurityError as e:
        raise ConfigError(f"{source}: {e}") from None


def redacted(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by '<redacted>'."""
    data = cfg.model_dump(mode="json")
    for section in data.values():
        if isinstance(section, dict):
            for key in section:
                if key in SECRET_KEYS and section[key]:
                    section[key] = "<redacted>"
    return data


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for `config show` (tables of scalars and lists only)."""
    out: list[str] = []
    for section, table in data.items():
        out.append(f"[{section}]")
        for key, value in table.items():
            out.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        out.append("")
    return "\n".join(out)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file."""
    return Config.model_json_schema()
