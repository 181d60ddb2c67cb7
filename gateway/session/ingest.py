"""Indexing a file or folder tree into the session: headers only, in forked workers.

A file already indexed with the same size and modification time is skipped without being
opened: a re-ingest of an unchanged tree is one walk of the folders (one stat per file), one
SELECT of what the index holds in path order, compared with the walk as a whole, and no worker,
no pydicom, no write (unless a killed run left its duplicates unsettled: then they are
settled). Unreadable files are indexed too,
with the reader's reason, so that export quarantines them as `gantry deidentify` does. Files
sharing a SOP Instance UID are compared byte for byte: identical copies keep one instance,
different contents are a conflict and none is exported.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from stat import S_ISDIR

from gateway.session.db import get_meta, set_meta

TYPE_CHECKING = False  # not typing's: a re-ingest of an unchanged tree is mostly start-up
if TYPE_CHECKING:
    from typing import Any

FIELDS = ("new", "unchanged", "changed", "missing", "unreadable", "duplicates", "conflicts")


class IngestSummary:
    """What one ingest found. Paths and reasons only: no value read from a header.
    (A plain class, not a dataclass: importing dataclasses would cost an unchanged re-ingest
    a tenth of its time.)"""

    def __init__(self, new: int = 0, unchanged: int = 0, changed: int = 0, missing: int = 0,
                 unreadable: list[tuple[str, str]] | None = None, duplicates: int = 0,
                 conflicts: int = 0) -> None:
        self.new, self.unchanged, self.changed, self.missing = new, unchanged, changed, missing
        self.unreadable: list[tuple[str, str]] = unreadable or []  # (path, reason)
        self.duplicates = duplicates  # files that are byte-identical copies of an instance
        self.conflicts = conflicts  # SOP Instance UIDs held by files of different content

    def __repr__(self) -> str:
        return "IngestSummary(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in FIELDS) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IngestSummary) and all(
            getattr(self, f) == getattr(other, f) for f in FIELDS)

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


def walk(root: str | os.PathLike) -> list[tuple[str, int, int]]:
    """Path, size and mtime (ns) of the files `gantry deidentify` would read, in its order
    (batch.iter_inputs: sorted, hidden names skipped, linked folders not entered)."""
    root = os.fspath(root)
    if os.path.isfile(root):
        st = os.stat(root)
        return [(root, st.st_size, st.st_mtime_ns)]
    found: list[tuple[str, int, int]] = []
    _walk(root, found)
    return found


def _walk(folder: str, found: list[tuple[str, int, int]]) -> None:
    """One listing of `folder`, one stat per name relative to its descriptor (plain names
    sorted and stat results: no DirEntry objects, the cheapest walk found in Python)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # unreadable folder: os.walk skips it too
    folders = []
    prefix = folder.rstrip("/") + "/"
    append, stat_at = found.append, os.stat
    try:
        for name in sorted(os.listdir(fd)):
            if name[0] == ".":
                continue
            try:
                st = stat_at(name, dir_fd=fd)  # follows a link, as os.walk does
            except OSError:
                continue  # gone between listing and stat, or a dangling link
            if S_ISDIR(st.st_mode):  # a linked folder is not entered
                if not os.path.islink(prefix + name):
                    folders.append(prefix + name)
                continue
            append((prefix + name, st.st_size, st.st_mtime_ns))
    except OSError:
        pass  # the folder went away while it was read
    finally:
        os.close(fd)
    for sub in folders:
        _walk(sub, found)


