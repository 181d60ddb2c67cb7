"""What an operator's commands and the metrics read from the gateway's SQLite state: jobs,
their deliveries and history, the audit view, machines, counts and per-destination backlog.
Reads only; every write is in `store.Store`, which these are part of."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from gateway.store_schema import (
    FAILED,
    FORWARDING,
    PENDING,
    PROCESSED,
    PROCESSING,
    QUARANTINED,
    RECEIVED,
    SENDING,
    SENT,
)


class StoreError(RuntimeError):
    """A refused state change or a missing row (names the job id, never an identifier)."""


class StoreReads:
    """The read-only queries of `Store` (its connection is `conn`)."""

    conn: sqlite3.Connection

    def job(self, job_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def find_job(self, prefix: str) -> sqlite3.Row:
        """A job by id or unique id prefix."""
        rows = self.conn.execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2",
                                 (prefix.replace("%", "") + "%",)).fetchall()
        if len(rows) != 1:
            raise StoreError(f"job {prefix}: {'ambiguous' if rows else 'no such job'}")
        return rows[0]

    def deliveries(self, job_id: str) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM deliveries WHERE job_id = ? "
                                 "ORDER BY destination", (job_id,)).fetchall()

    def events(self, job_id: str) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id",
                                 (job_id,)).fetchall()

    def audit(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM audit ORDER BY received")]

    def quarantined(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM jobs WHERE state = ? ORDER BY updated_at",
                                 (QUARANTINED,)).fetchall()

    def machines(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM machines")]

    def counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self.conn.execute(
            "SELECT state, count(*) AS n FROM jobs GROUP BY state")}

    def destination_status(self) -> list[dict[str, Any]]:
        """Backlog (deliveries the outboxes will still send: pending or sending, of a job
        still forwarding), last error and oldest pending age per destination."""
        now = time.time()
        out = []
        for row in self.conn.execute(
            "SELECT d.destination, sum(d.state IN (?, ?) AND j.state = ?) AS backlog, "
            "sum(d.state = ?) AS delivered, sum(d.state = ?) AS failed "
            "FROM deliveries d JOIN jobs j ON j.id = d.job_id "
            "GROUP BY d.destination ORDER BY d.destination",
            (PENDING, SENDING, FORWARDING, SENT, FAILED),
        ):
            last = self.conn.execute(
                "SELECT error, status, updated_at FROM deliveries WHERE destination = ? "
                "AND error IS NOT NULL ORDER BY updated_at DESC LIMIT 1",
                (row["destination"],)).fetchone()
            oldest = self.conn.execute(
                "SELECT min(j.received_at) FROM deliveries d JOIN jobs j ON j.id = d.job_id "
                "WHERE d.destination = ? AND d.state IN (?, ?) AND j.state = ?",
                (row["destination"], PENDING, SENDING, FORWARDING)).fetchone()[0]
            out.append({
                "destination": row["destination"], "backlog": row["backlog"] or 0,
                "delivered": row["delivered"] or 0, "failed": row["failed"] or 0,
                "last_error": last["error"] if last else None,
                "oldest_pending_s": None if oldest is None else round(now - oldest, 1),
            })
        return out

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest job not yet delivered or quarantined was received."""
        row = self.conn.execute(
            "SELECT min(received_at) FROM jobs WHERE state IN (?, ?, ?, ?)",
            (RECEIVED, PROCESSING, PROCESSED, FORWARDING)).fetchone()
        return None if row[0] is None else time.time() - row[0]

    def pending_jobs(self) -> int:
        return self.conn.execute("SELECT count(*) FROM jobs WHERE state IN (?, ?, ?, ?)",
                                 (RECEIVED, PROCESSING, PROCESSED, FORWARDING)).fetchone()[0]
