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
