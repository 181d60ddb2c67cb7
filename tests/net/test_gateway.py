"""Acceptance: `gantry serve` as a subprocess between dcmtk storescu and dcmtk storescp (or
Orthanc, or the stand-in PACS): every transfer syntax, kill -9, destination down, refusals,
SIGTERM, eight senders, and no planted identifier in anything forwarded, logged or audited."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from nethelpers import (
    DCMTK_ENV,
    data_store_files,
    free_port,
    identifiers_in,
    make_objects,
    need,
    storescu,
    transfer_syntax,
    wait_for,
    wait_port,
    write_config,
)
from pydicom import dcmread
from pydicom.data import get_testdata_file

from gateway.demo import StandInPacs, send_files
from gateway.net.receiver import sop_hash
from gateway.sitekey import _decode
from gateway.store import DELIVERED, FORWARDING, QUARANTINED

# One file per transfer syntax, several studies (pydicom-data + pydicom's own test files).
EVERY_SYNTAX = [
    "emri_small.dcm",                     # explicit VR little endian
    "emri_small_big_endian.dcm",          # explicit VR big endian
    "emri_small_RLE.dcm",                 # RLE lossless
    "emri_small_jpeg_2k_lossless.dcm",    # JPEG 2000 lossless
    "MR2_J2KI.dcm",                       # JPEG 2000
    "emri_small_jpeg_ls_lossless.dcm",    # JPEG-LS lossless
    "JPEG-LL.dcm",                        # JPEG lossless, first-order prediction
    "color3d_jpeg_baseline.dcm",          # JPEG baseline
]
PYDICOM_FILES = [
    "CT_small.dcm", "MR_small.dcm",
    "MR_small_implicit.dcm",              # implicit VR little endian
    "image_dfl.dcm",                      # deflated explicit VR little endian
    "JPEG-lossy.dcm",                     # JPEG extended (12 bit)
    "JPEGLSNearLossless_16.dcm",          # JPEG-LS near-lossless
]


# These tests are about transport: objects of at-risk modalities are not held back here.
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
PASS_BURNED_IN = {"redaction": {"on_risk": "pass"}}


def every_syntax_files() -> list[Path]:
    by_name = {p.name: p for p in data_store_files()}
    files = [by_name[n] for n in EVERY_SYNTAX if n in by_name]
    files += [Path(get_testdata_file(n)) for n in PYDICOM_FILES]
    return files


def key_of(config: Path) -> bytes:
    return _decode(Path(yaml.safe_load(config.read_text())["site_key"]["file"]).read_text(),
                   "key")


def originals(files: list[Path]) -> tuple[set[str], set[str]]:
    """Identifying values (names, IDs) and original UIDs of the source files."""
    values, uids = set(), set()
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        for kw in ("PatientName", "PatientID", "AccessionNumber", "OtherPatientIDs"):
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 4:
                values.add(v)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if kw in ds:
                uids.add(str(ds[kw].value))
    return values, uids


def assert_deidentified(received: list[Path], values: set[str], uids: set[str]) -> None:
    assert received
    for path in received:
        raw = path.read_bytes()
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES", path.name
        leaked = [v for v in values | uids if v.encode() in raw]
        assert not leaked, f"{path.name}: {len(leaked)} original identifiers forwarded"


def wait_settled(gw, n: int, timeout: float = 120.0) -> dict[str, int]:
    store = gw.store()
    try:
        wait_for(lambda: sum(store.counts().get(s, 0) for s in (DELIVERED, QUARANTINED)) >= n,
                 timeout)
        return store.counts()
    finally:
        store.close()


def test_storescu_to_storescp_every_transfer_syntax(tmp_path, storescp, gateway):
    files = every_syntax_files()
    assert len({transfer_syntax(f) for f in files}) == 12
    scp = storescp(accept_all=True)
    gw = gateway(write_config(tmp_path, {"pacs": ("PACS", scp.port)}, **PASS_BURNED_IN),
                 tmp_path / "log.jsonl")
    run = storescu(gw.port, files)
    assert run.returncode == 0, run.stderr
    counts = wait_settled(gw, len(files))
    assert counts == {DELIVERED: len(files)}, _reasons(gw)
    assert wait_for(lambda: len(scp.files()) == len(files))
    assert_deidentified(scp.files(), *originals(files))
    kids = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True,
                          text=True).stdout.split()  # operators see each process's role
    names = sorted(Path(f"/proc/{k}/comm").read_text().strip() for k in kids)
    assert [n for n in names if n.startswith("gantry-")] == [
        "gantry-forward", "gantry-worker", "gantry-worker"]
    # Receiving comes first: the children run at a lower priority than the node.
    node_nice = os.getpriority(os.PRIO_PROCESS, gw.proc.pid)
    assert all(os.getpriority(os.PRIO_PROCESS, int(k)) > node_nice for k in kids
               if Path(f"/proc/{k}/comm").read_text().startswith("gantry-"))
    # and their disk I/O (every thread's) waits for the node's: the idle I/O class.
    tasks = [t for k in kids if Path(f"/proc/{k}/comm").read_text().startswith("gantry-")
             for t in os.listdir(f"/proc/{k}/task")]
    shown = [subprocess.run([need("ionice"), "-p", t], capture_output=True, text=True).stdout
             for t in tasks]  # (a thread that ended meanwhile shows nothing)
    assert {out.split(":")[0].strip() for out in shown if out} == {"idle"}


def test_a_vendor_private_storage_class_is_de_identified_and_forwarded(tmp_path, storescp,
                                                                       gateway):
    """Siemens' CSA Non-Image class (which dcmtk's storescu will not send: pynetdicom is the
    modality here): delivered de-identified where the PACS takes unknown classes, quarantined
    with a reason that says so where it does not."""
    files = []
    for station in ("OPEN", "STRICT"):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CSA_NON_IMAGE
        ds.StationName = station
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{len(files)}"
        files.append(tmp_path / f"{station}.dcm")
        ds.save_as(files[-1])
    open_pacs, strict = storescp(promiscuous=True), storescp()
    routes = [{"name": "open", "tags": {"StationName": "OPEN"}, "destinations": ["open"]},
              {"name": "strict", "destinations": ["strict"]}]
    gw = gateway(write_config(tmp_path, {"open": ("PACS", open_pacs.port),
                                         "strict": ("PACS", strict.port)}, routes=routes),
                 tmp_path / "log.jsonl")
    assert send_files(files, gw.port) == {f: 0x0000 for f in files}
    assert wait_settled(gw, 2) == {DELIVERED: 1, QUARANTINED: 1}
    assert _reasons(gw) == ["strict does not accept this SOP class"]
    (got,) = open_pacs.files()
    assert_deidentified([got], *originals(files[:1]))
    ds = dcmread(got)
    assert ds.SOPClassUID == CSA_NON_IMAGE
    assert not [e.tag for e in ds.iterall() if e.tag.is_private]
    assert not strict.files()


def _reasons(gw) -> list[str]:
    store = gw.store()
    try:
        return [r["reason"] for r in store.quarantined()]
    finally:
        store.close()


# ---------------------------------------------------------------------------- Orthanc


@pytest.fixture
def orthanc(tmp_path):
    exe = need("Orthanc")
    dicom_port, http_port = free_port(), free_port()
    cfg = {
        "Name": "gantry-test", "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"), "DicomAet": "ORTHANC",
        "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [],
        "HttpServerEnabled": True, "DicomServerEnabled": True, "StableAge": 1,
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([exe, str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_port(http_port, 30)
        wait_port(dicom_port, 30)
        yield dicom_port, f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        proc.wait(30)


def rest(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=30) as rsp:
        return json.loads(rsp.read())


def test_storescu_to_orthanc_every_transfer_syntax(tmp_path, orthanc, gateway):
    dicom_port, base = orthanc
    # Orthanc refuses objects without Patient/Study/Series identity (0xA700), so the one
    # JPEG-LS near-lossless sample (it has none) is left out: 11 transfer syntaxes here.
    files = [f for f in every_syntax_files()
             if "StudyInstanceUID" in dcmread(f, stop_before_pixels=True)]
    assert len({transfer_syntax(f) for f in files}) == 11
    gw = gateway(write_config(tmp_path, {"orthanc": ("ORTHANC", dicom_port)},
                              **PASS_BURNED_IN), tmp_path / "log.jsonl")
    assert storescu(gw.port, files).returncode == 0
    assert wait_settled(gw, len(files)) == {DELIVERED: len(files)}, _reasons(gw)
    instances = rest(base, "/instances")
    # emri_small* share one SOP Instance UID, so Orthanc keeps one instance for them
    expected = len({dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files})
    assert len(instances) == expected
    values, uids = originals(files)
    for inst in instances:
        tags = rest(base, f"/instances/{inst}/simplified-tags")
        assert tags["PatientIdentityRemoved"] == "YES"
        text = json.dumps(tags)
        assert not [v for v in values | uids if v in text]
    assert len(rest(base, "/studies")) >= 4


# ---------------------------------------------------------------------------- crashes


def _succeeded(stdout: str) -> list[str]:
    """Files for which storescu (-v) received a Success response."""
    done, current = [], None
    for line in stdout.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


def test_kill_9_during_sends_loses_nothing_that_got_success(tmp_path, storescp, gateway):
    need("storescu")
    objs = make_objects(tmp_path / "in", 200, studies=4)
    uid_of = {str(p): uid for p, uid in objs}
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    log = tmp_path / "log.jsonl"
    gw = gateway(config, log)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    succeeded: set[str] = set()
    remaining = [str(p) for p, _ in objs]
    for attempt in range(4):  # three runs killed at a random moment, then one to finish
        sender = subprocess.Popen(
            [need("storescu"), "-v", "-aet", "MODALITY", "-aec", "GANTRY", "127.0.0.1",
             str(gw.port), *remaining], env=DCMTK_ENV, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        killer = threading.Timer(rng.uniform(0.3, 2.0), gw.kill9)
        if attempt < 3:
            killer.start()
        out, _ = sender.communicate(timeout=300)
        killer.cancel()
        if attempt < 3:
            killer.join()  # a kill under way finishes (and is seen) before the restart check
        succeeded.update(_succeeded(out))
        remaining = [f for f in remaining if f not in succeeded]
        if gw.proc.poll() is not None:
            gw.start()
    assert len(succeeded) == len(objs), f"seed {seed}"
    store = gw.store()
    assert wait_for(lambda: store.pending_jobs() == 0, 120)
    hashes = {row["sop_hash"]: row for row in store.conn.execute(
        "SELECT * FROM jobs WHERE state = ?", (DELIVERED,))}
    key = key_of(config)
    missing = [f for f in succeeded if sop_hash(key, uid_of[f]) not in hashes]
    assert not missing, f"seed {seed}: {len(missing)} acknowledged objects not delivered"
    received_uids = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in scp.files()}
    assert {hashes[sop_hash(key, uid_of[f])]["new_sop_uid"] for f in succeeded} <= received_uids
    for path in scp.files():
        assert not identifiers_in(path.read_bytes().decode("latin-1")), path.name
    assert not identifiers_in(log.read_text(), set(uid_of.values()))
    store.close()


def test_destination_down_then_back_and_sigterm_leaves_the_rest_queued(tmp_path, gateway):
    objs = make_objects(tmp_path / "in", 30)
    port = free_port()
    config = write_config(tmp_path, {"pacs": ("PACS", port)})
    gw = gateway(config, tmp_path / "log.jsonl")
    assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
    store = gw.store()
    assert wait_for(lambda: store.counts().get(FORWARDING) == 30)
    assert wait_for(lambda: (store.destination_status()[0]["last_error"] or "").startswith(
        "connection failed"))
    assert gw.stop() == 0  # SIGTERM: clean exit, nothing lost
    assert store.counts() == {FORWARDING: 30}
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", port=port).start()
    try:
        gw.start()
        assert wait_for(lambda: store.counts() == {DELIVERED: 30})
        assert pacs.received == 30
    finally:
        pacs.stop()
        store.close()


def test_refusals_quarantine_and_nothing_identifying_is_logged_or_audited(tmp_path, gateway):
    ct = make_objects(tmp_path / "ct", 6)
    mr = make_objects(tmp_path / "mr", 4, modality="MR", source="MR_small.dcm")
    xa = make_objects(tmp_path / "xa", 3, modality="XA")
    pacs = StandInPacs(tmp_path / "pacs", ae_title="PACS", status=0xA900).start()
    good = StandInPacs(tmp_path / "good", ae_title="GOOD").start()
    try:
        config = write_config(
            tmp_path, {"refusing": ("PACS", pacs.port), "good": ("GOOD", good.port)},
            routes=[{"name": "ct", "tags": {"Modality": "CT"}, "destinations": ["refusing"]},
                    {"name": "mr", "tags": {"Modality": ["MR"]}, "destinations": ["good"]}])
        log = tmp_path / "log.jsonl"
        gw = gateway(config, log)
        assert storescu(gw.port, [p for p, _ in ct + mr + xa]).returncode == 0
        assert wait_settled(gw, 13) == {QUARANTINED: 9, DELIVERED: 4}
        store = gw.store()
        reasons = sorted(r["reason"] for r in store.quarantined())
        no_route = ("no route: modality XA, SOP class 1.2.840.10008.5.1.4.1.1.2, calling AE "
                    "MODALITY, called AE GANTRY; no route matches and there is no default_route")
        assert reasons == [no_route] * 3 + ["refusing answered status 0xA900"] * 6
        listing = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "quarantine", "list", "--config", str(config)],
            capture_output=True, text=True, check=True).stdout
        assert listing.count("no route: modality XA") == 3
        job = listing.split()[0]
        shown = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "quarantine", "show", job[:12], "--config",
             str(config)], capture_output=True, text=True, check=True).stdout
        assert "outcome              quarantined" in shown and "→ quarantined" in shown
        listing += shown
        dump = "\n".join(store.conn.iterdump())
        audit = json.dumps(store.audit())
        store.close()
        every_uid = {u for _, u in ct + mr + xa}
        for text in (log.read_text(), dump, audit, listing):
            assert not identifiers_in(text, every_uid)
        events = [json.loads(line) for line in log.read_text().splitlines()]
        moves = [e for e in events if e["event"] == "job.state"]
        assert len(moves) >= 13 * 3 and all(len(e["job"]) == 32 for e in moves)
        purged = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "quarantine", "purge", "--all", "--yes",
             "--config", str(config)], capture_output=True, text=True, check=True).stdout
        assert "9 purged" in purged
        assert not list((tmp_path / "state" / "quarantine").iterdir())
    finally:
        pacs.stop()
        good.stop()


def test_quarantine_release_after_a_config_fix(tmp_path, storescp, gateway):
    scp = storescp()
    objs = make_objects(tmp_path / "in", 3, modality="XA")
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)},
                          routes=[{"name": "ct", "tags": {"Modality": "CT"},
                                   "destinations": ["pacs"]}])
    gw = gateway(config, tmp_path / "log.jsonl")
    assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
    assert wait_settled(gw, 3) == {QUARANTINED: 3}
    gw.stop()
    data = yaml.safe_load(config.read_text())
    data["routes"][0]["tags"]["Modality"] = ["CT", "XA"]
    config.write_text(yaml.safe_dump(data))
    cli = [sys.executable, "-m", "gateway.cli"]
    out = subprocess.run([*cli, "quarantine", "release", "--all", "--config", str(config)],
                         capture_output=True, text=True, check=True).stdout
    assert "3 released" in out
    gw.start()
    assert wait_settled(gw, 3) == {DELIVERED: 3}
    assert len(scp.files()) == 3
    status = json.loads(subprocess.run([*cli, "status", "--json", "--config", str(config)],
                                       capture_output=True, text=True, check=True).stdout)
    assert status["jobs"] == {DELIVERED: 3} and status["destinations"][0]["delivered"] == 3


def _warning_events(log: Path) -> list[str]:
    """The names of warning and error events in a gateway log (for a failure's message)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return sorted({e["event"] for e in events if e.get("level") in ("warning", "error")})


def test_eight_senders_at_once(tmp_path, storescp, gateway):
    scp = storescp()
    gw = gateway(write_config(tmp_path, {"pacs": ("PACS", scp.port)}), tmp_path / "log.jsonl")
    batches = [make_objects(tmp_path / f"s{i}", 15, studies=1) for i in range(8)]
    senders = [subprocess.Popen(
        [need("storescu"), "-aet", f"MOD{i}", "-aec", "GANTRY", "127.0.0.1", str(gw.port),
         *[str(p) for p, _ in batch]], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True) for i, batch in enumerate(batches)]
    assert [s.wait(120) for s in senders] == [0] * 8
    assert wait_settled(gw, 120) == {DELIVERED: 120}
    # At least once: a C-STORE whose response was lost is sent again (storescp's +uf keeps both).
    arrived = wait_for(lambda: len(scp.files()) >= 120)
    store = gw.store()
    callers = {r[0] for r in store.conn.execute("SELECT DISTINCT calling_ae FROM jobs")}
    delivered = {r[0] for r in store.conn.execute("SELECT new_sop_uid FROM jobs")}
    store.close()
    at_pacs = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.files()}
    assert arrived and len(delivered) == 120 and at_pacs == delivered, (
        f"{len(scp.files())} files ({len(at_pacs)} SOP instances) at storescp; "
        f"{len(delivered)} delivered; warnings: {_warning_events(gw.log)}")
    assert callers == {f"MOD{i}" for i in range(8)}


