"""The spool file is the durable record of a received object: the receiver does not wait for its
job's commit to reach the disk, so a power cut can lose the row but never the fsync'd file. At
the next start the node makes the job again from the file (and delivers the object); a file cut
short (the node died before it was on disk, so the sender was never answered) is never
processed, even one cut at an element boundary that still parses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nethelpers import (
    identifiers_in,
    make_objects,
    need,
    storescu,
    wait_for,
    write_config,
)
from pydicom import dcmread

from gateway.config import load_config
from gateway.net.receiver import Receiver
from gateway.sitekey import load_site_key
from gateway.statedir import StateDir
from gateway.store import DELIVERED, QUARANTINED, Store

FIELDS = ("calling_ae", "called_ae", "peer", "sop_hash", "sop_class_uid", "transfer_syntax",
          "size")


def receive(tmp_path: Path, config: Path, n: int) -> tuple[StateDir, list[dict], set[str]]:
    """`n` objects sent by storescu to the node's receiver alone (no workers: the jobs stay
    `received`); returns the state directory, the job rows and the original SOP UIDs."""
    cfg = load_config(str(config))
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, port=0))
    state = StateDir(tmp_path / "state")
    rx = Receiver(cfg, load_site_key(cfg), state.db, state.spool)
    rx.start()
    objs = make_objects(tmp_path / "in", n, studies=1)
    try:
        run = storescu(rx.port, [p for p, _ in objs], calling="CT_ROOM_4")
        assert run.returncode == 0, run.stderr
    finally:
        rx.stop_accepting()
        rx.close()
    store = Store(state.db)
    rows = [dict(r) for r in store.conn.execute("SELECT * FROM jobs ORDER BY received_at")]
    store.close()
    assert len(rows) == n
    return state, rows, {uid for _, uid in objs}


def lose_rows(state: StateDir, job_ids: list[str]) -> None:
    """What a power cut does to commits that never reached the disk: the rows are gone."""
    store = Store(state.db)
    with store.tx() as tx:
        for job in job_ids:
            tx.execute("DELETE FROM events WHERE job_id = ?", (job,))
            tx.execute("DELETE FROM jobs WHERE id = ?", (job,))
    store.close()


def test_a_spool_file_whose_job_was_lost_is_delivered_after_restart(tmp_path, storescp,
                                                                    gateway):
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    state, rows, uids = receive(tmp_path, config, 3)
    lost = [rows[0], rows[1]]
    lose_rows(state, [r["id"] for r in lost])
    # The second was quarantined (its original moved) and that commit was lost with the rest.
    state.quarantined(lost[1]["id"]).write_bytes(state.spooled(lost[1]["id"]).read_bytes())
    state.spooled(lost[1]["id"]).unlink()
    log = tmp_path / "gantry.log"
    store = gateway(config, log).store()
    try:
        assert wait_for(lambda: store.counts().get(DELIVERED) == 3, 120), store.counts()
        for row in lost:  # the job made again carries what the receiver recorded
            again = dict(store.job(row["id"]))
            assert {f: again[f] for f in FIELDS} == {f: row[f] for f in FIELDS}
            assert store.events(row["id"])[0]["detail"] == "recovered from its spool file"
    finally:
        store.close()
    assert wait_for(lambda: len(scp.files()) == 3)
    assert {dcmread(p).PatientIdentityRemoved for p in scp.files()} == {"YES"}
    text = log.read_text()
    recovered = [line for line in text.splitlines() if "service.recovered" in line]
    assert '"jobs_from_spool": 2' in recovered[0]
    assert not identifiers_in(text, uids)


def test_a_spool_file_cut_short_is_never_processed(tmp_path, storescp, gateway):
    need("storescu")
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    state, rows, uids = receive(tmp_path, config, 3)
    orphan, kept, whole = rows
    # Cut short with no job (the node died while writing it): swept, never made a job.
    path = state.spooled(orphan["id"])
    path.write_bytes(path.read_bytes()[:-1000])
    lose_rows(state, [orphan["id"]])
    # Cut short with its job (a power cut kept the commit, not the file's end), just before
    # the Pixel Data element: what is left still parses as a data set.
    path = state.spooled(kept["id"])
    raw = path.read_bytes()
    cut = raw.rfind(b"\xe0\x7f\x10\x00")
    assert cut > 0
    path.write_bytes(raw[:cut])
    assert "PixelData" not in dcmread(path) and dcmread(path).SOPInstanceUID in uids
    log = tmp_path / "gantry.log"
    store = gateway(config, log).store()
    try:
        assert wait_for(lambda: store.counts() == {DELIVERED: 1, QUARANTINED: 1}, 120), \
            store.counts()
        assert store.job(whole["id"])["state"] == DELIVERED
        assert store.job(orphan["id"]) is None
        assert "cut short" in store.job(kept["id"])["reason"]
    finally:
        store.close()
    assert not state.spooled(orphan["id"]).exists()
    assert not state.quarantined(orphan["id"]).exists()
    assert wait_for(lambda: len(scp.files()) == 1)
    text = log.read_text()
    assert '"files_swept": 1' in next(line for line in text.splitlines()
                                       if "service.recovered" in line)
    assert not identifiers_in(text, uids)
