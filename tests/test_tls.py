"""TLS, client certificates, ACL and secrets, against the broker of provisioning/broker/."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ordoscan.errors import SecurityError
from ordoscan.message import ScanMessage
from ordoscan.security import (
    certificate_problem,
    certificate_validity,
    check_broker,
    load_credentials,
    read_password,
)

from tests.support.mosquitto import Broker, ProvisionedBroker, Subscriber, free_port
from tests.support.pki import CertAuthority, CertKey
from tests.support.relay_proc import InProcessRelay, as_config, relay_config

SITE = "pharmacie-du-port"
KIOSK = "kiosk-01"
PREFIX = f"pharmacy/{SITE}/kiosk/{KIOSK}"


@dataclass
class Pki:
    """The certificates of one test module."""

    ca: CertAuthority
    server: CertKey
    kiosk: CertKey
    lgo: CertKey
    kiosk_expired: CertKey
    server_expired: CertKey
    other_ca: CertAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = CertAuthority(base / "ca")
    return Pki(
        ca=ca,
        server=ca.server(),
        kiosk=ca.client(KIOSK),
        lgo=ca.client("lgo"),
        kiosk_expired=ca.client(KIOSK, expired=True),
        server_expired=ca.server(expired=True),
        other_ca=CertAuthority(base / "other", name="some other CA"),
    )


class TlsBroker(ProvisionedBroker):
    """The provisioning broker with this module's certificates."""

    def __init__(self, workdir: Path, pki: Pki, server: CertKey | None = None) -> None:
        server = server or pki.server
        super().__init__(workdir, ca_cert=pki.ca.cert, server_cert=server.cert,
                         server_key=server.key, site=SITE)


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    b = TlsBroker(tmp_path / "tls", pki)
    b.start()
    try:
        yield b
    finally:
        b.kill()


def client_context(pki: Pki, who: CertKey) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(who.cert, who.key)
    return ctx


def kiosk_config(tmp_path: Path, broker: Broker, pki: Pki, **over: object) -> dict[str, object]:
    mqtt: dict[str, object] = {
        "ca_file": str(pki.ca.cert),
        "cert_file": str(pki.kiosk.cert),
        "key_file": str(pki.kiosk.key),
    }
    mqtt.update(over)
    return relay_config(tmp_path / "kiosk", port=broker.port, device_id=KIOSK, site=SITE, tls=True,
                        reconnect=(0.2, 1.0), **mqtt)


@pytest.fixture
def lgo(tls_broker: TlsBroker, pki: Pki) -> Iterator[Subscriber]:
    """The pharmacy system: its own certificate, reads what the ACL gives it."""
    s = Subscriber(tls_broker.host, tls_broker.port, [f"pharmacy/{SITE}/kiosk/+/scan",
                                                      f"pharmacy/{SITE}/kiosk/+/status"],
                   client_id="lgo", tls=client_context(pki, pki.lgo))
    try:
        yield s
    finally:
        s.close()


# --- the happy path ------------------------------------------------------------------------


def test_tls_with_client_certificates_and_acl_delivers(
    tmp_path: Path, tls_broker: TlsBroker, pki: Pki, lgo: Subscriber
) -> None:
    relay = InProcessRelay(kiosk_config(tmp_path, tls_broker, pki))
    try:
        rows = relay.put(12)
        relay.publisher.start()
        assert lgo.wait_for(lambda s: len(s.on("/scan")) >= 12), relay.publisher.stats()
        got = [ScanMessage.from_json(p) for p in lgo.on("/scan")]
        assert [(m.seq, m.scan_id) for m in got] == [(r.seq, r.scan_id) for r in rows]
        assert json.loads(lgo.on("/status")[0])["state"] == "online"
        assert relay.wait(lambda: relay.depth() == 0, 10)
        assert relay.fault is None
        assert f"as ordoscan-{KIOSK} (p5, c1, k30, u'{KIOSK}')" in tls_broker.log()
    finally:
        relay.close()


def test_check_broker_reports_each_step(tmp_path: Path, tls_broker: TlsBroker, pki: Pki) -> None:
    result = check_broker(as_config(kiosk_config(tmp_path, tls_broker, pki)), timeout=10)
    assert result.ok, result.message
    assert (result.reachable, result.tls_ok, result.auth_ok) == (True, True, True)
    assert "with TLS" in result.message

    closed = as_config(relay_config(tmp_path / "k2", port=free_port()))
    result = check_broker(closed, timeout=5)
    assert not result.ok and result.reachable is False
    assert "connection refused" in result.message


# --- what must stay queued --------------------------------------------------------------------


