"""TLS and secrets for the broker connection, and the installer's broker check.

Secret files (client key, password file) must be 0600: anything readable by
group or others is refused at start with the fix spelled out. The broker's
certificate is always verified (mqtt.ca_file, or the system CA store), host
name included. Problems that only time reveals (an expired client certificate,
a broker that refuses us) do not stop the kiosk: scans stay queued and the
fault is reported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import socket
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ordoscan.config import Config, MqttConfig
from ordoscan.errors import SecurityError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

EXPIRY_WARNING_DAYS = 30


# --- files ---------------------------------------------------------------------------------


def _stat(path: str, key: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SecurityError(f"{key} = {path!r}: no such file") from None
    except PermissionError:
        raise SecurityError(
            f"{key} = {path!r}: permission denied on the file or one of its folders "
            f"(the service runs as uid {os.geteuid()})"
        ) from None
    except OSError as e:
        raise SecurityError(f"{key} = {path!r}: cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError(f"{key} = {path!r}: not a regular file")
    return st


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1_000_000)
    except PermissionError:
        raise SecurityError(
            f"{key} = {path!r}: not readable by the service user (uid {os.geteuid()})"
        ) from None
    except OSError as e:
        raise SecurityError(f"{key} = {path!r}: cannot be read: {e.strerror}") from None


def check_readable_file(path: str, key: str) -> Path:
    """A public file (CA, certificate): it must exist and be readable."""
    _stat(path, key)
    _read(path, key)
    return Path(path)


def check_secret_file(path: str, key: str) -> Path:
    """A secret file (key, password): readable by us, by nobody else but its owner."""
    st = _stat(path, key)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecurityError(
            f"{key} = {path!r} has mode {mode:04o}: a secret must not be accessible to "
            f"group or others; fix it with: chmod 600 {path}"
        )
    _read(path, key)
    return Path(path)


def read_password(path: str, key: str = "mqtt.password_file") -> str:
    """The first line of a 0600 password file, without its line end."""
    check_secret_file(path, key)
    raw = _read(path, key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecurityError(f"{key} = {path!r}: not UTF-8 text") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise SecurityError(f"{key} = {path!r}: the file is empty (the first line is the password)")
    return password


# --- certificate dates (a small DER reader: the standard library has no public one) -------


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at pos."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


def _der_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ; years 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def certificate_validity(path: str, key: str = "mqtt.cert_file") -> tuple[datetime, datetime]:
    """notBefore and notAfter of the first certificate of a PEM file."""
    text = _read(path, key).decode("ascii", "replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise SecurityError(f"{key} = {path!r}: no PEM certificate in the file")
    try:
        der = base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
        _, cert_start, _ = _der_item(der, 0)
        _, pos, tbs_end = _der_item(der, cert_start)
        tag, _, after = _der_item(der, pos)
        if tag == 0xA0:  # [0] version, present from v2 on
            pos = after
        for _ in range(3):  # serialNumber, signature algorithm, issuer
            pos = _der_item(der, pos)[2]
        _, pos, _ = _der_item(der, pos)  # validity
        tag_b, b0, b1 = _der_item(der, pos)
        tag_a, a0, a1 = _der_item(der, b1)
        if b1 > tbs_end:
            raise ValueError("validity outside the certificate")
        return _der_time(tag_b, der[b0:b1]), _der_time(tag_a, der[a0:a1])
    except (ValueError, binascii.Error, IndexError):
        raise SecurityError(f"{key} = {path!r}: not a readable X.509 certificate") from None


def certificate_problem(
    path: str, now: float | None = None, key: str = "mqtt.cert_file"
) -> str | None:
    """Why the certificate will be refused today (expired, not yet valid), or None."""
    not_before, not_after = certificate_validity(path, key)
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if today > not_after:
        return (
            f"{key} = {path!r}: the client certificate expired on "
            f"{not_after:%Y-%m-%d %H:%M} UTC; the broker will refuse it (install a renewed one)"
        )
    if today < not_before:
        return (
            f"{key} = {path!r}: the client certificate is valid only from "
            f"{not_before:%Y-%m-%d %H:%M} UTC; is the clock right ({today:%Y-%m-%d %H:%M} UTC)?"
        )
    return None


# --- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a connection to the broker needs, read and checked once at start."""

    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    problems: tuple[str, ...] = ()  # not fatal, reported as faults (e.g. an expired certificate)
    notes: tuple[str, ...] = ()  # worth a log line (e.g. a certificate expiring soon)


