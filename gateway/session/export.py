"""Export of a session: the one pipeline over every indexed file, laid out like `gantry
deidentify`, resumable.

Each object's outcome is committed (in batches of a fraction of a second) once the parent process
hears of it, with the hashes of what it depends on (gateway.session.settings). A later run skips
what is done under the same settings and redoes only what a change affects, removing the file an
object no longer has. Files are written under a temporary name and renamed; a run killed at any
moment leaves such names, and the next run removes them before it starts. One export per session
runs at a time: a second waits (an earlier run's workers still finishing their last files hold
the lock too).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.batch import quarantine_dir
from gateway.config import Config
from gateway.dicomio import DicomReadError, read_for_deid
from gateway.pipeline import Forwarded, Pipeline, layout_path
from gateway.safetext import safe_message
from gateway.session.parallel import run_parallel
from gateway.session.settings import decision_key, redaction_hash, settings_hash

TEMPORARY = re.compile(r"^\..+\.\d+\.tmp$")  # dicomio.write's and _copy_atomic's names
RETRY = ("died", "retry")  # decisions of outcomes caused by the machine, not the object
CONFLICT = ("conflict: another file has the same SOP Instance UID and different content; "
            "neither is exported")


@dataclass
class ExportSummary:
    """What one export run did (paths, counts and reasons only)."""

    output: Path
    quarantine: Path
    exported: int = 0  # objects written by this run
    quarantined: int = 0  # originals copied to quarantine by this run
    duplicates: int = 0  # identical copies of an exported instance (nothing written)
    done: int = 0  # already done under the same settings: left as they were
    removed: int = 0  # earlier files of objects whose outcome changed
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # every file's, after this run

    def __str__(self) -> str:
        total = ", ".join(f"{n} {kind}" for kind, n in sorted(self.outcomes.items()))
        text = (f"this run: {self.exported} exported, {self.quarantined} quarantined, "
                f"{self.done} already done, {self.duplicates} identical duplicates\n"
                f"in all: {total or 'nothing'}; output: {self.output}")
        if self.reasons:
            reasons = ", ".join(f"{r} ({n})" for r, n in self.reasons.most_common())
            text += f"\nquarantine: {self.quarantine} — {reasons}"
        return text


def remove_temporaries(*folders: Path) -> int:
    """Delete the temporary files a killed run left in `folders`; how many there were."""
    count = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                if TEMPORARY.match(name):
                    Path(root, name).unlink(missing_ok=True)
                    count += 1
    return count


def _copy_atomic(src: Path, target: Path, text: str | None = None) -> None:
    """Copy `src` (or write `text`) to `target` under a temporary name, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if text is None:
            shutil.copy2(src, tmp)
        else:
            tmp.write_text(text)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _remove(path: str | None) -> int:
    if not path:
        return 0
    target = Path(path)
    found = target.exists()
    target.unlink(missing_ok=True)
    Path(path + ".reason.txt").unlink(missing_ok=True)
    return int(found)