def plan(db: sqlite3.Connection, source: str) -> tuple[list[tuple[str, int, int, bool]],
                                                         int, list[str]]:
    """Files to read (path, size, mtime, indexed before?), how many are unchanged, and the
    paths of indexed files under `source` (absolute) that are gone."""
    folder = source.rstrip("/")  # paths under it sort from folder + "/" to before folder + "0"
    where = ("path = :root", "path >= :below AND path < :after")  # the root sorts first
    names = {"root": source, "below": folder + "/", "after": folder + "0"}
    # what the index holds under `source`, in path order, but the files marked missing
    held = [row for test in where for row in db.execute(
        f"SELECT path, size, mtime_ns FROM files WHERE {test} AND state != 'missing' "
        "ORDER BY path", names)]
    found = walk(source)
    if held == sorted(found):  # the usual re-ingest: one comparison in C
        return [], len(found), []
    known = {path: (size, mtime) for path, size, mtime in held}
    missing = {path for test in where for (path,) in db.execute(
        f"SELECT path FROM files WHERE {test} AND state = 'missing'", names)}
    todo, unchanged = [], 0
    for path, size, mtime in found:
        before = known.pop(path, None)
        if before == (size, mtime):
            unchanged += 1
        else:  # indexed before (changed, or back after it went missing), or new
            todo.append((path, size, mtime, before is not None or path in missing))
    return todo, unchanged, list(known)


def resolve_duplicates(db: sqlite3.Connection) -> tuple[int, int]:
    """Mark files sharing a SOP Instance UID: byte-identical copies point at the first path
    (`duplicate_of`), different contents are all in conflict. Returns (duplicates, conflicts)."""
    with db:
        db.execute("UPDATE files SET duplicate_of = NULL, conflict = 0 "
                   "WHERE duplicate_of IS NOT NULL OR conflict != 0")
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
        db.execute("DELETE FROM meta WHERE key = 'duplicates'")
    return duplicates, conflicts


def count_duplicates(db: sqlite3.Connection) -> tuple[int, int]:
    """(duplicates, conflicts) as resolve_duplicates last marked them."""
    return db.execute(
        "SELECT (SELECT count(*) FROM files WHERE state = 'ok' AND duplicate_of IS NOT NULL), "
        "(SELECT count(DISTINCT sop_instance_uid) FROM files WHERE conflict != 0)").fetchone()


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def ingest(db: sqlite3.Connection, source: str | os.PathLike, workers: int | None = None,
           progress: bool = True) -> IngestSummary:
    """Index `source` (a file or a folder tree) into the session; see the module notes."""
    source = os.path.realpath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file or folder")
    root = source if os.path.isdir(source) else os.path.dirname(source)
    db.execute("BEGIN")  # one read transaction: what the index holds, as of one moment
    try:
        todo, unchanged, gone = plan(db, source)
        summary = IngestSummary(unchanged=unchanged, missing=len(gone))
        settled = get_meta(db, "duplicates") != "unsettled"
        if not todo and not gone and settled:
            summary.duplicates, summary.conflicts = count_duplicates(db)
            return summary
    finally:
        db.execute("COMMIT")
    # Imported before the workers fork, so that each has them already.
    from gateway.session.headers import EMPTY_ROW, read_index_row
    from gateway.session.parallel import run_parallel

    set_meta(db, duplicates="unsettled")  # until resolve_duplicates: a killed run redoes it
    with db:
        for start in range(0, len(gone), 500):
            part = gone[start:start + 500]
            db.execute(f"UPDATE files SET state = 'missing' WHERE path IN "
                       f"({','.join('?' * len(part))})", part)
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        changed = [row for row in pending if row["changed"]]
        new = [row for row in pending if not row["changed"]]
        columns = [k for k in pending[0] if k != "changed"] if pending else []
        with db:
            if new:
                db.executemany(f"INSERT INTO files ({', '.join(columns)}) VALUES "
                               f"({', '.join(':' + k for k in columns)})", new)
            if changed:
                sets = ", ".join(f"{k} = :{k}" for k in columns if k != "path")
                db.executemany(f"UPDATE files SET {sets}, version = version + 1, "
                               "content_hash = NULL WHERE path = :path", changed)
        pending.clear()

    def on_result(i: int, row: dict[str, Any]) -> None:
        path, size, mtime, changed = todo[i]
        if changed:
            summary.changed += 1
        else:
            summary.new += 1
        if row["state"] == "unreadable":
            summary.unreadable.append((path, row["reason"]))
        pending.append({**EMPTY_ROW, **row, "path": path, "root": root, "size": size,
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
