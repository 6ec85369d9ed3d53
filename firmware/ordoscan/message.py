"""The `ordoscan.scan/1` message (SPEC §7): what the pharmacy system receives.

The pydantic model is the single source of truth: the kiosk serialises with it,
consumers validate with it, and the shipped JSON Schema is generated from it
(`python -m ordoscan.message` rewrites the package's copy, the one stored file;
the repository's schemas/ holds a symbolic link to it).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from ordoscan.clock import iso_ms

SCHEMA = "ordoscan.scan/1"
SCHEMA_ID = "urn:ordoscan:schema:scan:1"
SCHEMA_FILENAME = "ordoscan.scan-1.schema.json"

# Every classifier.Kind except INS: patient identity is never relayed, so the
# schema cannot even express it. A test keeps this list in step with Kind.
RelayedKind = Literal["ordonnance_numerique", "medicine_pack", "2d_doc", "url", "unknown"]

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # device_id and site: they go into MQTT topics
NAME_MAX_LENGTH = 64  # the installer's limit too; a topic must stay far below MQTT's 65,535 bytes


# --- scan_id: UUIDv7 (RFC 9562), time-ordered ----------------------------------

_uuid_lock = threading.Lock()
_uuid_last_ms = 0
_uuid_counter = 0


def new_scan_id(now: float | None = None) -> str:
    """A fresh UUIDv7 string; ids made by this process sort in creation order."""
    global _uuid_last_ms, _uuid_counter
    ms = int((time.time() if now is None else now) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    with _uuid_lock:
        # RFC 9562 §6.2 method 1: within one millisecond (or if the clock steps
        # back) the 12-bit rand_a field counts up, so ids never go backwards.
        if ms > _uuid_last_ms:
            _uuid_last_ms = ms
            _uuid_counter = rand >> 68  # a random start, top bit clear: room to count
        else:
            _uuid_counter += 1
            if _uuid_counter > 0xFFF:
                _uuid_last_ms += 1
                _uuid_counter = 0
        ms, counter = _uuid_last_ms, _uuid_counter
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def scan_id_time(scan_id: str) -> float:
    """The Unix time (seconds, millisecond precision) carried by a UUIDv7."""
    return int(scan_id.replace("-", "")[:12], 16) / 1000


# --- scanned_at: UTC, milliseconds, "Z" ----------------------------------------


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        if not _TIMESTAMP.match(value):
            raise ValueError("must be UTC with milliseconds and Z, like 2026-11-25T10:31:07.412Z")
        return datetime.strptime(value[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be a timezone-aware datetime (naive times are ambiguous)")
        value = value.astimezone(UTC)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    PlainSerializer(iso_ms, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _TIMESTAMP.pattern}),
]


# --- the message ---------------------------------------------------------------


class ScanMessage(BaseModel):
    """One scan as published on `{prefix}/scan`, schema ordoscan.scan/1."""

    # hide_input_in_errors: a validation error must never echo a payload.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        hide_input_in_errors=True,
        # "schema" has a default in Python but is always in the JSON: required there.
        json_schema_serialization_defaults_required=True,
        title="ordoscan.scan/1",
        json_schema_extra={
            "$id": SCHEMA_ID,
            "description": (
                "A code read by an ordoscan kiosk, published on {prefix}/scan "
                "(QoS 1, not retained). Delivery is at least once, in seq order: "
                "consumers de-duplicate on scan_id."
            ),
        },
    )

    schema_: Literal["ordoscan.scan/1"] = Field(
        default="ordoscan.scan/1",
        alias="schema",
        description="Message schema and version; a consumer refuses a schema it does not know.",
    )
    scan_id: str = Field(
        pattern=_UUID7.pattern,
        description="Unique id of the scan (UUIDv7, lowercase, time-ordered). "
        "A re-delivery carries the same scan_id: de-duplicate on it.",
    )
    seq: int = Field(
        ge=1,
        description="Per-device sequence number: strictly increasing, survives restarts, "
        "never reused.",
    )
    device_id: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="The kiosk that read the code ([device] id).",
    )
    site: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="The pharmacy the kiosk belongs to ([device] site).",
    )
    scanned_at: Timestamp = Field(
        description="When the code was read: UTC, ISO 8601 with milliseconds and Z.",
    )
    clock_synced: bool = Field(
        description="True if the kiosk's clock was synchronised (NTP) when it read the code; "
        "if false, scanned_at may be wrong.",
    )
    kind: RelayedKind = Field(
        description="What the code is; the kiosk relays ordonnance_numerique. "
        "Patient identity (INS) is never sent.",
    )
    symbology: str = Field(
        min_length=1,
        max_length=32,
        description="Barcode symbology as named by zxing-cpp: QRCode, DataMatrix, ...",
    )
    symbology_id: str = Field(
        pattern=r"^\][A-Za-z][0-9A-Za-z]$",
        description="ISO/IEC 15424 symbology identifier: ]Q1 (QR Code), ]d2 (GS1 DataMatrix), ...",
    )
    payload: str = Field(
        min_length=1,
        description="The decoded text, unchanged (for an ordonnance numérique, its identifier).",
    )

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, the bytes published on MQTT."""
        return self.model_dump_json(by_alias=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> ScanMessage:
        """Parse and validate a received message; raises pydantic.ValidationError."""
        return cls.model_validate_json(data)


def scan_json_schema() -> dict[str, Any]:
    """The JSON Schema of ordoscan.scan/1 (what `ordoscan config schema --message` prints)."""
    schema = ScanMessage.model_json_schema(by_alias=True, mode="serialization")
    ordered: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    ordered["$id"] = schema.pop("$id")
    ordered.update(schema)
    return ordered


def schema_text() -> str:
    """The schema file's exact text (stable key order, trailing newline)."""
    return json.dumps(scan_json_schema(), indent=2, ensure_ascii=False) + "\n"


def schema_paths(repo_root: Path | None = None) -> list[Path]:
    """Where the generated schema is stored: once, in the package (shipped as package data).

    The repository's `schemas/` file is a relative symbolic link to it, so the
    two can never differ, and packaging only ever sees the package's file."""
    return [Path(__file__).resolve().parent / "schemas" / SCHEMA_FILENAME]


def main(argv: list[str] | None = None) -> int:
    """`python -m ordoscan.message [--check]`: write (or check) the schema file."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    text = schema_text()
    stale = []
    for path in schema_paths():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        for path in stale:
            print(f"{path}: out of date; run: python -m ordoscan.message", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "SCHEMA",
    "RelayedKind",
    "ScanMessage",
    "ValidationError",
    "new_scan_id",
    "scan_id_time",
    "scan_json_schema",
]

if __name__ == "__main__":
    sys.exit(main())
