"""SQLite state: the job state machine, claims and reclaim, deliveries, quarantine, audit."""

from __future__ import annotations

import json
import threading
import time

import pytest

from gateway.statedir import StateDir
from gateway.store import (
    DELIVERED,
    FORWARDING,
    PROCESSING,
    QUARANTINED,
    RECEIVED,
    TRANSITIONS,
    Store,
    StoreError,
)

ORIGINAL_UID = "1.2.826.0.1.3680043.8.498.99999.1"  # planted: must never reach the database


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gantry.db")
    yield s
    s.close()


def add(store: Store, job_id: str) -> None:
    store.add_job(job_id, calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1",
                  sop_hash="ABCDEF", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                  transfer_syntax="1.2.840.10008.1.2.1", size=10)


def finish(store: Store, job_id: str, dests=("pacs",)) -> None:
    store.finish_processing(job_id, route="all", profile="default", new_study_uid="2.25.1",
                            new_series_uid="2.25.2", new_sop_uid="2.25.3",
                            out_transfer_syntax="1.2.840.10008.1.2.1", counts={"X": 3},
                            not_backed_up=(), destinations=dests)


def test_lifecycle_records_every_move(store):
    add(store, "j1")
    assert [r["id"] for r in store.claim_jobs("w1")] == ["j1"]
    finish(store, "j1")
    claims = store.claim_deliveries("pacs", "f1")
    assert [c.job_id for c in claims] == ["j1"]
    assert store.delivered("j1", "pacs", 0) == DELIVERED
    moves = [(e["from_state"], e["to_state"]) for e in store.events("j1")]
    assert moves == [(None, RECEIVED), (RECEIVED, PROCESSING), (PROCESSING, "processed"),
                     ("processed", FORWARDING), (FORWARDING, DELIVERED)]
    assert all(m in TRANSITIONS for m in moves)


def test_unlisted_moves_are_refused(store):
    add(store, "j1")
    with pytest.raises(StoreError, match="received → delivered is not allowed"):
        with store.tx() as tx:
            store._move(tx, "j1", DELIVERED)
    with pytest.raises(StoreError, match="job nope: no such job"):
        store.quarantine("nope", "x")
    assert store.job("j1")["state"] == RECEIVED


def test_a_claim_is_taken_once(tmp_path):
    path = tmp_path / "gantry.db"
    seed = Store(path)
    for i in range(40):
        add(seed, f"j{i:02}")
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        s = Store(path, durable=False)
        while rows := s.claim_jobs(name, limit=3):
            with lock:
                got.extend(r["id"] for r in rows)
        s.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"j{i:02}" for i in range(40)]


def test_stale_claims_are_reclaimed(store):
    add(store, "j1")
    add(store, "j2")
    store.claim_jobs("w1", limit=2, lease=-1)  # already expired
    finish(store, "j2")
    store.claim_deliveries("pacs", "f1", lease=-1)
    assert store.reclaim() == 2  # one job, one delivery
    assert store.job("j1")["state"] == RECEIVED
    assert [c.job_id for c in store.claim_deliveries("pacs", "f2")] == ["j2"]
    assert store.claim_jobs("w2")[0]["attempts"] == 2


def test_reclaim_at_start_takes_live_leases_too(store):
    add(store, "j1")
    store.claim_jobs("w1", lease=3600)
    assert store.reclaim() == 0
    assert store.reclaim(everything=True) == 1
    assert store.job("j1")["attempts"] == 0  # a restart does not count against the object


def test_reclaim_the_claims_of_a_dead_process(store):
    add(store, "j1")
    add(store, "j2")
    store.claim_jobs("worker-101-aa", lease=3600)
    store.claim_jobs("worker-102-bb", lease=3600)
    assert store.reclaim(owner="worker-101-", culprit="j1") == 1
    assert store.job("j1")["state"] == RECEIVED and store.job("j1")["attempts"] == 1
    assert store.job("j2")["state"] == PROCESSING


