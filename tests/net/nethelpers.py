"""Real peers for the network tests: dcmtk tools, Orthanc, the gateway as a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from gateway.config import DestinationConfig
from gateway.net.forwarder import Outbox
from gateway.statedir import StateDir
from gateway.store import Store

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not found on PATH (install the Debian package to run this test)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_for(predicate, timeout: float = 60.0, step: float = 0.1):
    """Poll until `predicate()` is truthy (no timing is asserted: the timeout only bounds a
    failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class StoreSCP:
    """dcmtk storescp writing to a folder."""

    def __init__(self, folder: Path, port: int | None = None, ae: str = "PACS",
                 accept_all: bool = False, promiscuous: bool = False,
                 implicit_only: bool = False) -> None:
        self.folder, self.port, self.ae = folder, port or free_port(), ae
        folder.mkdir(parents=True, exist_ok=True)
        args = [need("storescp"), "-aet", ae, "--output-directory", str(folder),
                "+uf"]  # unique file names: a re-sent object is a second file
        if accept_all:
            args.append("+xa")
        if implicit_only:  # a PACS that accepts Implicit VR Little Endian and nothing else
            args.append("+xi")
        if promiscuous:  # also SOP classes dcmtk does not know
            args.append("--promiscuous")
        self.proc = subprocess.Popen([*args, str(self.port)], env=DCMTK_ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def storescp(tmp_path):
    started: list[StoreSCP] = []

    def start(**kwargs) -> StoreSCP:
        scp = StoreSCP(tmp_path / f"storescp{len(started)}", **kwargs)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


# storescu proposes one kind of transfer syntax per run: the flag for each syntax.
STORESCU_FLAGS = {
    "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def transfer_syntax(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def storescu(port: int, files: list[Path], calling: str = "MODALITY", called: str = "GANTRY",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """dcmtk storescu, one run per transfer syntax (proposing exactly that syntax); the
    returncode is the first non-zero one, stderr is every run's."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(transfer_syntax(f), []).append(f)
    code, err = 0, []
    for ts, group in groups.items():
        run = subprocess.run(
            [need("storescu"), STORESCU_FLAGS[ts], "-aet", calling, "-aec", called, *extra,
             "127.0.0.1", str(port), *map(str, group)],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=300)
        code = code or run.returncode
        err.append(run.stderr)
    return subprocess.CompletedProcess([], code, "", "".join(err))


def write_config(tmp_path: Path, destinations: dict, *, port: int | None = None,
                 routes: list | None = None, workers: int = 2, **extra) -> Path:
    """A gateway config in tmp_path (site key generated), with short backoffs."""
    from gateway.sitekey import create_key_file

    key = tmp_path / "site.key"
    if not key.exists():
        create_key_file(key)
    data = {
        "site_key": {"file": str(key)},
        "state_dir": str(tmp_path / "state"),
        "log_level": "info",
        "network": {"ae_title": "GANTRY", "host": "127.0.0.1", "port": port or free_port(),
                    "workers": workers, "max_pdu": 0},
        "destinations": {
            name: {"ae_title": ae, "host": "127.0.0.1", "port": p, "backoff_seconds": 0.05,
                   "max_backoff_seconds": 0.5, "max_retries": 3}
            for name, (ae, p) in destinations.items()},
        "routes": routes or [{"name": "all", "destinations": list(destinations)}],
        **extra,
    }
    path = tmp_path / "gantry.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Gateway:
    """`gantry serve --config FILE` as a subprocess, its JSON log lines in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.port = yaml.safe_load(config.read_text())["network"]["port"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Gateway:
        env = {**os.environ, "GANTRY_LOG_FILE": str(self.log)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.log.with_suffix(".err"), "a"))
        wait_port(self.port, 30)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(60)

    def store(self):
        from gateway.store import Store

        state = yaml.safe_load(self.config.read_text())["state_dir"]
        return Store(Path(state) / "gantry.db", durable=False)


@pytest.fixture
def gateway():
    started: list[Gateway] = []

    def start(config: Path, log: Path) -> Gateway:
        gw = Gateway(config, log).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(10)


def data_store_files() -> list[Path]:
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data is not installed")
    return sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))


# Planted identifiers: none of these may ever leave the gateway or reach its logs and audit.
PLANTED = {
    "PatientName": "PLANTEDNAME^ZQXWV",
    "PatientID": "PLANTEDID91377",
    "AccessionNumber": "ACCPLANT7781",
    "PatientBirthDate": "19010203",
    "InstitutionName": "PLANTED HOSPITAL XJQ",
    "ReferringPhysicianName": "DRPLANTED^QQW",
    "StationName": "PLANTSTATION",
}
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242."  # originals generated under this root


def make_objects(folder: Path, n: int, studies: int = 3, modality: str = "CT",
                 source: str = "CT_small.dcm") -> list[tuple[Path, str]]:
    """`n` small real objects (from a pydicom test file) spread over `studies` studies, with
    the planted identifiers and fresh original UIDs; returns (path, original SOP UID)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    base = dcmread(get_testdata_file(source))
    study_uids = [generate_uid(UID_ROOT) for _ in range(studies)]
    series_uids = [generate_uid(UID_ROOT) for _ in range(studies)]
    out = []
    for i in range(n):
        ds = base.copy()
        for kw, value in PLANTED.items():
            setattr(ds, kw, value)
        ds.Modality = modality
        ds.StudyInstanceUID = study_uids[i % studies]
        ds.SeriesInstanceUID = series_uids[i % studies]
        ds.SOPInstanceUID = generate_uid(UID_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = folder / f"obj{i:04}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append((path, str(ds.SOPInstanceUID)))
    return out


def identifiers_in(text: str, extra: set[str] = frozenset()) -> list[str]:
    """Planted values (and any original UID given in `extra`) found in `text`."""
    found = [v for v in PLANTED.values() if v in text]
    found += [u for u in extra if u in text]
    if UID_ROOT in text:
        found.append(UID_ROOT + "…")
    return found


def queue(state: StateDir, store: Store, files: list[Path], dests=("pacs",),
          first: int = 0) -> list[str]:
    """Put files in the outbox as if the worker had de-identified them."""
    ids = []
    for i, src in enumerate(files, start=first):
        job = f"job{i:04}"
        meta = dcmread(src, stop_before_pixels=True)
        ts = str(meta.file_meta.TransferSyntaxUID)
        store.add_job(job, calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1",
                      sop_hash="H", sop_class_uid=str(meta.SOPClassUID), transfer_syntax=ts,
                      size=src.stat().st_size)
        store.claim_jobs("test")
        shutil.copy(src, state.output(job))
        state.spooled(job).write_bytes(b"original")
        store.finish_processing(job, route="all", profile="default", new_study_uid="2.25.1",
                                new_series_uid="2.25.2", new_sop_uid=str(meta.SOPInstanceUID),
                                out_transfer_syntax=ts, counts={}, not_backed_up=(),
                                destinations=dests)
        ids.append(job)
    return ids


def states(store: Store, ids: list[str]) -> set[str]:
    return {store.job(j)["state"] for j in ids}


@pytest.fixture
def outboxes(tmp_path):
    """(state, store, start): start(port, name="pacs", **destination) runs one outbox, in
    threads, to a destination on loopback (`dimse_timeout` too, if given)."""
    state = StateDir(tmp_path / "state")
    store = Store(state.db)
    stop = threading.Event()
    boxes: list[Outbox] = []

    def start(port: int, name: str = "pacs", **dest) -> Outbox:
        timeout = {"dimse_timeout": dest.pop("dimse_timeout")} if "dimse_timeout" in dest else {}
        cfg = DestinationConfig(ae_title=dest.pop("ae_title", "PACS"), host="127.0.0.1",
                                port=port, backoff_seconds=0.02, max_backoff_seconds=0.2,
                                **dest)
        outbox = Outbox(name, cfg, state, calling_ae="GANTRY", stop=stop, poll=0.01, **timeout)
        outbox.start()
        boxes.append(outbox)
        return outbox

    yield state, store, start
    stop.set()
    for b in boxes:
        b.join(10)
    store.close()
