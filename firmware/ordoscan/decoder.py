"""Decoder: zxing-cpp on grey frames, QR Code and DataMatrix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Symbol:
    """One decoded symbol, before classification."""

    format: str  # "QRCode", "DataMatrix", ... (zxing-cpp format name)
    symbology_id: str  # ISO/IEC 15424 identifier, e.g. "]Q1", "]d2"
    text: str  # decoded text (GS1: with the GS separators)
    raw: bytes  # the symbol's bytes
    position: tuple[tuple[int, int], ...]  # corners, clockwise from top-left
