"""The TOML configuration (SPEC §6), validated with pydantic.

- `sections`: the models, one per [section], with their types, defaults and checks;
- `loading`: the file, `ORDOSCAN_<SECTION>__<KEY>` overrides, error messages that name
  the file (or variable), the key, the bad value and what is allowed (the CLI turns a
  ConfigError into exit code 2), and `config show` / `config schema`.
"""

from ordoscan.config.loading import (
    DEFAULT_PATH,
    ENV_PATH,
    ENV_PREFIX,
    SECRET_KEYS,
    check_files,
    config_path,
    json_schema,
    load_config,
    parse_config,
    redacted,
    to_toml,
)
from ordoscan.config.sections import (
    DEFAULT_ACCEPT,
    CameraConfig,
    Config,
    DeviceConfig,
    GpioConfig,
    LogConfig,
    MqttConfig,
    OutboxConfig,
    ScanConfig,
    split_host_port,
)

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_PATH",
    "ENV_PATH",
    "ENV_PREFIX",
    "SECRET_KEYS",
    "CameraConfig",
    "Config",
    "DeviceConfig",
    "GpioConfig",
    "LogConfig",
    "MqttConfig",
    "OutboxConfig",
    "ScanConfig",
    "check_files",
    "config_path",
    "json_schema",
    "load_config",
    "parse_config",
    "redacted",
    "split_host_port",
    "to_toml",
]
