"""The files of a node under `state_dir`: the database, the spool of originals as received,
the de-identified outbox files and quarantined originals. Paths derive from the job id.

Originals carry identifiers: the directories are owner-only (0700) and so are the files in them
(0600; `gantry serve` runs with umask 077). A state directory made by an older version is
tightened when it is opened."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from gateway import spoolfile
from gateway.dicomio import temp_name
from gateway.store import DELIVERED, FORWARDING, PURGED, Store

OWNER_ONLY_UMASK = 0o077
DIR_MODE, FILE_MODE = 0o700, 0o600


def owner_only(path: Path, mode: int) -> None:
    """Take group and other permissions away from `path` (ours) if it has any."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, mode)


class StateDir:
    """The state directory of one node (created on first use, owner-only)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.db = self.root / "gantry.db"
        self.spool = self.root / "spool"
        self.out = self.root / "out"
        self.quarantine = self.root / "quarantine"
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        owner_only(self.root, DIR_MODE)
        for d in (self.spool, self.out, self.quarantine):
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            owner_only(d, DIR_MODE)
        for name in ("gantry.db", "gantry.db-wal", "gantry.db-shm", "node.lock"):
            owner_only(self.root / name, FILE_MODE)

    def lock(self) -> TextIO | None:
        """Take the node's exclusive lock on this directory, or None when another process holds
        it: one `gantry serve` per state directory (a second one's recovery would requeue the
        first one's work and sweep its files). Held until the file is closed or the process
        exits, kill -9 included; the holder's pid is written in it."""
        fd = os.open(self.root / "node.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        fh = os.fdopen(fd, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        return fh

    def lock_holder(self) -> str:
        """The pid written by the process holding the lock ('?' when unknown)."""
        try:
            return (self.root / "node.lock").read_text().strip() or "?"
        except OSError:
            return "?"

    def spooled(self, job_id: str) -> Path:
        return self.spool / f"{job_id}.dcm"

    def output(self, job_id: str) -> Path:
        return self.out / f"{job_id}.dcm"

    def quarantined(self, job_id: str) -> Path:
        return self.quarantine / f"{job_id}.dcm"

    def original(self, job_id: str) -> Path | None:
        """The original as received, wherever it is (spool or quarantine)."""
        for path in (self.spooled(job_id), self.quarantined(job_id)):
            if path.exists():
                return path
        return None

    def move_to_quarantine(self, job_id: str) -> None:
        src = self.spooled(job_id)
        if src.exists():
            os.replace(src, self.quarantined(job_id))
        self._unlink(self.output(job_id))

    def move_to_spool(self, job_id: str) -> None:
        src = self.quarantined(job_id)
        if src.exists():
            os.replace(src, self.spooled(job_id))

    def done(self, job_id: str) -> None:
        """Delivered: the original and the outbox copy are no longer needed."""
        self._unlink(self.spooled(job_id))
        self._unlink(self.output(job_id))

    def purge(self, job_id: str) -> None:
        for path in (self.spooled(job_id), self.quarantined(job_id), self.output(job_id)):
            self._unlink(path)

    def discard_partial(self, pid: int) -> int:
        """Remove the outbox files process `pid` was writing when it died; returns how many."""
        partial = list(self.out.glob(temp_name("*", pid)))
        for path in partial:
            self._unlink(path)
        return len(partial)

    def discard(self, path: Path) -> None:
        """Remove a file if it is there."""
        self._unlink(path)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def recover(self, store: Store, key: bytes) -> int:
        """At start, before `sweep`: give back its job to every whole spool file that has none
        (its row was lost to a power cut: the receiver does not wait for its commit to reach
        the disk, the file is the durable record; or the node died between the file and the
        commit, and then the sender, never answered, may send it again: a harmless duplicate).
        A quarantined original whose row was lost likewise goes round again. Files cut short
        are left to `sweep`. Returns how many jobs were made again."""
        found = []
        for path in sorted(self.spool.glob("*.dcm")) + sorted(self.quarantine.glob("*.dcm")):
            job_id = path.name.split(".")[0]
            if store.job(job_id) is not None:
                continue
            fields = spoolfile.job_fields(path, key)
            if fields is not None:
                found.append((job_id, {**fields, "received_at": path.stat().st_mtime}))
        if found:
            store.add_jobs(found, detail="recovered from its spool file")
        return len(found)

    def sweep(self, store: Store) -> int:
        """At start, after `recover`: remove spool files that still have no job (cut short by
        a crash before the answer, or not the receiver's) and outbox files of jobs that are not
        waiting to be forwarded. Returns files removed."""
        removed = 0
        for path in list(self.spool.glob("*.dcm")) + list(self.out.glob("*")):
            row = store.job(path.name.split(".")[0])
            keep = row is not None and (
                path.parent == self.spool and row["state"] not in (DELIVERED, PURGED)
                or path.parent == self.out and row["state"] == FORWARDING and
                path.suffix == ".dcm" and path.name.count(".") == 1)
            if not keep:
                self._unlink(path)
                removed += 1
        return removed
