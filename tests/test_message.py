"""The ordoscan.scan/1 message: model, UUIDv7 ids, timestamps and the shipped JSON Schema."""

from __future__ import annotations

import json
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ordoscan import message
from ordoscan.classifier import Kind
from ordoscan.clock import iso_ms
from ordoscan.message import (
    ScanMessage,
    new_scan_id,
    scan_id_time,
    scan_json_schema,
)
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parent.parent
REGEN = "python -m ordoscan.message"

SPEC_EXAMPLE = {
    "schema": "ordoscan.scan/1",
    "scan_id": "0193f1c2-7a3b-7c4d-8e5f-0123456789ab",
    "seq": 1042,
    "device_id": "kiosk-01",
    "site": "pharmacie-du-port",
    "scanned_at": "2026-11-25T10:31:07.412Z",
    "clock_synced": True,
    "kind": "ordonnance_numerique",
    "symbology": "QRCode",
    "symbology_id": "]Q1",
    "payload": "01S2TBPZ2JCNZZYGHZ",
}


def make(**kw: object) -> ScanMessage:
    data: dict[str, object] = dict(SPEC_EXAMPLE)
    data.update(kw)
    return ScanMessage.model_validate(data)


def test_spec_example_round_trips_byte_for_byte() -> None:
    raw = json.dumps(SPEC_EXAMPLE, separators=(",", ":")).encode()
    msg = ScanMessage.from_json(raw)
    assert msg.scanned_at == datetime(2026, 11, 25, 10, 31, 7, 412_000, tzinfo=UTC)
    assert msg.to_json() == raw


def test_to_json_is_compact_utf8() -> None:
    body = make(payload="ordonnance-é-01").to_json()
    assert b" " not in body.replace("ordonnance-é-01".encode(), b"")
    assert "ordonnance-é-01".encode() in body  # real UTF-8, not \\u escapes
    assert json.loads(body)["schema"] == "ordoscan.scan/1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", "ordoscan.scan/2"),
        ("scan_id", "not-a-uuid"),
        ("scan_id", str(uuid.uuid4())),  # a UUIDv4 is not time-ordered
        ("seq", 0),
        ("seq", "5"),  # strict: a number is a number
        ("device_id", ""),
        ("device_id", "kiosk/01"),  # it goes into topics
        ("site", "a b"),
        ("scanned_at", "2026-11-25T10:31:07Z"),  # no milliseconds
        ("scanned_at", "2026-11-25T10:31:07.412+01:00"),  # not UTC Z
        ("clock_synced", "yes"),
        ("kind", "ins"),  # patient identity cannot even be expressed
        ("kind", "prescription"),
        ("symbology", ""),
        ("symbology_id", "Q1"),
        ("payload", ""),
    ],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as ei:
        make(**{field: value})
    assert field in str(ei.value)


def test_unknown_and_missing_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ScanMessage.from_json(json.dumps({**SPEC_EXAMPLE, "patient": "x"}))
    data = dict(SPEC_EXAMPLE)
    del data["seq"]
    with pytest.raises(ValidationError, match="seq"):
        ScanMessage.from_json(json.dumps(data))


def test_validation_errors_never_echo_the_payload() -> None:
    secret = "01SECRETSECRET9876"
    with pytest.raises(ValidationError) as ei:
        ScanMessage.from_json(json.dumps({**SPEC_EXAMPLE, "payload": secret, "seq": -1}))
    assert secret not in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        ScanMessage.from_json(json.dumps({**SPEC_EXAMPLE, "payload": 12345678901}))
    assert "12345678901" not in str(ei.value)


def test_relayed_kinds_are_every_kind_but_ins() -> None:
    relayed = set(typing.get_args(message.RelayedKind))
    assert relayed == {k.value for k in Kind} - {Kind.INS.value}
    assert make(kind=Kind.ORDONNANCE).kind == "ordonnance_numerique"


