"""Logging to stderr, journald-friendly.

Under systemd (JOURNAL_STREAM set) journald adds the timestamp, so lines carry
none; in a terminal they do. Payloads are masked by the callers (privacy.mask);
every message is made printable and cut here (privacy.SafeFormatter), so that
text from outside cannot forge a line.
"""

import logging
import os
import sys

from ordoscan.privacy import SafeFormatter


def setup_logging(level: str = "info", *, stream: object = None) -> None:
    """Configure the root logger once, for the daemon and the commands."""
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(SafeFormatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
