"""What a prescription identifier, or any text from outside, may look like on a screen or in a log.

Identifiers are keys to health data: logs and screens show at most the last
four characters. INS (patient identity) content is never shown at all.
Anything that comes from outside (a decoded payload, a file name, a message
key) goes through `printable()` for text, or `json_line()` for JSON, before it
reaches a terminal or a log line, so that it can neither act on the terminal
nor forge a line.
"""

import json
import logging
from typing import Any

MASK = "…"
INS_REDACTED = "<INS: not shown>"


def mask(payload: str | None) -> str:
    """Return `…` plus the last 4 characters (escaped by printable()); short payloads show
    nothing."""
    if not payload:
        return MASK
    if len(payload) < 8:  # the last 4 of a short code would give most of it away
        return MASK
    return MASK + printable(payload[-4:])  # escaped: the last 4 may be a terminal sequence


# Characters that would act on a terminal or forge a log line: C0 and C1 controls,
# DEL, the bidirectional overrides and isolates that reorder what is shown, and the
# line and paragraph separators that some viewers break lines at.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BREAKS = frozenset("\u2028\u2029")
# GS separates GS1 fields: shown by its name, as the GS1 specifications print it.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e", "\x1d": "<GS>"}
DEFAULT_LIMIT = 200
LOG_LIMIT = 1000  # a log line's message: long enough for any honest one


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or ch in _BIDI or ch in _BREAKS


def printable(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """Text made safe for a terminal or a log line: every control, C1 and bidi override is
    escaped visibly (`\\e`, `\\x9b`, `\\u202e`), and text past `limit` characters is cut
    with the count of what was left out. The one place where outside text is made safe."""
    s = str(text)
    cut = 0
    if limit is not None and len(s) > limit:
        cut = len(s) - limit
        s = s[:limit]
    if any(_unsafe(c) for c in s):
        s = "".join(_escape(c) if _unsafe(c) else c for c in s)
    return s + (f"…(+{cut} chars)" if cut else "")


def json_line(doc: Any, *, compact: bool = False) -> str:
    """One line of JSON that is safe on a terminal: UTF-8 kept readable, but every character
    printable() would escape is a JSON escape (`\\u009b`, `\\u202e`), so the line decodes
    back to exactly `doc` and never acts on the terminal."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":") if compact else None)
    if any(_unsafe(c) for c in text):  # only inside strings: json.dumps wrote the rest
        text = "".join(f"\\u{ord(c):04x}" if _unsafe(c) else c for c in text)
    return text


class SafeFormatter(logging.Formatter):
    """A log formatter that makes each message printable() and cuts it at LOG_LIMIT, so that
    no outside text (a file name, a command name) forges a line or floods the journal.
    Tracebacks, which only the code writes, keep their lines."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        safe = printable(message, LOG_LIMIT)
        if safe != message:
            record = logging.makeLogRecord({**record.__dict__, "msg": safe, "args": None})
        return super().format(record)
