"""The configuration loader: good and bad files, environment overrides, clear messages, exit 2."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from ordoscan.cli import EXIT_OK, EXIT_USAGE
from ordoscan.cli import main as cli_main
from ordoscan.config import (
    DEFAULT_PATH,
    Config,
    config_path,
    json_schema,
    load_config,
    parse_config,
    redacted,
    to_toml,
)
from ordoscan.errors import ConfigError

# The example of SPEC §6, key for key.
SPEC_EXAMPLE = """
[device]
id = "kiosk-01"
site = "pharmacie-du-port"

[camera]
source = "picamera2"
size = [1280, 720]
fps = 15
path = ""
loop = false

[scan]
accept = ['^[0-9A-Z]{18}$']
same_code_timeout_s = 1.5
repeat_window_s = 60
max_payload_bytes = 512

[gpio]
pin_factory = "lgpio"
green = 17
amber = 27
red = 22
buzzer = 18
active_high = true

[mqtt]
host = "localhost"
port = 8883
protocol = 5
tls = true
ca_file = ""
cert_file = ""
key_file = ""
username = ""
password_file = ""
keepalive_s = 30
topic_prefix = "pharmacy/{site}/kiosk/{device_id}"

[outbox]
path = "/var/lib/ordoscan/outbox.sqlite3"
max_messages = 10000
max_age_h = 24
"""


def write(tmp_path: Path, text: str, name: str = "ordoscan.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(path, env=env or {})
    return str(ei.value)


# --- good files ------------------------------------------------------------


def test_spec_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SPEC_EXAMPLE), env={})
    assert cfg.device.id == "kiosk-01" and cfg.device.site == "pharmacie-du-port"
    assert cfg.camera.size == (1280, 720) and cfg.camera.fps == 15
    assert cfg.scan.accept == ["^[0-9A-Z]{18}$"] and cfg.scan.repeat_window_s == 60
    assert (cfg.gpio.green, cfg.gpio.amber, cfg.gpio.red, cfg.gpio.buzzer) == (17, 27, 22, 18)
    assert cfg.mqtt.protocol == "5" and cfg.mqtt.tls is True
    assert cfg.outbox.max_messages == 10000
    assert cfg.topic_prefix == "pharmacy/pharmacie-du-port/kiosk/kiosk-01"
    assert cfg.client_id == "ordoscan-kiosk-01"


def test_empty_file_gives_working_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.scan.same_code_timeout_s == 1.5 and cfg.scan.max_payload_bytes == 512
    assert cfg.mqtt.port == 8883 and cfg.mqtt.host == "localhost"
    assert cfg.device.id  # the Pi serial or the host name, never empty
    assert cfg == parse_config({}, env={}).model_copy(update={"device": cfg.device})


@pytest.mark.parametrize(
    ("written", "meant"), [("5", "5"), ('"5"', "5"), ("4", "3.1.1"), ('"3.1.1"', "3.1.1")]
)
def test_protocol_spellings(tmp_path: Path, written: str, meant: str) -> None:
    cfg = load_config(write(tmp_path, f"[mqtt]\nprotocol = {written}\n"), env={})
    assert cfg.mqtt.protocol == meant


def test_plaintext_allowed_to_loopback(tmp_path: Path) -> None:
    for host in ("localhost", "127.0.0.1", "::1", "127.3.4.5"):
        text = f'[mqtt]\nhost = "{host}"\ntls = false\nport = 1883\n'
        cfg = load_config(write(tmp_path, text), env={})
        assert cfg.mqtt.tls is False


def test_show_output_reads_back_as_the_same_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SPEC_EXAMPLE), env={})
    text = to_toml(redacted(cfg))
    again = parse_config(tomllib.loads(text), env={})
    assert again == cfg


def test_schema_lists_every_section() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == set(Config.model_fields)


# --- bad files: the message names the file, the key, the value -------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[mqtt]\nport = 'abc'\n", ["key 'mqtt.port'", "'abc'", "integer"]),
        ("[mqtt]\nport = 70000\n", ["key 'mqtt.port'", "70000", "65535"]),
        ("[mqtt]\nportt = 1883\n", ["unknown key 'mqtt.portt'", "allowed here", "port"]),
        ("[mqtt]\nprotocol = 3\n", ["key 'mqtt.protocol'", "3"]),
        ("[mqtt]\nhost = 'broker.lan'\ntls = false\n", ["broker.lan", "tls = false", "loopback"]),
        ("[mqtt]\ncert_file = '/x.pem'\n", ["cert_file", "key_file"]),
        ("[mqtt]\ntopic_prefix = 'a/+/b'\n", ["key 'mqtt.topic_prefix'", "'a/+/b'", "wildcards"]),
        ("[mqtt]\ntopic_prefix = 'a/{shop}'\n", ["topic_prefix", "placeholders"]),
        ("[kiosk]\nid = 1\n", ["unknown key 'kiosk'", "device, camera"]),
        ("mqtt = 5\n", ["key 'mqtt' = 5"]),
        ("[camera]\nsource = 'usb'\n", ["key 'camera.source'", "'usb'", "picamera2"]),
        ("[camera]\nsource = 'replay'\n", ["camera.path"]),
        ("[camera]\nsize = [1280]\n", ["key 'camera.size.1'", "required"]),
        ("[camera]\nfps = 0\n", ["key 'camera.fps'", "0", "greater than 0"]),
        ("[scan]\naccept = []\n", ["key 'scan.accept'", "at least 1"]),
        ("[scan]\naccept = ['(']\n", ["scan.accept", "accept[0] = '('", "regular expression"]),
        ("[scan]\naccept = ['a{99999999999}']\n", ["scan.accept", "regular expression"]),
        ("[scan]\naccept = 'A+'\n", ["key 'scan.accept'", "'A+'", "list"]),
        ("[scan]\nmax_payload_bytes = 1\n", ["key 'scan.max_payload_bytes'", "= 1"]),
        ("[gpio]\nred = 17\n", ["gpio.red", "gpio.green", "17"]),
        ("[gpio]\nbuzzer = 99\n", ["key 'gpio.buzzer'", "99"]),
        ("[gpio]\npin_factory = 'wiringpi'\n", ["key 'gpio.pin_factory'", "'wiringpi'", "lgpio"]),
        ("[device]\nsite = 'pharmacie du port'\n",
         ["key 'device.site'", "'pharmacie du port'", "topics"]),
        ("[outbox]\nmax_messages = -1\n", ["key 'outbox.max_messages'", "-1"]),
        ("[log]\nlevel = 'loud'\n", ["key 'log.level'", "'loud'"]),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, needles: list[str]) -> None:
    p = write(tmp_path, text)
    msg = error_of(p)
    assert msg.startswith(f"{p}: ")
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "[mqtt]\nport = 'x'\nkeepalive_s = 1\n[gpio]\ngreen = -3\n"))
    assert "mqtt.port" in msg and "mqtt.keepalive_s" in msg and "gpio.green" in msg
    assert len(msg.splitlines()) == 3


def test_not_toml(tmp_path: Path) -> None:
    p = write(tmp_path, "[mqtt\nport = 1\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}: not valid TOML")
    assert "line 1" in msg


def test_duplicate_key_is_not_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in error_of(write(tmp_path, "[mqtt]\nport = 1\nport = 2\n"))


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    msg = error_of(p)
    assert str(p) in msg and "no such configuration file" in msg and "--config" in msg


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in error_of(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[device]\nsite = "pharmacie-\xe9"\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}: not UTF-8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: no permission error to see")
def test_unreadable(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    p.chmod(0)
    assert "permission denied" in error_of(p)


def test_deeply_nested_toml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    deep = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    msg = error_of(write(tmp_path, deep))
    assert "nested" in msg or "not valid TOML" in msg


def test_deeply_nested_regex_is_an_error_not_a_crash(tmp_path: Path) -> None:
    pattern = "(" * 3000 + ")" * 3000
    msg = error_of(write(tmp_path, f"[scan]\naccept = ['{pattern}']\n"))
    assert "scan.accept" in msg and "regular expression" in msg


# --- environment overrides -------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[mqtt]\nport = 8883\nhost = 'localhost'\n")
    cfg = load_config(p, env={
        "ORDOSCAN_MQTT__PORT": "1883",
        "ORDOSCAN_MQTT__TLS": "false",
        "ORDOSCAN_SCAN__ACCEPT": "['^EP[0-9]{6}$', '^01[A-Z0-9]{16}$']",
        "ORDOSCAN_DEVICE__SITE": "pharma-42",  # not TOML: taken as a plain string
        "ORDOSCAN_CAMERA__SIZE": "[640, 480]",
        "ORDOSCAN_CONFIG": str(p),  # the path variable is not an override
        "OTHER__THING": "1",
    })
    assert cfg.mqtt.port == 1883 and cfg.mqtt.tls is False
    assert cfg.scan.accept == ["^EP[0-9]{6}$", "^01[A-Z0-9]{16}$"]
    assert cfg.device.site == "pharma-42"
    assert cfg.camera.size == (640, 480)


def test_env_section_and_key_are_case_insensitive(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={"ORDOSCAN_mqtt__Port": "1884"})
    assert cfg.mqtt.port == 1884


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ""), env={"ORDOSCAN_MQTT__PORT": "eighty"})
    assert msg.startswith("environment ORDOSCAN_MQTT__PORT: key 'mqtt.port' = 'eighty'")


def test_unknown_env_key_names_the_variable(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ""), env={"ORDOSCAN_MQTT__HOTS": "x"})
    assert "environment ORDOSCAN_MQTT__HOTS" in msg and "unknown key 'mqtt.hots'" in msg


def test_unknown_env_section(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, ""), env={"ORDOSCAN_BROKER__HOST": "x"})
    assert "ORDOSCAN_BROKER__HOST" in msg and "unknown section [broker]" in msg


def test_env_into_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "mqtt = 3\n"), env={"ORDOSCAN_MQTT__PORT": "1"})
    assert "ORDOSCAN_MQTT__PORT" in msg and "not a table" in msg


def test_file_errors_still_name_the_file_beside_env_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "[mqtt]\nkeepalive_s = 1\n")
    msg = error_of(p, env={"ORDOSCAN_MQTT__PORT": "0"})
    assert f"{p}: key 'mqtt.keepalive_s'" in msg
    assert "environment ORDOSCAN_MQTT__PORT: key 'mqtt.port'" in msg


# --- where the file is looked for ------------------------------------------


def test_config_path_order(tmp_path: Path) -> None:
    assert config_path("/a.toml", {"ORDOSCAN_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert config_path(None, {"ORDOSCAN_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert config_path(None, {"ORDOSCAN_CONFIG": ""}) == DEFAULT_PATH
    assert config_path(None, {}) == DEFAULT_PATH


def test_load_config_follows_the_env_path(tmp_path: Path) -> None:
    p = write(tmp_path, "[device]\nsite = 'from-env-path'\n")
    cfg = load_config(None, env={"ORDOSCAN_CONFIG": str(p)})
    assert cfg.device.site == "from-env-path"


# --- the command line: exit 2 and the message on stderr --------------------


def test_cli_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, SPEC_EXAMPLE)
    assert cli_main(["config", "validate", "--config", str(p)]) == EXIT_OK
    assert f"{p}: valid" in capsys.readouterr().out


def test_cli_bad_config_exits_2_naming_file_key_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, "[mqtt]\nport = 'abc'\n")
    assert cli_main(["config", "validate", "--config", str(p)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert str(p) in err and "mqtt.port" in err and "'abc'" in err


def test_cli_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "missing.toml"
    assert cli_main(["config", "show", "--config", str(p)]) == EXIT_USAGE
    assert str(p) in capsys.readouterr().err


def test_cli_env_config_path_and_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path, "")
    monkeypatch.setenv("ORDOSCAN_CONFIG", str(p))
    monkeypatch.setenv("ORDOSCAN_GPIO__GREEN", "99")
    assert cli_main(["config", "validate"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "ORDOSCAN_GPIO__GREEN" in err and "gpio.green" in err and "99" in err


def test_cli_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        cli_main(["config", "frobnicate"])
    assert ei.value.code == EXIT_USAGE


# --- ids exactly as the scan message takes them (issue 9 item 4) --------------------------


@pytest.mark.parametrize(
    "bad",
    ["kiosk-02\n", "kiosk 02", "", "k" * 65, "kiosk/02", "kiosk+", "é"],
    ids=["trailing-newline", "space", "empty", "65-chars", "slash", "plus", "non-ascii"],
)
@pytest.mark.parametrize("key", ["id", "site"])
def test_ids_are_validated_as_the_message_schema_does(key: str, bad: str) -> None:
    from ordoscan.message import ScanMessage, ValidationError

    from tests.test_message import SPEC_EXAMPLE

    prop = "device_id" if key == "id" else "site"
    assert ScanMessage.model_validate(SPEC_EXAMPLE)
    with pytest.raises(ValidationError):  # every scan of such a kiosk would be refused
        ScanMessage.model_validate({**SPEC_EXAMPLE, prop: bad})
    with pytest.raises(ConfigError, match=rf"device\.{key}.*1 to 64 of letters"):
        parse_config({"device": {key: bad}}, "f.toml", env={})


def test_ids_up_to_64_characters_pass() -> None:
    cfg = parse_config({"device": {"id": "k" * 64, "site": "s.-_9" * 12}}, env={})
    assert len(cfg.device.id) == 64


def test_a_huge_id_through_the_environment_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({}, "f.toml", env={"ORDOSCAN_DEVICE__ID": "k" * 70_000})
    text = str(ei.value)
    assert "environment ORDOSCAN_DEVICE__ID" in text and "1 to 64" in text
    assert len(text) < 1000  # the value is cut in the message, not echoed whole


def test_a_numeric_id_through_the_environment_stays_text() -> None:
    env = {"ORDOSCAN_DEVICE__ID": "12345", "ORDOSCAN_MQTT__PROTOCOL": "3.1.1"}
    cfg = parse_config({}, env=env)
    assert cfg.device.id == "12345" and cfg.mqtt.protocol == "3.1.1"


# --- strict types, and the schema says so (issue 9 item 6) ----------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mqtt]\nport = \"1883\"\n", "mqtt.port"),
        ("[mqtt]\ntls = 1\n", "mqtt.tls"),
        ("[mqtt]\nprotocol = 3\n", "mqtt.protocol"),
        ("[camera]\nfps = \"15\"\n", "camera.fps"),
        ("[camera]\nsize = [\"640\", 480]\n", "camera.size.0"),
        ("[gpio]\nactive_high = \"false\"\n", "gpio.active_high"),
        ("[outbox]\nmax_messages = 10.5\n", "outbox.max_messages"),
    ],
)
def test_values_of_the_wrong_type_are_refused(tmp_path: Path, text: str, key: str) -> None:
    assert f"key {key!r}" in error_of(write(tmp_path, text))


def test_env_overrides_are_converted_by_the_key_type() -> None:
    env = {"ORDOSCAN_MQTT__PORT": "1883", "ORDOSCAN_MQTT__TLS": "false",
           "ORDOSCAN_CAMERA__SIZE": "[640, 480]", "ORDOSCAN_MQTT__HOST": "127.0.0.1"}
    cfg = parse_config({}, env=env)
    assert (cfg.mqtt.port, cfg.mqtt.tls, cfg.camera.size) == (1883, False, (640, 480))
    with pytest.raises(ConfigError, match=r"environment ORDOSCAN_MQTT__PORT.*valid integer"):
        parse_config({}, env={"ORDOSCAN_MQTT__PORT": "eighty"})


CANDIDATES = [0, 1, 4, 5, 30, 1883, 1.5, True, False, "", "5", "3.1.1", "1883", "true",
              "kiosk-01", [640, 480], ["^x$"], None]


def test_config_schema_accepts_whatever_the_kiosk_accepts() -> None:
    """`config schema` tells the truth: no value the validator takes is refused by the schema
    (it may be stricter the other way: regexes that compile, distinct pins, ...)."""
    import jsonschema

    schema = json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    base = {"device": {"id": "k1"}, "mqtt": {"host": "127.0.0.1", "tls": False},
            "camera": {"source": "replay", "path": "x.png"}}
    lies = []
    for section, model in Config.model_fields.items():
        for key in model.annotation.model_fields:  # type: ignore[union-attr]
            for value in CANDIDATES:
                data = {s: dict(t) for s, t in base.items()}
                data.setdefault(section, {})[key] = value
                try:
                    parse_config(data, env={})
                except ConfigError:
                    continue
                if not validator.is_valid(data):
                    lies.append(f"{section}.{key} = {value!r}")
    assert not lies, "accepted by the kiosk but refused by `config schema`: " + ", ".join(lies)


# --- what `run` would refuse, `config validate` refuses (issue 9 item 5) ------------------


@pytest.mark.parametrize(
    ("mqtt", "needle"),
    [
        ({"username": "k", "password_file": "{tmp}/missing"}, "no such file"),
        ({"username": "k", "password_file": "{tmp}/pw-0644"}, "group or others"),
        ({"cert_file": "{tmp}/missing.crt", "key_file": "{tmp}/missing.key"}, "no such file"),
        ({"ca_file": "{tmp}/missing-ca.crt"}, "no such file"),
    ],
    ids=["password-missing", "password-0644", "cert-missing", "ca-missing"],
)
def test_validate_refuses_what_run_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mqtt: dict[str, str], needle: str
) -> None:
    pw = tmp_path / "pw-0644"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    lines = [f'{k} = "{v.format(tmp=tmp_path)}"' for k, v in mqtt.items()]
    p = write(tmp_path, "[device]\nid = \"k1\"\n[mqtt]\n" + "\n".join(lines) + "\n")
    assert cli_main(["config", "validate", "--config", str(p)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "configuration error" in err and str(p) in err and needle in err
    assert cli_main(["run", "--config", str(p)]) == EXIT_USAGE  # refused before anything starts
    assert needle in capsys.readouterr().err


def test_values_only_validation_leaves_the_files_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installer writes the config before the certificate exists: --values-only checks the
    keys and values, while a plain validate (and run) still refuses the missing file."""
    p = write(tmp_path, f'[device]\nid = "k1"\n[mqtt]\nca_file = "{tmp_path}/later-ca.crt"\n')
    assert cli_main(["config", "validate", "--values-only", "--config", str(p)]) == 0
    assert "files not checked" in capsys.readouterr().out
    assert cli_main(["config", "validate", "--config", str(p)]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    bad = write(tmp_path, '[device]\nid = "k1\\n"\n')
    assert cli_main(["config", "validate", "--values-only", "--config", str(bad)]) == EXIT_USAGE
