"""Reading rows straight from the pages of a damaged SQLite file (and its WAL).

When the schema page is damaged SQLite cannot find any table, although the
pages holding the rows are intact. This reader needs no schema: it walks every
page, keeps the b-tree leaf pages, decodes their cells' records by serial
types (following overflow chains), and returns the records; the caller decides
which records are rows of its tables by their shape and content.

Committed WAL frames (matching salts and checksums) replace the file's pages,
as SQLite itself would read them; frames after the last commit are ignored.
The format is the documented one: https://www.sqlite.org/fileformat2.html
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

Value = int | float | str | bytes | None

_HEADER = b"SQLite format 3\x00"
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_TABLE_LEAF, _INDEX_LEAF = 0x0D, 0x0A
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little- or big-endian
MAX_FILE_BYTES = 256 * 1024 * 1024  # an outbox is far smaller: never read a runaway file whole


class Malformed(ValueError):
    """A cell or record does not parse."""


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded cell: its rowid (None in an index or WITHOUT ROWID table) and values."""

    rowid: int | None
    values: tuple[Value, ...]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite's big-endian varint at buf[i]: (value, next offset)."""
    value = 0
    for n in range(9):
        if i >= len(buf):
            raise Malformed("varint runs past the page")
        b = buf[i]
        i += 1
        if n == 8:
            return (value << 8) | b, i
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, i
    raise AssertionError("unreachable")