class _Commits:
    """Outcome rows committed in small batches (every 64 rows, or 0.2 s): a killed run loses at
    most those, and their objects are done again, to the same bytes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.rows, self.last = db, 0, time.monotonic()

    def maybe(self) -> None:
        self.rows += 1
        if self.rows >= 64 or time.monotonic() - self.last > 0.2:
            self.db.commit()
            self.rows, self.last = 0, time.monotonic()


class _Lock:
    """An exclusive lock on the session database file for the length of an export."""

    def __init__(self, db_path: Path) -> None:
        self.fd = os.open(db_path, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"gantry: waiting for another export of {db_path} to finish", file=sys.stderr)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        os.close(self.fd)


def export(db: sqlite3.Connection, db_path: Path, out: Path, config: Config, key: bytes,
           workers: int | None = None, progress: bool = True) -> ExportSummary:
    """Export every indexed file into `out` (quarantine beside it); see the module notes."""
    out = Path(out).resolve()
    qdir = quarantine_dir(out)
    for (root,) in db.execute("SELECT DISTINCT root FROM files").fetchall():
        for folder in (out, qdir):
            if folder.is_relative_to(Path(root)):
                raise ValueError(f"{folder} is inside the ingested folder {root}: the next "
                                 "ingest would read its files as input; choose a folder "
                                 "outside it")
    pipeline, place = Pipeline(config, key), layout_path(out)
    settings, redaction = settings_hash(config, key), redaction_hash(config)
    summary = ExportSummary(out, qdir)
    lock = _Lock(db_path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out, qdir)
        rows = db.execute(
            "SELECT f.id, f.path, f.root, f.version, f.duplicate_of, f.conflict, e.file_version, "
            "e.settings_hash, e.redaction_hash, e.decision, e.outcome, e.path FROM files f "
            "LEFT JOIN exports e ON e.out = ? AND e.file_id = f.id "
            "WHERE f.state != 'missing' ORDER BY f.path", [str(out)]).fetchall()
        todo: list[tuple[Any, ...]] = []
        for row in rows:
            (file_id, path, root, version, duplicate_of, conflict,
             e_version, e_settings, e_redaction, e_decision, e_outcome, e_path) = row
            fresh = e_version == version and e_settings == settings
            if duplicate_of is not None or conflict:
                outcome = "duplicate" if duplicate_of is not None else "quarantined"
                if e_version == version and e_outcome == outcome:
                    summary.done += 1
                    continue
                summary.removed += _remove(e_path)
                target = None
                if conflict:
                    target = _quarantine(Path(path), Path(root), qdir, CONFLICT, summary)
                else:
                    summary.duplicates += 1
                _record(db, out, file_id, version, settings, redaction, "", outcome,
                        target, CONFLICT if conflict else None)
                db.commit()
                continue
            unreadable = e_version == version and e_outcome == "quarantined" and not e_decision
            again = e_decision in RETRY  # a worker's death, a full disk: tried again next run
            if not again and (unreadable or fresh and e_redaction == redaction):
                summary.done += 1
                continue
            todo.append((file_id, path, root, version, e_decision if fresh else None, e_path))

        def work(item: tuple[Any, ...]) -> tuple[str, str | None, str]:
            return _export_one(pipeline, place, config, item[1], item[4])

        def on_result(i: int, result: tuple[str, str | None, str]) -> None:
            file_id, path, root, version, _, old_path = todo[i]
            kind, detail, decision = result
            if kind == "unchanged":
                summary.done += 1
                db.execute("UPDATE exports SET redaction_hash = ? WHERE out = ? AND "
                           "file_id = ?", [redaction, str(out), file_id])
                commit.maybe()
                return
            if kind == "exported":
                summary.exported += 1
                target, reason = detail, None
            else:
                target = _quarantine(Path(path), Path(root), qdir, detail, summary)
                reason = detail
            if old_path and old_path != target:
                summary.removed += _remove(old_path)
            _record(db, out, file_id, version, settings, redaction, decision, kind, target,
                    reason)
            commit.maybe()

        def on_death(i: int, how: str) -> None:
            on_result(i, ("quarantined",
                          f"worker died: the process de-identifying this file was {how}", "died"))

        commit = _Commits(db)
        try:
            run_parallel(todo, work, on_result, on_death, "exporting", workers, progress)
        finally:
            db.commit()
        summary.outcomes.update(dict(db.execute(
            "SELECT e.outcome, count(*) FROM exports e JOIN files f ON f.id = e.file_id "
            "WHERE e.out = ? AND f.state != 'missing' GROUP BY e.outcome",
            [str(out)]).fetchall()))
    finally:
        lock.release()
    return summary


def _export_one(pipeline: Pipeline, place: Any, config: Config, path: str,
                expected: str | None) -> tuple[str, str | None, str]:
    """In a worker: ('exported', path, decision), ('quarantined', reason, decision), or
    ('unchanged', None, decision) when only the redaction section changed and not this
    object's decision."""
    try:
        return _export_checked(pipeline, place, config, path, expected)
    except OSError as exc:  # the machine's (a full disk): the pipeline leaves it to its caller
        return ("quarantined", f"cannot write the de-identified object: {safe_message(exc)}",
                "retry")


def _export_checked(pipeline: Pipeline, place: Any, config: Config, path: str,
                    expected: str | None) -> tuple[str, str | None, str]:
    try:
        parsed = read_for_deid(path)
    except DicomReadError as exc:
        return "quarantined", f"{exc.kind}: {exc.problem}", ""
    try:
        decision = pipeline.redactor.decide(parsed.ds)
    except Exception:  # noqa: BLE001 - the pipeline decides again and says why it fails
        decision = None
    key = decision_key(decision, config)
    if expected is not None and key == expected:
        return "unchanged", None, key
    outcome = pipeline.run(parsed, place, decision=decision)
    if isinstance(outcome, Forwarded):
        return "exported", str(outcome.path), key
    return "quarantined", outcome.reason, key


def _quarantine(src: Path, root: Path, qdir: Path, reason: str, summary: ExportSummary) -> str:
    """Copy a refused original into the quarantine, as `gantry deidentify` lays it out."""
    rel = src.relative_to(root) if src != root and root in src.parents else Path(src.name)
    target = qdir / rel
    _copy_atomic(src, target)
    _copy_atomic(src, target.with_name(target.name + ".reason.txt"), reason + "\n")
    summary.quarantined += 1
    summary.reasons[reason.split(":")[0]] += 1
    return str(target)


def _record(db: sqlite3.Connection, out: Path, file_id: int, version: int, settings: str,
            redaction: str, decision: str, outcome: str, path: str | None,
            reason: str | None) -> None:
    db.execute("INSERT OR REPLACE INTO exports (out, file_id, file_version, settings_hash, "
               "redaction_hash, decision, outcome, path, reason) VALUES (?,?,?,?,?,?,?,?,?)",
               [str(out), file_id, version, settings, redaction, decision, outcome, path,
                reason])
