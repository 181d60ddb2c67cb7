#!/usr/bin/env python
"""Lost C-STORE responses: pynetdicom → dcmtk storescp, with and without Gantry's reactor guard.

Two threads, one association each (the forwarder's shape), send the same generated CT object
N times to `storescp --fork +uf` (each copy stored, then deleted) with a 20 s response timeout:
first with pynetdicom's own reactor pause, then with `gateway.net.reactor_pause.guard`. A send
that gets no response is one whose response pynetdicom's reactor took off the queue (see
reactor_pause.py). Prints the count and the time of each run.

Usage: python scripts/bench_response_race.py [--sends 12000]
Needs dcmtk's storescp on PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import DCMTK_ENV, free_port, generate, wait_port  # noqa: E402
from pynetdicom import AE, _config  # noqa: E402

from gateway.net.reactor_pause import guard  # noqa: E402

_config.STORE_SEND_CHUNKED_DATASET = True  # as the forwarder sends


def run(path: Path, sends: int, guarded: bool, out: Path) -> tuple[int, float]:
    """(sends without a response, seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "PACS", "+uf", "--output-directory",
                            str(out), str(port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    lost: list[int] = []
    done = threading.Event()

    def clean() -> None:  # storescp stores every copy: keep the disk from filling
        while not done.wait(1.0):
            for f in list(out.iterdir()):
                f.unlink(missing_ok=True)

    def connect() -> object:
        ae = AE("GANTRY")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
        ae.network_timeout = ae.dimse_timeout = 20
        assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if guarded:
            guard(assoc)
        return assoc

    def slot(first: int) -> None:
        assoc = connect()
        for i in range(first, sends, 2):
            rsp = assoc.send_c_store(path)
            if not rsp or "Status" not in rsp:
                lost.append(i)
                assoc = connect()
        assoc.release()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=slot, args=(k,)) for k in (0, 1)]
    cleaner = threading.Thread(target=clean)
    for t in [*threads, cleaner]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    cleaner.join()
    os.killpg(scp.pid, signal.SIGTERM)
    scp.wait(10)
    return len(lost), time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=12000)
    args = parser.parse_args()
    if shutil.which("storescp") is None:
        print("storescp not found (install dcmtk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gantry-race-") as tmp:
        root = Path(tmp)
        (path,) = generate(root / "in", 1)
        for guarded in (False, True):
            n, secs = run(path, args.sends, guarded, root / "out")
            name = "with Gantry's guard" if guarded else "pynetdicom's own pause"
            print(f"{name:24} {n:4d} of {args.sends} sends without a response "
                  f"({secs:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
