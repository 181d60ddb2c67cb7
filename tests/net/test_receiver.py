"""The C-STORE SCP against dcmtk storescu/echoscu and pynetdicom: spool + job before Success,
callers checked at association, Out of Resources on disk/database failure, bad bytes refused."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from nethelpers import DCMTK_ENV, data_store_files, need, storescu, wait_for
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind, Verification

from gateway import store as store_module
from gateway.config import parse_config
from gateway.net.receiver import Receiver
from gateway.statedir import StateDir
from gateway.store import RECEIVED, Store


@pytest.fixture
def receiver(tmp_path):
    started: list[Receiver] = []

    def start(allowed=()) -> tuple[Receiver, StateDir]:
        cfg = parse_config({"network": {"ae_title": "GANTRY", "host": "127.0.0.1", "port": 0,
                                        "allowed_callers": list(allowed)}}, "<test>")
        state = StateDir(tmp_path / "state")
        rx = Receiver(cfg, b"k" * 32, state.db, state.spool)
        rx.start()
        started.append(rx)
        return rx, state

    yield start
    for rx in started:
        rx.stop_accepting()
        rx.abort_all()
        rx.close()


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set after the File Meta Information."""
    raw = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    assert ds.file_meta  # a DICOM file with File Meta Information
    meta_len = int.from_bytes(raw[140:144], "little")  # (0002,0000) group length value
    return raw[144 + meta_len:]


