"""`ordoscan queue stats|list|purge`: look into the outbox, or empty it.

stats and list open the file read-only and never create it, so they are safe
beside a running daemon; list shows payloads masked (`privacy.mask`). purge asks
for confirmation on a terminal and refuses without one unless `--yes`; it takes
the outbox's writer lock, so it refuses while a daemon runs, naming its PID.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ordoscan.clock import SYSTEM_CLOCK
from ordoscan.config import Config, config_path, load_config
from ordoscan.errors import OutboxCorrupt, OutboxInUse
from ordoscan.outbox import Outbox
from ordoscan.outbox.recovery import DAMAGED_NEXT
from ordoscan.privacy import mask, printable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PAGE = 500


def format_age(seconds: float | None) -> str:
    """A short human age: 42 s, 3 min 05 s, 2 h 05 min, 1 d 04 h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def _open(cfg: Config, *, readonly: bool) -> Outbox:
    return Outbox(
        cfg.outbox.path,
        max_messages=cfg.outbox.max_messages,
        max_age_h=cfg.outbox.max_age_h,
        device_id=cfg.device.id,
        site=cfg.device.site,
        readonly=readonly,
    )


def _stats(cfg: Config) -> int:
    with _open(cfg, readonly=True) as box:
        st = box.stats()
        writer = box.writer_lock.holder()
    print(f"outbox       {cfg.outbox.path}")
    print(f"in use by    {'no process' if writer is None else f'PID {writer}'}")
    print(f"queued       {st.depth} of {st.max_messages}")
    print(f"oldest       {format_age(st.oldest_age_s)}")
    print(f"expired      {st.expired_total} (dropped undelivered after {cfg.outbox.max_age_h:g} h)")
    print(f"last seq     {st.last_seq}")
    if st.quarantined:
        print(
            f"quarantined  {len(st.quarantined)} damaged file(s) replaced: their readable scans "
            "are in the queue above, the damaged copies were scrubbed; report(s):"
        )
        for name in st.quarantined:
            print(f"  {printable(name)}")
        print(
            "  next: read the report (it holds no identifier) and delete it; it goes by "
            f"itself after {cfg.outbox.max_age_h:g} h. Damage that comes back means failing "
            "storage: run `ordoscan check` and replace the SD card"
        )
    else:
        print("quarantined  none")
    return EXIT_OK


def _list(cfg: Config) -> int:
    with _open(cfg, readonly=True) as box:
        st = box.stats()
        now = SYSTEM_CLOCK.wall()
        shown = 0
        after = 0
        print(f"{'seq':>8}  {'scan_id':36}  {'age':>13}  {'kind':20}  payload")
        while True:
            rows = box.pending(limit=PAGE, after_seq=after)
            for row in rows:
                try:
                    data = json.loads(row.body)
                    kind, payload = str(data.get("kind", "?")), str(data.get("payload", ""))
                except ValueError:
                    kind, payload = "?", ""
                age = format_age(now - row.created_at)
                # a row is written by the kiosk, but the file may not be: shown escaped
                kind, scan_id = printable(kind, 40), printable(row.scan_id, 40)
                print(f"{row.seq:>8}  {scan_id:36}  {age:>13}  {kind:20}  {mask(payload)}")
            shown += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1].seq
    print(f"{shown} scan(s) waiting")
    if st.depth > shown:
        print(f"{st.depth - shown} expired scan(s) not shown (dropped at the next expiry)")
    return EXIT_OK


def _purge(cfg: Config, yes: bool) -> int:
    try:
        box = _open(cfg, readonly=False)
    except OutboxInUse as e:
        print(f"ordoscan: refusing to purge: {e}", file=sys.stderr)
        return EXIT_FAILURE
    with box:
        depth = box.stats().depth
        if depth == 0:
            print("the outbox is empty: nothing to purge")
            return EXIT_OK
        if not yes:
            if not sys.stdin.isatty():
                print(
                    f"ordoscan: refusing to purge {depth} undelivered scan(s) without "
                    "confirmation: run it on a terminal, or add --yes",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            try:
                answer = input(f"Purge {depth} scans? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return EXIT_FAILURE
        removed = box.purge()
    print(f"purged {removed} scan(s)")
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError: exit 2 in cli.main
    path = Path(cfg.outbox.path)
    if not path.exists():
        print(
            f"ordoscan: {path}: no outbox file (nothing was queued on this kiosk yet, "
            f"or outbox.path in {config_path(args.config)} is wrong)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        if args.action == "stats":
            return _stats(cfg)
        if args.action == "list":
            return _list(cfg)
        return _purge(cfg, bool(getattr(args, "yes", False)))
    except OutboxCorrupt as e:
        print(f"ordoscan: {e}\n{DAMAGED_NEXT}", file=sys.stderr)
        return EXIT_FAILURE
