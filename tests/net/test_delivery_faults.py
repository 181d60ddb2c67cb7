"""Delivery under faults, with real peers: a fan-out where one destination refuses (the other
still gets the object, nothing is left pending), and destinations that abort the association or
never answer for an object (bounded by max_retries, then quarantined with the reason)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from nethelpers import make_objects, queue, states, storescu, wait_for, write_config
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, AllStoragePresentationContexts, evt

from gateway.demo import StandInPacs
from gateway.store import DELIVERED, FAILED, FORWARDING, QUARANTINED, SENT

CT = Path(get_testdata_file("CT_small.dcm"))


class FaultyPeer:
    """A pynetdicom storage SCP that, for every C-STORE, aborts the association or answers
    nothing for `sleep` seconds; it counts the C-STOREs it got."""

    def __init__(self, *, abort: bool = False, sleep: float = 0.0) -> None:
        self.abort, self.sleep, self.stores = abort, sleep, 0
        self.ae = AE(ae_title="PACS")
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self.server.server_address[1]

    def _on_store(self, event) -> int:
        self.stores += 1
        if self.abort:
            event.assoc.abort()
        time.sleep(self.sleep)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def test_one_destination_refusing_does_not_hold_back_the_other(outboxes, storescp, tmp_path):
    state, store, start = outboxes
    scp = storescp()
    refuser = StandInPacs(tmp_path / "refuser", ae_title="PACS", status=0xA900).start()
    try:
        (job,) = queue(state, store, [CT], dests=("pacs", "refuser"))
        start(refuser.port, name="refuser")
        assert wait_for(lambda: store.deliveries(job)[1]["state"] == FAILED)
        # The other destination has yet to get it: the job and its outbox file wait for it.
        assert store.job(job)["state"] == FORWARDING and state.output(job).exists()
        start(scp.port, name="pacs")
        assert wait_for(lambda: store.job(job)["state"] == QUARANTINED)
        assert [(d["destination"], d["state"]) for d in store.deliveries(job)] == [
            ("pacs", SENT), ("refuser", FAILED)]
        assert store.job(job)["reason"] == "refuser answered status 0xA900"
        assert len(scp.files()) == 1
        assert wait_for(lambda: state.original(job) == state.quarantined(job))
        assert not state.output(job).exists()
        assert [d["backlog"] for d in store.destination_status()] == [0, 0]
    finally:
        refuser.stop()


def test_a_refusal_after_the_other_destination_delivered_quarantines(outboxes, storescp,
                                                                      tmp_path):
    state, store, start = outboxes
    scp = storescp()
    refuser = StandInPacs(tmp_path / "refuser", ae_title="PACS", status=0xA900).start()
    try:
        (job,) = queue(state, store, [CT], dests=("pacs", "refuser"))
        start(scp.port, name="pacs")
        assert wait_for(lambda: store.deliveries(job)[0]["state"] == SENT)
        assert store.job(job)["state"] == FORWARDING
        start(refuser.port, name="refuser")
        assert wait_for(lambda: store.job(job)["state"] == QUARANTINED)
        assert store.job(job)["reason"] == "refuser answered status 0xA900"
        assert wait_for(lambda: state.original(job) == state.quarantined(job))
    finally:
        refuser.stop()


def test_a_destination_that_aborts_on_an_object_uses_up_its_retries(outboxes):
    state, store, start = outboxes
    peer = FaultyPeer(abort=True)
    try:
        ids = queue(state, store, [CT])
        start(peer.port, name="pacs", max_retries=2)  # one attempt and two retries
        assert wait_for(lambda: states(store, ids) == {QUARANTINED})
        assert store.job(ids[0])["reason"] == (
            "pacs aborted the association during the C-STORE (3 attempts, max_retries 2)")
        assert peer.stores == 3
        assert store.destination_status()[0]["backlog"] == 0
    finally:
        peer.stop()


def test_a_destination_that_never_answers_uses_up_its_retries(outboxes):
    state, store, start = outboxes
    peer = FaultyPeer(sleep=3.0)
    try:
        ids = queue(state, store, [CT])
        start(peer.port, name="pacs", max_retries=1, dimse_timeout=0.5)
        assert wait_for(lambda: states(store, ids) == {QUARANTINED})
        assert store.job(ids[0])["reason"] == (
            "pacs did not answer the C-STORE within 0.5 s (2 attempts, max_retries 1)")
        assert peer.stores == 2
    finally:
        peer.stop()


def test_max_retries_zero_means_one_attempt(outboxes, tmp_path):
    state, store, start = outboxes
    busy = StandInPacs(tmp_path / "busy", ae_title="PACS", status=0xA700).start()
    try:
        ids = queue(state, store, [CT])
        start(busy.port, name="pacs", max_retries=0)
        assert wait_for(lambda: states(store, ids) == {QUARANTINED})
        assert store.job(ids[0])["reason"] == (
            "pacs answered status 0xA700 (1 attempt, max_retries 0)")
        assert store.deliveries(ids[0])[0]["attempts"] == 1
    finally:
        busy.stop()



def test_gateway_status_shows_no_backlog_after_refusals_and_aborts(tmp_path, gateway, storescp):
    """Through `gantry serve`: a fan-out to a PACS that takes the objects, one that refuses
    them and one that aborts on each; every object reaches the first, is quarantined with both
    reasons, and `gantry status` shows nothing left to drain."""
    objs = make_objects(tmp_path / "in", 3)
    scp = storescp()
    refusing = StandInPacs(tmp_path / "refusing", ae_title="PACS", status=0xA900).start()
    aborting = FaultyPeer(abort=True)
    try:
        config = write_config(tmp_path, {"good": ("PACS", scp.port),
                                         "refusing": ("PACS", refusing.port),
                                         "aborting": ("PACS", aborting.port)})
        gw = gateway(config, tmp_path / "log.jsonl")
        assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
        store = gw.store()
        try:
            assert wait_for(lambda: store.counts() == {QUARANTINED: 3}, timeout=120)
            assert {r["reason"] for r in store.quarantined()} == {
                "aborting aborted the association during the C-STORE (4 attempts, "
                "max_retries 3); refusing answered status 0xA900"}
        finally:
            store.close()
        assert len(scp.files()) == 3 and aborting.stores == 12
        status = subprocess.run([sys.executable, "-m", "gateway.cli", "status", "--json",
                                 "--config", str(config)], capture_output=True, text=True,
                                timeout=60, check=True)
        report = json.loads(status.stdout)
        assert report["pending"] == 0
        assert {d["destination"]: (d["backlog"], d["delivered"], d["failed"])
                for d in report["destinations"]} == {
            "aborting": (0, 0, 3), "good": (0, 3, 0), "refusing": (0, 0, 3)}
    finally:
        refusing.stop()
        aborting.stop()


def test_gateway_forwards_every_syntax_to_an_implicit_only_pacs(tmp_path, gateway, storescp):
    """Through `gantry serve` to dcmtk storescp +xi: objects received explicit, JPEG 2000
    lossless and big endian arrive as Implicit VR Little Endian bytes, pixels intact."""
    sources = [make_objects(tmp_path / "ct", 1)[0][0],
               Path(get_testdata_file("MR_small_jp2klossless.dcm")),
               Path(get_testdata_file("MR_small_bigendian.dcm"))]
    scp = storescp(implicit_only=True)
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    gw = gateway(config, tmp_path / "log.jsonl")
    assert storescu(gw.port, sources).returncode == 0
    store = gw.store()
    try:
        assert wait_for(lambda: store.counts() == {DELIVERED: 3}, timeout=120)
    finally:
        store.close()
    received = [dcmread(f) for f in scp.files()]
    assert [r.file_meta.TransferSyntaxUID for r in received] == ["1.2.840.10008.1.2"] * 3
    assert all(r.original_encoding == (True, True) for r in received)
    for src in sources:  # the pixel values, whatever their byte order was
        pixels = dcmread(src).pixel_array
        assert any(np.array_equal(r.pixel_array, pixels) for r in received), src.name
