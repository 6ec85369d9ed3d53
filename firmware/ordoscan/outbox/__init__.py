"""The durable outbox: scans waiting for the broker, in one SQLite file.

- `store`: the queue API (`Outbox`) over one connection;
- `db`: opening, format and integrity checks, readable SQLite errors;
- `recovery`: quarantine of a damaged file and salvage of its scans;
- `seqfile`: the `<file>.seq` ceiling that keeps seq monotonic even if the file is lost;
- `reserve`: the `<file>.reserve` disk space released so deletions work on a full disk.
"""

from ordoscan.outbox.checkpoint import CHECKPOINT_AFTER_DELETES, CHECKPOINT_AFTER_S
from ordoscan.outbox.model import APPLICATION_ID, FORMAT_VERSION, OutboxStats, StoredScan
from ordoscan.outbox.reserve import RESERVE_BYTES
from ordoscan.outbox.seqfile import SEQ_BLOCK
from ordoscan.outbox.store import Outbox

__all__ = [
    "APPLICATION_ID",
    "CHECKPOINT_AFTER_DELETES",
    "CHECKPOINT_AFTER_S",
    "FORMAT_VERSION",
    "RESERVE_BYTES",
    "SEQ_BLOCK",
    "Outbox",
    "OutboxStats",
    "StoredScan",
]
