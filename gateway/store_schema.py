"""The schema of the gateway's SQLite database: jobs, deliveries, machines, events, and the
audit view an operator reads (created if missing; nothing identifying in any column)."""

from __future__ import annotations

import sqlite3

import sqlite_utils

SCHEMA_VERSION = 1

# The values of jobs.state.
RECEIVED, PROCESSING, PROCESSED = "received", "processing", "processed"
FORWARDING, DELIVERED, QUARANTINED, PURGED = "forwarding", "delivered", "quarantined", "purged"
STATES = (RECEIVED, PROCESSING, PROCESSED, FORWARDING, DELIVERED, QUARANTINED, PURGED)

# Delivery states (one row per job and destination).
PENDING, SENDING, SENT, FAILED = "pending", "sending", "delivered", "failed"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing (inside the caller's transaction)."""
    db = sqlite_utils.Database(conn)
    db["jobs"].create(
        {
            "id": str, "state": str, "received_at": float, "updated_at": float,
            "calling_ae": str, "called_ae": str, "peer": str, "sop_hash": str,
            "sop_class_uid": str, "transfer_syntax": str, "size": int,
            "route": str, "profile": str, "new_study_uid": str,
            "new_series_uid": str, "new_sop_uid": str, "out_transfer_syntax": str,
            "counts": str, "not_backed_up": str, "reason": str, "attempts": int,
            "lease_owner": str, "lease_until": float,
        },
        pk="id", not_null={"state", "received_at"}, if_not_exists=True,
    )
    db["deliveries"].create(
        {
            "job_id": str, "destination": str, "state": str, "attempts": int,
            "refusals": int,
            "next_at": float, "lease_owner": str, "lease_until": float,
            "status": int, "error": str, "updated_at": float,
        },
        pk=("job_id", "destination"), if_not_exists=True,
    )
    db["machines"].create(
        {"job_id": str, "signature": str, "manufacturer": str, "model": str,
         "size": str, "modality": str, "sop_class": str, "burned_in": str,
         "at_risk": int, "rule": str, "refused": int},
        pk="job_id", if_not_exists=True,
    )
    db["events"].create(
        {"id": int, "job_id": str, "at": float, "from_state": str, "to_state": str,
         "detail": str},
        pk="id", if_not_exists=True,
    )
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, received_at)")
    conn.execute("CREATE INDEX IF NOT EXISTS deliveries_state "
               "ON deliveries(destination, state, next_at)")
    conn.execute("CREATE INDEX IF NOT EXISTS events_job ON events(job_id)")
    conn.execute(
        """CREATE VIEW IF NOT EXISTS audit AS
        SELECT j.id AS job_id,
               strftime('%Y-%m-%dT%H:%M:%fZ', j.received_at, 'unixepoch') AS received,
               j.calling_ae, j.called_ae, j.peer, j.route, j.profile,
               j.sop_class_uid, j.new_study_uid, j.new_series_uid, j.new_sop_uid,
               j.sop_hash AS original_sop_hash, j.counts, j.state AS outcome, j.reason,
               (SELECT json_group_object(d.destination, json_object(
                    'state', d.state, 'status', d.status, 'attempts', d.attempts,
                    'error', d.error))
                FROM deliveries d WHERE d.job_id = j.id) AS destinations
        FROM jobs j"""
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