def _refuse_password(*_: Any) -> str:
    raise SecurityError("encrypted key")


def tls_context(m: MqttConfig) -> ssl.SSLContext:
    """Verify the broker (ca_file or the system store, host name included); client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode REQUIRED and check_hostname on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if m.ca_file:
        check_readable_file(m.ca_file, "mqtt.ca_file")
        try:
            ctx.load_verify_locations(cafile=m.ca_file)
        except ssl.SSLError as e:
            raise SecurityError(
                f"mqtt.ca_file = {m.ca_file!r}: not a PEM CA certificate ({e.reason or e})"
            ) from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if m.cert_file:
        check_readable_file(m.cert_file, "mqtt.cert_file")
        check_secret_file(m.key_file, "mqtt.key_file")
        try:
            ctx.load_cert_chain(m.cert_file, m.key_file, password=_refuse_password)
        except SecurityError:
            raise SecurityError(
                f"mqtt.key_file = {m.key_file!r}: the key is encrypted; the kiosk needs an "
                "unencrypted key protected by its 0600 mode"
            ) from None
        except ssl.SSLError as e:
            raise SecurityError(
                f"mqtt.cert_file = {m.cert_file!r} / mqtt.key_file = {m.key_file!r}: not a PEM "
                f"certificate and its matching private key ({e.reason or e})"
            ) from None
    return ctx


def load_credentials(m: MqttConfig, now: float | None = None) -> Credentials:
    """Check every file named in [mqtt] and build the TLS context; raises SecurityError."""
    ctx = tls_context(m) if m.tls else None
    problems: list[str] = []
    notes: list[str] = []
    if not m.tls and (m.cert_file or m.ca_file):
        notes.append("mqtt.tls = false: mqtt.ca_file, cert_file and key_file are not used")
    if m.tls and m.cert_file:
        problem = certificate_problem(m.cert_file, now)
        if problem:
            problems.append(problem)
        else:
            _, not_after = certificate_validity(m.cert_file)
            left = not_after.timestamp() - (time.time() if now is None else now)
            if left < EXPIRY_WARNING_DAYS * 86400:
                notes.append(
                    f"mqtt.cert_file = {m.cert_file!r}: the client certificate expires on "
                    f"{not_after:%Y-%m-%d} ({left / 86400:.0f} days left)"
                )
    password = None
    if m.password_file:
        if not m.username:
            raise SecurityError(
                "mqtt.password_file is set but mqtt.username is empty: give the user name too"
            )
        password = read_password(m.password_file)
    return Credentials(
        tls=ctx,
        username=m.username or None,
        password=password,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def apply_credentials(client: mqtt.Client, creds: Credentials) -> None:
    """Give a paho client the TLS context and the user name / password."""
    if creds.tls is not None:
        client.tls_set_context(creds.tls)
    if creds.username is not None:
        client.username_pw_set(creds.username, creds.password)


# --- explaining failures ----------------------------------------------------------------------

# OpenSSL alert texts seen when the broker refuses our certificate after the handshake.
_ALERTS = (
    ("certificate expired", "the broker refused our client certificate: it has expired"),
    ("unknown ca", "the broker does not trust the CA that issued our client certificate"),
    (
        "certificate required",
        "the broker requires a client certificate (set mqtt.cert_file and mqtt.key_file)",
    ),
    ("bad certificate", "the broker refused our client certificate"),
    ("certificate revoked", "the broker refused our client certificate: it is revoked"),
    ("unsupported certificate", "the broker refused our client certificate: unsupported"),
    ("handshake failure", "the TLS handshake failed (no common protocol or cipher)"),
    ("protocol version", "the broker does not accept TLS 1.2 or later"),
    ("wrong version number", "the broker did not answer with TLS (a plaintext port?)"),
)


def explain_tls_failure(text: str) -> str | None:
    """A plain sentence for an OpenSSL error text, or None if it is not a TLS refusal."""
    low = text.lower()
    for needle, sentence in _ALERTS:
        if needle in low:
            return sentence
    return None


def explain_early_close(creds: Credentials, where: str) -> tuple[str, bool]:
    """A TLS connection closed before CONNACK: with a client certificate, most likely refused."""
    if creds.tls is None:
        return f"{where}: the broker closed the connection before answering CONNECT", False
    text = (
        f"{where}: the broker closed the TLS connection before answering CONNECT; it probably "
        "refused our client certificate (see the broker's log)"
    )
    if creds.problems:
        return f"{text}: {'; '.join(creds.problems)}", True
    return text, False


def describe_connect_error(exc: BaseException, m: MqttConfig) -> tuple[str, bool]:
    """(message, is_fault): a fault needs the installer (TLS, trust); the rest is an outage."""
    where = f"{m.host}:{m.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        trust = f"mqtt.ca_file = {m.ca_file!r}" if m.ca_file else "the system CA store"
        return (
            f"TLS: the broker {where} presented a certificate we do not accept: "
            f"{exc.verify_message or exc.reason} (checked against {trust})",
            True,
        )
    if isinstance(exc, ssl.CertificateError):
        return f"TLS: the broker certificate does not match the host name {m.host!r}: {exc}", True
    if isinstance(exc, ssl.SSLError):
        sentence = explain_tls_failure(str(exc))
        return f"TLS with {where} failed: {sentence or exc.reason or exc}", True
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (is the broker running?)", False
    if isinstance(exc, socket.gaierror):
        return f"{m.host}: the host name cannot be resolved ({exc.strerror})", False
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where}: no answer (timed out)", False
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}", False
    return f"{where}: {type(exc).__name__}: {exc}", False


# --- `ordoscan check`: one connection attempt, step by step -------------------------------------


INVISIBLE_REFUSAL = (
    "MQTT 3.1.1: a publish the broker refuses (ACL) is acknowledged and dropped, so the "
    "kiosk cannot see a refusal and would delete the scan; use MQTT 5 (protocol = \"5\") "
    "where the broker has it"
)


def broker_notes(cfg: Config) -> list[str]:
    """What the installer must know about this broker configuration (shown by `config
    validate`, `check` and the daemon's start log)."""
    return [INVISIBLE_REFUSAL] if cfg.mqtt.protocol == "3.1.1" else []


@dataclass
class BrokerCheck:
    """Result of check_broker(): each step is True, False, or None when not reached/needed."""

    ok: bool = False
    reachable: bool | None = None
    tls_ok: bool | None = None
    auth_ok: bool | None = None
    publish_ok: bool | None = None  # a publish on the scan topic: accepted, refused, unknowable
    message: str = ""
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_broker(
    cfg: Config, timeout: float = 10.0, *, clock: Callable[[], float] = time.monotonic
) -> BrokerCheck:
    """Connect once (TCP, TLS, MQTT CONNECT) and report how far it got; never raises."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    result = BrokerCheck()
    started = clock()
    where = f"{m.host}:{m.port}"

    def done(message: str, ok: bool = False) -> BrokerCheck:
        result.ok, result.message, result.elapsed_s = ok, message, round(clock() - started, 3)
        return result

    try:
        creds = load_credentials(m)
    except SecurityError as e:
        return done(str(e))
    result.notes.extend(creds.notes)
    result.notes.extend(creds.problems)

    # 1. TCP
    try:
        sock = socket.create_connection((m.host, m.port), timeout=timeout)
    except OSError as e:
        result.reachable = False
        return done(describe_connect_error(e, m)[0])
    result.reachable = True
    # 2. TLS, by hand, so that a refused certificate is named precisely
    try:
        if creds.tls is not None:
            with creds.tls.wrap_socket(sock, server_hostname=m.host) as tls_sock:
                # TLS 1.3: the broker judges our certificate after the handshake; its alert
                # (if any) comes at once, while a broker that accepted us waits for CONNECT.
                tls_sock.settimeout(min(timeout, 0.5))
                with contextlib.suppress(TimeoutError, socket.timeout):
                    tls_sock.recv(1)
                result.tls_ok = True
        else:
            sock.close()
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        sock.close()
        result.tls_ok = False
        return done(describe_connect_error(e, m)[0])

    # 3. MQTT CONNECT with our identity; a distinct client id so a running kiosk is not kicked off
    outcome: dict[str, Any] = {}
    errors: list[str] = []
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-check", protocol=protocol
    )
    apply_credentials(client, creds)
    client.connect_timeout = timeout

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["reason"] = reason

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.setdefault("lost", reason)

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        outcome["puback"] = reason

    def on_log(_c: Any, _u: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            errors.append(text)

    client.on_connect, client.on_disconnect, client.on_log = on_connect, on_disconnect, on_log
    client.on_publish = on_publish
    scan_topic = f"{cfg.topic_prefix}/scan"

    def turn_until(key: str) -> None:
        deadline = clock() + timeout
        while key not in outcome and "lost" not in outcome and clock() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS and key not in outcome:
                outcome["lost"] = None

    try:
        client.connect(m.host, m.port, keepalive=max(5, int(timeout)))
        turn_until("reason")
        if "reason" in outcome and not outcome["reason"].is_failure:
            # 4. A publish on the scan topic with the kiosk's own identity: the ACL's answer.
            # The payload is empty, which no consumer can take for a scan (docs/INTEGRATION.md).
            client.publish(scan_topic, b"", qos=1, retain=False)
            turn_until("puback")
    except (ssl.SSLError, OSError) as e:
        result.auth_ok = False
        return done(describe_connect_error(e, m)[0])
    finally:
        if "reason" in outcome and not outcome["reason"].is_failure and "lost" not in outcome:
            client.disconnect()
            client.loop(timeout=0.2)
        leftover = client.socket()
        if leftover is not None:
            leftover.close()

    reason = outcome.get("reason")
    if reason is not None and not reason.is_failure:
        result.auth_ok = True
        how = " with TLS" if creds.tls else " (plaintext, loopback)"
        return done(*_publish_verdict(result, f"{where}: connected{how}", scan_topic,
                                      outcome.get("puback"), m.protocol))
    result.auth_ok = False
    # Refused ("unsupported protocol version") or dropped at CONNECT: a broker that speaks
    # only MQTT 3.1.1 (RabbitMQ 3.10's, NATS 2.9's) does either. Name that, not the identity.
    if (m.protocol == "5" and (reason is None or reason.value == 0x84)
            and _speaks_mqtt311(cfg, creds, timeout)):
        return done(
            f"{where}: the broker does not speak MQTT 5 (it accepts MQTT 3.1.1): set "
            '[mqtt] protocol = "3.1.1"; with 3.1.1 it cannot refuse a scan visibly '
            '(no reason codes), so prefer [mqtt] delivery = "pharmacy"'
        )
    if reason is not None:
        return done(
            f"{where}: the broker refused the connection: {reason} "
            "(check the identity and the broker's ACL)"
        )
    detail = next((s for s in (explain_tls_failure(e) for e in errors) if s), None)
    if detail:
        return done(f"{where}: {detail}")
    if errors or "lost" in outcome:
        return done(explain_early_close(creds, where)[0])
    return done(f"{where}: no answer to CONNECT within {timeout:g} s")


def _speaks_mqtt311(cfg: Config, creds: Credentials, timeout: float) -> bool:
    """True if the broker accepts an MQTT 3.1.1 CONNECT with this identity."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answer: list[Any] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-check",
                         protocol=mqtt.MQTTv311)
    apply_credentials(client, creds)
    client.connect_timeout = timeout
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.append(reason)
    deadline = time.monotonic() + timeout
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=max(5, int(timeout)))
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                break
        if answer and not answer[0].is_failure:
            client.disconnect()
            client.loop(timeout=0.2)
    except (ssl.SSLError, OSError):
        return False
    finally:
        leftover = client.socket()
        if leftover is not None:
            leftover.close()
    return bool(answer) and not answer[0].is_failure


def _publish_verdict(
    result: BrokerCheck, connected: str, topic: str, puback: Any, protocol: str
) -> tuple[str, bool]:
    """The check's sentence once connected, from the PUBACK of the test publish."""
    if puback is None:
        result.publish_ok = False
        return f"{connected}, but a test publish on {topic} got no answer", False
    if protocol == "3.1.1":
        result.publish_ok = None
        return (
            f"{connected}; a test publish on {topic} was acknowledged, but with MQTT 3.1.1 "
            "a refusal is acknowledged too, so whether the broker's ACL lets this kiosk "
            "publish its scans cannot be known",
            True,
        )
    if puback.is_failure:
        result.publish_ok = False
        return (
            f"{connected}, but the broker refuses this kiosk's scans on {topic}: {puback} "
            f"(0x{puback.value:02X}); its ACL must let this identity publish there",
            False,
        )
    result.publish_ok = True
    return f"{connected}; a test publish on {topic} was accepted", True
