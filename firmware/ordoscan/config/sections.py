"""The configuration's sections as pydantic models: keys, types, defaults, checks.

Unknown keys are errors, types are strict, and every key has a description
(the JSON Schema the installer reads with `ordoscan config schema`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ordoscan.message import NAME_MAX_LENGTH, NAME_PATTERN

# The default `accept` rule: the EPU shape of ANS examples, "01S2TBPZ2JCNZZYGHZ".
DEFAULT_ACCEPT = "^[0-9A-Z]{18}$"


def _device_serial() -> str:
    """The Pi's serial number, or the host name on any other machine."""
    for path in ("/proc/device-tree/serial-number", "/sys/firmware/devicetree/base/serial-number"):
        try:
            serial = Path(path).read_bytes().strip(b"\0\n ").decode("ascii", "replace")
        except OSError:
            continue
        if serial:
            return serial.lstrip("0")[-8:] or serial
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Serial") and ":" in line:
                serial = line.split(":", 1)[1].strip().lstrip("0")
                if serial:
                    return serial[-8:]
    except OSError:
        pass
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:NAME_MAX_LENGTH]
    return name or "kiosk"


class _Section(BaseModel):
    # Strict types: `port = "1883"` or `tls = 1` is an error naming the key, never a guess.
    # Environment overrides are text and are converted by the key's type (see _env_value).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# device.id and site: exactly the scan message's rule (a full match, at most 64 characters).
_NAME = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))


class DeviceConfig(_Section):
    id: str = Field(
        default_factory=_device_serial,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Device identifier, used in topics and messages. Default: the Pi's serial number.",
    )
    site: str = Field(
        default="pharmacie",
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Site (pharmacy) identifier, used in topics and messages.",
    )

    @field_validator("id", "site", mode="before")
    @classmethod
    def _topic_safe(cls, v: Any) -> Any:
        if isinstance(v, str) and not (
            len(v) <= NAME_MAX_LENGTH and _NAME.fullmatch(v)
        ):
            raise ValueError(
                f"must be 1 to {NAME_MAX_LENGTH} of letters, digits, '_', '.', '-' and nothing "
                "else (it goes into MQTT topics and every scan message)"
            )
        return v


Size = Annotated[int, Field(ge=16, le=4096)]


class CameraConfig(_Section):
    source: Literal["picamera2", "v4l2", "replay"] = Field(
        default="picamera2",
        description="Frame source: picamera2 (CSI camera), v4l2 (USB UVC camera) or replay (files).",
    )
    size: tuple[Size, Size] = Field(
        default=(1280, 720),
        strict=False,  # TOML has arrays, not tuples; the two items stay strict integers
        description="Width and height of the analysed (lores, grey) stream.",
    )
    fps: float = Field(
        default=15,
        gt=0,
        le=120,
        description="Frames per second asked of the camera; replay is paced at this rate.",
    )
    path: str = Field(
        default="",
        description="replay: an image file, a folder (read in name order) or a video file.",
    )
    loop: bool = Field(
        default=False,
        description="replay: start again at the end. If false the daemon stays up with no frames (queue drains, commands served).",
    )
    device: str = Field(
        default="/dev/video0", description="v4l2: the video device of the USB camera."
    )
    max_exposure_us: int = Field(
        default=8000,
        ge=100,
        le=1_000_000,
        description="Exposure cap in microseconds, so that a moving hand does not blur; past it the gain rises. picamera2: through the sensor's tuning; v4l2: see auto_exposure.",
    )
    auto_exposure: Literal["kiosk", "camera"] = Field(
        default="kiosk",
        description="v4l2: 'kiosk' runs the kiosk's own auto-exposure on the USB camera's manual controls, its shutter capped at max_exposure_us; 'camera' leaves the camera's own, uncapped (for a camera whose manual exposure misbehaves).",
    )
    buffer_count: int = Field(
        default=2,
        ge=1,
        le=8,
        description="picamera2: frame buffers; few buffers keep frames fresh.",
    )
    stall_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="No frame for this long from a live camera: the camera is considered lost.",
    )

    @model_validator(mode="after")
    def _replay_needs_path(self) -> CameraConfig:
        if self.source == "replay" and not self.path:
            raise ValueError(
                "camera.source = 'replay' needs camera.path (an image file, a folder or a video)"
            )
        return self


