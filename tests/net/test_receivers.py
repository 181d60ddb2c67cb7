"""`network.receivers: N`: N processes listening on one port, sharing the state directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.request import urlopen

import pytest
import yaml
from lxml import etree
from nethelpers import free_port, make_objects, storescu, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from gateway.config import ConfigError, parse_config
from gateway.config_network import default_receivers
from gateway.store import DELIVERED


def _receivers(node: int) -> set[int]:
    """The pids of a node's extra receiver processes."""
    kids = subprocess.run(["pgrep", "-P", str(node)], capture_output=True,
                          text=True).stdout.split()
    return {int(k) for k in kids
            if Path(f"/proc/{k}/comm").read_text().strip() == "gantry-receiver"}


def _owners(port: int) -> list[int]:
    """The pids holding the established connections accepted on `port`."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]


def test_concurrent_associations_are_received_by_several_processes(tmp_path, storescp,
                                                                   gateway):
    if shutil.which("ss") is None:
        pytest.skip("ss (Debian iproute2) is not installed: cannot see which process accepted")
    scp = storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    data = yaml.safe_load(config.read_text())
    data["network"]["receivers"] = 3
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    gw = gateway(config, tmp_path / "log.jsonl")
    assert wait_for(lambda: (tmp_path / "log.jsonl").exists() and (tmp_path / "log.jsonl")
                    .read_text().count("receiver.listening") == 3, 60)
    receivers = _receivers(gw.proc.pid)
    assert len(receivers) == 2

    # Twelve associations held open at once: the kernel spreads them over the processes.
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", gw.port, ae_title="GANTRY") for _ in range(12)]
    try:
        assert all(a.is_established for a in held)
        owners = set(_owners(gw.port))
        assert owners <= receivers | {gw.proc.pid}
        assert len(owners) >= 2, "every association went to one process"

        # Eight storescu senders at once while they are held: every object arrives.
        files = [p for p, _ in make_objects(tmp_path / "objects", 24, studies=4)]
        runs: list[subprocess.CompletedProcess] = []
        threads = [threading.Thread(target=lambda part=part: runs.append(
            storescu(gw.port, part))) for part in (files[i::8] for i in range(8))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.returncode for r in runs] == [0] * 8, [r.stderr for r in runs]
    finally:
        for a in held:
            a.release()
    store = gw.store()
    try:
        assert wait_for(lambda: store.counts().get(DELIVERED, 0) == len(files), 180), \
            store.counts()
    finally:
        store.close()
    assert wait_for(lambda: len(scp.files()) == len(files), 60)
    assert gw.stop() == 0
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in receivers), 30)


def test_receivers_is_checked_and_defaults_to_the_machine():
    assert parse_config({}, "<t>").network.receivers == default_receivers() >= 1
    with pytest.raises(ConfigError, match="receivers"):
        parse_config({"network": {"receivers": 0}}, "<t>")


def _metric(port: int, name: str) -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name)


def test_every_receiver_process_audits_its_associations_and_counts_into_metrics(
        tmp_path, storescp, gateway):
    from test_audit_node import UdpCollector, body, kind

    collector = UdpCollector()
    scp = storescp()
    metrics = free_port()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)}, workers=1,
                          audit={"syslog": f"udp://127.0.0.1:{collector.port}"},
                          metrics={"host": "127.0.0.1", "port": metrics, "min_free_disk_mb": 1})
    data = yaml.safe_load(config.read_text())
    data["network"]["receivers"] = 2
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    log = tmp_path / "log.jsonl"
    try:
        gw = gateway(config, log)
        assert wait_for(lambda: log.exists() and log.read_text().count("receiver.listening")
                        == 2, 60)
        (child,) = _receivers(gw.proc.pid)

        def taken_by() -> list[int]:
            """The pid named in each association-opened message (the process that took it)."""
            pids = []
            for m in list(collector.messages):
                doc = etree.fromstring(body(m))
                if kind(body(m)) == "110114/110122/0":
                    pids += [int(p.get("UserID")) for p in doc.findall("ActiveParticipant")
                             if p.get("UserIsRequestor") == "false"]
            return pids

        # Rounds of four senders at once (one association each) until the kernel has given
        # associations to both processes (each round, 1 in 8 that all four go to one).
        files = [p for p, _ in make_objects(tmp_path / "objects", 32, studies=2)]
        sent = 0
        for r in range(8):
            batch = files[r * 4:(r + 1) * 4]
            runs: list[subprocess.CompletedProcess] = []
            threads = [threading.Thread(
                target=lambda f=f, out=runs: out.append(storescu(gw.port, [f])))
                for f in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [x.returncode for x in runs] == [0] * len(batch), [x.stderr for x in runs]
            sent += len(batch)
            # every association's opening is audited, whichever process took it
            assert wait_for(lambda: len(taken_by()) == sent, 30), (taken_by(), sent)  # noqa: B023
            if set(taken_by()) == {gw.proc.pid, child}:
                break
        assert set(taken_by()) == {gw.proc.pid, child}, "the kernel never chose one process"
        assert wait_for(lambda: sum(kind(body(m)) == "110114/110123/0"
                                    for m in list(collector.messages)) == sent, 30)
        # /metrics counts every object received, by either process
        assert _metric(metrics, "gantry_objects_received_total") == sent
        assert _metric(metrics, "gantry_store_success_seconds_count") == sent
        assert gw.stop() == 0
    finally:
        collector.close()
