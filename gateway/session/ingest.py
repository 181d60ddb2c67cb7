"""Indexing a file or folder tree into the session: headers only, in forked workers.

A file already indexed with the same size and modification time is skipped without being
opened. Unreadable files are indexed too, with the reader's reason, so that export quarantines
them as `gantry deidentify` does. Files sharing a SOP Instance UID are compared byte for byte:
identical copies keep one instance, different contents are a conflict and none is exported.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.deid.signatures import machine_signature
from gateway.deid.values import stored_text
from gateway.dicomio import DicomReadError, read_for_deid
from gateway.safetext import safe_message

# column -> tag read from the header (as stored; text decoded only when not ASCII)
HEADER_COLUMNS = {
    "sop_class_uid": 0x00080016, "sop_instance_uid": 0x00080018,
    "manufacturer": 0x00080070, "model": 0x00081090, "modality": 0x00080060,
    "patient_id": 0x00100020, "patient_name": 0x00100010, "patient_birth_date": 0x00100030,
    "patient_sex": 0x00100040, "study_uid": 0x0020000D, "study_date": 0x00080020,
    "study_description": 0x00081030, "accession_number": 0x00080050,
    "series_uid": 0x0020000E, "series_number": 0x00200011, "series_description": 0x0008103E,
    "instance_number": 0x00200013, "burned_in": 0x00280301,
}
NUMBER_COLUMNS = {"rows": 0x00280010, "columns": 0x00280011, "frames": 0x00280008}


@dataclass
class IngestSummary:
    """What one ingest found. Paths and reasons only: no value read from a header."""

    new: int = 0
    unchanged: int = 0
    changed: int = 0
    missing: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: int = 0  # files that are byte-identical copies of an indexed instance
    conflicts: int = 0  # SOP Instance UIDs held by files of different content

    def __str__(self) -> str:
        lines = [f"{self.new} new, {self.unchanged} unchanged, {self.changed} changed, "
                 f"{len(self.unreadable)} unreadable, {self.missing} missing since last ingest"]
        for path, reason in self.unreadable:
            lines.append(f"  unreadable {path}: {reason}")
        if self.duplicates or self.conflicts:
            lines.append(f"{self.duplicates} identical duplicate files (one instance kept); "
                         f"{self.conflicts} SOP Instance UIDs in conflict (different contents, "
                         "none will be exported)")
        return "\n".join(lines)

    @property
    def reasons(self) -> Counter[str]:
        """Unreadable files counted by the kind of problem."""
        return Counter(reason.split(":")[0] for _, reason in self.unreadable)


def _text(ds: Dataset, tag: int) -> str:
    try:
        return stored_text(ds, tag)
    except Exception:  # noqa: BLE001 - an undecodable value indexes as empty
        return ""


def _number(ds: Dataset, tag: int) -> int | None:
    try:
        return int(float(stored_text(ds, tag).split("\\")[0]))
    except (ValueError, IndexError):
        return None
    except Exception:  # noqa: BLE001
        return None


def read_index_row(path: str) -> dict[str, Any]:
    """The index row of one file (run in a worker): header columns, or the reader's reason."""
    try:
        ds = read_for_deid(path).ds
    except DicomReadError as exc:
        return {"state": "unreadable", "reason": f"{exc.kind}: {exc.problem}"}
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the ingest
        return {"state": "unreadable", "reason": f"unreadable: {safe_message(exc)}"}
    row: dict[str, Any] = {"state": "ok", "reason": None}
    for column, tag in HEADER_COLUMNS.items():
        row[column] = _text(ds, tag)
    for column, tag in NUMBER_COLUMNS.items():
        row[column] = _number(ds, tag)
    row["transfer_syntax"] = str(ds.file_meta.TransferSyntaxUID)
    try:
        row["signature"] = machine_signature(ds)
    except Exception:  # noqa: BLE001
        row["signature"] = ""
    return row


def _stat_all(root: Path) -> Iterator[tuple[str, int, int]]:
    """Path, size and mtime of the files `gantry deidentify` would read (batch.iter_inputs),
    with strings instead of Path objects: a re-ingest is mostly this walk."""
    if root.is_file():
        st = root.stat()
        yield str(root), st.st_size, st.st_mtime_ns
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between listing and stat
            yield path, st.st_size, st.st_mtime_ns