def test_demo_runs_end_to_end(tmp_path):
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--dir", str(tmp_path),
                          "--limit", "25"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Forwarded to the research PACS:" in run.stdout
    assert ("Quarantined: 0\n" in run.stdout) != ("\nWhy:\n" in run.stdout)  # reasons explained
    assert list((tmp_path / "research-pacs").rglob("*.dcm"))
    assert str(tmp_path / "research-pacs") in run.stdout
    assert f"Report: {tmp_path / 'report.html'}" in run.stdout
    assert "Made from de-identified objects only" in (tmp_path / "report.html").read_text()
    node = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "--config",
                           str(tmp_path / "gantry.yaml"), "-o", str(tmp_path / "node.html")],
                          capture_output=True, text=True, timeout=120)
    assert node.returncode == 0, node.stderr
    html = (tmp_path / "node.html").read_text()
    assert "contain patient data" in html and '<tr class="machine">' in html
    assert "delivered" in html


def test_sigterm_finishes_the_receive_in_flight(tmp_path, storescp, gateway):
    scp = storescp()
    objs = make_objects(tmp_path / "in", 60)
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    gw = gateway(config, tmp_path / "log.jsonl")
    sender = subprocess.Popen(
        [need("storescu"), "-v", "-aet", "MODALITY", "-aec", "GANTRY", "127.0.0.1",
         str(gw.port), *[str(p) for p, _ in objs]], env=DCMTK_ENV, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    head = [sender.stdout.readline()]
    while "Received Store Response" not in head[-1]:  # the association is sending
        head.append(sender.stdout.readline())
    gw.proc.terminate()
    out = "".join(head) + sender.stdout.read()  # (communicate() can drop buffered lines)
    sender.wait(120)
    assert gw.proc.wait(120) == 0
    assert sender.returncode == 0 and len(_succeeded(out)) == 60  # nothing cut off
    store = gw.store()
    assert sum(store.counts().values()) == 60  # every Success has its job
    store.close()
    gw.start()  # the rest is finished after the restart
    assert wait_settled(gw, 60) == {DELIVERED: 60}


def test_a_configuration_the_workers_cannot_start_with_stops_the_node_before_it_listens(
        tmp_path):
    """A recipient certificate that is not there: `gantry serve` says so and exits, instead of
    answering Success while its workers fail to start."""
    port = free_port()
    config = write_config(tmp_path, {"pacs": ("PACS", free_port())}, port=port,
                          backup={"enabled": True, "recipients": ["nowhere.cert.pem"]})
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "nowhere.cert.pem" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(TimeoutError):
        wait_port(port, 1)


def test_a_second_node_on_the_same_state_directory_is_refused(tmp_path, storescp, gateway):
    """Its recovery would requeue the first node's work and sweep its spool: it must not start.
    The first node goes on receiving and delivering."""
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    gw = gateway(config, tmp_path / "gantry.log")
    second = tmp_path / "second.yaml"
    data = yaml.safe_load(config.read_text())
    data["network"]["port"] = free_port()
    second.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(second)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "in use by another `gantry serve`" in run.stderr and "state_dir" in run.stderr
    files = [path for path, _uid in make_objects(tmp_path / "in", 3)]
    assert storescu(gw.port, files).returncode == 0
    assert wait_settled(gw, 3)[DELIVERED] == 3
    recoveries = [line for line in (tmp_path / "gantry.log").read_text().splitlines()
                  if "service.recovered" in line]
    assert len(recoveries) == 1  # the refused node never ran its recovery


def test_a_backlog_for_a_destination_taken_out_of_the_configuration_is_reported(
        tmp_path, gateway):
    """The deliveries wait (nothing is dropped), and the operator is told at start and by
    `gantry status`."""
    objs = make_objects(tmp_path / "in", 2)
    config = write_config(tmp_path, {"old_pacs": ("OLD", free_port())})
    gw = gateway(config, tmp_path / "log.jsonl")
    assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
    store = gw.store()
    try:
        assert wait_for(lambda: store.counts().get(FORWARDING) == 2)
    finally:
        store.close()
    assert gw.stop() == 0
    data = yaml.safe_load(config.read_text())
    data["destinations"] = {"new_pacs": {**data["destinations"]["old_pacs"], "ae_title": "NEW"}}
    data["routes"] = [{"name": "all", "destinations": ["new_pacs"]}]
    config.write_text(yaml.safe_dump(data))
    gw.start()
    log = tmp_path / "log.jsonl"
    assert wait_for(lambda: "deliveries.unconfigured_destination" in log.read_text())
    warning = next(json.loads(line) for line in log.read_text().splitlines()
                   if "deliveries.unconfigured_destination" in line)
    assert (warning["destination"], warning["backlog"]) == ("old_pacs", 2)
    status = subprocess.run([sys.executable, "-m", "gateway.cli", "status", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert "old_pacs (not in the configuration" in status.stdout


def test_demo_without_ocr_still_runs_and_says_why(tmp_path):
    """A machine without the OCR engine: the demo holds at-risk images back (quarantine) and
    says so, instead of refusing to start."""
    fake = tmp_path / "no-ocr"
    fake.mkdir()
    (fake / "tesserocr.py").write_text("raise ImportError('no tesserocr here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(fake), os.environ.get("PYTHONPATH", "")]))}
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--dir",
                          str(tmp_path / "demo"), "--limit", "25"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OCR is off (the OCR engine is not installed" in run.stdout
    assert "Forwarded to the research PACS:" in run.stdout
    assert list((tmp_path / "demo" / "research-pacs").rglob("*.dcm"))
