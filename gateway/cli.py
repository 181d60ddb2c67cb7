"""The `gantry` command: a thin dispatcher over the subcommand modules in `gateway.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gateway import __version__

# The module that registers each subcommand (its `register(subparsers)` sets `func`). Only the
# named command's module is imported: `gantry ingest` does not load the network stack.
COMMANDS = {
    **dict.fromkeys(("deidentify", "audit", "diff"), "gateway.commands.batch"),
    "keys": "gateway.commands.keys",
    "recover": "gateway.commands.recover",
    **dict.fromkeys(("examine", "scaffold", "rules"), "gateway.commands.pixels"),
    **dict.fromkeys(("serve", "reload", "status", "quarantine", "prune", "demo"),
                    "gateway.commands.gateway"),
    "config": "gateway.commands.config",
    **dict.fromkeys(("ingest", "configure", "backup", "anonymize", "redact", "verify",
                     "export"), "gateway.commands.session"),
    **dict.fromkeys(("qc", "report"), "gateway.commands.qc"),
}


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the terminal's width as shutil.get_terminal_size would
    find it ($COLUMNS, else the terminal, else 80) without importing shutil (and bz2, lzma):
    every parser built asks for a formatter, and `gantry ingest` of an unchanged tree is over in
    a tenth of a second."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands' parsers use `_Formatter` too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command` alone, or with every command when it is not one of them."""
    parser = _Parser(
        prog="gantry", description="Gantry: DICOM de-identification gateway (PS3.15 Annex E).")
    parser.add_argument("--version", action="version", version=f"gantry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command]).register(sub, command)
    else:
        for name in dict.fromkeys(COMMANDS.values()):
            importlib.import_module(name).register(sub)
    return parser


def _reported_errors() -> tuple[type[BaseException], ...]:
    """What `main` reports in one line; imported only when something went wrong."""
    from gateway.config import ConfigError
    from gateway.sitekey import SiteKeyError

    return ConfigError, SiteKeyError, ValueError, OSError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`gantry quarantine list | head`): stop quietly, as cat does.
        # Python would report the failed flush of stdout at exit: point stdout at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except KeyboardInterrupt:
        return 130
    except _reported_errors() as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
