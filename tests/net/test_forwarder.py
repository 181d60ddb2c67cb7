"""Outboxes against real peers: dcmtk storescp and the stand-in PACS (pynetdicom) answering
chosen statuses; a destination that is down and comes back; transcoding when refused."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
from nethelpers import DCMTK_ENV, free_port, need, queue, states, wait_for
from pydicom import dcmread
from pydicom.data import get_testdata_file

from gateway.demo import StandInPacs
from gateway.net.forwarder import backoff, is_transient
from gateway.store import DELIVERED, FORWARDING, QUARANTINED


def test_delivers_to_storescp_over_held_associations(outboxes, storescp):
    state, store, start = outboxes
    scp = storescp()
    files = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm",
                                                  "rtplan.dcm")] * 1
    ids = queue(state, store, files)
    start(scp.port, associations=2)
    assert wait_for(lambda: states(store, ids) == {DELIVERED})
    assert len(scp.files()) == 3
    assert not any(state.spool.iterdir()) and not any(state.out.iterdir())  # cleaned up


def test_a_held_association_gone_idle_sends_again(outboxes, storescp, monkeypatch):
    monkeypatch.setattr("gateway.net.reactor_pause.IDLE_AFTER", 0.2)
    state, store, start = outboxes
    scp = storescp()
    first = queue(state, store, [Path(get_testdata_file("CT_small.dcm"))])
    start(scp.port)  # one association, held for 10 s after its last object
    assert wait_for(lambda: states(store, first) == {DELIVERED})
    time.sleep(0.6)  # idle: its reactor and DUL poll slowly now
    later = queue(state, store, [Path(get_testdata_file("MR_small.dcm"))], first=1)
    assert wait_for(lambda: states(store, later) == {DELIVERED})
    assert len(scp.files()) == 2


def test_refused_transfer_syntax_is_transcoded(outboxes, storescp):
    state, store, start = outboxes
    scp = storescp()  # storescp accepts uncompressed syntaxes only, by default
    src = Path(get_testdata_file("JPEG2000.dcm"))
    ids = queue(state, store, [src])
    start(scp.port)
    assert wait_for(lambda: states(store, ids) == {DELIVERED})
    (got,) = scp.files()
    received = dcmread(got)
    assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(received.pixel_array, dcmread(src).pixel_array)
    assert received.SOPInstanceUID == dcmread(src).SOPInstanceUID  # no UID made up


def test_an_object_that_cannot_be_decompressed_for_the_peer_is_quarantined(outboxes, storescp,
                                                                         tmp_path):
    state, store, start = outboxes
    scp = storescp()  # uncompressed only: an MPEG-4 video has to be decompressed, and cannot
    video = dcmread(get_testdata_file("JPEG-LL.dcm"))
    video.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264
    src = tmp_path / "video.dcm"
    video.save_as(src)
    ids = queue(state, store, [src])
    start(scp.port)
    assert wait_for(lambda: states(store, ids) == {QUARANTINED})
    assert store.job(ids[0])["reason"] == (
        "pacs does not accept this transfer syntax and the object cannot be decompressed: "
        "NotImplementedError")
    assert not scp.files()


def test_failure_status_quarantines_with_that_status(outboxes, tmp_path):
    state, store, start = outboxes
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", status=0xA900).start()
    try:
        ids = queue(state, store, [Path(get_testdata_file("CT_small.dcm"))])
        start(pacs.port)
        assert wait_for(lambda: states(store, ids) == {QUARANTINED})
        assert store.job(ids[0])["reason"] == "pacs answered status 0xA900"
        # The state is committed first, then the original moves to the quarantine folder.
        assert wait_for(lambda: state.original(ids[0]) == state.quarantined(ids[0]))
    finally:
        pacs.stop()


def test_transient_status_is_retried_then_quarantined(outboxes, tmp_path):
    state, store, start = outboxes
    port = free_port()
    ids = queue(state, store, [Path(get_testdata_file("CT_small.dcm"))])
    start(port, max_retries=3)  # first down: connection failures do not use up the retries
    assert wait_for(lambda: store.deliveries(ids[0])[0]["attempts"] >= 5)
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", port=port, status=0xA700).start()
    try:
        assert wait_for(lambda: states(store, ids) == {QUARANTINED})
        # max_retries counts retries: one attempt and three more
        assert store.job(ids[0])["reason"] == (
            "pacs answered status 0xA700 (4 attempts, max_retries 3)")
        assert store.deliveries(ids[0])[0]["refusals"] == 3
    finally:
        pacs.stop()


def test_warning_counts_as_delivered_and_is_recorded(outboxes, tmp_path):
    state, store, start = outboxes
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", status=0xB000).start()
    try:
        ids = queue(state, store, [Path(get_testdata_file("CT_small.dcm"))])
        start(pacs.port)
        assert wait_for(lambda: states(store, ids) == {DELIVERED})
        assert store.deliveries(ids[0])[0]["status"] == 0xB000
    finally:
        pacs.stop()


def test_destination_down_then_back_loses_nothing(outboxes, tmp_path):
    state, store, start = outboxes
    port = free_port()
    files = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    ids = queue(state, store, files * 3)
    start(port)
    assert wait_for(lambda: all(d["attempts"] >= 2 for j in ids for d in store.deliveries(j)))
    assert states(store, ids) == {FORWARDING}
    # The error names the host, the port and the cause (not pynetdicom's "no association").
    assert store.destination_status()[0]["last_error"] == (
        f"connection failed: 127.0.0.1:{port}: Connection refused")
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", port=port).start()
    try:
        assert wait_for(lambda: states(store, ids) == {DELIVERED})
        assert pacs.received == 6
    finally:
        pacs.stop()


def test_a_rejected_association_is_retried_and_its_reason_reported(outboxes, tmp_path):
    state, store, start = outboxes
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS")
    pacs.ae.require_calling_aet = ["SOMEONE_ELSE"]  # Gantry calls as GANTRY
    pacs.start()
    try:
        ids = queue(state, store, [Path(get_testdata_file("CT_small.dcm"))])
        start(pacs.port)
        assert wait_for(lambda: store.destination_status()[0]["last_error"])
        assert store.destination_status()[0]["last_error"] == (
            "association rejected (Rejected Permanent, Service User): "
            "Calling AE title not recognised")
        assert states(store, ids) == {FORWARDING}  # waits for the configuration to be fixed
    finally:
        pacs.stop()


def test_backoff_grows_is_capped_and_jittered():
    import random

    rng = random.Random(1)
    delays = [backoff(n, 1.0, 60.0, rng) for n in range(10)]
    assert delays[0] <= 1.0 and 4.0 <= delays[3] <= 8.0 and all(d <= 60 for d in delays)
    assert len({round(backoff(5, 1.0, 1e9, rng), 6) for _ in range(5)}) > 1
    assert is_transient(0xA700) and is_transient(0xA7FF) and not is_transient(0xA900)


def _public(ds) -> dict:
    """Every public element of a dataset but the pixel data, group lengths and trailing
    padding (storescp drops it when it writes a file), as values."""
    return {e.tag: e.value for e in ds if not e.tag.is_private and e.tag.element != 0
            and e.tag not in (0x7FE00010, 0xFFFCFFFC)}


def test_an_implicit_only_pacs_gets_every_syntax_truly_re_encoded(outboxes, storescp, tmp_path):
    state, store, start = outboxes
    scp = storescp(implicit_only=True)  # dcmtk storescp +xi
    names = ("CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
             "SC_rgb_rle.dcm")
    sources = [Path(get_testdata_file(n)) for n in names]
    # A big-endian value of unknown structure cannot be byte-swapped: refused, never relabelled.
    odd = dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    odd.add_new(0x00091001, "UN", b"\x01\x02\x03\x04")
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = "2.25.1234"
    odd.save_as(tmp_path / "odd.dcm")
    ids = queue(state, store, [*sources, tmp_path / "odd.dcm"])
    start(scp.port)
    assert wait_for(lambda: states(store, ids) == {DELIVERED, QUARANTINED}
                    and store.job(ids[-1])["state"] == QUARANTINED
                    and len(scp.files()) == len(sources))
    assert states(store, ids[:-1]) == {DELIVERED}
    assert store.job(ids[-1])["reason"] == (
        "pacs does not accept this transfer syntax and the object cannot be re-encoded: "
        "big-endian element (0009,1001) has VR UN and cannot be byte-swapped")
    received = {str(r.SOPInstanceUID): (f, r) for f in scp.files() for r in [dcmread(f)]}
    for src in sources:
        original = dcmread(src)
        got, ds = received[str(original.SOPInstanceUID)]  # the object kept its identity
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        assert ds.original_encoding == (True, True), src.name  # the bytes are implicit LE
        assert np.array_equal(ds.pixel_array, original.pixel_array), src.name
        assert _public(ds) == _public(original), src.name
        dump = subprocess.run([need("dcmdump"), "-q", str(got)], capture_output=True,
                              text=True, env=DCMTK_ENV)
        assert dump.returncode == 0 and not dump.stderr, (src.name, dump.stderr)
