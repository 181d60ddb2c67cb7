"""`network.receivers: N`: N processes listening on one port, sharing the state directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from nethelpers import make_objects, storescu, wait_for, write_config
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from gateway.config import ConfigError, default_receivers, parse_config
from gateway.store import DELIVERED


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
    kids = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    receivers = {int(k) for k in kids
                 if Path(f"/proc/{k}/comm").read_text().strip() == "gantry-receiver"}
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
