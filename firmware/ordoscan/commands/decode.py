"""`ordoscan decode [--json] [--reveal] [--config PATH] IMAGE...` (SPEC §5).

Decodes and classifies image files, one after the other. Payloads are masked
unless --reveal; INS payloads are never shown. An unreadable file gets an
error line on stderr naming it (and with --json a JSON line with an "error"),
the others are still decoded, and the exit code is 1 at the end. No symbol in
an image is not an error. Everything printed goes through privacy.printable
or privacy.json_line: a payload or a file name cannot act on the terminal.
A Micro QR or rMQR Code is named as not read (the kiosk reads neither).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ordoscan import privacy
from ordoscan.classifier import Classified, Classifier, Kind
from ordoscan.config import DEFAULT_PATH, ENV_PATH, Config, load_config, parse_config
from ordoscan.errors import DecodeError

EXIT_OK, EXIT_FAILURE = 0, 1
# Files are decoded once, not at frame rate: the decoder may take its time on
# a hard image, but never less than the daemon's own budget.
FILE_BUDGET_MS = 1000.0


def _config(path: str | None) -> Config:
    """--config, $ORDOSCAN_CONFIG or the kiosk's own file (ConfigError: exit 2), else defaults."""
    # On a kiosk the installed file holds the site's accept rules: decode as the daemon would.
    if path or os.environ.get(ENV_PATH) or DEFAULT_PATH.is_file():
        return load_config(path)
    # A desk without a file: the defaults, with any ORDOSCAN_<SECTION>__<KEY> overrides.
    return parse_config({}, source="<defaults>")


def _shown_payload(c: Classified, reveal: bool) -> str | None:
    """The payload as it may appear (before escaping): None when nothing of it is kept."""
    if c.kind is Kind.INS or not c.payload:
        return None
    return c.payload if reveal else privacy.mask(c.payload)


# Codes a person may hold up that the kiosk does not read: named, never decoded further.
NOT_READ = {"MicroQRCode": "Micro QR Code", "RMQRCode": "rMQR Code"}


def _not_read(image: Any) -> list[str]:
    """The kinds of code in the image that the kiosk does not read (Micro QR, rMQR)."""
    import zxingcpp

    formats = zxingcpp.BarcodeFormats([getattr(zxingcpp.BarcodeFormat, f) for f in NOT_READ])
    found = zxingcpp.read_barcodes(image, formats=formats)
    return sorted({NOT_READ.get(r.format.name, r.format.name) for r in found})


def _symbol_json(c: Classified, reveal: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": c.kind.value,
        "format": c.format,
        "symbology_id": c.symbology_id,
        "payload": _shown_payload(c, reveal),
    }
    if c.details:
        out["details"] = dict(c.details)
    if c.reason:
        out["reason"] = c.reason
    return out


def _symbol_line(name: str, c: Classified, reveal: bool) -> str:
    show = privacy.printable
    if c.kind is Kind.INS:
        shown = privacy.INS_REDACTED
    else:
        payload = _shown_payload(c, reveal)
        # revealed whole (the classifier caps payloads at max_payload_bytes), escaped
        shown = "(payload not shown)" if payload is None else show(payload, None)
    parts = [f"{show(name)}: {c.kind.value}", show(c.format), shown]
    if c.details:
        parts.append(" ".join(f"{show(k)}={show(v)}" for k, v in c.details.items()))
    if c.reason and c.kind is not Kind.INS:
        parts.append(f"({show(c.reason)})")
    return "  ".join(parts)


def _not_read_line(name: str, kinds: list[str]) -> str:
    return (f"{privacy.printable(name)}: {' and '.join(kinds)} found, not read: the kiosk "
            "reads full-size QR Codes and Data Matrix only")


def main(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    from ordoscan.decoder import Decoder, load_image  # zxing-cpp is loaded only here

    classifier = Classifier(cfg.scan)
    # Still images are decoded once each: no duty cycle rationing the extra passes.
    decoder = Decoder(budget_ms=max(FILE_BUDGET_MS, cfg.scan.decode_budget_ms), duty=None)
    failed = 0
    for name in args.images:
        try:
            image = load_image(name)
            symbols = decoder.decode(image)
        except (DecodeError, OSError, ValueError) as e:  # one bad file never stops the others
            failed += 1
            shown = privacy.printable(name, limit=300)  # the loader's own spelling of it
            error = _error_text(shown, e)
            print(f"ordoscan: {shown}: {error}", file=sys.stderr)
            if args.json:  # a consumer of the lines sees every file, the failed ones too
                print(privacy.json_line({"file": name, "error": error}))
            continue
        classified = [classifier.classify(s) for s in symbols]
        not_read = _not_read(image)
        if args.json:
            doc: dict[str, Any] = {
                "file": name, "symbols": [_symbol_json(c, args.reveal) for c in classified]
            }
            if not_read:
                doc["not_read"] = not_read
            print(privacy.json_line(doc))
        else:
            for c in classified:
                print(_symbol_line(name, c, args.reveal))
            if not_read:
                print(_not_read_line(name, not_read))
            elif not classified:
                print(f"{privacy.printable(name)}: no symbol found")
        sys.stdout.flush()
    return EXIT_FAILURE if failed else EXIT_OK


def _error_text(shown: str, e: Exception) -> str:
    """The error's message without the file name twice, safe for the terminal."""
    text = str(e) or f"cannot be decoded ({type(e).__name__})"
    return privacy.printable(text.removeprefix(f"{shown}: "))
