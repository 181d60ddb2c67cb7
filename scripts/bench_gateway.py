#!/usr/bin/env python
"""Benchmark the gateway against dcmtk and a naive pynetdicom relay (one run, one report).

Generates N (default 1,000) CT objects of 512×512 16-bit pixels (~512 KB each), then sends
them with dcmtk `storescu` over one association:

1. storescu → storescp                                  (direct, the wire limit here)
2. storescu → naive relay → storescp   (pynetdicom SCP that decodes the dataset in the
                                         C-STORE handler and forwards it synchronously
                                         on one held association before answering)
3. storescu → pynetdicom no-op SCP    (answers Success without storing anything: the floor
                                         of any receiver built on pynetdicom, Gantry's included)
4. storescu → durable floor             (pynetdicom SCP that writes each object to a file and
                                         fsyncs it before answering, nothing else: the floor
                                         of any receiver that answers only once it is safe)
   storescu → `gantry serve` → storescp  (with each `--receivers` value: 1,2 compares them),
                                         interleaved with the durable floor for `--rounds`
5. the same over DICOM TLS at both ends (storescu +tls → Gantry → storescp +tls, client
   certificates required everywhere, certificates made by openssl for the run), after
   storescu +tls → storescp +tls direct (the TLS wire limit)

For each: objects/s as the sender sees it (all Success answers), objects/s end to end (all
files at storescp), Success latency p50/p99 (from storescu's millisecond log timestamps), and
for Gantry the peak RSS of its processes (node + workers + forwarder) sampled during the run,
at each quarter of the run (flat memory means no growth with the object count).

Usage: python scripts/bench_gateway.py [--count N] [--senders K] [--association-per-object]
       [--receivers 1,2] [--rounds R] [--keep DIR] [--no-tls]
Needs dcmtk (storescu, storescp) and openssl on PATH. Sets TCP_NODELAY=1 for dcmtk (see DESIGN.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.config_network import NetworkConfig, default_receivers  # noqa: E402
from gateway.sitekey import create_key_file  # noqa: E402

# Gantry runs with its shipped default; the relay and the no-op SCP receive with the same
# maximum PDU, so that only what they do with each object differs.
MAX_PDU = NetworkConfig().max_pdu
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
LOG_CONFIG = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%q} %m%n
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def generate(folder: Path, count: int) -> list[Path]:
    """`count` 512×512 16-bit CT objects, one study, fresh UIDs, identifiers planted."""
    folder.mkdir(parents=True, exist_ok=True)
    base = dcmread(get_testdata_file("CT_small.dcm"))
    base.Rows = base.Columns = 512
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 12, 11
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
    base.PixelData = pixels
    base["PixelData"].VR = "OW"
    base.PatientName, base.PatientID = "BENCH^PATIENT", "BENCH0001"
    base.StudyInstanceUID, base.SeriesInstanceUID = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        base.SOPInstanceUID = generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.InstanceNumber = i + 1
        path = folder / f"ct{i:05}.dcm"
        base.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class StoreSCP:
    def __init__(self, folder: Path, fork: bool, tls: tuple[str, ...] = ()) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["storescp", *(["--fork"] if fork else []), *tls, "-aet", "PACS", "+uf",
             "--output-directory", str(folder), str(self.port)], env=DCMTK_ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # its --fork children go with it on stop()
        wait_port(self.port)

    def count(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def send(port: int, files: list[Path], logcfg: Path, called: str, senders: int,
         per_object: bool = False, tls: tuple[str, ...] = ()) -> tuple[float, list[float]]:
    """`senders` storescu at once, the files split between them: one association each, or
    with `per_object` one storescu run (and association, proposing only the file's class) per
    file, as modalities that associate for every image do; (seconds until the last one
    finished, Success latencies in ms)."""

    def storescu(i: int, batch: list[Path]) -> tuple[int, str]:
        run = subprocess.run(
            ["storescu", *(["-R"] if per_object else []), *tls, "-lc", str(logcfg),
             "-aet", f"MODALITY{i}", "-aec", called, "127.0.0.1", str(port), *map(str, batch)],
            env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return run.returncode, run.stdout

    def sender(i: int, runs: list) -> None:
        share = files[i::senders]
        for batch in ([[f] for f in share] if per_object else [share]):
            runs.append(storescu(i, batch))

    t0 = time.perf_counter()
    runs: list[tuple[int, str]] = []
    threads = [threading.Thread(target=sender, args=(i, runs)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    latencies: list[float] = []
    ok = 0
    for code, out in runs:
        if code != 0:
            raise RuntimeError(f"storescu: exit {code}")
        ok += out.count("Received Store Response (Success)")
        latencies += _latencies(out)
    if ok != len(files):
        raise RuntimeError(f"storescu: {ok}/{len(files)} Success")
    return elapsed, latencies


def _latencies(output: str) -> list[float]:
    latencies, sent_at = [], None
    for line in output.splitlines():
        m = re.match(r"(\d+\.\d+) (Sending Store Request|Received Store Response)", line)
        if not m:
            continue
        if m.group(2).startswith("Sending"):
            sent_at = float(m.group(1))
        elif sent_at is not None:
            latencies.append((float(m.group(1)) - sent_at) * 1000)
            sent_at = None
    return latencies


def wait_count(scp: StoreSCP, n: int, t0: float, timeout: float = 1800) -> float:
    while scp.count() < n:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"only {scp.count()} of {n} arrived")
        time.sleep(0.05)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- naive relay

RELAY = r'''
import socket, sys, threading
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
port, dest, max_pdu = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
scu = AE("RELAY")
scu.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
held = scu.associate("127.0.0.1", dest, ae_title="PACS")
held.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lock = threading.Lock()
def on_store(event):
    ds = event.dataset                      # decode in the handler
    ds.file_meta = event.file_meta
    with lock:                              # forward synchronously before answering
        rsp = held.send_c_store(ds)
    return rsp.Status if rsp else 0xA700
def on_open(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ae = AE("RELAY")
ae.maximum_pdu_size = max_pdu                # the same as Gantry's
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax)
ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_store),
                                                    (evt.EVT_CONN_OPEN, on_open)])
'''


# The floors: a pynetdicom SCP that answers Success and does nothing else (argv: port, PDU,
# AE title) or, given a folder, writes each object there and fsyncs it before answering.
FLOOR = r'''
import os, socket, sys
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
folder = sys.argv[4] if len(sys.argv) > 4 else None
def on_store(event):
    if folder is None:
        return 0x0000
    data = memoryview(event.encoded_dataset())   # file meta + the dataset as received
    fd = os.open(os.path.join(folder, event.request.AffectedSOPInstanceUID),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)                              # on disk before the answer
    finally:
        os.close(fd)
    return 0x0000
def on_open(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ae = AE(sys.argv[3])
ae.maximum_pdu_size = int(sys.argv[2])     # the same as Gantry's
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[
    (evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_open)])
'''


def run_durable(root: Path, files: list[Path], logcfg: Path, k: int, per_object: bool) -> dict:
    """storescu → the durable floor (each object written to a file and fsync'd, then Success)."""
    folder = root / "durable-out"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(port), str(MAX_PDU), "DURABLE",
                             str(folder)])
    wait_port(port)
    try:
        cpu0 = process_tree_cpu(proc.pid)["node"]
        elapsed, lat = send(port, files, logcfg, "DURABLE", k, per_object)
        cpu = process_tree_cpu(proc.pid)["node"] - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    if sum(1 for _ in folder.iterdir()) != len(files):
        raise RuntimeError("the durable floor did not write every object")
    shutil.rmtree(folder)
    return dict(send=elapsed, total=None, lat=lat, cpu={"floor": cpu})


