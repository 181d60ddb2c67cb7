"""What a batch run's files come to, without the engine (no pydicom here: the Dask client
imports only this): the summary, the quarantine copies of refused inputs with their reasons, and
the settling of inputs that share a SOP Instance UID.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.outcome import Forwarded, Outcome, Quarantined

CONFLICT = ("conflict: another file has the same SOP Instance UID and different content; "
            "neither is exported")


@dataclass
class BatchSummary:
    """What a batch run did: every input is written, a duplicate, or quarantined."""

    output: Path
    quarantine: Path
    written: int = 0
    quarantined: int = 0
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    # byte-identical copies of a written input (same SOP Instance UID): (copy, the input written)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)
    conflicts: list[Path] = field(default_factory=list)  # inputs quarantined as CONFLICT

    @property
    def total(self) -> int:
        return self.written + len(self.duplicates) + self.quarantined


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


class Outcomes:
    """A run's per-file outcomes, counted into its summary. Forwarded inputs are kept by new
    SOP Instance UID and settled at the end: several inputs of one UID with identical bytes give
    one output and duplicates; with different bytes, a conflict."""

    def __init__(self, files: list[Path], root: Path, summary: BatchSummary,
                 on_result: Callable[[Path, Outcome], None] | None) -> None:
        self.files, self.root, self.summary, self.on_result = files, root, summary, on_result
        self.by_sop: dict[str, list[tuple[int, Path]]] = {}

    def record(self, i: int, outcome: Outcome) -> None:
        src, summary = self.files[i], self.summary
        if isinstance(outcome, Forwarded):
            summary.written += 1
            summary.counts.update(outcome.counts)
            self.by_sop.setdefault(outcome.sop_uid, []).append((i, outcome.path))
        else:
            assert isinstance(outcome, Quarantined)
            summary.quarantined += 1
            summary.reasons[outcome.reason.split(":")[0]] += 1
            _quarantine(src, self.root, summary.quarantine, outcome.reason)
        if self.on_result:
            self.on_result(src, outcome)

    def settle(self) -> None:
        """Resolve UIDs held by several inputs; put a lone staged output (an earlier run's name
        taken, or a retried task's) in place."""
        for group in self.by_sop.values():
            if len(group) > 1:
                _resolve(group, self.files, self.root, self.summary)
            elif group[0][1].name.endswith(STAGED):
                os.replace(group[0][1], _final(group[0][1]))


STAGED = ".staged"


def _final(staged: Path) -> Path:
    """The name in OUTPUT of a staged copy (`.NAME.PID-RANDOM.SERIAL.staged`)."""
    return staged.with_name(staged.name[1:].rsplit(".", 3)[0])


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(group: list[tuple[int, Path]], files: list[Path], root: Path,
             summary: BatchSummary) -> None:
    """Inputs that share one SOP Instance UID: identical inputs keep the first (in input order)
    as written and the others are duplicates; different ones are all a conflict, quarantined,
    and no output of theirs is left (an earlier run's included)."""
    group = sorted(group)
    inputs = [files[i] for i, _ in group]
    staged = [path for _, path in group if path.name.endswith(STAGED)]
    summary.written -= len(group)
    if len({_digest(p) for p in inputs}) == 1:
        summary.written += 1
        summary.duplicates += [(p, inputs[0]) for p in inputs[1:]]
        if len(staged) == len(group):  # none could be linked: OUTPUT held an earlier run's
            os.replace(staged[0], _final(staged[0]))
            staged = staged[1:]
        for path in staged:
            path.unlink()
        return
    for _, path in group:
        path.unlink(missing_ok=True)
        if path in staged:
            _final(path).unlink(missing_ok=True)
    for src in inputs:
        summary.quarantined += 1
        summary.reasons[CONFLICT.split(":")[0]] += 1
        summary.conflicts.append(src)
        _quarantine(src, root, summary.quarantine, CONFLICT)