def plan(db: sqlite3.Connection, source: Path) -> tuple[list[tuple[str, int, int, bool]],
                                                          int, list[str]]:
    """Files to read (path, size, mtime, indexed before?), how many are unchanged, and the
    paths of indexed files under `source` that are gone."""
    root = str(source)
    prefix = root if source.is_file() else root.rstrip(os.sep) + os.sep
    known = {path: (size, mtime, state) for path, size, mtime, state in db.execute(
        "SELECT path, size, mtime_ns, state FROM files WHERE path = ? OR substr(path, 1, ?) = ?",
        [root, len(prefix), prefix]).fetchall()}
    todo, unchanged = [], 0
    for path, size, mtime in _stat_all(source):
        before = known.pop(path, None)
        if before == (size, mtime, "ok") or before == (size, mtime, "unreadable"):
            unchanged += 1
        else:
            todo.append((path, size, mtime, before is not None))
    gone = [path for path, (_, _, state) in known.items() if state != "missing"]
    return todo, unchanged, gone


def resolve_duplicates(db: sqlite3.Connection) -> tuple[int, int]:
    """Mark files sharing a SOP Instance UID: byte-identical copies point at the first path
    (`duplicate_of`), different contents are all in conflict. Returns (duplicates, conflicts)."""
    with db:
        db.execute("UPDATE files SET duplicate_of = NULL, conflict = 0")
        groups = db.execute(
            "SELECT sop_instance_uid FROM files WHERE state = 'ok' GROUP BY sop_instance_uid "
            "HAVING count(*) > 1").fetchall()
        duplicates = conflicts = 0
        for (uid,) in groups:
            rows = db.execute("SELECT id, path, content_hash FROM files WHERE state = 'ok' AND "
                              "sop_instance_uid = ? ORDER BY path", [uid]).fetchall()
            hashes = {}
            for file_id, path, digest in rows:
                if digest is None:
                    digest = _sha256(path)
                    db.execute("UPDATE files SET content_hash = ? WHERE id = ?",
                               [digest, file_id])
                hashes[file_id] = digest
            if len(set(hashes.values())) > 1:
                conflicts += 1
                db.execute(f"UPDATE files SET conflict = 1 WHERE id IN "
                           f"({','.join('?' * len(rows))})", [r[0] for r in rows])
                continue
            first = rows[0][0]
            for file_id, _, _ in rows[1:]:
                duplicates += 1
                db.execute("UPDATE files SET duplicate_of = ? WHERE id = ?", [first, file_id])
    return duplicates, conflicts


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def ingest(db: sqlite3.Connection, source: Path, workers: int | None = None,
           progress: bool = True) -> IngestSummary:
    """Index `source` (a file or a folder tree) into the session; see the module notes."""
    from gateway.session.parallel import run_parallel

    source = Path(source).resolve()
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    root = str(source if source.is_dir() else source.parent)
    todo, unchanged, gone = plan(db, source)
    summary = IngestSummary(unchanged=unchanged, missing=len(gone))
    with db:
        for start in range(0, len(gone), 500):
            part = gone[start:start + 500]
            db.execute(f"UPDATE files SET state = 'missing' WHERE path IN "
                       f"({','.join('?' * len(part))})", part)
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        with db:
            for row in pending:
                if row.pop("changed"):
                    sets = ", ".join(f"{k} = :{k}" for k in row if k != "path")
                    db.execute(f"UPDATE files SET {sets}, version = version + 1, "
                               "content_hash = NULL WHERE path = :path", row)
                else:
                    db.execute(f"INSERT INTO files ({', '.join(row)}) VALUES "
                               f"({', '.join(':' + k for k in row)})", row)
        pending.clear()

    def on_result(i: int, row: dict[str, Any]) -> None:
        path, size, mtime, changed = todo[i]
        if changed:
            summary.changed += 1
        else:
            summary.new += 1
        if row["state"] == "unreadable":
            summary.unreadable.append((path, row["reason"]))
        empty = dict.fromkeys((*HEADER_COLUMNS, *NUMBER_COLUMNS, "transfer_syntax",
                               "signature"))
        pending.append({**empty, **row, "path": path, "root": root, "size": size,
                        "mtime_ns": mtime, "changed": changed})
        if len(pending) >= 500:
            flush()

    def on_death(i: int, how: str) -> None:
        on_result(i, {"state": "unreadable",
                      "reason": f"worker died: the process reading this file was {how}"})

    run_parallel(todo, lambda item: read_index_row(item[0]), on_result, on_death, "ingesting",
                 workers, progress)
    flush()
    summary.unreadable.sort()
    summary.duplicates, summary.conflicts = resolve_duplicates(db)
    return summary
