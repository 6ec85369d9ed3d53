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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordoscan",
        description="Reads ordonnance numérique QR codes and relays them to the pharmacy "
        "system over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"ordoscan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run the kiosk daemon")
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

    p = sub.add_parser("decode", help="decode and classify image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
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
    p.add_argument("action", choices=["stats", "list", "purge"])
    p.add_argument("--yes", action="store_true", help="purge without asking")
    _add_config(p)
    p.set_defaults(module="queue")

    p = sub.add_parser("config", help="show, validate or describe the configuration")
    p.add_argument("action", choices=["show", "validate", "schema"])
    p.add_argument(
        "--message",
        action="store_true",
        help="schema: the scan message schema instead of the config's",
    )
    _add_config(p)
    p.set_defaults(module="config")

    p = sub.add_parser(
        "listen",
        help="reference subscriber: print scan messages as JSON lines (payloads in clear)",
        description=(
            "The pharmacy side's reference subscriber: prints each scan message once, as one "
            "JSON line, with its payload IN CLEAR (this is what the LGO receives; keep the "
            "output private). It keeps a persistent session on the broker under a fixed "
            "client id, so it misses nothing sent while it reconnects or is restarted."
        ),
    )
    _add_config(p)
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