def test_acl_refusal_keeps_scans_reports_fault_and_delivers_once_allowed(
    tmp_path: Path, tls_broker: TlsBroker, pki: Pki, lgo: Subscriber
) -> None:
    scan_rule = f"pattern write pharmacy/{SITE}/kiosk/%u/scan\n"
    assert scan_rule in tls_broker.acl_text
    tls_broker.acl_path.write_text(tls_broker.acl_text.replace(scan_rule, ""))
    tls_broker.reload()
    relay = InProcessRelay(kiosk_config(tmp_path, tls_broker, pki))
    try:
        rows = relay.put(3)
        relay.publisher.start()
        assert relay.wait(lambda: relay.fault is not None and "0x87" in relay.fault, 20)
        assert "refused scan" in str(relay.fault) and "ACL" in str(relay.fault)
        watch_from = time.monotonic()
        refused_from = relay.publisher.stats()["refused"]
        time.sleep(2.0)
        assert relay.depth() == 3  # a refused PUBACK is not a delivery
        assert lgo.on("/scan") == []
        assert json.loads(lgo.on("/status")[0])["state"] == "online"  # status is allowed
        # retried with back-off (reconnect_min_s = 0.2 s), not in a hot loop
        refused = relay.publisher.stats()["refused"] - refused_from
        rounds = (time.monotonic() - watch_from) / 0.2 + 2
        assert 0 < refused <= 3 * rounds

        tls_broker.acl_path.write_text(tls_broker.acl_text)
        tls_broker.reload()
        assert relay.wait(lambda: relay.depth() == 0, 30), relay.publisher.stats()
        assert relay.wait(lambda: relay.fault is None, 10)
        assert lgo.wait_for(lambda s: len(s.on("/scan")) >= 3)
        assert [ScanMessage.from_json(p).seq for p in lgo.on("/scan")] == [r.seq for r in rows]
        assert relay.publisher.stats()["connects"] == 1  # the link itself never broke
    finally:
        relay.close()


def test_wrong_ca_is_a_clear_fault_and_scans_stay(
    tmp_path: Path, tls_broker: TlsBroker, pki: Pki
) -> None:
    data = kiosk_config(tmp_path, tls_broker, pki, ca_file=str(pki.other_ca.cert))
    relay = InProcessRelay(data)
    try:
        relay.put(4)
        relay.publisher.start()
        assert relay.wait(lambda: relay.fault is not None, 20)
        fault = str(relay.fault)
        assert "presented a certificate we do not accept" in fault
        assert f"mqtt.ca_file = '{pki.other_ca.cert}'" in fault
        assert relay.link_up is False and relay.depth() == 4
    finally:
        relay.close()
    result = check_broker(as_config(data), timeout=10)
    assert (result.reachable, result.tls_ok, result.ok) == (True, False, False)
    assert "presented a certificate we do not accept" in result.message


def test_expired_client_certificate_is_a_clear_fault_and_scans_stay(
    tmp_path: Path, tls_broker: TlsBroker, pki: Pki
) -> None:
    data = kiosk_config(tmp_path, tls_broker, pki, cert_file=str(pki.kiosk_expired.cert),
                        key_file=str(pki.kiosk_expired.key))
    relay = InProcessRelay(data)
    try:
        relay.put(4)
        relay.publisher.start()  # not refused at start: the scans are kept meanwhile
        assert relay.wait(lambda: relay.fault is not None, 20)
        assert "expired" in str(relay.fault) and str(pki.kiosk_expired.cert) in str(relay.fault)
        # the broker does refuse it, and says so in the kiosk's words too
        # the broker refuses it (as a TLS alert, or a bare close before CONNACK)
        assert relay.wait(lambda: relay.publisher.stats()["last_error"] is not None, 20)
        assert "client certificate" in str(relay.publisher.stats()["last_error"])
        # and the fault still names the file to renew, not only the broker's refusal
        assert str(pki.kiosk_expired.cert) in str(relay.fault)
        assert relay.link_up is False and relay.depth() == 4
    finally:
        relay.close()
    result = check_broker(as_config(data), timeout=10)
    assert not result.ok and result.reachable
    assert "client certificate" in result.message and "expired" in result.message
    assert any("expired on" in n for n in result.notes)


def test_expired_server_certificate_is_a_clear_fault(tmp_path: Path, pki: Pki) -> None:
    broker = TlsBroker(tmp_path / "tls", pki, server=pki.server_expired).start()
    try:
        data = kiosk_config(tmp_path, broker, pki)
        relay = InProcessRelay(data)
        try:
            relay.put(2)
            relay.publisher.start()
            assert relay.wait(lambda: relay.fault is not None, 20)
            assert "certificate has expired" in str(relay.fault)
            assert relay.depth() == 2
        finally:
            relay.close()
        result = check_broker(as_config(data), timeout=10)
        assert result.tls_ok is False and "certificate has expired" in result.message
    finally:
        broker.kill()


# --- secrets on disk -------------------------------------------------------------------------


def test_key_file_readable_by_others_is_refused_at_start(
    tmp_path: Path, tls_broker: TlsBroker, pki: Pki
) -> None:
    key = tmp_path / "kiosk.key"
    shutil.copy(pki.kiosk.key, key)
    os.chmod(key, 0o644)
    relay = InProcessRelay(kiosk_config(tmp_path, tls_broker, pki, key_file=str(key)))
    try:
        relay.put(1)
        with pytest.raises(SecurityError) as e:
            relay.publisher.start()
        assert str(key) in str(e.value) and "0644" in str(e.value)
        assert f"chmod 600 {key}" in str(e.value)
        assert not relay.publisher.alive() and relay.depth() == 1
        os.chmod(key, 0o600)
        relay.publisher.start()
        assert relay.wait(lambda: relay.depth() == 0, 20)
    finally:
        relay.close()


