"""`gantry demo`: the gateway on loopback, a stand-in research PACS, pydicom's sample studies.

Starts a storage SCP (the stand-in PACS, writing what it receives to a folder), then the
gateway with the embedded demo configuration pointed at it, sends every sample file bundled
with pydicom (and pydicom-data, when installed) by C-STORE, waits until nothing is pending,
and prints what was received, forwarded and quarantined (with reasons) and where it lies.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pynetdicom import AE, evt

from gateway.config import parse_config
from gateway.net import set_nodelay
from gateway.net.reactor_pause import guard
from gateway.net.receiver import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, unlisted_storage_class

DEMO_CONFIG = "data/demo.yaml"


class StandInPacs:
    """A pynetdicom storage SCP writing each object to DIR/<study>/<series>/<sop>.dcm and
    answering `status` (Success unless told otherwise, e.g. 0xA900 to play a refusing PACS)."""

    def __init__(self, folder: str | Path, ae_title: str = "RESEARCH", port: int = 0,
                 status: int = 0x0000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.status = status
        self.received = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = 0
        for sop_class in STORAGE_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self._port = port
        self._server: Any = None

    def start(self) -> StandInPacs:
        handlers = [(evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_CONN_OPEN, lambda e: set_nodelay(
                        getattr(e.assoc.dul.socket, "socket", None)))]
        self._server = self.ae.start_server(("127.0.0.1", self._port), block=False,
                                            evt_handlers=handlers)
        return self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        if self.status != 0x0000:
            return self.status
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = (self.folder / str(ds.get("StudyInstanceUID", "no-study"))
                / str(ds.get("SeriesInstanceUID", "no-series")) / f"{ds.SOPInstanceUID}.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self.received += 1
        return 0x0000

    def files(self) -> list[Path]:
        return sorted(self.folder.rglob("*.dcm"))


def sample_files() -> list[Path]:
    """pydicom's bundled test files, plus pydicom-data's when installed (local files only:
    `get_testdata_files` would try to download the rest)."""
    import pydicom.data

    paths = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
    try:
        import data_store  # pydicom-data

        paths += sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))
    except ImportError:
        pass
    return paths


def send_files(paths: list[Path], port: int, called: str = "GANTRY",
               calling: str = "DEMO-MODALITY") -> dict[Path, int | str]:
    """C-STORE each file as a modality would, its bytes as they are (one association per ≤ 120
    presentation contexts); the status of each, or why it was not sent."""
    sendable: dict[tuple[str, str], list[Path]] = {}
    result: dict[Path, int | str] = {}
    decode: set[Path] = set()  # no Media Storage UIDs in the file meta: send the data set
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            meta = ds.file_meta
            key = (str(meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID),
                   str(meta.TransferSyntaxUID))
        except Exception:  # noqa: BLE001 - not every test file is a storable object
            result[path] = "not a storable DICOM file"
            continue
        if key[0] not in STORAGE_SOP_CLASSES and not unlisted_storage_class(key[0]):
            result[path] = "not a storage SOP class"
            continue
        if key[1] not in TRANSFER_SYNTAXES:
            result[path] = "transfer syntax not offered"
            continue
        if "MediaStorageSOPInstanceUID" not in meta or "MediaStorageSOPClassUID" not in meta:
            decode.add(path)
        sendable.setdefault(key, []).append(path)
    keys = list(sendable)
    for start in range(0, len(keys), 120):
        chunk = keys[start:start + 120]
        ae = AE(ae_title=calling)
        for sop_class, ts in chunk:
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate("127.0.0.1", port, ae_title=called, max_pdu=0)
        if not assoc.is_established:
            for key in chunk:
                for path in sendable[key]:
                    result[path] = "association failed"
            continue
        set_nodelay(getattr(assoc.dul.socket, "socket", None))
        guard(assoc)
        for key in chunk:
            for path in sendable[key]:
                try:
                    rsp = assoc.send_c_store(dcmread(path) if path in decode else path)
                    result[path] = int(rsp.Status) if rsp and "Status" in rsp else "no answer"
                except Exception as exc:  # noqa: BLE001
                    result[path] = f"cannot send: {type(exc).__name__}"
        assoc.release()
    return result


def ocr_missing() -> str:
    """Why OCR cannot run here ("" when it can)."""
    from gateway.deid.ocr import OcrUnavailable, check_available

    try:
        check_available()
    except OcrUnavailable as exc:
        return str(exc)
    return ""


def demo_config(root: Path, pacs_port: int) -> Any:
    """The embedded demo configuration, pointed at ROOT and at the stand-in PACS."""
    from gateway.sitekey import create_key_file

    data = yaml.safe_load(resources.files("gateway").joinpath(DEMO_CONFIG).read_text())
    key = root / "site.key"
    if not key.exists():
        create_key_file(key)
    data["site_key"] = {"file": str(key)}
    data["state_dir"] = str(root / "state")
    for dest in data["destinations"].values():
        dest["port"] = pacs_port
    if ocr_missing():  # the demo still runs: at-risk images are held back instead of read
        data["redaction"]["on_risk"] = "quarantine"
    (root / "gantry.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return parse_config(data, str(root / "gantry.yaml"))


# What each kind of refusal means in the demo, for a newcomer reading the summary.
NOTES = (
    ("verify refused: an original identifier",
     "verify refused: the gatekeeper found a word of the sample's patient name or ID still in an "
     "element the profile keeps (some test files name their patients with words their images "
     "also use, such as the exam's type), so the object is held back rather than sent. For such "
     "an element, `action: clean` under profile.phi_tags scrubs the word out instead."),
    ("burned-in text risk, no redaction rule",
     "burned-in text risk, no redaction rule: cine loops of more than 10 frames, held back by "
     "the demo's long-cine route (OCR reads every frame); a rule for their machine lets them "
     "through."),
    ("unreadable",
     "unreadable: the sample itself is damaged (some of pydicom's test files are, on purpose); "
     "the original is kept in quarantine as it arrived."),
    ("the pixels cannot be read",
     "the pixels cannot be read: the compressed pixel data is damaged (these samples are) or in "
     "a codec with no decoder here, so burned-in text cannot be checked; the object is not sent "
     "unchecked."),
)


def quarantine_notes(reasons: Counter) -> list[str]:
    """A line of explanation per kind of quarantine reason present (none when nothing is)."""
    found = [note for start, note in NOTES if any(start in why for why in reasons)]
    return ["Why:", *[f"  - {note}" for note in found]] if found else []


def demo_report(root: Path, delivered: list[Path], reasons: Counter,
                forwarded: int | None = None) -> str:
    """The visual report of what reached the research PACS (de-identified only, fit to share),
    with the quarantine reasons; where it is, or why there is none. `forwarded` is how many
    objects the gateway forwarded (the PACS keeps one copy of each SOP instance): the report
    says how its counts, of distinct instances, relate to it."""
    try:
        from gateway.qc import fleet_qc
        from gateway.qc.report import ReportObject, output_objects, write_report
    except ImportError:
        return "none (the report needs pip install 'gantry[qc]')"
    objects = output_objects(delivered, "in the research PACS")
    # The demo's configuration has no redaction rule: whatever pixels were redacted, OCR did
    objects = [replace(o, by_ocr=True) for o in objects]
    held = sum(reasons.values())
    objects += [ReportObject("held back at the gateway", "?", "quarantined", why)
                for why, n in reasons.items() for _ in range(n)]
    counted = (f"the {len(objects) - held} distinct SOP instances in the research PACS's folder "
               f"and the {held} objects quarantined at the gateway")
    notes = []
    if forwarded is not None and forwarded != len(objects) - held:
        notes.append(f"The gateway forwarded {forwarded} objects; some samples are one image in "
                     "several transfer syntaxes, de-identified to one SOP instance, which the "
                     f"research PACS keeps once: {len(objects) - held} distinct instances.")
    path = write_report(root / "report.html", objects, qc=fleet_qc(delivered, slices=2),
                        output_only=True, title="Gantry demo report", notes=notes,
                        counted=counted)
    return str(path)


@contextmanager
def running_node(config: Any) -> Iterator[Any]:
    """The node (gateway.service.Service) as `gantry serve` runs it, its supervisor included
    (respawning children, requeueing claims, and giving the children every CPU back once the
    node stops receiving: without it they stayed off the receiver's CPU for the whole demo and
    OCR took twice as long); stopped on exit."""
    from gateway.service import Service
    from gateway.sitekey import load_site_key

    service = Service(config, load_site_key(config))
    service.start()
    supervisor = threading.Thread(target=service.supervise, name="gantry-supervise",
                                  daemon=True)
    supervisor.start()
    try:
        yield service
    finally:
        service.stopping.set()
        supervisor.join()  # before stop() closes what the supervisor uses
        service.stop(grace=10)


def run_demo(directory: str | None = None, limit: int | None = None,
             out: Any = print) -> int:
    """Run the whole demo; returns 0 when every Success object is delivered or quarantined."""
    import os

    from gateway import logs
    from gateway.store import Store

    root = Path(directory or tempfile.mkdtemp(prefix="gantry-demo-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ[logs.LOG_FILE_ENV] = str(root / "gantry.log")
    pacs = StandInPacs(root / "research-pacs").start()
    config = demo_config(root, pacs.port)
    logs.configure(config.log_level, role="node")
    t0 = time.monotonic()
    try:
        with running_node(config) as service:
            files = sample_files()[:limit]
            out(f"Gantry listening on 127.0.0.1:{service.port} as {config.network.ae_title}; "
                f"stand-in research PACS on 127.0.0.1:{pacs.port}")
            missing = ocr_missing()
            if missing:
                out(f"OCR is off ({missing}): at-risk images (ultrasound, secondary capture …) "
                    "are quarantined instead of read")
            out(f"Sending {len(files)} sample files by C-STORE …")
            statuses = send_files(files, service.port, config.network.ae_title)
            accepted = sum(1 for s in statuses.values() if s == 0)
            refused = Counter(f"0x{s:04X}" if isinstance(s, int) else s
                              for s in statuses.values() if s != 0)
            store = Store(service.state.db, durable=False)
            # OCR of long multi-frame objects takes a while: wait as long as jobs keep finishing
            last, idle_since = store.pending_jobs(), time.monotonic()
            if last:
                out(f"Answered; {last} objects still being de-identified (OCR reads burned-in text "
                    "at about a third of a second per ultrasound frame) …")
            shown = time.monotonic()
            while last and time.monotonic() - idle_since < 120:
                time.sleep(0.2)
                pending = store.pending_jobs()
                if pending != last:
                    last, idle_since = pending, time.monotonic()
                if last and time.monotonic() - shown >= 5:
                    out(f"  {last} still in progress …")
                    shown = time.monotonic()
            counts = store.counts()
            reasons = Counter(r["reason"] for r in store.quarantined())
            pending = store.pending_jobs()
            store.close()
    finally:
        pacs.stop()
    elapsed = time.monotonic() - t0
    out(f"\nReceived (answered Success): {accepted} of {len(files)} files")
    for why, n in sorted(refused.items()):
        out(f"  not accepted ({why}): {n}")
    out(f"Forwarded to the research PACS: {counts.get('delivered', 0)} objects "
        f"({len(pacs.files())} distinct SOP instances in its folder: some samples are one "
        f"image in several transfer syntaxes)")
    out(f"Quarantined: {counts.get('quarantined', 0)}")
    for why, n in reasons.most_common():
        out(f"  {n:4}  {why}")
    for line in quarantine_notes(reasons):
        out(line)
    if pending:
        out(f"Still pending: {pending}")
    out(f"\nDe-identified output: {pacs.folder}")
    out(f"Quarantined originals: {service.state.quarantine}")
    out(f"State (SQLite audit): {service.state.db}")
    out(f"Inspect: gantry status --config {root / 'gantry.yaml'}; "
        f"gantry quarantine list --config {root / 'gantry.yaml'}")
    out(f"Logs: {root / 'gantry.log'}")
    out("Writing the visual report (thumbnails and fleet QC of what arrived) …")
    out(f"Report: {demo_report(root, pacs.files(), reasons, counts.get('delivered', 0))}")
    total = time.monotonic() - t0
    out(f"Done in {total:.1f} s (the gateway {elapsed:.1f} s, the report {total - elapsed:.1f} s)")
    return 0 if not pending else 1