def test_a_dead_worker_counts_against_the_job_it_was_on_only(store):
    """A worker claims two jobs and dies on the second: the first, untouched, owes nothing."""
    add(store, "valid")
    add(store, "poison")
    store.claim_jobs("worker-101-aa", limit=2, lease=3600)
    assert store.reclaim(owner="worker-101-", culprit="poison") == 2
    assert store.job("valid")["attempts"] == 0
    assert store.job("poison")["attempts"] == 1
    store.claim_jobs("worker-102-bb", limit=2, lease=3600)  # died between the two
    assert store.reclaim(owner="worker-102-") == 2
    assert (store.job("valid")["attempts"], store.job("poison")["attempts"]) == (0, 1)


def test_a_deferred_job_is_queued_again_without_counting_the_attempt(store):
    add(store, "j1")
    store.claim_jobs("w1")
    store.defer("j1", "No space left on device")
    row = store.job("j1")
    assert (row["state"], row["attempts"], row["lease_owner"]) == (RECEIVED, 0, None)
    assert store.events("j1")[-1]["detail"] == "deferred: No space left on device"


def test_fan_out_delivered_only_when_every_destination_is(store):
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1", dests=("pacs", "other"))
    store.claim_deliveries("pacs", "f")
    assert store.delivered("j1", "pacs", 0) is None
    assert store.job("j1")["state"] == FORWARDING
    store.claim_deliveries("other", "f")
    assert store.delivered("j1", "other", 0xB000) == DELIVERED
    assert store.job("j1")["state"] == DELIVERED
    assert {d["destination"]: d["status"] for d in store.deliveries("j1")} == {
        "pacs": 0, "other": 0xB000}


def test_retry_waits_for_its_backoff(store):
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1")
    store.claim_deliveries("pacs", "f")
    store.retry_later("j1", "pacs", delay=3600, error="connection failed: ConnectionRefused")
    assert store.claim_deliveries("pacs", "f") == []
    status = store.destination_status()[0]
    assert status["backlog"] == 1 and status["last_error"].startswith("connection failed")


def test_permanent_refusal_quarantines_with_the_status(store):
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1")
    store.claim_deliveries("pacs", "f")
    assert store.delivery_failed("j1", "pacs", status=0xA900,
                                 reason="pacs answered status 0xA900") == QUARANTINED
    row = store.job("j1")
    assert row["state"] == QUARANTINED and row["reason"] == "pacs answered status 0xA900"
    store.release("j1")
    assert store.job("j1")["state"] == RECEIVED and store.deliveries("j1") == []


def test_a_refusal_waits_for_the_other_destinations_then_quarantines(store):
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1", dests=("other", "pacs"))
    store.claim_deliveries("pacs", "f")
    assert store.delivery_failed("j1", "pacs", status=0xA900,
                                 reason="pacs answered status 0xA900") is None
    assert store.job("j1")["state"] == FORWARDING  # "other" may still get it
    assert [d["backlog"] for d in store.destination_status()] == [1, 0]
    (claim,) = store.claim_deliveries("other", "f")
    assert store.delivered("j1", "other", 0) == QUARANTINED
    row = store.job("j1")
    assert row["state"] == QUARANTINED and row["reason"] == "pacs answered status 0xA900"
    assert [d["backlog"] for d in store.destination_status()] == [0, 0]


def test_status_counts_no_backlog_for_a_job_no_longer_forwarding(store):
    # A database from before the fix above: a job quarantined by one destination's refusal,
    # its other delivery left pending, which no outbox would ever send.
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1", dests=("other", "pacs"))
    store.conn.execute("UPDATE jobs SET state = ? WHERE id = 'j1'", (QUARANTINED,))
    assert store.claim_deliveries("other", "f") == []
    status = {d["destination"]: d for d in store.destination_status()}
    assert status["other"]["backlog"] == 0 and status["other"]["oldest_pending_s"] is None


def test_audit_row_per_object_without_identifiers(store):
    add(store, "j1")
    store.claim_jobs("w")
    finish(store, "j1")
    store.claim_deliveries("pacs", "f")
    store.delivered("j1", "pacs", 0)
    (row,) = store.audit()
    assert row["outcome"] == DELIVERED and row["original_sop_hash"] == "ABCDEF"
    assert row["new_sop_uid"] == "2.25.3" and json.loads(row["counts"]) == {"X": 3}
    assert json.loads(row["destinations"])["pacs"]["status"] == 0
    dump = "\n".join(store.conn.iterdump())
    assert ORIGINAL_UID not in dump