def test_spools_as_received_and_commits_a_job(receiver):
    rx, state = receiver()
    files = [Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))]
    files += [p for p in data_store_files() if p.name in ("emri_small_jpeg_2k_lossless.dcm",
                                                          "emri_small_RLE.dcm",
                                                          "emri_small_big_endian.dcm")]
    run = storescu(rx.port, files)
    assert run.returncode == 0, run.stderr
    store = Store(state.db)
    rows = store.conn.execute("SELECT * FROM jobs").fetchall()
    assert len(rows) == len(files) and {r["state"] for r in rows} == {RECEIVED}
    spooled = {(dcmread(state.spooled(r["id"])).SOPInstanceUID, r["transfer_syntax"]):
               state.spooled(r["id"]) for r in rows}
    for src in files:
        original = dcmread(src)
        got = dcmread(spooled[original.SOPInstanceUID,
                              str(original.file_meta.TransferSyntaxUID)])
        assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert got.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert got.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert got.file_meta.SourceApplicationEntityTitle == "MODALITY"
        assert got.SOPInstanceUID == original.SOPInstanceUID
        assert got.PixelData == original.PixelData
    for path in spooled.values():  # dcmtk reads the File Meta Information the receiver wrote
        dump = subprocess.run([need("dcmdump"), "-M", "+P", "0002,0010", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0 and "TransferSyntaxUID" in dump.stdout, dump.stderr
    assert all(r["calling_ae"] == "MODALITY" and len(r["sop_hash"]) == 32 for r in rows)


def test_data_set_bytes_are_kept_exactly_as_sent(receiver):
    rx, state = receiver()
    src = next(p for p in data_store_files() if p.name == "emri_small_jpeg_2k_lossless.dcm")
    assert send_raw(rx.port, src) == 0x0000
    (spooled,) = state.spool.iterdir()
    assert dataset_bytes(spooled) == dataset_bytes(src)


def test_echo(receiver):
    rx, _ = receiver()
    run = subprocess.run([need("echoscu"), "-aec", "GANTRY", "127.0.0.1", str(rx.port)],
                         env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_unknown_caller_is_rejected_with_the_standard_reason(receiver):
    rx, state = receiver(allowed=[{"ae_title": "MODALITY"},
                                  {"ae_title": "FIXED", "address": "10.9.9.9"}])
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert storescu(rx.port, [ct], calling="MODALITY").returncode == 0
    for calling in ("STRANGER", "FIXED"):  # unknown title; known title, wrong address
        run = storescu(rx.port, [ct], calling=calling)
        assert run.returncode != 0
        assert "Calling AE Title Not Recognized" in run.stderr
    assert Store(state.db).counts() == {RECEIVED: 1}


def send_raw(port: int, path: Path) -> int:
    """C-STORE a file's bytes exactly as they are (pynetdicom SCU); the response status."""
    meta = read_file_meta_info(path)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="GANTRY")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(path)  # a path is sent as its bytes (gateway.net's setting)
    finally:
        assoc.release()
    return int(rsp.Status)


CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # Siemens' private storage class, sent with MR studies
NEWER_STORAGE = "1.2.840.10008.5.1.4.1.1.999"  # a public storage class newer than pydicom
MPEG4_AVC = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264 High Profile


def with_sop_class(src: Path, uid: str, folder: Path) -> Path:
    ds = dcmread(src)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
    path = folder / f"{uid}.dcm"
    ds.save_as(path)
    return path


def test_storage_classes_pynetdicom_does_not_list_are_received(receiver, tmp_path):
    rx, state = receiver()
    ct = Path(get_testdata_file("CT_small.dcm"))
    for uid in (CSA_NON_IMAGE, NEWER_STORAGE):
        assert send_raw(rx.port, with_sop_class(ct, uid, tmp_path)) == 0x0000
    rows = Store(state.db).conn.execute("SELECT sop_class_uid FROM jobs").fetchall()
    assert sorted(r[0] for r in rows) == sorted([CSA_NON_IMAGE, NEWER_STORAGE])
    # A service that is not storage is still refused: only its presentation context.
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", rx.port, ae_title="GANTRY")
    try:
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
    finally:
        assoc.release()


def test_video_is_received_in_its_mpeg_syntax(receiver, tmp_path):
    rx, state = receiver()
    ds = dcmread(get_testdata_file("JPEG-LL.dcm"))  # encapsulated frames stand in for video
    ds.file_meta.TransferSyntaxUID = MPEG4_AVC
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    assert send_raw(rx.port, path) == 0x0000
    (row,) = Store(state.db).conn.execute("SELECT transfer_syntax FROM jobs").fetchall()
    assert row[0] == MPEG4_AVC


def test_an_association_held_idle_still_serves_echo_and_store(receiver, monkeypatch):
    monkeypatch.setattr("gateway.net.reactor_pause.IDLE_AFTER", 0.2)
    rx, state = receiver()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", rx.port, ae_title="GANTRY")
    try:
        time.sleep(0.5)  # idle: its reactor and DUL now poll slowly
        assert assoc.send_c_echo().Status == 0x0000
        time.sleep(0.5)
        rsp = assoc.send_c_store(dcmread(get_testdata_file("CT_small.dcm")))
        assert rsp.Status == 0x0000
    finally:
        assoc.release()
    assert Store(state.db).counts() == {RECEIVED: 1}


def test_disk_failure_answers_out_of_resources(receiver):
    rx, state = receiver()
    shutil.rmtree(state.spool)
    state.spool.write_text("not a directory")  # every spool write now fails (ENOTDIR)
    assert send_raw(rx.port, Path(get_testdata_file("CT_small.dcm"))) == 0xA700
    assert Store(state.db).counts() == {}


def test_a_store_after_close_answers_out_of_resources_and_leaves_no_file(receiver):
    """What a handler still running when the node stops gets: a refusal the sender retries."""
    rx, state = receiver()
    rx.close()  # fsync threads and database released; the listening socket is still open
    assert send_raw(rx.port, Path(get_testdata_file("CT_small.dcm"))) == 0xA700
    assert list(state.spool.iterdir()) == []
    assert Store(state.db).counts() == {}


def test_database_failure_answers_out_of_resources_and_leaves_no_file(receiver):
    rx, state = receiver()
    with Store(state.db).conn as conn:
        conn.execute("DROP VIEW audit")
        conn.execute("DROP TABLE jobs")
    assert send_raw(rx.port, Path(get_testdata_file("CT_small.dcm"))) == 0xA700
    assert list(state.spool.iterdir()) == []


def test_a_write_lock_held_by_a_worker_delays_the_commit_and_does_not_fail_it(receiver):
    """The receiver takes SQLite's write lock by its own short polls (not SQLite's 1, 2, 5 ms
    sleeps); while a worker's transaction holds the lock it waits, then commits and answers
    Success."""
    rx, state = receiver()
    worker = Store(state.db, durable=False)
    worker.conn.execute("BEGIN IMMEDIATE")  # a worker mid-transaction
    answered: list[int] = []
    sender = threading.Thread(target=lambda: answered.append(
        send_raw(rx.port, Path(get_testdata_file("CT_small.dcm")))))
    sender.start()
    assert wait_for(lambda: list(state.spool.iterdir()), 30)  # spooled, now committing
    time.sleep(0.3)
    assert answered == []  # no answer before its job is committed
    worker.conn.execute("COMMIT")
    sender.join(60)
    assert answered == [0x0000]
    assert Store(state.db).counts() == {RECEIVED: 1}
    worker.close()


def test_a_write_lock_held_past_the_busy_timeout_answers_out_of_resources(receiver,
                                                                       monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.5)
    rx, state = receiver()
    worker = Store(state.db, durable=False)
    worker.conn.execute("BEGIN IMMEDIATE")  # never let go
    try:
        assert send_raw(rx.port, Path(get_testdata_file("CT_small.dcm"))) == 0xA700
    finally:
        worker.conn.execute("ROLLBACK")
        worker.close()
    assert list(state.spool.iterdir()) == []
    assert Store(state.db).counts() == {}


def test_bytes_that_are_not_a_data_set_are_refused(receiver, tmp_path):
    rx, state = receiver()
    src = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    bad = tmp_path / "bad.dcm"
    with open(bad, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, src.file_meta)
        fh.write(b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + b"\x00" * 64)  # an item, not an element
    assert send_raw(rx.port, bad) == 0xC210
    assert Store(state.db).counts() == {}


def test_retired_storage_sop_classes_are_received(receiver):
    """Old machines still send retired classes (here Ultrasound Image Storage, retired)."""
    rx, state = receiver()
    files = [p for p in data_store_files() if p.name in ("color-pl.dcm", "color-px.dcm")]
    assert {str(read_file_meta_info(p).MediaStorageSOPClassUID) for p in files} == {
        "1.2.840.10008.5.1.4.1.1.6"}
    run = storescu(rx.port, files, extra=("--required",))  # propose the files' own class
    assert run.returncode == 0, run.stderr
    rows = Store(state.db).conn.execute("SELECT sop_class_uid FROM jobs").fetchall()
    assert [r["sop_class_uid"] for r in rows] == ["1.2.840.10008.5.1.4.1.1.6"] * 2


def test_the_demo_sender_gets_success_for_every_storable_sample(receiver):
    """`gantry demo` sends the bundled samples as a modality would: each file that is a
    storage object in an offered transfer syntax is answered Success (none lost on the way)."""
    from gateway.demo import sample_files, send_files

    rx, state = receiver()
    result = send_files(sample_files(), rx.port)
    skipped = {"not a storable DICOM file", "not a storage SOP class",
               "transfer syntax not offered"}
    failed = {p.name: r for p, r in result.items() if r != 0x0000 and r not in skipped}
    assert not failed
    sent = [p for p, r in result.items() if r == 0x0000]
    assert len(sent) > 100
    assert Store(state.db).conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(sent)
