"""Faults in the node itself (issue 17): a log sink that dies, a worker that dies, a full disk,
malformed objects claimed beside valid ones. `gantry serve` runs as a subprocess between real
senders (dcmtk storescu, a pynetdicom sender of raw file bytes) and dcmtk storescp."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from nethelpers import make_objects, storescu, wait_for, wait_port, write_config
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit

from gateway.config import load_config, parse_config
from gateway.dicomio import temp_name
from gateway.service import Service
from gateway.sitekey import load_site_key
from gateway.statedir import StateDir
from gateway.store import DELIVERED, FORWARDING, QUARANTINED, Store
from gateway.worker import Worker


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "gantry.db", durable=False)


def _settled(store: Store, n: int) -> bool:
    counts = store.counts()
    return counts.get(DELIVERED, 0) + counts.get(QUARANTINED, 0) >= n


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_dead_log_sink_stops_neither_receiving_nor_stopping(tmp_path, storescp, signum):
    """`gantry serve … 2>&1 | head -3`: once the reader of its log has gone, the node still
    answers Success, de-identifies, forwards, and stops on a signal, losing nothing."""
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    env = {k: v for k, v in os.environ.items() if k != "GANTRY_LOG_FILE"}  # logs on stderr
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                             str(config)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(3):  # `head -3`: read three lines, then go away
            assert proc.stderr.readline()
        proc.stderr.close()
        port = int(yaml.safe_load(config.read_text())["network"]["port"])
        wait_port(port)
        files = [p for p, _ in make_objects(tmp_path / "in", 6)]
        run = storescu(port, files)
        assert run.returncode == 0, run.stderr  # every object answered Success
        store = _store(tmp_path)
        assert wait_for(lambda: _settled(store, len(files)), 120)
        assert store.counts() == {DELIVERED: len(files)}
        assert len(scp.files()) == len(files)
        proc.send_signal(signum)
        assert proc.wait(60) == 0
        assert store.pending_jobs() == 0
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)




# ---------------------------------------------------------------------------- poison objects

def _ct_bytes(tmp_path: Path, sop_uid: str) -> bytes:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    path = tmp_path / f"{sop_uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def deep_nesting(tmp_path: Path, depth: int = 5000) -> bytes:
    """CT_small with a private sequence nested `depth` deep (undefined lengths) in group 0009:
    pydicom's reader and Gantry's header scan both recurse once a level."""
    data = _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.1")
    at = data.index(b"\x09\x00\x10\x00LO")  # GE's private creator of group 0009
    head = struct.pack("<HH2s2xI", 0x0009, 0x0001, b"SQ", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return data[:at] + (head + item) * depth + ends * depth + data[at:]


def unknown_meta_vr(tmp_path: Path) -> bytes:
    """CT_small whose (0002,0002) Media Storage SOP Class UID has the VR 'QQ'."""
    data = _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.2")
    at = data.index(b"\x02\x00\x02\x00UI")
    return data[:at + 4] + b"QQ" + data[at + 6:]


def overlong_sequence(tmp_path: Path) -> bytes:
    """rtplan.dcm with the length of (300A,00B0) Beam Sequence 100 bytes too long: pydicom
    reads on into the next elements and would forward what it made of them."""
    ds = dcmread(get_testdata_file("rtplan.dcm"))
    path = tmp_path / "rtplan.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    at = data.index(b"\x0a\x30\xb0\x00")  # tag, then the length (implicit VR)
    (length,) = struct.unpack_from("<I", data, at + 4)
    struct.pack_into("<I", data, at + 4, length + 100)
    return bytes(data)


def native_labelled_jpeg(tmp_path: Path) -> bytes:
    """CT_small's native pixel data (explicit VR little endian, as it is) under a file meta
    that says JPEG Baseline."""
    data = _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.3")
    meta = read_file_meta_info(tmp_path / "1.2.826.0.1.3680043.8.498.1.3.dcm")
    (group_length,) = struct.unpack_from("<I", data, 140)
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue() + data[144 + group_length:]


def without_delimiter() -> bytes:
    """pydicom-data's JPEG 2000 file whose encapsulated pixel data lacks its delimiter."""
    return (data_store_dir() / "emri_small_jpeg_2k_lossless_too_short.dcm").read_bytes()