def test_state_dir_sweep_removes_orphans(tmp_path, store):
    state = StateDir(tmp_path / "state")
    add(store, "kept")
    (state.spool / "kept.dcm").write_bytes(b"x")
    (state.spool / "orphan.dcm").write_bytes(b"x")  # crash before the job was committed
    (state.out / "kept.dcm").write_bytes(b"x")      # job not forwarding: stale output
    assert state.sweep(store) == 2
    assert [p.name for p in state.spool.iterdir()] == ["kept.dcm"]



def test_only_the_connections_asked_to_skip_checkpoints_do(tmp_path):
    # as the receiver opens its connection (gateway/net/receiver.py)
    receiver = Store(tmp_path / "gantry.db", durable=False, checkpoints=False, lock_poll=0.0002)
    worker = Store(tmp_path / "gantry.db", durable=False)
    assert receiver.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert worker.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0
    assert Store(tmp_path / "gantry.db").conn.execute(  # durable says nothing of checkpoints
        "PRAGMA wal_autocheckpoint").fetchone()[0] > 0
    for i in range(300):
        add(receiver, f"job{i}")
    node = Store(tmp_path / "gantry.db", checkpoints=False)  # the node runs them itself
    assert node.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    node.checkpoint()  # runs beside the receiver's connection (the WAL itself is SQLite's)
    assert node.counts() == {RECEIVED: 300}
    for s in (node, worker, receiver):
        s.close()


def test_idle_poll_doubles_to_its_cap_and_restarts_after_work() -> None:
    from gateway.store import IdlePoll

    poll = IdlePoll(first=0.02, longest=0.25)
    assert [poll.wait_time() for _ in range(6)] == [0.02, 0.04, 0.08, 0.16, 0.25, 0.25]
    poll.found_work()
    assert poll.wait_time() == 0.02


def test_prune_forgets_only_what_finished_before_the_cutoff(store):
    now = time.time()
    for job in ("old", "recent", "purged", "held", "stuck"):
        add(store, job)
    store.claim_jobs("w", limit=5)
    for job in ("old", "recent", "stuck"):
        finish(store, job)
    store.claim_deliveries("pacs", "f", limit=3)
    for job in ("old", "recent"):
        store.delivered(job, "pacs", 0)
    for job in ("purged", "held"):
        store.quarantine(job, "no route", machine={"signature": "CT|X", "refused": 0})
    store.purge("purged")
    store.conn.execute("UPDATE jobs SET updated_at = ?, received_at = ? WHERE id != 'recent'",
                       (now - 10 * 86400, now - 10 * 86400))
    assert store.prune(now - 5 * 86400, batch=1) == 2  # batches of one: the loop ends
    assert {r["id"]: r["state"] for r in store.conn.execute("SELECT id, state FROM jobs")} == {
        "recent": DELIVERED, "held": QUARANTINED, "stuck": "forwarding"}
    for table in ("events", "deliveries", "machines"):
        left = {r[0] for r in store.conn.execute(f"SELECT DISTINCT job_id FROM {table}")}
        assert not left & {"old", "purged"}, table
    assert len(store.events("held")) == 3 and len(store.deliveries("stuck")) == 1
    assert [m["job_id"] for m in store.machines()] == ["held"]
    assert store.prune(now - 5 * 86400) == 0


def test_gantry_prune_names_its_cutoff_and_refuses_a_negative_age(tmp_path):
    from gateway.cli import main

    config = tmp_path / "gantry.yaml"
    config.write_text(f"site_key: {{env: UNUSED}}\nstate_dir: {tmp_path / 'state'}\n")
    s = Store(StateDir(tmp_path / "state").db)
    add(s, "j1")
    s.claim_jobs("w")
    finish(s, "j1", dests=())
    s.close()
    for age in ("-1", "a week", "nan"):
        with pytest.raises(SystemExit) as refused:
            main(["prune", "--config", str(config), "--older-than", age])
        assert refused.value.code == 2
    assert main(["prune", "--config", str(config), "--older-than", "0"]) == 0
    s = Store(StateDir(tmp_path / "state").db)
    assert s.counts() == {}
    s.close()
