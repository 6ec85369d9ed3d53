"""One exception tree for the whole firmware.

The daemon acts on the type: a CameraError gets the fault signal and a reopen
with back-off, an OutboxFull or OutboxDiskError gets the fault signal and the
scan refused, a ConfigError exits 2.
"""


class OrdoscanError(Exception):
    """Base class of every error ordoscan raises on purpose."""


class ConfigError(OrdoscanError):
    """The configuration file, a key or an environment override is invalid."""


class CameraError(OrdoscanError):
    """A frame source failed: it cannot be opened, it vanished or it stalled."""


class CameraOpenError(CameraError):
    """A frame source could not be opened (missing device, unreadable file)."""


class CameraLost(CameraError):
    """A frame source that was working stopped giving frames."""


class DecodeError(OrdoscanError):
    """An image could not be read or decoded (bad file, not an image)."""


class OutboxError(OrdoscanError):
    """The durable outbox could not do what was asked."""


class OutboxFull(OutboxError):
    """The outbox holds max_messages scans: the new scan is refused."""


class OutboxDiskError(OutboxError):
    """The disk under the outbox is full, read-only or failing."""


class OutboxInUse(OutboxError):
    """Another process already writes this outbox: one daemon per outbox."""


class OutboxCorrupt(OutboxError):
    """The outbox file is not a valid database (it gets quarantined)."""


class PublisherError(OrdoscanError):
    """The MQTT side failed in a way the operator must act on (TLS, credentials)."""


class SecurityError(OrdoscanError):
    """A secret file has unsafe permissions or a secure setting was refused."""


class CommandError(OrdoscanError):
    """A remote command (`{prefix}/cmd/{name}`) was refused: unknown, too big or malformed."""


class GpioError(OrdoscanError):
    """A GPIO pin could not be claimed or driven."""


class BrokerError(OrdoscanError):
    """A local mosquitto (the demo's, the tests') could not be found or started."""