def data_store_dir() -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data"


def in_process_worker(tmp_path: Path, destinations: tuple[str, ...] = ("pacs",)
                      ) -> tuple[Worker, StateDir, Store]:
    cfg = parse_config({"destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                                  "port": 104}},
                        "routes": [{"name": "all", "destinations": list(destinations)}]},
                       "<test>")
    state = StateDir(tmp_path / "state")
    return Worker(cfg, b"k" * 32, state), state, Store(state.db)


def spool_bytes(state: StateDir, store: Store, job: str, data: bytes) -> None:
    state.spooled(job).write_bytes(data)
    store.add_job(job, calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1", sop_hash="H",
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="x",
                  size=len(data))


POISON = {  # builder → words its quarantine reason must contain
    "deep": (deep_nesting, "sequences nested"),
    "meta_vr": (unknown_meta_vr, "(0002,0002) has an invalid value representation"),
    "overlong_sequence": (overlong_sequence, "(300A,00B0)"),
    "native_as_jpeg": (native_labelled_jpeg, "native (defined length"),
    "no_delimiter": (lambda _tmp: without_delimiter(), "without their sequence delimiter"),
}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_a_malformed_object_costs_itself_only_and_its_reason_names_the_problem(tmp_path,
                                                                                kind):
    """Claimed together with a valid CT by one worker: the malformed object is quarantined
    with a reason that says what is wrong (before, a RecursionError or NotImplementedError
    escaped and killed the worker, or the object was forwarded as no reader could read it);
    the valid one goes on to the outbox."""
    build, words = POISON[kind]
    worker, state, store = in_process_worker(tmp_path)
    spool_bytes(state, store, "bad", build(tmp_path))
    spool_bytes(state, store, "good", _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.9"))
    assert worker.run_once()  # claims both
    bad, good = store.job("bad"), store.job("good")
    assert good["state"] == FORWARDING and good["attempts"] == 1
    assert bad["state"] == QUARANTINED, bad["reason"]
    assert words in bad["reason"]
    assert "None" not in bad["reason"] and "Traceback" not in bad["reason"]
    assert state.original("bad") == state.quarantined("bad") and not state.output("bad").exists()
    dcmread(state.output("good"))  # what goes out reads back


# ---------------------------------------------------------------------------- a worker's death

def test_a_worker_killed_mid_write_costs_only_its_object_and_leaves_no_partial_file(
        tmp_path, storescp):
    """A real worker process of a node holds two claims, is on the first (a poison object)
    and has half-written an outbox file when it is killed (SIGKILL). The node requeues both
    claims, counting the death against the poison object only, and removes the partial file
    at once (before, it stayed in state/out until the node restarted, and the valid object
    was quarantined after three such deaths). Then the new worker quarantines the poison
    object with its reason and the valid one is delivered."""
    scp = storescp()
    config = load_config(str(write_config(tmp_path, {"pacs": ("PACS", scp.port)}, workers=1)))
    service = Service(config, load_site_key(config))
    service.start()
    supervisor = threading.Thread(target=service.supervise, daemon=True)
    try:
        child = service.children[0]
        pid = child.process.pid
        os.kill(pid, signal.SIGSTOP)  # it claims nothing more: the claims below are its own
        state, store = service.state, _store(tmp_path)
        spool_bytes(state, store, "poison", deep_nesting(tmp_path))
        spool_bytes(state, store, "valid", _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.8"))
        assert [r["id"] for r in store.claim_jobs(f"worker-{pid}-test", limit=2)] == [
            "poison", "valid"]
        child.current.value = b"poison"  # what the worker notes as it starts on a job
        partial = state.out / temp_name("poison.dcm", pid)
        partial.write_bytes(b"\0" * 4096)
        os.kill(pid, signal.SIGKILL)
        supervisor.start()
        assert wait_for(lambda: not partial.exists(), 30)
        assert wait_for(lambda: _settled(store, 2), 120)
        poison, valid = store.job("poison"), store.job("valid")
        assert valid["state"] == DELIVERED and valid["attempts"] == 1
        assert poison["state"] == QUARANTINED and poison["attempts"] == 2
        assert "sequences nested" in poison["reason"]
        assert len(scp.files()) == 1
        store.close()
    finally:
        service.stopping.set()
        if supervisor.is_alive():
            supervisor.join(30)
        service.stop(grace=10)


# ---------------------------------------------------------------------------- the machine fails

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs mounted on a fresh folder (root only; skipped where mount is refused)."""
    folder = tmp_path / "small"
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {run.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_defers_objects_instead_of_quarantining_them(tmp_path, small_tmpfs):
    """The outbox's disk is full when the worker writes the de-identified object (already
    answered Success): the job goes back to the queue, not counted as an attempt, and the
    worker waits; once there is room it is processed. Before, it was quarantined for good."""
    worker, state, store = in_process_worker(tmp_path)
    state.out.rmdir()
    state.out.symlink_to(small_tmpfs, target_is_directory=True)
    spool_bytes(state, store, "j1", _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.5"))
    filler = fill(small_tmpfs)
    worker.run_once()
    row = store.job("j1")
    assert (row["state"], row["attempts"], row["reason"]) == ("received", 0, None)
    assert store.events("j1")[-1]["detail"] == "deferred: No space left on device"
    assert not worker.run_once()  # it waits before claiming again
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]  # no partial file
    filler.unlink()
    assert wait_for(worker.run_once, 10)
    assert store.job("j1")["state"] == FORWARDING
    dcmread(state.output("j1"))


def test_a_locked_database_defers_instead_of_killing_the_worker(tmp_path):
    """Another process holds the database's write lock past the worker's busy timeout, when it
    claims and when it records a result: nothing is quarantined, no claim is lost or counted,
    and the job is processed once the lock is released."""
    worker, state, store = in_process_worker(tmp_path)
    worker.store.conn.execute("PRAGMA busy_timeout = 50")  # not a minute: the test is short
    spool_bytes(state, store, "j1", _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.6"))
    store.conn.execute("BEGIN IMMEDIATE")  # the lock, held by another connection
    assert not worker.run_once()  # cannot claim: waits
    store.conn.execute("COMMIT")
    (row,) = worker.store.claim_jobs(worker.owner)
    store.conn.execute("BEGIN IMMEDIATE")
    worker.process(row)  # de-identified, but the result cannot be recorded, nor the claim
    store.conn.execute("COMMIT")  # given back
    assert store.job("j1")["state"] == "processing" and not state.output("j1").exists()
    worker.retry_at = 0  # the wait is over
    assert worker.run_once()  # gives the claim back, claims it again, processes it
    row = store.job("j1")
    assert (row["state"], row["attempts"]) == (FORWARDING, 1)
    assert [e["detail"] for e in store.events("j1")].count("deferred: database: database is "
                                                           "locked") == 1


def test_a_claim_lost_to_an_expired_lease_is_left_alone(tmp_path):
    """The worker took longer than its lease, and the node requeued the job meanwhile: when the
    worker comes to record its result, it leaves the job to whoever holds it now (before, the
    refused move was taken for the object's fault, its quarantine refused too, and the worker
    died of it)."""
    worker, state, store = in_process_worker(tmp_path)
    spool_bytes(state, store, "j1", _ct_bytes(tmp_path, "1.2.826.0.1.3680043.8.498.1.7"))
    (row,) = worker.store.claim_jobs(worker.owner, lease=-1)  # already expired
    assert store.reclaim() == 1  # the node's periodic requeue
    worker.process(row)  # de-identifies, then finds the job is no longer its own
    assert store.job("j1")["state"] == "received"
    assert worker.run_once()  # and processes it properly when it claims it again
    assert store.job("j1")["state"] == FORWARDING
