"""The session database: one SQLite file (WAL, created 0600) holding a dump's index, the
configuration in force, staged results and export outcomes. It is plain sqlite3: importing
sqlite-utils (pandas and numpy with it, when installed) takes longer than a whole re-ingest of
10,000 unchanged files (README, "Curating an archive").

It indexes the raw data, so it holds identifiers: it is the only Gantry store that may, which is
why it is readable by its owner alone. Every write is a short transaction, so a process killed
at any moment leaves it consistent, and another process can reopen it at once.
"""

from __future__ import annotations

import os
import sqlite3

SCHEMA_VERSION = "1"
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- absolute
    root TEXT NOT NULL,                 -- the folder it was ingested under (quarantine layout)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, -- bumped when a re-ingest finds it changed
    state TEXT NOT NULL,                -- ok | unreadable | missing
    reason TEXT,                        -- why unreadable
    sop_class_uid TEXT, sop_instance_uid TEXT, transfer_syntax TEXT,
    manufacturer TEXT, model TEXT, signature TEXT, modality TEXT,
    patient_id TEXT, patient_name TEXT, patient_birth_date TEXT, patient_sex TEXT,
    study_uid TEXT, study_date TEXT, study_description TEXT, accession_number TEXT,
    series_uid TEXT, series_number TEXT, series_description TEXT,
    instance_number TEXT, rows INTEGER, columns INTEGER, frames INTEGER, burned_in TEXT,
    content_hash TEXT,                  -- sha256, only for files sharing a SOP Instance UID
    duplicate_of INTEGER,               -- same UID, same bytes: the file kept instead
    conflict INTEGER NOT NULL DEFAULT 0 -- same UID, different bytes: none is exported
);
CREATE INDEX IF NOT EXISTS files_sop ON files (sop_instance_uid);
-- what a re-ingest compares, and what counts instances, duplicates and conflicts: read
-- without the wide rows
CREATE INDEX IF NOT EXISTS files_stat ON files (path, size, mtime_ns, state);
CREATE INDEX IF NOT EXISTS files_state ON files (state, duplicate_of);
CREATE INDEX IF NOT EXISTS files_conflict ON files (sop_instance_uid) WHERE conflict != 0;
CREATE INDEX IF NOT EXISTS files_series ON files (patient_id, study_uid, series_uid);
CREATE TABLE IF NOT EXISTS staged (
    file_id INTEGER PRIMARY KEY,
    file_version INTEGER NOT NULL,
    stage_hash TEXT NOT NULL,           -- settings and redaction decision it was staged under
    outcome TEXT NOT NULL,              -- pass | quarantine
    reason TEXT, rule TEXT, regions INTEGER, at_risk INTEGER,
    counts TEXT, changes TEXT, residual TEXT  -- JSON: action counts, changed elements, findings
);
CREATE TABLE IF NOT EXISTS exports (
    out TEXT NOT NULL,                  -- the export folder (absolute)
    file_id INTEGER NOT NULL,
    file_version INTEGER NOT NULL,
    settings_hash TEXT NOT NULL,        -- profile, backup, key: what every object depends on
    redaction_hash TEXT NOT NULL,       -- the whole redaction section at the time
    decision TEXT NOT NULL,             -- this object's redaction decision
    outcome TEXT NOT NULL,              -- exported | quarantined | duplicate
    path TEXT,                          -- the file written (output or quarantine copy)
    reason TEXT,
    PRIMARY KEY (out, file_id)
);
"""


class SessionDbError(ValueError):
    """A file that is not a Gantry session database."""


# The files that are instances: read, and not a copy of another (navigation and counts agree).
INSTANCES = "state = 'ok' AND duplicate_of IS NULL"


def is_session_db(path: str | os.PathLike) -> bool:
    """Whether `path` is an SQLite file (the caller then opens it as a session)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def open_db(path: str | os.PathLike) -> sqlite3.Connection:
    """Open or create the session database at `path` (created 0600; WAL; busy timeout)."""
    target = os.fspath(path)  # not pathlib: see gateway.commands.session
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(target, 0o600)  # whatever the umask: the index holds identifiers
    elif os.path.getsize(target) and not is_session_db(target):
        raise SessionDbError(f"{target}: not a session database (not an SQLite file)")
    db = conn = sqlite3.connect(target, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
    try:
        conn.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SessionDbError(f"{target}: not a session database ({exc})") from None
    found = get_meta(db, "schema")
    if found is None:
        set_meta(db, schema=SCHEMA_VERSION)
    elif found != SCHEMA_VERSION:
        conn.close()
        raise SessionDbError(f"{target}: session schema {found}, this Gantry reads "
                             f"{SCHEMA_VERSION}")
    return db


def get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_meta(db: sqlite3.Connection, **values: str | None) -> None:
    """Set (None: remove) meta keys, in one transaction."""
    with db:
        for key, value in values.items():
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", [key])
            else:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [key, value])


def instance_count(db: sqlite3.Connection) -> int:
    """How many instances the session indexes."""
    return db.execute(f"SELECT count(*) FROM files WHERE {INSTANCES}").fetchone()[0]
