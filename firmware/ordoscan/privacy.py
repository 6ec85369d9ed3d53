"""What a prescription identifier may look like outside the outbox.

Identifiers are keys to health data: logs and screens show at most the last
four characters. INS (patient identity) content is never shown at all.
"""

MASK = "…"
INS_REDACTED = "<INS: not shown>"


def mask(payload: str | None) -> str:
    """Return `…` plus the last 4 characters; short payloads show nothing."""
    if not payload:
        return MASK
    if len(payload) < 8:  # the last 4 of a short code would give most of it away
        return MASK
    return MASK + payload[-4:]


# Characters that would act on a terminal or forge a log line: C0 and C1 controls,
# DEL, and the bidirectional overrides and isolates that reorder what is shown.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}
DEFAULT_LIMIT = 200


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or ch in _BIDI


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
