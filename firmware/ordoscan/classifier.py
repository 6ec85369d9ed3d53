"""Classifier: every decoded symbol becomes exactly one kind (SPEC §1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    ORDONNANCE = "ordonnance_numerique"
    MEDICINE_PACK = "medicine_pack"
    DOC_2D = "2d_doc"
    INS = "ins"
    URL = "url"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Classified:
    """A classified symbol. For Kind.INS payload is "" and key is "ins": nothing of it is kept."""

    kind: Kind
    format: str
    symbology_id: str
    payload: str  # relayed unchanged for an ordonnance; "" for INS
    key: str  # de-duplication identity (the payload; "ins" for every INS code)
    details: dict[str, str] = field(default_factory=dict)  # e.g. GS1 gtin, cip13, expiry, lot, serial
    reason: str = ""  # why it was refused, for logs (never the payload)
