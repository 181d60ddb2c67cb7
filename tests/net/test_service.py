"""The worker in-process with the real pipeline: routing, outbox, quarantine, poison objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from gateway.config import parse_config
from gateway.statedir import StateDir
from gateway.store import FORWARDING, QUARANTINED, Store
from gateway.worker import MAX_PROCESSING_ATTEMPTS, Worker

KEY = b"s" * 32


def setup(tmp_path: Path, routes: list[dict]) -> tuple[Worker, StateDir, Store]:
    cfg = parse_config({"destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                                  "port": 104}},
                        "routes": routes}, "<test>")
    state = StateDir(tmp_path / "state")
    return Worker(cfg, KEY, state), state, Store(state.db)


def spool(state: StateDir, store: Store, job: str, name: str = "CT_small.dcm") -> None:
    shutil.copy(get_testdata_file(name), state.spooled(job))
    store.add_job(job, calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1", sop_hash="H",
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="x", size=1)


def test_routed_object_lands_in_the_outbox_de_identified(tmp_path):
    worker, state, store = setup(tmp_path, [{"name": "ct", "tags": {"Modality": "CT"},
                                             "destinations": ["pacs"]}])
    spool(state, store, "j1")
    assert worker.run_once()
    row = store.job("j1")
    assert row["state"] == FORWARDING and row["route"] == "ct"
    out = dcmread(state.output("j1"))
    original = dcmread(get_testdata_file("CT_small.dcm"))
    assert out.SOPInstanceUID == row["new_sop_uid"] != original.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert [d["destination"] for d in store.deliveries("j1")] == ["pacs"]
    assert not worker.run_once()  # nothing left


def test_no_route_quarantines_and_keeps_the_original(tmp_path):
    worker, state, store = setup(tmp_path, [{"name": "mr", "tags": {"Modality": "MR"},
                                             "destinations": ["pacs"]}])
    spool(state, store, "j1")
    worker.run_once()
    assert store.job("j1")["state"] == QUARANTINED
    # The reason says what the routes were tried on, so the fix to the configuration is plain.
    assert store.job("j1")["reason"] == (
        "no route: modality CT, SOP class 1.2.840.10008.5.1.4.1.1.2, calling AE MOD, called AE "
        "GANTRY; no route matches and there is no default_route")
    assert state.original("j1") == state.quarantined("j1")
    assert not state.output("j1").exists()


def test_unreadable_original_is_quarantined_with_the_problem(tmp_path):
    worker, state, store = setup(tmp_path, [{"name": "all", "destinations": ["pacs"]}])
    spool(state, store, "j1")
    state.spooled("j1").write_bytes(b"\0" * 200)
    worker.run_once()
    assert store.job("j1")["reason"].startswith("unreadable:")


def test_an_object_that_keeps_killing_its_worker_is_quarantined(tmp_path):
    worker, state, store = setup(tmp_path, [{"name": "all", "destinations": ["pacs"]}])
    spool(state, store, "j1")
    for i in range(MAX_PROCESSING_ATTEMPTS):  # each time the worker "died" holding it
        store.claim_jobs(f"worker-{i}-x")
        store.reclaim(owner=f"worker-{i}-", culprit="j1")
    worker.run_once()
    row = store.job("j1")
    assert row["state"] == QUARANTINED
    assert row["reason"] == (f"its worker process died (or overran its lease) "
                             f"{MAX_PROCESSING_ATTEMPTS} times processing it")


def test_reasons_are_stored_with_quoted_values_blanked(tmp_path):
    _, state, store = setup(tmp_path, [{"name": "all", "destinations": ["pacs"]}])
    spool(state, store, "j1")
    store.claim_jobs("worker-1")
    store.quarantine("j1", "bad value 'DOE^JOHN' in (0010,0010)")
    assert store.job("j1")["reason"] == "bad value <value> in (0010,0010)"


def test_what_the_gateway_received_is_indexed_by_machine(tmp_path, capsys):
    """`gantry examine` without PATH lists the machines of what the gateway received, with the
    burned-in decision the pipeline took (an ultrasound with no rule is refused)."""
    import yaml

    from gateway.cli import main

    routes = [{"name": "all", "destinations": ["pacs"]}]
    worker, state, store = setup(tmp_path, routes)
    spool(state, store, "ct", "CT_small.dcm")
    spool(state, store, "us", "US1_J2KR.dcm")
    while worker.run_once():
        pass
    assert store.job("us")["state"] == QUARANTINED
    assert store.job("us")["reason"].startswith("burned-in text risk, no redaction rule for ")
    config = tmp_path / "gantry.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state.root), "routes": routes,
        "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}}))
    capsys.readouterr()  # the worker's log lines
    assert main(["examine", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    machines = {m["signature"]: m for m in report["machines"]}
    us = dcmread(get_testdata_file("US1_J2KR.dcm"), stop_before_pixels=True)
    ct = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert report["objects"] == 2
    assert machines[f"{us.Manufacturer} / {us.ManufacturerModelName}"]["refused"] == 1
    assert machines[f"{ct.Manufacturer} / {ct.ManufacturerModelName}"]["refused"] == 0
    assert ct.PatientName and str(ct.PatientName) not in str(report)
