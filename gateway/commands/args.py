"""Argument types and signal handling shared by the subcommand modules (standard library only,
so that registering a command imports nothing heavy)."""

from __future__ import annotations

import argparse
import signal


def positive(text: str) -> int:
    """`--workers N`: a whole number of processes, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of processes (1 or more)")
    return value


def exit_on_sigterm(_signum: int, _frame: object) -> None:
    """A SIGTERM handler that unwinds like an exception: the workers are stopped, not orphaned."""
    raise SystemExit(128 + signal.SIGTERM)
