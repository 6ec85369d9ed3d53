"""The example broker of provisioning/broker/ (real mosquitto, TLS, client
certificates, its ACL): a kiosk's certificate lets it publish under its own
prefix only, never under another kiosk's or another site's, and lets it read
only its own commands.

Each kiosk certificate is made the way the installer makes it: the key on the
kiosk, a request with subject O=<site>, CN=<device id>, signed by the
pharmacy's CA. The broker takes the CN as the MQTT identity.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.mosquitto import ProvisionedBroker, Subscriber
from tests.support.pki import CertAuthority, CertKey

REPO = Path(__file__).resolve().parent.parent
SITE = "pharmacie-du-port"
OTHER_SITE = "pharmacie-des-quais"
KIOSK_A, KIOSK_B = "c0ffee42", "0ddba115"
NOT_AUTHORIZED = 0x87
TIMEOUT = 20.0


def prefix(kiosk: str, site: str = SITE) -> str:
    return f"pharmacy/{site}/kiosk/{kiosk}"


def kiosk_certificate(ca: CertAuthority, workdir: Path, device_id: str, site: str) -> CertKey:
    """As provisioning/install.sh does it: key and request on the kiosk, signed by the CA."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, csr, cert = workdir / "device.key", workdir / "device.csr", workdir / "device.crt"
    ext = workdir / "client.ext"
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for args in (
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
        ["req", "-new", "-key", key, "-subj", f"/O={site}/CN={device_id}", "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
         "-days", "30", "-extfile", ext, "-out", cert],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return CertKey(cert=cert, key=key, cn=device_id)


def test_the_request_subject_is_the_installers() -> None:
    # the subject used above is the one install.sh writes into device.csr
    assert '-subj "/O=$site/CN=$id"' in (REPO / "provisioning" / "install.sh").read_text()


@dataclass
class Pki:
    ca: CertAuthority
    kiosk_a: CertKey
    kiosk_b: CertKey
    lgo: CertKey
    impostor_b: CertKey  # CN of kiosk B, from a CA the broker does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("acl-pki")
    ca = CertAuthority(base / "ca", name="pharmacie-du-port CA")
    rogue = CertAuthority(base / "rogue", name="not the pharmacy's CA")
    return Pki(
        ca=ca,
        kiosk_a=kiosk_certificate(ca, base / "a", KIOSK_A, SITE),
        kiosk_b=kiosk_certificate(ca, base / "b", KIOSK_B, SITE),
        lgo=ca.client("lgo"),
        impostor_b=kiosk_certificate(rogue, base / "impostor", KIOSK_B, SITE),
    )


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[ProvisionedBroker]:
    server = pki.ca.server()
    b = ProvisionedBroker(tmp_path / "broker", ca_cert=pki.ca.cert, server_cert=server.cert,
                          server_key=server.key, site=SITE)
    b.start()
    try:
        yield b
    finally:
        b.kill()


def tls_context(pki: Pki, who: CertKey) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(who.cert, who.key)
    return ctx


class Kiosk:
    """An MQTT client with a kiosk certificate that reports the broker's
    answer to each publish (PUBACK reason code) and subscribe (SUBACK)."""

    def __init__(self, broker: ProvisionedBroker, ctx: ssl.SSLContext, client_id: str,
                 protocol: int = mqtt.MQTTv5) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol)
        self.client.tls_set_context(ctx)
        self._cond = threading.Condition()
        self.connected: ReasonCode | None = None
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self._wait(lambda: self.connected is not None), "no CONNACK"
        assert self.connected is not None and not self.connected.is_failure, self.connected

    def _wait(self, predicate: object) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, TIMEOUT)  # type: ignore[arg-type]

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self.connected = rc
            self._cond.notify_all()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self.pubacks[mid] = rc.value
            self._cond.notify_all()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object
    ) -> None:
        with self._cond:
            self.subacks[mid] = [rc.value for rc in rcs]
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """QoS 1; returns the PUBACK reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert self._wait(lambda: info.mid in self.pubacks), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        assert self._wait(lambda: mid in self.subacks), f"no SUBACK for {topic}"
        return self.subacks[mid][0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def lgo(broker: ProvisionedBroker, pki: Pki) -> Iterator[Subscriber]:
    """The pharmacy system, reading everything its ACL lets it read, on every site."""
    s = Subscriber(broker.host, broker.port, ["pharmacy/#"], client_id="lgo",
                   tls=tls_context(pki, pki.lgo))
    try:
        yield s
    finally:
        s.close()


def received(lgo: Subscriber, topic: str) -> list[bytes]:
    return [p for t, p, _ in lgo.messages if t == topic]


def test_a_kiosk_publishes_under_its_own_prefix(
    broker: ProvisionedBroker, pki: Pki, lgo: Subscriber
) -> None:
    a = Kiosk(broker, tls_context(pki, pki.kiosk_a), f"ordoscan-{KIOSK_A}")
    try:
        for leaf in ("scan", "telemetry", "reply"):
            assert a.publish(f"{prefix(KIOSK_A)}/{leaf}", b"from A") == 0, leaf
        assert a.publish(f"{prefix(KIOSK_A)}/status", b'{"state":"online"}', retain=True) == 0
        assert lgo.wait_for(lambda s: len(received(s, f"{prefix(KIOSK_A)}/status")) == 1)
        assert received(lgo, f"{prefix(KIOSK_A)}/scan") == [b"from A"]
    finally:
        a.close()


@pytest.mark.parametrize(
    "topic",
    [
        f"{prefix(KIOSK_B)}/scan",  # another kiosk of the same pharmacy
        f"{prefix(KIOSK_B)}/status",
        f"{prefix(KIOSK_B)}/telemetry",
        f"{prefix(KIOSK_B)}/reply",
        f"{prefix(KIOSK_A, OTHER_SITE)}/scan",  # its own id, another pharmacy
        f"{prefix(KIOSK_B)}/cmd/identify",  # commands are the LGO's
        f"{prefix(KIOSK_A)}/cmd/identify",
        f"{prefix(KIOSK_A)}/scan/extra",  # only the exact leaves
        f"pharmacy/{SITE}/kiosk/{KIOSK_A}x/scan",  # a look-alike id
    ],
)
def test_a_kiosk_cannot_publish_outside_its_prefix(
    broker: ProvisionedBroker, pki: Pki, lgo: Subscriber, topic: str
) -> None:
    a = Kiosk(broker, tls_context(pki, pki.kiosk_a), f"ordoscan-{KIOSK_A}")
    try:
        assert a.publish(topic, b"forged scan") == NOT_AUTHORIZED
        # Then an allowed message. mosquitto handles one client's messages in
        # order, so once the LGO has this one, the forged one would have
        # arrived before it if it had been let through.
        assert a.publish(f"{prefix(KIOSK_A)}/scan", b"sentinel") == 0
        assert lgo.wait_for(lambda s: received(s, f"{prefix(KIOSK_A)}/scan") == [b"sentinel"])
        assert received(lgo, topic) == []
    finally:
        a.close()
    assert [t for t, _, _ in lgo.messages] == [f"{prefix(KIOSK_A)}/scan"]


def test_mqtt_311_forgery_is_dropped_too(
    broker: ProvisionedBroker, pki: Pki, lgo: Subscriber
) -> None:
    # MQTT 3.1.1 has no negative PUBACK: the broker acknowledges and drops.
    a = Kiosk(broker, tls_context(pki, pki.kiosk_a), f"ordoscan-{KIOSK_A}", protocol=mqtt.MQTTv311)
    try:
        a.publish(f"{prefix(KIOSK_B)}/scan", b"forged scan")
        a.publish(f"{prefix(KIOSK_A)}/scan", b"sentinel")
        assert lgo.wait_for(lambda s: received(s, f"{prefix(KIOSK_A)}/scan") == [b"sentinel"])
        assert received(lgo, f"{prefix(KIOSK_B)}/scan") == []
    finally:
        a.close()


def test_a_kiosk_reads_only_its_own_commands(broker: ProvisionedBroker, pki: Pki) -> None:
    a = Kiosk(broker, tls_context(pki, pki.kiosk_a), f"ordoscan-{KIOSK_A}")
    lgo_client = Kiosk(broker, tls_context(pki, pki.lgo), "lgo-commands")
    got: list[str] = []
    done = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.topic)
        if msg.topic.endswith("/done"):
            done.set()

    a.client.on_message = on_message
    try:
        assert a.subscribe(f"{prefix(KIOSK_A)}/cmd/#") in (0, 1)
        # Reading another kiosk's commands or scans: refused at subscribe, or
        # (wildcards) nothing delivered; both are checked.
        others = (f"{prefix(KIOSK_B)}/cmd/#", f"{prefix(KIOSK_B)}/scan",
                  f"pharmacy/{SITE}/kiosk/+/scan")
        for topic in others:
            rc = a.subscribe(topic)
            assert rc in (0, 1, NOT_AUTHORIZED), (topic, hex(rc))
        b = Kiosk(broker, tls_context(pki, pki.kiosk_b), f"ordoscan-{KIOSK_B}")
        try:
            assert b.publish(f"{prefix(KIOSK_B)}/scan", b"B's scan") == 0
        finally:
            b.close()
        assert lgo_client.publish(f"{prefix(KIOSK_B)}/cmd/identify", b"{}") == 0
        assert lgo_client.publish(f"{prefix(KIOSK_A)}/cmd/identify", b"{}") == 0
        assert lgo_client.publish(f"{prefix(KIOSK_A)}/cmd/done", b"{}") == 0
        assert done.wait(TIMEOUT)
        assert got == [f"{prefix(KIOSK_A)}/cmd/identify", f"{prefix(KIOSK_A)}/cmd/done"]
    finally:
        a.close()
        lgo_client.close()


def test_a_certificate_from_another_ca_cannot_pose_as_a_kiosk(
    broker: ProvisionedBroker, pki: Pki
) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(pki.impostor_b.cert, pki.impostor_b.key)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ordoscan-{KIOSK_B}",
                         protocol=mqtt.MQTTv5)
    client.tls_set_context(ctx)
    connacks: list[object] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: connacks.append(rc)
    # The broker refuses the certificate in the handshake; depending on the
    # TLS version the client learns it at once or on its next read or write.
    try:
        rc = client.connect(broker.host, broker.port, keepalive=30)
        for _ in range(25):
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break
            rc = client.loop(timeout=0.2)
    except (ssl.SSLError, OSError):
        pass
    assert connacks == []
    assert not client.is_connected()
    deadline = time.monotonic() + TIMEOUT
    while "certificate verify failed" not in broker.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "certificate verify failed" in broker.log()
