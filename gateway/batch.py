"""Batch de-identification of a file or folder tree with the same Pipeline as the gateway.

Outputs are laid out by new study / series UID; every refused or unreadable input is copied to a
quarantine folder beside the output with a `.reason.txt` file. Work is spread over processes.
"""

from __future__ import annotations

import gc
import itertools
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.batch_results import (  # noqa: F401 - re-exported: the batch's public names
    CONFLICT,
    STAGED,
    BatchSummary,
    Outcomes,
    iter_inputs,
    quarantine_dir,
)
from gateway.config import Config
from gateway.dicomio import write_new
from gateway.fanout import fan_out
from gateway.pipeline import Outcome, Pipeline, Quarantined, layout_path
from gateway.safetext import safe_message

if TYPE_CHECKING:
    from pydicom.dataset import Dataset



def run_batch(source: Path, output: Path, config: Config, key: bytes, workers: int | None = None,
              on_result: Callable[[Path, Outcome], None] | None = None,
              profile: str = "default") -> BatchSummary:
    """De-identify everything under `source` into `output` with the named profile of `config`;
    never drop an input silently, never write one input's output over another's."""
    source, output = Path(source), Path(output)
    if profile != "default" and profile not in config.profiles:
        known = ", ".join(["default", *config.profiles])
        raise ValueError(f"no profile {profile!r} in {config.source} (known: {known})")
    if source.is_dir():
        for folder in (output, quarantine_dir(output)):
            if folder.resolve().is_relative_to(source.resolve()):
                raise ValueError(f"{folder} is inside the input folder {source}: the next run "
                                 "would read its files as input; choose a folder outside it")
    # Compiled before any output or worker exists, so that a configuration it cannot start with
    # (a missing recipient certificate, say) fails once, by name; forked workers inherit it.
    pipeline, place = Pipeline(config, key), layout_path(output)
    files = list(iter_inputs(source))
    summary = BatchSummary(output, quarantine_dir(output))
    output.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    root = source if source.is_dir() else source.parent

    outcomes = Outcomes(files, root, summary, on_result)
    record, by_sop = outcomes.record, outcomes.by_sop

    def work(src: Path) -> Outcome:
        try:
            return _write_once(pipeline, src, place, profile)
        except OSError as exc:  # a full disk: the file is refused, saying why, and the run goes on
            return Quarantined(f"cannot write the de-identified object: {safe_message(exc)}")

    try:
        if not hasattr(os, "fork"):  # not Linux or another Unix: one process, no crash isolation
            for i, src in enumerate(files):
                record(i, work(src))
        else:
            # Even one worker is a child process: a crash on one file costs that file, not the run.
            # What exists now (the imports, the compiled pipeline) is frozen out of the workers'
            # garbage collections: each of them would walk it again for nothing.
            gc.freeze()
            try:
                fan_out(files, work, workers, record,
                        lambda i, how: record(i, Quarantined(
                            f"worker died: the process de-identifying this file was {how}")))
            finally:
                gc.unfreeze()
    except BaseException:  # interrupted: no staged copy is left in OUTPUT
        for group in by_sop.values():
            for _, path in group:
                if path.name.endswith(STAGED):
                    path.unlink(missing_ok=True)
        raise
    outcomes.settle()
    return summary


def _write_once(pipeline: Pipeline, src: Path, place: Callable[[Dataset], Path],
                profile: str) -> Outcome:
    """Process `src` and put its output in place only if no other input's output is there: it
    takes its name if that is free, else it stays staged beside it (a hidden file) for
    `run_batch` to resolve. A worker never replaces a file in OUTPUT, nor leaves a partial one."""
    parsed = pipeline.read(src)
    if isinstance(parsed, Quarantined):
        return parsed
    staged = pipeline.stage(parsed, profile=profile)
    if isinstance(staged, Quarantined):
        return staged

    def first_free() -> Path:
        target = place(parsed.ds)
        aside = target.with_name(f".{target.name}.{_token()}.{next(_SERIAL)}{STAGED}")
        return write_new(parsed, [target, aside])

    return pipeline.deliver(staged, first_free)


_SERIAL = itertools.count()
_TOKENS: dict[int, str] = {}


def _token() -> str:
    """This process's part of a staged name: unique across the processes and machines that
    share OUTPUT (a Dask cluster), drawn once per process (a forked worker draws its own)."""
    pid = os.getpid()
    if pid not in _TOKENS:
        _TOKENS.clear()
        _TOKENS[pid] = f"{pid}-{secrets.token_hex(4)}"
    return _TOKENS[pid]


