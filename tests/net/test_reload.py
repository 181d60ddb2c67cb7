"""Configuration reload on a running node: `gantry serve` as a subprocess, dcmtk storescu as the
modality, storescp as the research PACS.

Before, `gantry quarantine release` "after a config fix" re-ran the objects with the
configuration the node started with, and they came back quarantined for the same reason with
no word said. Now SIGHUP and `gantry reload` make the node re-read its file (a bad one is
refused, the running one kept), and release says which configuration will re-run the objects.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from nethelpers import make_objects, storescu, wait_for, write_config

from gateway.store import DELIVERED, QUARANTINED


def gantry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=180)


def edit(config: Path, change) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def node_record(state: Path) -> dict:
    return json.loads((state / "node.json").read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_config_fix_reaches_the_running_node_and_release_says_which_it_uses(
        tmp_path, storescp, gateway):
    pacs = storescp()
    objs = make_objects(tmp_path / "in", 4, modality="CT")
    config = write_config(tmp_path, {"pacs": ("PACS", pacs.port)},
                          routes=[{"name": "mr", "tags": {"Modality": "MR"},
                                   "destinations": ["pacs"]}], workers=1)
    state = tmp_path / "state"
    log = tmp_path / "log.jsonl"
    gw = gateway(config, log)
    assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
    store = gw.store()
    assert wait_for(lambda: store.counts().get(QUARANTINED) == 4)
    assert all(r["reason"].startswith("no route: modality CT") for r in store.quarantined())

    # Originals are owner-only, from the state directory down.
    quarantined = sorted((state / "quarantine").iterdir())
    assert len(quarantined) == 4 and {mode(p) for p in quarantined} == {0o600}
    assert {mode(d) for d in (state, state / "spool", state / "out", state / "quarantine")} \
        == {0o700}
    assert mode(state / "gantry.db") == 0o600 and mode(state / "node.json") == 0o600

    # The fix: route CT too. Released before the node has it, the objects would come back
    # quarantined for the same reason: release refuses and says what to do.
    edit(config, lambda d: d["routes"][0]["tags"].update(Modality=["MR", "CT"]))
    run = gantry("quarantine", "release", "--all", "--config", str(config))
    assert run.returncode == 1
    assert f"{config} has changed since the running node (pid {gw.proc.pid})" in run.stderr
    assert "gantry reload --config" in run.stderr and "nothing released" in run.stderr
    assert store.counts() == {QUARANTINED: 4}
    status = gantry("status", "--config", str(config)).stdout
    assert f"node:  pid {gw.proc.pid}, {config} as loaded at " in status
    assert "(the file has changed since: `gantry reload`)" in status

    # A bad configuration is refused by `gantry reload` before the node hears of it ...
    good = config.read_text()
    config.write_text(good.replace("routes:", "routez:"))
    run = gantry("reload", "--config", str(config))
    assert run.returncode == 2 and f"{config}: routez: unknown key" in run.stderr
    assert node_record(state)["reloads"] == 0
    # ... and by the node itself on SIGHUP, loudly, keeping the configuration it has.
    os.kill(gw.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: node_record(state)["reloads"] == 1)
    assert "routez: unknown key" in node_record(state)["refused"]
    refused = [json.loads(line) for line in log.read_text().splitlines()
               if '"config.reload_refused"' in line]
    assert refused and refused[0]["level"] == "error"
    assert "reload refused, the node keeps its running configuration" in \
        log.with_suffix(".err").read_text()
    assert gw.proc.poll() is None  # still running

    config.write_text(good)
    run = gantry("reload", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"reloaded: the node (pid {gw.proc.pid}) uses {config} as "
                                 "loaded at ")
    assert node_record(state)["refused"] is None
    status = json.loads(gantry("status", "--json", "--config", str(config)).stdout)
    assert status["node"]["pid"] == gw.proc.pid and not status["node"]["config_file_changed"]

    run = gantry("quarantine", "release", "--all", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"4 released: the running node (pid {gw.proc.pid}) re-runs "
                                 f"them with {config} as loaded at ")
    assert wait_for(lambda: store.counts() == {DELIVERED: 4})
    assert wait_for(lambda: len(pacs.files()) == 4)
    store.close()

    # With no node running, release says the next `gantry serve` decides.
    assert gw.stop() == 0
    run = gantry("reload", "--config", str(config))
    assert run.returncode == 1 and "no node is running on" in run.stderr