# ---------------------------------------------------------------------------- gantry


def process_tree_rss(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in KiB summed over `pid` and its children."""
    pids = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    cur = peak = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        cur += int(fields.get("VmRSS", "0 kB").split()[0])
        peak += int(fields.get("VmHWM", "0 kB").split()[0])
    return cur, peak


def process_tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of `pid` ("node") and its children, by process name
    (gantry-worker, gantry-forward)."""
    ticks = os.sysconf("SC_CLK_TCK")
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    used: dict[str, float] = {}
    for p in [pid, *map(int, kids.split())]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            name = "node" if p == pid else Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        used[name] = used.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / ticks
    return used


def make_pki(folder: Path) -> Path:
    """A CA and, signed by it, certificates for gantry, pacs and modality (all 127.0.0.1)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                                   "keyUsage=critical,keyCertSign,cRLSign\n")
    (folder / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                                     "extendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for name in ("ca", "gantry", "pacs", "modality"):
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-subj", f"/CN={name}", "-out", f"{name}.csr")
        signer = (["-signkey", "ca.key"] if name == "ca"
                  else ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
        openssl("x509", "-req", "-in", f"{name}.csr", *signer, "-days", "2", "-extfile",
                "ca.ext" if name == "ca" else "leaf.ext", "-out", f"{name}.pem")
    return folder


def dcmtk_tls(pki: Path | None, who: str) -> tuple[str, ...]:
    """dcmtk's options for TLS as `who`, trusting the run's CA (none without a pki)."""
    if pki is None:
        return ()
    return ("+tls", str(pki / f"{who}.key"), str(pki / f"{who}.pem"), "+cf", str(pki / "ca.pem"))


def gantry_config(root: Path, dest_port: int, port: int, pki: Path | None = None,
                  receivers: int | None = None) -> Path:
    key = root / "site.key"
    if not key.exists():
        create_key_file(key)
    shutil.rmtree(root / "state", ignore_errors=True)
    cfg: dict = {
        "site_key": {"file": str(key)}, "state_dir": str(root / "state"), "log_level": "info",
        "network": {"ae_title": "GANTRY", "host": "127.0.0.1", "port": port,
                    "workers": 2, "receivers": receivers or default_receivers()},
        "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                  "port": dest_port, "associations": 2}},
        "routes": [{"name": "all", "destinations": ["pacs"]}],
    }
    if pki is not None:
        mine = {"certificate": str(pki / "gantry.pem"), "private_key": str(pki / "gantry.key")}
        cfg["network"]["tls"] = {**mine, "ca_certificates": str(pki / "ca.pem"),
                                 "require_client_certificate": True}
        cfg["destinations"]["pacs"]["tls"] = {**mine, "ca_certificates": str(pki / "ca.pem")}
    path = root / "gantry.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_gantry(root: Path, files: list[Path], logcfg: Path, k: int, per_object: bool,
               pki: Path | None, receivers: int | None = None) -> tuple[dict, dict]:
    """storescu → `gantry serve` → storescp (over TLS with a pki): the timings, and the CPU per
    process and the RSS samples."""
    scp = StoreSCP(root / "gantry-out", True, dcmtk_tls(pki, "pacs"))  # two associations in
    port = free_port()
    config = gantry_config(root, scp.port, port, pki, receivers)
    env = {**os.environ, "GANTRY_LOG_FILE": str(root / "gantry.log")}
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                           str(config)], env=env, cwd=Path(__file__).resolve().parents[1])
    wait_port(port)
    time.sleep(3)  # let the worker and forwarder processes finish importing
    samples: list[tuple[int, int, int]] = []  # (objects at storescp, rss, peak)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            cur, peak = process_tree_rss(gw.pid)
            samples.append((scp.count(), cur, peak))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cpu0 = process_tree_cpu(gw.pid)
        t0 = time.perf_counter()
        elapsed, lat = send(port, files, logcfg, "GANTRY", k, per_object,
                            dcmtk_tls(pki, "modality"))
        sent = process_tree_cpu(gw.pid)
        total = wait_count(scp, len(files), t0)
        cpu1 = process_tree_cpu(gw.pid)
    finally:
        stop.set()
        sampler.join()
        gw.terminate()
        gw.wait(60)
        scp.stop()
    cpu = {name: sent[name] - cpu0.get(name, 0.0) for name in sent}
    return (dict(send=elapsed, total=total, lat=lat, cpu=cpu),
            dict(cpu0=cpu0, cpu1=cpu1, samples=samples))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=1,
                        help="storescu processes sending at once (default 1)")
    parser.add_argument("--association-per-object", action="store_true",
                        help="one storescu run, and association, per file (use a smaller "
                             "--count: each run starts a process)")
    parser.add_argument("--receivers", default=str(default_receivers()), metavar="N[,M...]",
                        help="Gantry's network.receivers; several (e.g. 1,2) are compared, "
                             "run after run (default: this machine's default, "
                             f"{default_receivers()})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of the durable floor and each Gantry "
                             "(medians reported; default 1)")
    parser.add_argument("--keep", metavar="DIR", help="work here and keep the files")
    parser.add_argument("--no-tls", action="store_true",
                        help="skip the TLS runs (dcmtk direct and Gantry over DICOM TLS)")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "pgrep", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (install dcmtk)", file=sys.stderr)
            return 2
    root = Path(args.keep or tempfile.mkdtemp(prefix="gantry-bench-"))
    try:
        return run(args, root)
    finally:
        if not args.keep:  # about 2 GB for 1,000 objects: inputs, and each path's output
            shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    logcfg = root / "storescu-log.cfg"
    logcfg.write_text(LOG_CONFIG)
    t = time.perf_counter()
    files = sorted((root / "in").glob("ct*.dcm"))
    if len(files) != args.count:
        files = generate(root / "in", args.count)
    size = files[0].stat().st_size
    print(f"{len(files)} objects of {size // 1024} KB generated in "
          f"{time.perf_counter() - t:.1f} s under {root}")
    results: dict[str, dict] = {}

    # 1. direct
    fork = args.senders > 1
    k, per_object = args.senders, args.association_per_object
    scp = StoreSCP(root / "direct-out", fork)
    elapsed, lat = send(scp.port, files, logcfg, "PACS", k, per_object)
    total = wait_count(scp, len(files), time.perf_counter() - elapsed)
    scp.stop()
    results["dcmtk direct"] = dict(send=elapsed, total=total, lat=lat)

    # 2. naive relay
    scp = StoreSCP(root / "relay-out", fork)
    port = free_port()
    relay = subprocess.Popen([sys.executable, "-c", RELAY, str(port), str(scp.port),
                              str(MAX_PDU)])
    wait_port(port)
    try:
        elapsed, lat = send(port, files, logcfg, "RELAY", k, per_object)
        total = wait_count(scp, len(files), time.perf_counter() - elapsed)
    finally:
        relay.terminate()
        relay.wait(10)
        scp.stop()
    results["naive relay"] = dict(send=elapsed, total=total, lat=lat)

    # 3. the pynetdicom floor
    port = free_port()
    floor = subprocess.Popen([sys.executable, "-c", FLOOR, str(port), str(MAX_PDU), "FLOOR"])
    wait_port(port)
    try:
        elapsed, lat = send(port, files, logcfg, "FLOOR", k, per_object)
    finally:
        floor.terminate()
        floor.wait(10)
    results["pynetdicom floor"] = dict(send=elapsed, total=None, lat=lat)

    # 4. the durable floor and gantry (each `receivers`), in interleaved rounds
    counts = [int(x) for x in args.receivers.split(",")]
    rounds: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        rounds.setdefault("durable floor", []).append(
            run_durable(root, files, logcfg, k, per_object))
        for n in counts:
            result, use = run_gantry(root, files, logcfg, k, per_object, None, n)
            rounds.setdefault(f"gantry r={n}", []).append(result)
            if n == counts[0]:
                gantry_use = use
    for name, runs in rounds.items():  # the median round, by Success time
        results[name] = sorted(runs, key=lambda r: r["send"])[len(runs) // 2]
    results["gantry"] = results[f"gantry r={counts[0]}"]
    # 5. the same over TLS (after dcmtk direct over TLS)
    if not args.no_tls:
        pki = make_pki(root / "pki")
        scp = StoreSCP(root / "direct-tls-out", fork, dcmtk_tls(pki, "pacs"))
        elapsed, lat = send(scp.port, files, logcfg, "PACS", k, per_object,
                            dcmtk_tls(pki, "modality"))
        total = wait_count(scp, len(files), time.perf_counter() - elapsed)
        scp.stop()
        results["dcmtk direct TLS"] = dict(send=elapsed, total=total, lat=lat)
        results["gantry TLS"], _ = run_gantry(root, files, logcfg, k, per_object, pki,
                                              counts[0])

    # report
    n = len(files)
    how = "one association per object" if per_object else "one association per sender"
    print(f"\n{n} objects, {k} sender(s) at once, {how}; maximum PDU {MAX_PDU} for the relay, the "
          f"no-op SCP, the durable floor and Gantry (r=N: network.receivers N); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    direct = n / results["dcmtk direct"]["send"]
    naive = n / results["naive relay"]["send"]
    print(f"\n{'path':18} {'Success obj/s':>14} {'end-to-end obj/s':>17} "
          f"{'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        if name == "gantry":
            continue  # the first of the `gantry r=N` lines
        end = f"{n / r['total']:17.1f}" if r["total"] else f"{'-':>17}"
        print(f"{name:18} {n / r['send']:14.1f} {end} "
              f"{pct(r['lat'], 50):8.1f} {pct(r['lat'], 99):8.1f}")
    g = results["gantry"]
    print(f"\ngantry / naive relay (Success): {n / g['send'] / naive:.2f}x   "
          f"(end to end: {(n / g['total']) / (n / results['naive relay']['total']):.2f}x)")
    print(f"gantry / dcmtk direct (Success): {n / g['send'] / direct:.2f}x   "
          f"(end to end: {(n / g['total']) / (n / results['dcmtk direct']['total']):.2f}x)")
    floor_rate = n / results["pynetdicom floor"]["send"]
    print(f"gantry / pynetdicom floor (Success): {n / g['send'] / floor_rate:.2f}x   "
          f"(naive relay / floor: {naive / floor_rate:.2f}x)")
    durable = n / results["durable floor"]["send"]
    print(f"gantry / durable floor (Success): {n / g['send'] / durable:.2f}x   (target with one "
          f"sender: 0.8x; the floor writes and fsyncs each object before answering, nothing "
          f"else; gantry r={counts[0]})")
    print("CPU per object while the senders ran (ms): durable floor "
          f"{results['durable floor']['cpu']['floor'] * 1000 / n:.1f}; gantry " + ", ".join(
              f"{name} {sec * 1000 / n:.1f}" for name, sec in sorted(g["cpu"].items())
              if sec * 1000 / n >= 0.05))
    if len(counts) > 1:
        rates = {c: n / results[f"gantry r={c}"]["send"] for c in counts}
        print("gantry receivers (Success obj/s, median of "
              f"{args.rounds} interleaved rounds): "
              + ", ".join(f"{c}: {rate:.1f}" for c, rate in rates.items())
              + f"; {counts[-1]} vs {counts[0]}: {rates[counts[-1]] / rates[counts[0]]:.2f}x")
    if args.rounds > 1 or len(counts) > 1:
        for name, runs in rounds.items():
            print(f"  {name} rounds, Success obj/s: "
                  + " ".join(f"{n / r['send']:.1f}" for r in runs))
    if "gantry TLS" in results:
        t, d = results["gantry TLS"], results["dcmtk direct TLS"]
        print(f"gantry TLS / gantry (Success): {g['send'] / t['send']:.2f}x   (end to end: "
              f"{g['total'] / t['total']:.2f}x; dcmtk direct TLS / direct: "
              f"{results['dcmtk direct']['send'] / d['send']:.2f}x)")
    cpu0, cpu1, samples = gantry_use["cpu0"], gantry_use["cpu1"], gantry_use["samples"]
    used = {name: (cpu1[name] - cpu0.get(name, 0.0)) * 1000 / n for name in cpu1}
    print("gantry CPU per object (until all delivered): "
          + ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(used.items())
                      if ms >= 0.05)
          + f"; total {sum(used.values()):.1f} ms on {os.cpu_count()} CPUs")
    if samples:
        peak = max(s[1] for s in samples)
        print(f"gantry RSS (node + workers + forwarder): peak {peak / 1024:.0f} MiB")
        for q in (0.25, 0.5, 0.75, 1.0):
            upto = [s[1] for s in samples if s[0] <= q * n] or [samples[0][1]]
            print(f"  up to {int(q * n):5} objects delivered: max RSS {max(upto) / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