def _signed(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def decode_record(payload: bytes) -> tuple[Value, ...]:
    """The values of one record (header of serial types, then the body)."""
    header_size, i = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise Malformed("record header size")
    types = []
    while i < header_size:
        t, i = _varint(payload, i)
        types.append(t)
    values: list[Value] = []
    pos = header_size
    sizes = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 8}
    for t in types:
        if t == 0:
            values.append(None)
            continue
        if t in (8, 9):
            values.append(t - 8)
            continue
        if t in (10, 11):
            raise Malformed("reserved serial type")
        size = sizes[t] if t < 12 else (t - 12) // 2
        raw = payload[pos : pos + size]
        if len(raw) != size:
            raise Malformed("record body shorter than its header says")
        pos += size
        if t == 7:
            values.append(struct.unpack(">d", raw)[0])
        elif t < 12:
            values.append(_signed(raw))
        elif t % 2 == 0:
            values.append(bytes(raw))
        else:
            values.append(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError
    return tuple(values)


class PageReader:
    """The pages of one file as SQLite would see them, its committed WAL frames applied."""

    def __init__(self, data: bytes, page_size: int, usable: int, wal: dict[int, bytes]) -> None:
        self.data = data
        self.page_size = page_size
        self.usable = usable
        self.wal = wal

    @classmethod
    def open(cls, path: Path) -> list[PageReader]:
        """Readers for the page sizes worth trying: the header's, or common ones if damaged."""
        data = _read_capped(path)
        wal_path = path.with_name(path.name + "-wal")
        wal_data = _read_capped(wal_path) if wal_path.exists() else b""
        size, reserved = _header_geometry(data)
        candidates = [size] if size else list(_PAGE_SIZES)
        readers = []
        for ps in candidates:
            usable = ps - reserved
            readers.append(cls(data, ps, usable, _wal_pages(wal_data, ps)))
        return readers

    def page_numbers(self) -> list[int]:
        count = len(self.data) // self.page_size
        return sorted(set(range(1, count + 1)) | set(self.wal))

    def page(self, n: int) -> bytes:
        if n in self.wal:
            return self.wal[n]
        start = (n - 1) * self.page_size
        page = self.data[start : start + self.page_size]
        if len(page) != self.page_size:
            raise Malformed(f"page {n} is past the end of the file")
        return page

    def records(self) -> Iterator[Record]:
        """Every record of every leaf page that parses; damaged cells are stepped over."""
        for n in self.page_numbers():
            try:
                page = self.page(n)
            except Malformed:
                continue
            base = 100 if n == 1 else 0
            kind = page[base]
            if kind not in (_TABLE_LEAF, _INDEX_LEAF):
                continue
            ncells = int.from_bytes(page[base + 3 : base + 5], "big")
            for k in range(min(ncells, self.page_size // 4)):
                ptr_at = base + 8 + 2 * k
                ptr = int.from_bytes(page[ptr_at : ptr_at + 2], "big")
                try:
                    yield self._cell(page, ptr, kind == _TABLE_LEAF)
                except (Malformed, ValueError, KeyError, IndexError, struct.error):
                    continue

    def _cell(self, page: bytes, ptr: int, table: bool) -> Record:
        if not 8 <= ptr < self.usable:
            raise Malformed("cell pointer outside the page")
        size, i = _varint(page, ptr)
        rowid = None
        if table:
            rowid, i = _varint(page, i)
            if rowid >= 1 << 63:
                rowid -= 1 << 64
        local = self._local_size(size, table)
        payload = page[i : i + local]
        if len(payload) != local:
            raise Malformed("cell runs past the page")
        if local < size:
            payload += self._overflow(int.from_bytes(page[i + local : i + local + 4], "big"),
                                      size - local)
        return Record(rowid, decode_record(payload))

    def _local_size(self, size: int, table: bool) -> int:
        """How much of a payload is on the page itself (the rest overflows)."""
        u = self.usable
        x = u - 35 if table else (u - 12) * 64 // 255 - 23
        if size <= x:
            return size
        m = (u - 12) * 32 // 255 - 23
        k = m + (size - m) % (u - 4)
        return k if k <= x else m

    def _overflow(self, first: int, needed: int) -> bytes:
        parts: list[bytes] = []
        seen: set[int] = set()
        n = first
        while needed > 0:
            if n in seen or n < 1:
                raise Malformed("overflow chain broken")
            seen.add(n)
            page = self.page(n)
            chunk = page[4 : min(self.usable, 4 + needed)]
            parts.append(chunk)
            needed -= len(chunk)
            n = int.from_bytes(page[:4], "big")
        return b"".join(parts)


def _read_capped(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES)


def _header_geometry(data: bytes) -> tuple[int | None, int]:
    """(page size, reserved bytes per page) from the file header, or (None, 0) if damaged."""
    if not data.startswith(_HEADER) or len(data) < 100:
        return None, 0
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    reserved = data[20]
    if size not in _PAGE_SIZES or reserved >= size // 2:
        return None, 0
    return size, reserved


def _wal_checksum(data: bytes, big: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big else "<") + f"{len(data) // 4}I", data)
    for a, b in zip(words[0::2], words[1::2], strict=True):
        s0 = (s0 + a + s1) & 0xFFFFFFFF
        s1 = (s1 + b + s0) & 0xFFFFFFFF
    return s0, s1


def _wal_pages(wal: bytes, page_size: int) -> dict[int, bytes]:
    """The pages of the committed frames of a WAL, the latest frame of each page winning."""
    if len(wal) < 32:
        return {}
    magic, _version, size = struct.unpack(">III", wal[:12])
    if magic not in _WAL_MAGIC or size != page_size:
        return {}
    big = magic & 1 == 1
    salts = wal[16:24]
    s0, s1 = _wal_checksum(wal[:24], big, 0, 0)
    if struct.unpack(">II", wal[24:32]) != (s0, s1):
        return {}
    committed: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    at = 32
    while at + 24 + page_size <= len(wal):
        head = wal[at : at + 24]
        page = wal[at + 24 : at + 24 + page_size]
        if head[8:16] != salts:
            break
        s0, s1 = _wal_checksum(head[:8] + page, big, s0, s1)
        if struct.unpack(">II", head[16:24]) != (s0, s1):
            break
        number, commit_size = struct.unpack(">II", head[:8])
        pending[number] = page
        if commit_size:
            committed.update(pending)
            pending.clear()
        at += 24 + page_size
    return committed
