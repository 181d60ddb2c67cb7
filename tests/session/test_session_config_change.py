"""After a configuration change, export redoes exactly the objects the change affects: nothing
for a change a batch export does not read, one machine's objects for a redaction rule, every
readable object for a profile option; files of objects not redone are not written again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydicom.data import get_testdata_file
from sessionhelpers import CONFIG, write_config

import gantry


def _identities(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for folder in folders
            for p in folder.rglob("*") if p.is_file()}


def test_a_configuration_change_redoes_what_it_affects(batch_folder: Any, tmp_path: Path,
                                                       site_key_env: bytes) -> None:
    dump = tmp_path / "dump"
    shutil.copytree(batch_folder.root, dump)
    shutil.copy2(get_testdata_file("examples_rgb_color.dcm"), dump / "logiq.dcm")  # has a rule
    shutil.copy2(get_testdata_file("examples_ybr_color.dcm"), dump / "turbo.dcm")  # has none
    out = tmp_path / "OUT"
    quarantine = tmp_path / "OUT-quarantine"
    session = gantry.Session(tmp_path / "s.gantry", workers=2, progress=False)
    session.ingest(dump)
    total = len(batch_folder.good) + len(batch_folder.bad) + 2

    def export(config_text: str) -> gantry.ExportSummary:
        session.load_config(write_config(tmp_path / "cfg", config_text))
        return session.export(out)

    first = export(CONFIG)
    assert (first.exported, first.quarantined) == (len(batch_folder.good) + 1,
                                                   len(batch_folder.bad) + 1)
    assert "burned-in text risk" in (quarantine / "turbo.dcm.reason.txt").read_text()
    before = _identities(out, quarantine)

    unrelated = export(CONFIG + "network: {port: 11199}\n")
    assert (unrelated.exported, unrelated.quarantined, unrelated.done) == (0, 0, total)
    assert _identities(out, quarantine) == before

    turbo_rule = CONFIG + """\
    - name: turbo
      match: {Manufacturer: "SonoSite, Inc.", ManufacturerModelName: Turbo}
      regions: [[0, 0, 32, 16]]
"""
    one_machine = export(turbo_rule)
    assert (one_machine.exported, one_machine.quarantined, one_machine.removed) == (1, 0, 1)
    assert not (quarantine / "turbo.dcm").exists()
    assert not (quarantine / "turbo.dcm.reason.txt").exists()
    after = _identities(out, quarantine)
    assert {p: i for p, i in after.items() if p in before} == {
        p: i for p, i in before.items() if "turbo" not in p}

    profile = export(turbo_rule.replace("    - Retain Patient Characteristics Option\n", ""))
    readable = len(batch_folder.good) + 2
    assert (profile.exported, profile.quarantined, profile.done) == (
        readable, 0, len(batch_folder.bad))
    unchanged = _identities(quarantine)  # the unreadable originals were not copied again
    assert unchanged == {p: i for p, i in after.items() if p.startswith(str(quarantine))}
    session.close()


def test_outcomes_caused_by_the_machine_are_tried_again(batch_folder: Any, tmp_path: Path,
                                                        site_key_env: bytes) -> None:
    """A worker's death or a full disk quarantines the file for this run only."""
    out = tmp_path / "OUT"
    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        session.ingest(batch_folder.root / "study")
        assert session.export(out).exported == 2
        with session.db:  # as the export records them (on_death; an OSError in a worker)
            session.db.execute("UPDATE exports SET outcome = 'quarantined', decision = 'died' "
                               "WHERE file_id = (SELECT min(file_id) FROM exports)")
            session.db.execute("UPDATE exports SET outcome = 'quarantined', decision = 'retry' "
                               "WHERE file_id = (SELECT max(file_id) FROM exports)")
        again = session.export(out)
    assert (again.exported, again.done) == (2, 0)
