"""SQLite state of a gateway node: jobs and their lifecycle, deliveries, quarantine and audit.

One file (WAL, busy timeout) shared by the receiver, the workers and the forwarders, each with
its own connection. Every write goes through `Store.tx()`; every job move is checked against
`TRANSITIONS`, recorded as an event row and logged after commit. Nothing identifying is stored:
jobs carry a keyed hash of the original SOP Instance UID, new UIDs, counts, reasons, statuses.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.logs import get_logger
from gateway.safetext import scrub_values
from gateway.store_reads import StoreError, StoreReads
from gateway.store_schema import (  # noqa: F401 - the state names, used by callers from here
    DELIVERED,
    FAILED,
    FORWARDING,
    PENDING,
    PROCESSED,
    PROCESSING,
    PURGED,
    QUARANTINED,
    RECEIVED,
    SENDING,
    SENT,
    STATES,
    create_schema,
)

# (from, to) → why the move is allowed. Anything unlisted is refused.
TRANSITIONS: dict[tuple[str | None, str], str] = {
    (None, RECEIVED): "spooled and committed by the receiver (or recovered from the spool)",
    (RECEIVED, PROCESSING): "claimed by a worker",
    (PROCESSING, RECEIVED): "stale claim reclaimed",
    (PROCESSING, PROCESSED): "de-identified",
    (PROCESSING, QUARANTINED): "refused by the pipeline or routing",
    (PROCESSED, FORWARDING): "queued in the outboxes",
    (PROCESSED, DELIVERED): "route has no destination",
    (FORWARDING, DELIVERED): "every destination accepted it",
    (FORWARDING, QUARANTINED): "a destination refused it permanently (the others finished)",
    (QUARANTINED, RECEIVED): "released for another pass",
    (QUARANTINED, PURGED): "original deleted from quarantine",
}

BUSY_TIMEOUT = 60.0  # seconds a connection waits for a lock another holds


class IdlePoll:
    """How long a poller of the job tables waits before asking again: `first` after it found
    work, doubling up to `longest` while there is none (an idle node barely touches the disk)."""

    def __init__(self, first: float = 0.02, longest: float = 0.25) -> None:
        self.first, self.longest = first, max(first, longest)
        self._next = first

    def found_work(self) -> None:
        self._next = self.first

    def wait_time(self) -> float:
        """The next idle wait; each call doubles the one after it."""
        wait = self._next
        self._next = min(wait * 2, self.longest)
        return wait


@dataclass
class Tx:
    """One open transaction: the cursor plus the events to log once it commits."""

    conn: sqlite3.Connection
    events: list[dict[str, Any]] = field(default_factory=list)

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)


@dataclass(frozen=True)
class Claim:
    """A delivery handed to a forwarder: the job, its output file's SOP class and syntax."""

    job_id: str
    destination: str
    sop_class_uid: str
    transfer_syntax: str
    attempts: int      # every attempt (connection failures included): drives the backoff
    # failed attempts at the object so far (a failure status worth retrying, an association
    # aborted or no answer during its C-STORE): max_retries bounds them, connection failures
    # do not count (stored in the `refusals` column)
    refusals: int = 0


