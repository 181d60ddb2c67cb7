"""Fuzz through the gateway: 200 mutated objects (fixed seeds) interleaved with 40 valid ones,
sent by a pynetdicom modality as the files' raw bytes, to `gantry serve` forwarding to dcmtk
storescp. Every valid object is delivered; every mutated one is refused at the door, delivered
as an object pydicom and dcmtk read back whole, or quarantined with a reason that names its
problem; no worker dies; nothing is left receiving, processing or forwarding, and `gantry
status` shows no backlog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fuzzing
from fuzzing import read_back, reason_problems
from nethelpers import wait_for, write_config
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE

from gateway.config import load_config
from gateway.net.receiver import sop_hash
from gateway.sitekey import load_site_key
from gateway.store import DELIVERED, QUARANTINED

COUNT, EVERY_VALID = 240, 6  # object i is valid when i % EVERY_VALID == 0
SUCCESS, CANNOT_UNDERSTAND = 0x0000, 0xC210


def send_raw(port: int, paths: list[Path]) -> dict[Path, int]:
    """C-STORE each file's bytes as they are, on one association (a new one if the node ends
    it); the status of each."""
    ae = AE(ae_title="FUZZER")
    for syntax in {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID))
                   for m in map(read_file_meta_info, paths)}:
        ae.add_requested_context(*syntax)
    statuses: dict[Path, int] = {}
    assoc = None
    for path in paths:
        if assoc is None or not assoc.is_established:
            assoc = ae.associate("127.0.0.1", port, ae_title="GANTRY")
            assert assoc.is_established
        rsp = assoc.send_c_store(path)  # a path is sent as its bytes (gateway.net's setting)
        statuses[path] = int(rsp.Status) if "Status" in rsp else -1
    assoc.release()
    return statuses


def test_fuzzed_objects_through_the_gateway(tmp_path, storescp, gateway):
    bases = fuzzing.load_bases(tmp_path / "bases")
    kinds = fuzzing.write_corpus(tmp_path / "in", COUNT, EVERY_VALID, 29_000, bases)
    assert sum(k != "valid" for k in kinds.values()) >= 200

    scp = storescp(accept_all=True)
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    log = tmp_path / "log.jsonl"
    gw = gateway(config, log)
    statuses = send_raw(gw.port, list(kinds))
    assert {p: s for p, s in statuses.items() if kinds[p] == "valid" and s != SUCCESS} == {}
    assert {p: s for p, s in statuses.items() if s not in (SUCCESS, CANNOT_UNDERSTAND)} == {}
    accepted = [p for p, s in statuses.items() if s == SUCCESS]

    store = gw.store()
    settled = (DELIVERED, QUARANTINED)
    assert wait_for(lambda: sum(n for s, n in store.counts().items() if s in settled)
                    >= len(accepted), 300), store.counts()
    assert set(store.counts()) <= set(settled)  # nothing receiving, processing, forwarding
    key = load_site_key(load_config(str(config)))
    jobs = {r["sop_hash"]: r for r in store.conn.execute("SELECT * FROM jobs")}
    outcome = {p: jobs[sop_hash(key, fuzzing.uid(int(p.name[:5])))] for p in accepted}
    store.close()

    assert {p.name: r["state"] for p, r in outcome.items()
            if kinds[p] == "valid" and r["state"] != DELIVERED} == {}
    reasons = {p.name: r["reason"] for p, r in outcome.items() if r["state"] == QUARANTINED}
    assert {n: r for n, r in reasons.items() if reason_problems(r)} == {}
    assert all("nested" in reasons.get(p.name, "") for p in accepted if kinds[p] == "nest")
    assert all(p.name in reasons for p in accepted if kinds[p] == "huge")

    delivered = sum(r["state"] == DELIVERED for r in outcome.values())
    assert wait_for(lambda: len(scp.files()) >= delivered, 60)
    assert read_back(scp.files()) == []
    assert "child.died" not in log.read_text()

    run = subprocess.run([sys.executable, "-m", "gateway.cli", "status", "--config",
                          str(config), "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(run.stdout)
    assert report["pending"] == 0
    assert [d["backlog"] for d in report["destinations"]] == [0]
    assert gw.stop() == 0
