"""The `gantry` command: a thin dispatcher over the subcommand modules in `gateway.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gateway import __version__

# Each module has `register(subparsers)`, adding its subcommands with `func` set.
COMMAND_MODULES = (
    "gateway.commands.batch",     # deidentify, audit, diff
    "gateway.commands.keys",      # keys init, keys new-recipient
    "gateway.commands.recover",   # recover
    "gateway.commands.pixels",    # examine, scaffold, rules import-ctp
    "gateway.commands.gateway",   # serve, status, quarantine, demo
    "gateway.commands.config",    # config show
    "gateway.commands.session",   # ingest, configure, backup, anonymize, redact, verify, export
    "gateway.commands.qc",        # qc, report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantry", description="Gantry: DICOM de-identification gateway (PS3.15 Annex E).")
    parser.add_argument("--version", action="version", version=f"gantry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from gateway.config import ConfigError
    from gateway.sitekey import SiteKeyError

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`gantry quarantine list | head`): stop quietly, as cat does.
        # Python would report the failed flush of stdout at exit: point stdout at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except (ConfigError, SiteKeyError, ValueError, OSError) as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