class ScanConfig(_Section):
    accept: list[str] = Field(
        default_factory=lambda: [DEFAULT_ACCEPT],
        min_length=1,
        description="Regular expressions (Python syntax, full match) a payload must match to count as an ordonnance numérique.",
    )
    same_code_timeout_s: float = Field(
        default=1.5,
        gt=0,
        le=60,
        description="A code must leave the view this long (seconds) before it is read again.",
    )
    repeat_window_s: float = Field(
        default=60,
        ge=0,
        le=86400,
        description="A repeat of a scan within this many seconds gets feedback again but is not sent again.",
    )
    max_payload_bytes: int = Field(
        default=512, ge=16, le=65536, description="Longer payloads are refused, never relayed."
    )
    decode_budget_ms: float = Field(
        default=60,
        gt=0,
        le=2000,
        description="Time budget per frame for the decoder's extra passes on hard frames (milliseconds).",
    )
    decode_threads: int = Field(
        default=2,
        ge=1,
        le=2,
        description="Cores the decoder uses: 2 runs the DataMatrix pass and part of the finder search on a second core beside the QR Code pass and the rest of the search (a Pi 4 or 5 has four); 1 keeps the decoder on the scan thread.",
    )

    @field_validator("accept")
    @classmethod
    def _regexes_compile(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as e:  # huge counts, deep nesting
                raise ValueError(
                    f"accept[{i}] = {pattern!r} is not a valid regular expression: {e}"
                ) from None
        return v


Pin = Annotated[int, Field(ge=0, le=53)]


class GpioConfig(_Section):
    pin_factory: str = Field(
        default="lgpio",
        description="gpiozero pin factory: lgpio on the Pi, mock on a desk or in tests (or rpigpio, pigpio, native).",
    )
    green: Pin = Field(default=17, description="BCM pin of the green LED (ready, good read).")
    amber: Pin = Field(
        default=27, description="BCM pin of the amber LED (broker unreachable, scans queued)."
    )
    red: Pin = Field(default=22, description="BCM pin of the red LED (refused code, fault).")
    buzzer: Pin = Field(default=18, description="BCM pin of the buzzer.")
    active_high: bool = Field(
        default=True, description="True if a high pin lights the LED / sounds the buzzer."
    )
    buzzer_type: Literal["active", "tonal"] = Field(
        default="active",
        description="active: a self-oscillating buzzer (on/off); tonal: a passive one driven as gpiozero TonalBuzzer.",
    )

    @field_validator("pin_factory")
    @classmethod
    def _known_factory(cls, v: str) -> str:
        if v not in {"lgpio", "mock", "rpigpio", "pigpio", "native"}:
            raise ValueError("must be one of lgpio, mock, rpigpio, pigpio, native")
        return v

    @model_validator(mode="after")
    def _distinct_pins(self) -> GpioConfig:
        pins = {"green": self.green, "amber": self.amber, "red": self.red, "buzzer": self.buzzer}
        seen: dict[int, str] = {}
        for name, pin in pins.items():
            if pin in seen:
                raise ValueError(
                    f"gpio.{name} and gpio.{seen[pin]} are both BCM pin {pin}; each needs its own pin"
                )
            seen[pin] = name
        return self


def split_host_port(entry: str, default_port: int) -> tuple[str, int]:
    """`"host"`, `"host:port"` or `"[v6]:port"` as (host, port); ValueError names the entry."""
    text = entry.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "?"
        host = text[1:end] if end > 0 else ""
        if rest and not rest.startswith(":"):
            host = ""
        elif rest:
            port = _port_of(entry, rest[1:])
    elif text.count(":") == 1:
        host, _, tail = text.partition(":")
        port = _port_of(entry, tail)
    if not host or any(c.isspace() or c in "/@?#" for c in host) or len(host) > 253:
        raise ValueError(f'mqtt.hosts entry {entry!r}: expected "host" or "host:port"')
    return host, port


def _port_of(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"mqtt.hosts entry {entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _protocol_schema(schema: dict[str, Any]) -> None:
    """mqtt.protocol in the JSON Schema: what the validator really takes (see _protocol_number)."""
    schema.pop("type", None)
    schema.pop("enum", None)
    schema["anyOf"] = [
        {"type": "string", "enum": ["5", "3.1.1"]},
        {"type": "integer", "enum": [5, 4]},
    ]


class MqttConfig(_Section):
    host: str = Field(default="localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(
        default=8883,
        ge=1,
        le=65535,
        description="Broker port (8883 for TLS, 1883 plaintext on loopback).",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        description='MQTT protocol version: 5 (default) or "3.1.1". TOML cannot write 3.1.1 unquoted, so the text "5" and the integers 5 and 4 (the 3.1.1 protocol level) are accepted too.',
        json_schema_extra=_protocol_schema,
    )
    tls: bool = Field(
        default=True,
        description="TLS with server verification; plaintext is refused for a non-loopback host.",
    )
    ca_file: str = Field(
        default="",
        description="CA certificate(s) to verify the broker; empty: the system CA store.",
    )
    cert_file: str = Field(
        default="", description="Client certificate (PEM) for TLS client authentication."
    )
    key_file: str = Field(
        default="", description="Client private key (PEM); must not be readable by group or others."
    )
    username: str = Field(default="", description="MQTT user name; empty: none.")
    password_file: str = Field(
        default="", description="File holding the MQTT password (0600); empty: none."
    )
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive; a dead link is detected within 1.5x this.",
    )
    topic_prefix: str = Field(
        default="pharmacy/{site}/kiosk/{device_id}",
        description="Prefix of every topic; {site} and {device_id} are replaced.",
    )
    client_id: str = Field(default="", description="MQTT client id; empty: ordoscan-{device_id}.")
    reconnect_min_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="First reconnect delay; doubles up to reconnect_max_s, with jitter.",
    )
    reconnect_max_s: float = Field(
        default=30, gt=0, le=3600, description="Longest reconnect delay."
    )
    inflight: int = Field(
        default=20, ge=1, le=1000, description="Scans published and not yet acknowledged at most."
    )
    telemetry_interval_s: float = Field(
        default=60, ge=0, le=86400, description="Telemetry period; 0 turns telemetry off."
    )
    hosts: list[str] = Field(
        default_factory=list,
        max_length=16,
        description=(
            'Failover: brokers as "host" or "host:port", tried in order, then round again; '
            "when set, host and port are unused (a host without a port uses port)."
        ),
    )
    delivery: Literal["broker", "pharmacy"] = Field(
        default="broker",
        description=(
            '"broker": a scan leaves the outbox on a good PUBACK; "pharmacy": only once the '
            "pharmacy system acknowledges its scan_id on {prefix}/ack (end to end)."
        ),
    )
    ack_timeout_s: float = Field(
        default=30,
        ge=1,
        le=3600,
        description='delivery = "pharmacy": a scan not acknowledged after this is sent again '
        "(same scan_id, in order).",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, v: Any) -> Any:
        # TOML lets a user write 5 (an integer) but not 3.1.1; 4 is the 3.1.1 protocol level.
        if type(v) is int and v in (5, 4):
            return "5" if v == 5 else "3.1.1"
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/") or not v:
            raise ValueError(
                "must be a plain topic without wildcards (+ #) and without a leading or trailing '/'"
            )
        leftover = re.sub(r"\{(site|device_id)\}", "", v)
        if "{" in leftover or "}" in leftover:
            raise ValueError("only the placeholders {site} and {device_id} are allowed")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts_ok(cls, v: list[str]) -> list[str]:
        for entry in v:
            split_host_port(entry, 1)  # raises ValueError naming the entry
        return v

    def brokers(self) -> list[tuple[str, int]]:
        """The brokers to try, in order: `hosts`, or else `host` and `port`."""
        if not self.hosts:
            return [(self.host, self.port)]
        return [split_host_port(h, self.port) for h in self.hosts]

    @model_validator(mode="after")
    def _plaintext_loopback_only(self) -> MqttConfig:
        for host, _ in self.brokers():
            if not self.tls and not _is_loopback(host):
                raise ValueError(
                    f"mqtt.tls = false is refused for the non-loopback host {host!r}: "
                    "plaintext MQTT is only allowed to localhost/127.0.0.1/::1"
                )
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together: give both or neither")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("mqtt.reconnect_min_s must not exceed mqtt.reconnect_max_s")
        return self


class OutboxConfig(_Section):
    path: str = Field(
        default="/var/lib/ordoscan/outbox.sqlite3",
        min_length=1,
        description="SQLite file of the durable outbox.",
    )
    max_messages: int = Field(
        default=10000,
        ge=1,
        le=10_000_000,
        description="Full: new scans are refused with the fault signal.",
    )
    max_age_h: float = Field(
        default=24,
        gt=0,
        le=24 * 365,
        description="Scans older than this are dropped, counted and reported.",
    )


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level (stderr, journald)."
    )


class Config(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="Who this kiosk is.")
    camera: CameraConfig = Field(
        default_factory=CameraConfig, description="Where frames come from."
    )
    scan: ScanConfig = Field(default_factory=ScanConfig, description="What is read and how often.")
    gpio: GpioConfig = Field(default_factory=GpioConfig, description="LEDs and buzzer.")
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig, description="The broker of the pharmacy system."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="The durable queue of scans not yet delivered."
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")

    @property
    def topic_prefix(self) -> str:
        """The topic prefix with {site} and {device_id} filled in."""
        return self.mqtt.topic_prefix.replace("{site}", self.device.site).replace(
            "{device_id}", self.device.id
        )

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"ordoscan-{self.device.id}"