def test_datetimes_are_normalised_to_utc_milliseconds() -> None:
    paris = timezone(timedelta(hours=1))
    msg = make(scanned_at=datetime(2026, 11, 25, 11, 31, 7, 412_999, tzinfo=paris))
    assert json.loads(msg.to_json())["scanned_at"] == "2026-11-25T10:31:07.412Z"
    with pytest.raises(ValidationError, match="timezone"):
        make(scanned_at=datetime(2026, 11, 25, 10, 31, 7))
    assert iso_ms(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_new_scan_id_is_uuid7_and_carries_its_time() -> None:
    now = 1_900_000_000.123
    sid = new_scan_id(now)
    u = uuid.UUID(sid)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert str(u) == sid
    assert scan_id_time(sid) >= round(now, 3)
    make(scan_id=sid)


def test_scan_ids_are_unique_and_ordered_within_one_millisecond() -> None:
    now = 1_900_000_100.0
    ids = [new_scan_id(now) for _ in range(10_000)]  # more than the 12-bit counter holds
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_scan_ids_never_go_back_when_the_clock_does() -> None:
    a = new_scan_id(1_900_000_200.0)
    b = new_scan_id(1_900_000_100.0)
    assert b > a


@given(
    payload=st.text(min_size=1, max_size=600).filter(
        lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    ),
    seq=st.integers(min_value=1, max_value=2**62),
    ms=st.integers(min_value=0, max_value=4_102_444_800_000),
)
def test_any_text_payload_round_trips(payload: str, seq: int, ms: int) -> None:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    msg = make(payload=payload, seq=seq, scanned_at=when)
    back = ScanMessage.from_json(msg.to_json())
    assert back == msg
    assert back.payload == payload
    assert back.scanned_at == when


def test_schema_describes_every_field_and_forbids_extras() -> None:
    schema = scan_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(SPEC_EXAMPLE)
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description"
    assert "ins" not in schema["properties"]["kind"]["enum"]


def test_spec_example_validates_against_the_json_schema() -> None:
    """The JSON Schema itself (not only the model) accepts real messages and refuses bad ones."""
    import jsonschema

    schema = scan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    v.validate(SPEC_EXAMPLE)
    v.validate(json.loads(make(scan_id=new_scan_id()).to_json()))
    for bad in ({"kind": "ins"}, {"seq": 0}, {"extra": 1}, {"scanned_at": "2026-11-25"}):
        assert not v.is_valid({**SPEC_EXAMPLE, **bad}), bad


PACKAGE_SCHEMA = ROOT / "firmware" / "ordoscan" / "schemas" / message.SCHEMA_FILENAME


def test_schema_is_stored_once_and_linked_from_the_repository() -> None:
    repo = ROOT / "schemas" / message.SCHEMA_FILENAME
    assert repo.is_symlink(), f"{repo} must be a link to the package's file, not a copy"
    assert repo.resolve() == PACKAGE_SCHEMA.resolve()
    assert message.schema_paths() == [PACKAGE_SCHEMA.resolve()]


def test_shipped_schema_is_up_to_date() -> None:
    path = PACKAGE_SCHEMA
    assert path.is_file(), f"{path} is missing; regenerate it with: {REGEN}"
    assert path.read_text(encoding="utf-8") == message.schema_text(), (
        f"{path} does not match the ScanMessage model; regenerate it with: {REGEN}"
    )


def test_generator_check_mode_reports_stale_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "pkg" / message.SCHEMA_FILENAME
    monkeypatch.setattr(message, "schema_paths", lambda repo_root=None: [target])
    assert message.main(["--check"]) == 1
    assert REGEN in capsys.readouterr().err
    assert message.main([]) == 0
    assert target.read_text(encoding="utf-8") == message.schema_text()
    assert message.main(["--check"]) == 0


def test_config_schema_message_prints_the_shipped_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ordoscan.cli import main

    assert main(["config", "schema", "--message"]) == 0
    printed = json.loads(capsys.readouterr().out)
    shipped = ROOT / "firmware" / "ordoscan" / "schemas" / message.SCHEMA_FILENAME
    assert printed == json.loads(shipped.read_text(encoding="utf-8")) == scan_json_schema()
