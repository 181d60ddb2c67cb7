"""Work over many files in forked processes (gateway.fanout), with a progress bar on a terminal.

The bar is redrawn from the results, not by rich's refresh thread: the workers are forked, and a
process with threads is not safe to fork.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.fanout import fan_out


def run_parallel(items: Sequence[Any], work: Callable[[Any], Any],
                 on_result: Callable[[int, Any], None], on_death: Callable[[int, str], None],
                 label: str, workers: int | None = None, progress: bool = True) -> None:
    """Call `work(item)` for every item in forked workers; `on_result(index, result)` in the
    parent as results come, `on_death(index, how)` for an item whose worker died on it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                   disable=not progress or not console.is_terminal or not items,
                   auto_refresh=False, transient=False)
    with bar:
        task = bar.add_task(label, total=len(items))
        drawn = 0.0

        def result(i: int, value: Any) -> None:
            nonlocal drawn
            on_result(i, value)
            bar.advance(task)
            if time.monotonic() - drawn > 0.1:
                drawn = time.monotonic()
                bar.refresh()

        if not items:
            return
        if not hasattr(os, "fork"):  # no fork: one process, no crash isolation
            for i, item in enumerate(items):
                result(i, work(item))
            return
        fan_out(items, work, workers or os.cpu_count() or 1, result, on_death)
        bar.refresh()
