"""/metrics and /healthz scraped for real over HTTP: `gantry serve` with storescu as the
modality and storescp as the PACS, and a receiver whose health checks are made to fail."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from nethelpers import free_port, identifiers_in, make_objects, storescu, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from receivers import running_receiver

from gateway.config import parse_config
from gateway.metrics import MetricsServer, NodeMetrics, StageTimes, reason_class
from gateway.service import STAGE_ROWS

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def healthcheck_command(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, pointed at `port`."""
    line = re.search(r'^\s*CMD (\[.*"gateway\.metrics".*\])$', (ROOT / "Dockerfile").read_text(),
                     re.M)
    assert line, "the Dockerfile has no HEALTHCHECK running gateway.metrics"
    cmd = json.loads(line.group(1))
    return [sys.executable if c == "python" else c.replace(":9112/", f":{port}/") for c in cmd]


def test_a_node_counts_what_it_receives_forwards_and_quarantines(tmp_path, gateway, storescp):
    scp = storescp()
    port = free_port()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)},
                          metrics={"host": "127.0.0.1", "port": port, "min_free_disk_mb": 1})
    gw = gateway(config, tmp_path / "gantry.log")
    assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30)
    run = subprocess.run(healthcheck_command(port), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["ready"] is True
    assert samples(port)[("gantry_objects_received_total", ())] == 0

    ct = [p for p, _ in make_objects(tmp_path / "ct", 3)]
    us = [p for p, _ in make_objects(tmp_path / "us", 1, modality="US")]  # burned-in risk
    assert storescu(gw.port, ct + us).returncode == 0
    assert wait_for(lambda: gw.store().counts() == {"delivered": 3, "quarantined": 1}, 120)
    got = samples(port)
    assert got[("gantry_objects_received_total", ())] == 4
    assert got[("gantry_store_success_seconds_count", ())] == 4
    assert got[("gantry_objects_forwarded_total",
                (("destination", "pacs"), ("route", "all")))] == 3
    assert got[("gantry_objects_quarantined_total",
                (("reason", "burned-in text risk"), ("route", "all")))] == 1
    for stage, n in (("queue", 4), ("read", 4), ("route", 4), ("deidentify", 4),
                     ("record", 3), ("send", 3)):
        assert got[("gantry_stage_seconds_count", (("stage", stage),))] == n, stage
    assert got[("gantry_backlog_objects", (("destination", "pacs"),))] == 0

    scp.stop()  # the PACS goes away: the backlog grows and ages
    more = [p for p, _ in make_objects(tmp_path / "more", 2)]
    assert storescu(gw.port, more).returncode == 0
    assert wait_for(lambda: samples(port)[("gantry_backlog_objects",
                                           (("destination", "pacs"),))] == 2, 120)
    assert samples(port)[("gantry_oldest_pending_seconds", (("destination", "pacs"),))] > 0
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    assert identifiers_in(text) == []
    assert "no redaction rule for" not in text  # the reason's text (it names the device)
    gw.stop()
    run = subprocess.run(healthcheck_command(port), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1  # nothing answers: unhealthy


@pytest.fixture
def node(tmp_path):
    """A receiver with its NodeMetrics served over HTTP on an ephemeral port."""
    servers = []

    def start(rx, min_free_mb: int = 1) -> tuple[NodeMetrics, int]:
        import multiprocessing as mp

        metrics = NodeMetrics(rx.store_path, tmp_path, min_free_mb,
                              StageTimes(mp.get_context("spawn"), STAGE_ROWS), ["pacs"],
                              rx.listening)
        server = MetricsServer(metrics, "127.0.0.1", 0)
        server.start()
        servers.append((server, metrics))
        return metrics, server.port

    yield start
    for server, metrics in servers:
        server.stop()
        metrics.close()


def health(port: int) -> tuple[int, dict]:
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    return status, json.loads(body)


def test_healthz_is_ready_only_when_every_check_holds(tmp_path, node):
    with running_receiver(tmp_path) as rx:
        _, port = node(rx)
        status, body = health(port)
        assert status == 200 and body["ready"] is True
        _, full = node(rx, min_free_mb=2**40)  # a disk that would need a petabyte free
        status, body = health(full)
        assert status == 503 and body["disk_free_mb"] < body["disk_min_free_mb"]
        locker = sqlite3.connect(str(rx.store_path), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            status, body = health(port)
            assert status == 503 and body["database_writable"] is False
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert health(port)[0] == 200
        rx.stop_accepting()
        status, body = health(port)
        assert status == 503 and body["receiver_listening"] is False
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404


def test_reason_classes_carry_no_values():
    assert reason_class("burned-in text risk, no redaction rule for ACME / X1") == \
        "burned-in text risk"
    assert reason_class("pacs answered status 0xA900") == "refused by destination"
    assert reason_class("no route for modality US from calling AE US1") == "no route"
    assert reason_class("something nobody foresaw: PLANTEDNAME") == "other"


def test_a_metrics_port_in_use_stops_the_node_at_start(tmp_path):
    import socket

    from gateway.config import ConfigError
    from gateway.service import Service

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = parse_config({"state_dir": str(tmp_path / "state"), "network": {"port": 0},
                            "metrics": {"port": taken.getsockname()[1]}},
                           str(tmp_path / "gantry.yaml"))
        with pytest.raises(ConfigError, match=r"gantry.yaml: metrics: cannot listen on"):
            Service(cfg, b"k" * 32)


def test_a_released_object_is_queued_from_its_release_not_its_first_receipt(tmp_path):
    import multiprocessing as mp
    import shutil

    from pydicom.data import get_testdata_file

    from gateway.statedir import StateDir
    from gateway.store import Store
    from gateway.worker import Worker

    cfg = parse_config({"destinations": {"pacs": {"ae_title": "PACS", "host": "h", "port": 1}},
                        "routes": [{"name": "mr", "tags": {"Modality": "MR"},
                                    "destinations": ["pacs"]}]}, "<test>")
    state = StateDir(tmp_path / "state")
    store = Store(state.db)
    times = StageTimes(mp.get_context("spawn"), 1)
    worker = Worker(cfg, b"k" * 32, state, times=times.recorder(0))
    shutil.copy(get_testdata_file("CT_small.dcm"), state.spooled("j1"))
    store.add_job("j1", calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1", sop_hash="H",
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="x", size=1)
    worker.run_once()  # quarantined: no route
    store.conn.execute("UPDATE jobs SET received_at = received_at - 86400")  # a day in quarantine
    store.release("j1")
    worker.run_once()
    queue = {s.labels["le"]: s.value for s in times.collect().samples
             if s.labels.get("stage") == "queue" and s.name.endswith("_bucket")}
    assert queue["+Inf"] == 2 and queue["300.0"] == 2  # neither waited a day
