"""The `ordoscan` command line (SPEC §5).

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.
Each subcommand lives in ordoscan/commands/<name>.py as `main(args) -> int`
and is imported only when used, so `ordoscan decode` never loads paho or
gpiozero and a broken optional import cannot break the other commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ordoscan import __version__
from ordoscan.errors import ConfigError, OrdoscanError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("ordoscan")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $ORDOSCAN_CONFIG or /etc/ordoscan/ordoscan.toml)",
    )


def _actions(p: argparse.ArgumentParser, actions: dict[str, str]) -> None:
    """A positional ACTION whose help describes each choice."""
    p.add_argument(
        "action", choices=list(actions), metavar="ACTION",
        help="; ".join(f"{name}: {what}" for name, what in actions.items()),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordoscan",
        description="Reads ordonnance numérique QR codes and relays them to the pharmacy "
        "system over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"ordoscan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run", help="run the kiosk daemon",
        description="Run the kiosk daemon: camera, decoder, outbox, LEDs and buzzer, MQTT. "
        "A bad configuration, or a secret file `run` would refuse, exits 2 before anything "
        "starts.",
    )
    _add_config(p)
    p.set_defaults(module="run")

    p = sub.add_parser(
        "demo",
        help="replay the bundled sample scenes through the whole pipeline, no hardware needed",
    )
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1)")
    p.add_argument(
        "--keep", action="store_true", help="keep the demo's working folder and print its path"
    )
    p.set_defaults(module="demo")

    p = sub.add_parser(
        "decode", help="decode and classify image files",
        description="Decode and classify image files as the kiosk would, one line (or JSON "
        "object) per code; payloads are masked unless --reveal, INS payloads never shown; "
        "codes the kiosk does not read (Micro QR, rMQR) are named.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image (an unreadable one: {\"file\", \"error\"})")
    p.add_argument(
        "--reveal",
        action="store_true",
        help="show payloads unmasked (INS payloads are never shown)",
    )
    _add_config(p)
    p.set_defaults(module="decode")

    p = sub.add_parser(
        "check", help="installer self-test: config, camera, GPIO, broker, outbox, disk, clock"
    )
    _add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(module="check")

    p = sub.add_parser("queue", help="inspect or purge the outbox")
    _actions(p, {
        "stats": "how many scans wait, the oldest one's age, expiries, the last seq, damage",
        "list": "each waiting scan: seq, scan_id, age, kind and its masked payload",
        "purge": "delete every waiting scan (asks first unless --yes; never while `run` runs)",
    })
    p.add_argument("--yes", action="store_true", help="purge without asking")
    _add_config(p)
    p.set_defaults(module="queue")

    p = sub.add_parser("config", help="show, validate or describe the configuration")
    _actions(p, {
        "show": "the effective configuration (file, defaults and ORDOSCAN_* overrides), "
                "secrets redacted",
        "validate": "check the file and the files it names as `run` would (exit 2 if not)",
        "schema": "the JSON Schema of the configuration (--message: of the scan message)",
    })
    p.add_argument(
        "--message",
        action="store_true",
        help="schema: the scan message schema instead of the config's",
    )
    p.add_argument(
        "--values-only",
        action="store_true",
        help="validate: the keys and values only, not the certificate, key and password files "
        "they name (for an installer that writes the config before the certificate exists; "
        "`run` still refuses missing files)",
    )
    _add_config(p)
    p.set_defaults(module="config")

    p = sub.add_parser(
        "listen",
        help="reference subscriber: print scan messages as JSON lines (payloads in clear)",
        description=(
            "The pharmacy side's reference subscriber: prints each scan message once, as one "
            "JSON line, de-duplicated by scan_id, with its payload IN CLEAR, as the pharmacy "
            "system receives them: run it only where a prescription identifier may be seen. "
            "It keeps a persistent session on the broker under a fixed client id, so it "
            "misses nothing sent while it reconnects or is restarted."
        ),
    )
    _add_config(p)
    p.add_argument(
        "--ack",
        action="store_true",
        help='the pharmacy side of end-to-end delivery (mqtt.delivery = "pharmacy"): store each '
        "scan in --store, then acknowledge it on {prefix}/ack; printed once per scan_id, "
        "even across restarts",
    )
    p.add_argument(
        "--store",
        default="",
        help="with --ack: the SQLite file of received scans (default: "
        "ordoscan-listen-{device id}.sqlite3 in the current folder)",
    )
    p.add_argument(
        "--client-id",
        default="",
        help="MQTT client id of the session (default: ordoscan-listen-{device id}); "
        "two listeners must not share one",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        default=86_400,
        help="seconds the broker keeps the session (and the scans for it) while the "
        "listener is away (default: one day; 0: no session, what is sent meanwhile is missed)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=0,
        help="exit after this many distinct scans (0: run until interrupted)",
    )
    p.set_defaults(module="listen")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ordoscan.log import setup_logging

    setup_logging("info")
    try:
        module = importlib.import_module(f"ordoscan.commands.{args.module}")
        rc: int = module.main(args)
        return rc
    except ConfigError as e:
        print(f"ordoscan: configuration error:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    except OrdoscanError as e:
        print(f"ordoscan: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ordoscan decode ... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