def test_missing_and_bad_files_are_named(tmp_path: Path, pki: Pki) -> None:
    base = relay_config(tmp_path, port=8883, host="broker.example", tls=True)

    def refused(**mqtt: str) -> str:
        data = {**base, "mqtt": {**base["mqtt"], **mqtt}}
        with pytest.raises(SecurityError) as e:
            load_credentials(as_config(data).mqtt)
        return str(e.value)

    missing = tmp_path / "nope.crt"
    assert f"mqtt.ca_file = '{missing}': no such file" in refused(ca_file=str(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "not a PEM CA certificate" in refused(ca_file=str(garbage))
    assert "mqtt.cert_file" in refused(cert_file=str(garbage), key_file=str(pki.kiosk.key))
    wrong_pair = refused(cert_file=str(pki.kiosk.cert), key_file=str(pki.lgo.key))
    assert "matching private key" in wrong_pair
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki.kiosk.key), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True)
    os.chmod(encrypted, 0o600)
    assert "encrypted" in refused(cert_file=str(pki.kiosk.cert), key_file=str(encrypted))


def test_password_file_rules(tmp_path: Path) -> None:
    pw = tmp_path / "password"
    pw.write_text("s3cret\nignored second line\n")
    os.chmod(pw, 0o640)
    with pytest.raises(SecurityError, match=r"mode 0640.*chmod 600"):
        read_password(str(pw))
    os.chmod(pw, 0o600)
    assert read_password(str(pw)) == "s3cret"
    pw.write_text("\n")
    with pytest.raises(SecurityError, match="empty"):
        read_password(str(pw))
    with pytest.raises(SecurityError, match="no such file"):
        read_password(str(tmp_path / "absent"))
    base = relay_config(tmp_path, port=1883)
    data = {**base, "mqtt": {**base["mqtt"], "password_file": str(pw)}}
    with pytest.raises(SecurityError, match=r"mqtt\.username is empty"):
        load_credentials(as_config(data).mqtt)


def test_username_and_password_from_file(tmp_path: Path) -> None:
    """Plaintext on loopback with a mosquitto password file: the credentials are used."""
    passwd = tmp_path / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "kiosk-01", "right"],
                   check=True, capture_output=True)
    conf = (f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
            + ("user root\n" if os.geteuid() == 0 else ""))
    broker = Broker(tmp_path / "broker", conf=conf).start()
    pw = tmp_path / "pw"
    pw.write_text("right\n")
    os.chmod(pw, 0o600)
    try:
        good = relay_config(tmp_path / "a", port=broker.port, username="kiosk-01",
                            password_file=str(pw))
        relay = InProcessRelay(good)
        try:
            relay.put(2)
            relay.publisher.start()
            assert relay.wait(lambda: relay.depth() == 0, 20), relay.publisher.stats()
        finally:
            relay.close()
        pw.write_text("wrong\n")
        relay = InProcessRelay(relay_config(tmp_path / "b", port=broker.port,
                                            username="kiosk-01", password_file=str(pw)))
        try:
            relay.put(2)
            relay.publisher.start()
            assert relay.wait(lambda: relay.fault is not None, 20)
            assert "refused the connection" in str(relay.fault)
            assert relay.depth() == 2
        finally:
            relay.close()
        result = check_broker(as_config(relay_config(tmp_path / "c", port=broker.port,
                                                     username="kiosk-01", password_file=str(pw))))
        assert result.reachable and result.tls_ok is None and result.auth_ok is False
    finally:
        broker.kill()


# --- certificate dates, read by our own small DER reader ---------------------------------------


def _openssl_dates(cert: Path) -> tuple[str, str]:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-startdate", "-enddate",
                          "-dateopt", "iso_8601"], check=True, capture_output=True, text=True)
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    return lines["notBefore"], lines["notAfter"]


@pytest.mark.parametrize("which", ["kiosk", "kiosk_expired", "server"])
def test_certificate_validity_matches_openssl(pki: Pki, which: str) -> None:
    cert = getattr(pki, which).cert
    not_before, not_after = certificate_validity(str(cert))
    assert (f"{not_before:%Y-%m-%d %H:%M:%SZ}", f"{not_after:%Y-%m-%d %H:%M:%SZ}") == (
        _openssl_dates(cert)
    )


def test_certificate_problem(pki: Pki, tmp_path: Path) -> None:
    assert certificate_problem(str(pki.kiosk.cert)) is None
    assert "expired on" in str(certificate_problem(str(pki.kiosk_expired.cert)))
    not_before, _ = certificate_validity(str(pki.kiosk.cert))
    early = certificate_problem(str(pki.kiosk.cert), now=not_before.timestamp() - 86400)
    assert early is not None and "is the clock right" in early
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SecurityError, match=r"not a readable X\.509 certificate"):
        certificate_validity(str(bad))
