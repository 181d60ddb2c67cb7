"""Receiving comes first: while the node receives, its workers and forwarder keep off one CPU
(the receiver, whose every answer a sender waits for, finds it free); once the node is idle,
an association held open with nothing to send included, they may use every CPU again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from nethelpers import free_port, wait_for, write_config
from pynetdicom import AE
from pynetdicom.sop_class import Verification


def children(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(k) for k in kids.split()
            if Path(f"/proc/{k}/comm").read_text().startswith("gantry-")]


def allowed(pids: list[int]) -> set[frozenset[int]]:
    """The CPU sets the threads of `pids` may run on (a thread that ended meanwhile: none)."""
    sets = set()
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                sets.add(frozenset(os.sched_getaffinity(int(task))))
            except OSError:
                pass
    return sets


def test_the_children_keep_off_a_cpu_while_the_node_receives(tmp_path, gateway):
    every = frozenset(os.sched_getaffinity(0))
    if len(every) < 2:
        pytest.skip("one CPU: none to keep for the receiver")
    gw = gateway(write_config(tmp_path, {"pacs": ("PACS", free_port())}), tmp_path / "log")
    assert wait_for(lambda: len(children(gw.proc.pid)) == 3)  # two workers, one forwarder
    kids = children(gw.proc.pid)
    assert wait_for(lambda: allowed(kids) == {every})  # idle: every CPU
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="GANTRY")
    assert assoc.is_established
    try:
        def kept_off_one() -> bool:
            sets = allowed(kids)
            return bool(sets) and all(s < every and len(s) == len(every) - 1 for s in sets)

        assert wait_for(kept_off_one, step=0.02), "the children kept every CPU"
        # Nothing is sent: the node is idle again, though the association stays open.
        assert wait_for(lambda: allowed(kids) == {every})
        assert assoc.send_c_echo().Status == 0x0000  # (still open)
    finally:
        assoc.release()


def test_the_demo_node_gives_the_cpus_back_once_idle(tmp_path):
    """`gantry demo` runs the node in its own process (gateway.demo.running_node): its
    supervisor must run there too, or the children stay off the receiver's CPU after the first
    association (the demo's OCR then took twice as long)."""
    from gateway.config import load_config
    from gateway.demo import running_node

    every = frozenset(os.sched_getaffinity(0))
    if len(every) < 2:
        pytest.skip("one CPU: none to keep for the receiver")
    config = load_config(str(write_config(tmp_path, {"pacs": ("PACS", free_port())})))
    with running_node(config) as node:
        kids = [c.process.pid for c in node.children]
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="GANTRY")
        assert assoc.is_established
        try:
            assert wait_for(lambda: every not in allowed(kids), step=0.02)  # receiving
            assert wait_for(lambda: allowed(kids) == {every})  # idle again: every CPU
        finally:
            assoc.release()