class Store(StoreReads):
    """The gateway's SQLite database (one connection per process or thread). `checkpoints`:
    whether this connection's commits copy the write-ahead log into the database now and then
    (the node's own connections do not: it runs `checkpoint` itself). `lock_poll`: seconds
    between attempts at the write lock while another connection holds it (None: SQLite's own
    wait, which sleeps 1 ms, then 2, 5, 10…: a writer that held it for 0.1 ms costs the waiter
    1 ms)."""

    def __init__(self, path: str | Path, *, durable: bool = True,
                 checkpoints: bool = True, lock_poll: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        # `durable`: each commit survives power loss (FULL). The others (NORMAL) may be lost
        # to a power cut: the receiver's, whose fsync'd spool file makes the job again at the
        # next start; the workers' and forwarders' moves, which a restart does again.
        self.conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        if not checkpoints:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.log = get_logger("gateway.store")
        self.lock_poll = None
        self._create()
        if lock_poll is not None:  # `_begin` waits for the write lock instead of SQLite
            self.conn.execute("PRAGMA busy_timeout = 0")
            self.lock_poll = lock_poll

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database without blocking anyone (the node runs
        this often; the other connections also checkpoint as they commit)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _create(self) -> None:
        with self.tx():
            create_schema(self.conn)

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); log the job events after commit."""
        tx = Tx(self.conn)
        self._begin()
        try:
            yield tx
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        for event in tx.events:
            name = "delivery.state" if "destination" in event else "job.state"
            self.log.info(name, **event)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE: take the write lock, waiting up to BUSY_TIMEOUT for it."""
        if self.lock_poll is None:
            self.conn.execute("BEGIN IMMEDIATE")
            return
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if (getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY
                        or time.monotonic() > deadline):
                    raise
            time.sleep(self.lock_poll)

    @staticmethod
    def _delivery_event(tx: Tx, job_id: str, destination: str, state: str,
                        status: int | None = None, error: str | None = None) -> None:
        event: dict[str, Any] = {"job": job_id, "destination": destination, "to_state": state}
        if status is not None:
            event["status"] = f"0x{status:04X}"
        if error:
            event["error"] = error
        tx.events.append(event)

    def _move(self, tx: Tx, job_id: str, to: str, detail: str = "", **fields: Any) -> str:
        row = tx.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise StoreError(f"job {job_id}: no such job")
        return self._move_from(tx, job_id, row["state"], to, detail, **fields)

    def _move_from(self, tx: Tx, job_id: str, frm: str | None, to: str, detail: str = "",
                   **fields: Any) -> str:
        if (frm, to) not in TRANSITIONS:
            raise StoreError(f"job {job_id}: move {frm} → {to} is not allowed")
        now = time.time()
        if frm is not None:
            fields.update(state=to, updated_at=now)
            sets = ", ".join(f"{k} = ?" for k in fields)
            tx.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?",
                       (*fields.values(), job_id, frm))
        tx.execute("INSERT INTO events (job_id, at, from_state, to_state, detail) "
                   "VALUES (?, ?, ?, ?, ?)", (job_id, now, frm, to, detail))
        event: dict[str, Any] = {"job": job_id, "from_state": frm, "to_state": to}
        if detail:
            event["detail"] = detail
        tx.events.append(event)
        return frm or ""

    # ------------------------------------------------------------------ receive

    def add_job(self, job_id: str, **fields: Any) -> None:
        """Record a spooled object as `received` (the commit is the receiver's promise)."""
        self.add_jobs([(job_id, fields)])

    def add_jobs(self, jobs: list[tuple[str, dict[str, Any]]], detail: str | None = None
                 ) -> None:
        """Several received jobs in one transaction (the receiver's group commit). Fields:
        calling_ae, called_ae, peer, sop_hash, sop_class_uid, transfer_syntax, size, and
        optionally received_at (default now). The event's detail: the calling AE title, or
        `detail`."""
        now = time.time()
        with self.tx() as tx:
            for job_id, f in jobs:
                tx.execute(
                    "INSERT INTO jobs (id, state, received_at, updated_at, calling_ae, "
                    "called_ae, peer, sop_hash, sop_class_uid, transfer_syntax, size, attempts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                    (job_id, RECEIVED, f.get("received_at", now), now, f["calling_ae"],
                     f["called_ae"], f["peer"], f["sop_hash"], f["sop_class_uid"],
                     f["transfer_syntax"], f["size"]),
                )
                self._move_from(tx, job_id, None, RECEIVED, detail or f["calling_ae"])

    # ------------------------------------------------------------------ workers

    def claim_jobs(self, owner: str, limit: int = 1, lease: float = 300.0) -> list[sqlite3.Row]:
        """Move up to `limit` oldest received jobs to processing under a lease, in one tx."""
        if not self.conn.execute("SELECT 1 FROM jobs WHERE state = ? LIMIT 1",
                                 (RECEIVED,)).fetchone():
            return []  # a read is enough to see there is nothing: no write lock taken
        now = time.time()
        with self.tx() as tx:
            rows = tx.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY received_at LIMIT ?",
                (RECEIVED, limit),
            ).fetchall()
            for row in rows:
                self._move_from(tx, row["id"], RECEIVED, PROCESSING, owner,
                                lease_owner=owner, lease_until=now + lease,
                                attempts=row["attempts"] + 1)
            rows = [tx.execute("SELECT * FROM jobs WHERE id = ?", (r["id"],)).fetchone()
                    for r in rows]
        return rows

    def finish_processing(self, job_id: str, *, route: str, profile: str,
                          new_study_uid: str, new_series_uid: str, new_sop_uid: str,
                          out_transfer_syntax: str, counts: dict[str, int],
                          not_backed_up: tuple[str, ...], destinations: tuple[str, ...],
                          machine: dict[str, Any] | None = None) -> None:
        """processing → processed → forwarding, with one pending delivery per destination
        (and the object's machine signature, in the same transaction)."""
        now = time.time()
        with self.tx() as tx:
            self._record_machine(tx, job_id, machine)
            self._move(tx, job_id, PROCESSED, route, route=route, profile=profile,
                       new_study_uid=new_study_uid, new_series_uid=new_series_uid,
                       new_sop_uid=new_sop_uid, out_transfer_syntax=out_transfer_syntax,
                       counts=json.dumps(counts, sort_keys=True),
                       not_backed_up=json.dumps(list(not_backed_up)),
                       lease_owner=None, lease_until=None, reason=None)
            if not destinations:
                self._move_from(tx, job_id, PROCESSED, DELIVERED, "no destination")
                return
            tx.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,))
            for dest in destinations:
                tx.execute(
                    "INSERT INTO deliveries (job_id, destination, state, attempts, next_at, "
                    "updated_at) VALUES (?, ?, ?, 0, ?, ?)", (job_id, dest, PENDING, now, now))
            self._move_from(tx, job_id, PROCESSED, FORWARDING, ",".join(destinations))

    def quarantine(self, job_id: str, reason: str, *, route: str | None = None,
                   profile: str | None = None, machine: dict[str, Any] | None = None) -> None:
        """Side exit: the job stops here with its reason (quoted values are blanked out)."""
        reason = scrub_values(reason)
        fields: dict[str, Any] = {"reason": reason, "lease_owner": None, "lease_until": None}
        if route is not None:
            fields["route"] = route
        if profile is not None:
            fields["profile"] = profile
        with self.tx() as tx:
            self._record_machine(tx, job_id, machine)
            self._move(tx, job_id, QUARANTINED, reason, **fields)

    def defer(self, job_id: str, reason: str) -> None:
        """processing → received, the attempt not counted: the machine failed (a full disk, a
        locked database), not the object; a worker tries it again later."""
        with self.tx() as tx:
            row = tx.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            attempts = max(0, (row["attempts"] if row else 1) - 1)
            self._move(tx, job_id, RECEIVED, f"deferred: {scrub_values(reason)}",
                       lease_owner=None, lease_until=None, attempts=attempts)

    def reclaim(self, *, everything: bool = False, owner: str | None = None,
                culprit: str | None = None) -> int:
        """Requeue expired claims; all claims when `everything` (at start); or every claim
        whose owner starts with `owner` (a process that died), the death counted as an
        attempt of `culprit` alone (the job it was working on, if any). Returns how many."""
        now = time.time()
        cutoff = float("inf") if everything or owner else now
        pattern = (owner or "").replace("%", "") + "%"
        with self.tx() as tx:
            rows = tx.execute("SELECT id, attempts FROM jobs WHERE state = ? AND "
                              "(lease_until IS NULL OR lease_until < ?) AND "
                              "coalesce(lease_owner, '') LIKE ?",
                              (PROCESSING, cutoff, pattern)).fetchall()
            for row in rows:
                # A node restart is not the object's fault: that claim does not count as an
                # attempt; nor does the death of a worker working on another object. A worker
                # that died on it (or overran its lease) does.
                counted = not everything and (owner is None or row["id"] == culprit)
                attempts = row["attempts"] if counted else row["attempts"] - 1
                self._move_from(tx, row["id"], PROCESSING, RECEIVED, "stale claim",
                                lease_owner=None, lease_until=None, attempts=max(0, attempts))
            cur = tx.execute("UPDATE deliveries SET state = ?, lease_owner = NULL, "
                             "lease_until = NULL WHERE state = ? AND "
                             "(lease_until IS NULL OR lease_until < ?) AND "
                             "coalesce(lease_owner, '') LIKE ?",
                             (PENDING, SENDING, cutoff, pattern))
            requeued = len(rows) + cur.rowcount
        return requeued

    # ------------------------------------------------------------------ forwarders

    def claim_deliveries(self, destination: str, owner: str, limit: int = 16,
                         lease: float = 300.0) -> list[Claim]:
        """Move up to `limit` due pending deliveries of `destination` to sending."""
        now = time.time()
        if not self.conn.execute(
                "SELECT 1 FROM deliveries WHERE destination = ? AND state = ? AND next_at <= ? "
                "LIMIT 1", (destination, PENDING, now)).fetchone():
            return []  # nothing due: no write lock taken
        with self.tx() as tx:
            rows = tx.execute(
                "SELECT d.job_id, d.attempts, d.refusals, j.sop_class_uid, "
                "j.out_transfer_syntax "
                "FROM deliveries d JOIN jobs j ON j.id = d.job_id "
                "WHERE d.destination = ? AND d.state = ? AND d.next_at <= ? AND j.state = ? "
                "ORDER BY d.next_at LIMIT ?",
                (destination, PENDING, now, FORWARDING, limit),
            ).fetchall()
            for row in rows:
                tx.execute("UPDATE deliveries SET state = ?, lease_owner = ?, lease_until = ?, "
                           "updated_at = ? WHERE job_id = ? AND destination = ?",
                           (SENDING, owner, now + lease, now, row["job_id"], destination))
        return [Claim(r["job_id"], destination, r["sop_class_uid"], r["out_transfer_syntax"],
                      r["attempts"], r["refusals"] or 0) for r in rows]

    def next_due(self, destination: str) -> float | None:
        """When the earliest pending delivery of `destination` is due (None: nothing queued)."""
        row = self.conn.execute(
            "SELECT min(next_at) AS t FROM deliveries WHERE destination = ? AND state = ?",
            (destination, PENDING)).fetchone()
        return row["t"]

    def delivered(self, job_id: str, destination: str, status: int) -> str | None:
        """Record a Success/Warning. Returns the job's new state when this was its last
        delivery to finish: DELIVERED, or QUARANTINED when another destination refused it."""
        now = time.time()
        with self.tx() as tx:
            tx.execute("UPDATE deliveries SET state = ?, status = ?, error = NULL, "
                       "attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, "
                       "updated_at = ? WHERE job_id = ? AND destination = ?",
                       (SENT, status, now, job_id, destination))
            self._delivery_event(tx, job_id, destination, SENT, status)
            return self._finish_forwarding(tx, job_id, destination)

    def _finish_forwarding(self, tx: Tx, job_id: str, destination: str) -> str | None:
        """When no delivery of a forwarding job is left pending or sending: DELIVERED if every
        destination took it, else QUARANTINED with the refusals' reasons (the object may have
        reached the others: a release sends it to every destination again, a harmless
        duplicate). Returns the new state, or None while deliveries remain."""
        rows = tx.execute("SELECT destination, state, error FROM deliveries WHERE job_id = ? "
                          "ORDER BY destination", (job_id,)).fetchall()
        job = tx.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if (job is None or job["state"] != FORWARDING
                or any(r["state"] in (PENDING, SENDING) for r in rows)):
            return None
        refused = [r["error"] or f"{r['destination']} refused it" for r in rows
                   if r["state"] == FAILED]
        if not refused:
            self._move_from(tx, job_id, FORWARDING, DELIVERED, destination)
            return DELIVERED
        reason = "; ".join(refused)
        self._move_from(tx, job_id, FORWARDING, QUARANTINED, reason, reason=reason)
        return QUARANTINED

    def retry_later(self, job_id: str, destination: str, *, delay: float, error: str,
                    status: int | None = None, failed: bool = False) -> None:
        """Back to pending, due after `delay` seconds, with the last error recorded; `failed`:
        the attempt failed on the object (counted in `refusals`, which max_retries bounds),
        not on reaching the destination."""
        now = time.time()
        with self.tx() as tx:
            tx.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, next_at = ?, "
                       "refusals = coalesce(refusals, 0) + ?, "
                       "status = ?, error = ?, lease_owner = NULL, lease_until = NULL, "
                       "updated_at = ? WHERE job_id = ? AND destination = ?",
                       (PENDING, now + delay, int(failed), status, error, now,
                        job_id, destination))
            self._delivery_event(tx, job_id, destination, PENDING, status, error)

    def release_claims(self, job_ids: list[str], destination: str) -> None:
        """Give back unsent claims (e.g. at shutdown) without counting an attempt."""
        with self.tx() as tx:
            for job_id in job_ids:
                tx.execute("UPDATE deliveries SET state = ?, lease_owner = NULL, "
                           "lease_until = NULL WHERE job_id = ? AND destination = ? "
                           "AND state = ?", (PENDING, job_id, destination, SENDING))

    def delivery_failed(self, job_id: str, destination: str, *, status: int | None,
                        reason: str) -> str | None:
        """A permanent refusal by one destination. The job goes to quarantine once no other
        delivery is left to finish (the others still get the object): returns its new state
        then, as `delivered` does, else None."""
        reason = scrub_values(reason)
        now = time.time()
        with self.tx() as tx:
            tx.execute("UPDATE deliveries SET state = ?, status = ?, error = ?, "
                       "attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, "
                       "updated_at = ? WHERE job_id = ? AND destination = ?",
                       (FAILED, status, reason, now, job_id, destination))
            self._delivery_event(tx, job_id, destination, FAILED, status, reason)
            return self._finish_forwarding(tx, job_id, destination)

    # ------------------------------------------------------------------ operations

    def release(self, job_id: str) -> None:
        """quarantined → received: the worker runs the pipeline again."""
        with self.tx() as tx:
            tx.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,))
            self._move(tx, job_id, RECEIVED, "released", reason=None, attempts=0)

    def purge(self, job_id: str) -> None:
        with self.tx() as tx:
            self._move(tx, job_id, PURGED, "purged")

    def prune(self, before: float, batch: int = 1000) -> int:
        """Forget the jobs delivered or purged before `before` (epoch seconds): their audit
        rows, deliveries, history and machine records. Quarantined and unfinished jobs stay.
        `batch` jobs a transaction, so a receive never waits long for the write lock; SQLite
        reuses the freed pages, so a database pruned to a retention stops growing."""
        pruned = 0
        while True:
            with self.tx() as tx:
                ids = [r[0] for r in tx.execute(
                    "SELECT id FROM jobs WHERE state IN (?, ?) AND updated_at < ? LIMIT ?",
                    (DELIVERED, PURGED, before, batch))]
                marks = ", ".join("?" * len(ids))
                tables = (("events", "job_id"), ("deliveries", "job_id"), ("machines", "job_id"),
                          ("jobs", "id"))
                for table, column in tables if ids else ():
                    tx.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
            pruned += len(ids)
            if len(ids) < batch:
                self.log.info("store.pruned", jobs=pruned, before=before)
                return pruned

    @staticmethod
    def _record_machine(tx: Tx, job_id: str, machine: dict[str, Any] | None) -> None:
        """The machine signature of a received object (device text and flags only)."""
        if machine is None:
            return
        row = {"job_id": job_id, **machine}
        tx.execute(f"INSERT OR REPLACE INTO machines ({', '.join(row)}) "
                   f"VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))

