"""Batch de-identification of a file or folder tree with the same Pipeline as the gateway.

Outputs are laid out by new study / series UID; every refused or unreadable input is copied to a
quarantine folder beside the output with a `.reason.txt` file. Work is spread over processes.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import Config
from gateway.fanout import fan_out
from gateway.pipeline import Forwarded, Outcome, Pipeline, Quarantined, layout_path
from gateway.safetext import safe_message


@dataclass
class BatchSummary:
    """What a batch run did."""

    output: Path
    quarantine: Path
    written: int = 0
    quarantined: int = 0
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.written + self.quarantined


def iter_inputs(path: Path) -> Iterator[Path]:
    """The file itself, or every file under a folder (sorted; hidden files skipped)."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def quarantine_dir(output: Path) -> Path:
    return output.parent / f"{output.name}-quarantine"


def _quarantine(src: Path, root: Path, qdir: Path, reason: str) -> None:
    """Copy a refused original (identifiers and all) under `qdir`, owner-only (folders 0700,
    files 0600, whatever the input's modes), with its reason beside it."""
    rel = src.relative_to(root) if src != root and root in src.parents else Path(src.name)
    target = qdir / rel
    folder = qdir
    qdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in rel.parent.parts:
        folder = folder / part
        folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older copy may have been made with the input's mode
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    st = src.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    target.with_name(target.name + ".reason.txt").write_text(reason + "\n")


def run_batch(source: Path, output: Path, config: Config, key: bytes, workers: int | None = None,
              on_result: Callable[[Path, Outcome], None] | None = None) -> BatchSummary:
    """De-identify everything under `source` into `output`; never drop an input silently."""
    source, output = Path(source), Path(output)
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

    def record(src: Path, outcome: Outcome) -> None:
        if isinstance(outcome, Forwarded):
            summary.written += 1
            summary.counts.update(outcome.counts)
        else:
            assert isinstance(outcome, Quarantined)
            summary.quarantined += 1
            summary.reasons[outcome.reason.split(":")[0]] += 1
            _quarantine(src, root, summary.quarantine, outcome.reason)
        if on_result:
            on_result(src, outcome)

    def work(src: Path) -> Outcome:
        try:
            return pipeline.process(src, place)
        except OSError as exc:  # a full disk: the file is refused, saying why, and the run goes on
            return Quarantined(f"cannot write the de-identified object: {safe_message(exc)}")

    if not hasattr(os, "fork"):  # not Linux or another Unix: one process, no crash isolation
        for src in files:
            record(src, work(src))
        return summary
    # Even one worker is a child process: a crash on one file then costs that file, not the run.
    fan_out(files, work, workers,
            lambda i, outcome: record(files[i], outcome),
            lambda i, how: record(files[i], Quarantined(
                f"worker died: the process de-identifying this file was {how}")))
    return summary
