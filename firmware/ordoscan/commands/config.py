"""`ordoscan config show|validate|schema`."""

from __future__ import annotations

import argparse
import json
import sys

from ordoscan.config import (
    check_files,
    config_path,
    json_schema,
    load_config,
    redacted,
    to_toml,
)


def main(args: argparse.Namespace) -> int:
    if args.action == "schema":
        if args.message:
            from ordoscan.message import scan_json_schema

            schema = scan_json_schema()
        else:
            schema = json_schema()
        json.dump(schema, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    cfg = load_config(args.config)  # ConfigError -> exit 2 in cli.main
    if args.action == "validate":
        from ordoscan.security import broker_notes

        if args.values_only:
            print(f"{config_path(args.config)}: keys and values valid (files not checked)")
        else:
            check_files(cfg, config_path(args.config))  # what `run` would refuse at start
            print(f"{config_path(args.config)}: valid")
        for note in broker_notes(cfg):
            print(f"warning: {note}")
        return 0
    print(f"# effective configuration from {config_path(args.config)} (secrets redacted)")
    print(to_toml(redacted(cfg)), end="")
    return 0
