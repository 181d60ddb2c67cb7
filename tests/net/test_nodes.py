"""Two gateway nodes on this machine, two state directories, one site key: an object sent to
either leaves byte-identical (what a TCP load balancer in front of several nodes relies on)."""

from __future__ import annotations

import shutil
from pathlib import Path

from nethelpers import PLANTED, make_objects, storescu, wait_for, write_config
from pydicom import dcmread

from gateway.store import DELIVERED


def _delivered(gw, n: int) -> bool:
    store = gw.store()
    try:
        return store.counts().get(DELIVERED, 0) >= n
    finally:
        store.close()


def test_an_object_sent_to_either_node_leaves_byte_identical(tmp_path, storescp, gateway):
    objects = make_objects(tmp_path / "objects", 6, studies=2)
    files = [path for path, _ in objects]
    pacs_a, pacs_b = storescp(), storescp()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a = write_config(tmp_path / "a", {"pacs": ("PACS", pacs_a.port)})
    shutil.copy2(tmp_path / "a" / "site.key", tmp_path / "b" / "site.key")  # the one shared key
    config_b = write_config(tmp_path / "b", {"pacs": ("PACS", pacs_b.port)})
    assert (tmp_path / "a" / "state") != (tmp_path / "b" / "state")
    node_a = gateway(config_a, tmp_path / "a" / "log.jsonl")
    node_b = gateway(config_b, tmp_path / "b" / "log.jsonl")

    # Half to each node first, then the other half (a load balancer's choice is arbitrary).
    assert storescu(node_a.port, files[:3]).returncode == 0
    assert storescu(node_b.port, files[3:]).returncode == 0
    assert storescu(node_b.port, files[:3]).returncode == 0
    assert storescu(node_a.port, files[3:]).returncode == 0
    for node in (node_a, node_b):
        assert wait_for(lambda node=node: _delivered(node, len(files)), 180)
    assert wait_for(lambda: len(pacs_a.files()) == len(pacs_b.files()) == len(files), 60)

    def by_sop(received: list[Path]) -> dict[str, bytes]:
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
                for p in received}

    from_a, from_b = by_sop(pacs_a.files()), by_sop(pacs_b.files())
    assert len(from_a) == len(files)
    assert from_a == from_b  # same new UIDs, same bytes, whichever node de-identified it
    originals = {uid for _, uid in objects}
    for data in from_a.values():
        assert not any(uid.encode() in data for uid in originals)
        for value in PLANTED.values():
            assert value.encode() not in data
    studies = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in pacs_a.files()}
    assert len(studies) == 2  # one study's objects stay together across nodes
