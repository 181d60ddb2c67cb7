"""Faults in the node itself (issue 17): a log sink that dies, a worker that dies, a full disk,
malformed objects claimed beside valid ones. `gantry serve` runs as a subprocess between real
senders (dcmtk storescu, a pynetdicom sender of raw file bytes) and dcmtk storescp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from nethelpers import make_objects, storescu, wait_for, wait_port, write_config

from gateway.store import DELIVERED, QUARANTINED, Store


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


