"""`ordoscan run [--config PATH]`: the kiosk daemon.

SIGTERM and SIGINT are blocked in every thread and taken by the main thread
with sigtimedwait, so a signal never interrupts a worker half-way (an outbox
write, a pin write) and no handler runs at an awkward moment: the main thread
simply sees it, and stops the App in its stated order.
"""

from __future__ import annotations

import argparse
import logging
import signal

from ordoscan.config import check_files, config_path, load_config
from ordoscan.log import setup_logging

log = logging.getLogger("ordoscan.run")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
CHECK_EVERY_S = 1.0  # how often the main thread also looks at the app's own stop event


def main(args: argparse.Namespace) -> int:
    # Blocked before any thread exists, so that every thread inherits the mask: not
    # only ours but also those libraries start on import (numpy's BLAS pool), any of
    # which the kernel could otherwise pick to take SIGTERM's default action.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return _run(args)
    finally:
        # A stop signal that came during the stop asked for what is now done: take it, then
        # give the caller its mask back, so that an in-process caller is not left deaf to
        # SIGTERM and does not pass the block on to every process it starts after.
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError: exit 2 in cli.main
    # the [mqtt] files too, before anything starts: exit 2, which systemd does not restart
    check_files(cfg, config_path(args.config))
    setup_logging(cfg.log.level)
    from ordoscan.app import App  # after the config: a bad config exits 2 without loading paho

    app = App(cfg)
    try:
        app.start()  # an OrdoscanError here is exit 1 (cli.main prints it)
        while not app.stop_event.is_set():
            info = signal.sigtimedwait(STOP_SIGNALS, CHECK_EVERY_S)
            if info is not None:
                log.info("%s received: stopping", signal.Signals(info.si_signo).name)
                break
    finally:
        app.stop()  # signals stay blocked: a second SIGTERM must not cut the stop short
    return 0
