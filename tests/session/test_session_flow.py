"""The whole curation flow in Python over the corpus and the planted folder: ingest → examine →
configure → anonymize → redact → verify → export, and its output byte-identical to the one-pass
batch (`gantry deidentify`'s run_batch) under the same configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sessionhelpers import assert_nothing_planted, tree, write_config

import gantry
from gateway.batch import run_batch
from gateway.deid.keyed import new_uid


def test_the_whole_flow_in_python(dump: Path, batch_folder: Any, tmp_path: Path,
                                  site_key_env: bytes) -> None:
    config_path = write_config(tmp_path / "cfg")
    printed: list[str] = []
    db = tmp_path / "dump.gantry"
    with gantry.Session(db, workers=2, progress=False) as session:
        ingested = session.ingest(dump)
        printed.append(str(ingested))
        files = [p for p in dump.rglob("*") if p.is_file()]
        assert ingested.new == len(files) and not ingested.changed
        unreadable = dict(ingested.unreadable)
        for bad, words in batch_folder.bad.items():  # each named, with its problem
            reason = unreadable[str(dump / "planted" / bad.relative_to(batch_folder.root))]
            assert all(w.lower() in reason.lower() for w in words), reason
        assert ingested.conflicts, "the corpus holds files sharing a SOP Instance UID"

        inventory = session.examine()
        printed.append(str(inventory))
        assert "machine signature" in str(inventory)
        assert {e.signature for e in inventory.records} >= {"G.E. Medical Systems / LOGIQ 700"}
        assert sum(e.count for e in inventory.records) == len(session.instances)

        session.load_config(config_path)
        anonymized = session.anonymize_metadata()
        redacted = session.redact_pixels()
        verified = session.verify()
        printed += [c.table(limit=10_000) for c in (anonymized, redacted, verified)]
        by_path = {r.path: r for r in verified.records}
        assert len(by_path) == len(files) - ingested.duplicates
        # what changes: the planted names and IDs, in every good planted file (some share a UID
        # with the corpus file they were made from: those are conflicts)
        planted = [by_path[str(dump / "planted" / good.relative_to(batch_folder.root))]
                   for good in batch_folder.good]
        assert all(r.outcome == "pass" or r.reason.startswith("conflict:") for r in planted)
        assert len([r for r in planted if r.outcome == "pass"]) >= 2
        for record in (r for r in planted if r.outcome == "pass"):
            changed = {path for path, _, _ in record.changes}
            assert {"(0010,0010)", "(0010,0020)", "(0008,0050)"} <= changed
            assert record.counts.get("X", 0) > 0
        # redact: the ultrasound machine with a rule is redacted, others at risk are refused
        logiq = [r for r in redacted.records if r.rule == "logiq-700"]
        assert logiq and all(r.regions == 1 for r in logiq)
        assert any(r.outcome == "pass" for r in logiq)
        assert any(r.at_risk and r.rule is None and r.outcome == "quarantine"
                   and "burned-in" in (r.reason or "") for r in redacted.records)

        out = tmp_path / "export" / "OUT"
        exported = session.export(out)
        printed.append(str(exported))
        outcomes = dict(session.db.execute(
            "SELECT f.path, e.outcome FROM exports e JOIN files f ON f.id = e.file_id"
        ).fetchall())
    # verify's verdicts are export's
    for path, record in by_path.items():
        assert (record.outcome == "pass") == (outcomes[path] == "exported"), path

    ref = tmp_path / "ref" / "OUT"
    run_batch(dump, ref, gantry.load_config(config_path), site_key_env, workers=2)
    mine, theirs = tree(out), tree(ref)
    assert mine and len(mine) == exported.outcomes["exported"]
    for name, data in mine.items():
        assert theirs.get(name) == data, f"{name} differs from gantry deidentify's"
    # deidentify's extra files are the conflicting UIDs the session refuses to choose between
    with gantry.Session(db) as session:
        conflicts = {new_uid(site_key_env, uid) for (uid,) in session.db.execute(
            "SELECT DISTINCT sop_instance_uid FROM files WHERE conflict = 1")}
    for name in set(theirs) - set(mine):
        assert Path(name).stem in conflicts, name
    # refused originals: copied with their reasons, as deidentify lays them out
    quarantine = tree(out.parent / "OUT-quarantine")
    ref_quarantine = tree(ref.parent / "OUT-quarantine")
    reasons = {n: d.decode() for n, d in quarantine.items() if n.endswith(".reason.txt")}
    assert len(reasons) == exported.outcomes["quarantined"]
    for name, reason in reasons.items():
        original = name.removesuffix(".reason.txt")
        assert quarantine[original] == (dump / original).read_bytes()
        if not reason.startswith("conflict"):
            assert ref_quarantine[name].decode() == reason
        assert_nothing_planted(batch_folder.planted, reason)
    assert_nothing_planted(batch_folder.planted, "\n".join(printed))


def test_session_database_is_private_and_reopens_in_another_process(
        batch_folder: Any, tmp_path: Path) -> None:
    db = tmp_path / "s.gantry"
    session = gantry.Session(db, workers=1, progress=False)
    session.ingest(batch_folder.root)
    for suffix in ("", "-wal", "-shm"):  # the index holds identifiers
        assert (db.with_name(db.name + suffix).stat().st_mode & 0o777) == 0o600, suffix
    count = len(session.instances)
    import subprocess
    import sys
    # another process reads it while this one still has it open, then after this one is gone
    code = ("import gantry, sys; s = gantry.Session(sys.argv[1]); "
            "print(len(s.instances), s.ingest(sys.argv[2]).unchanged)")
    run = subprocess.run([sys.executable, "-c", code, str(db), str(batch_folder.root)],
                         capture_output=True, text=True, timeout=300)
    total = len(batch_folder.good) + len(batch_folder.bad)
    assert run.stdout.split() == [str(count), str(total)], run.stderr
    session.close()


def test_reingest_skips_by_size_and_mtime_and_sees_changes(batch_folder: Any,
                                                           tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "in"
    shutil.copytree(batch_folder.root, root)
    with gantry.Session(tmp_path / "s.gantry", workers=2, progress=False) as session:
        first = session.ingest(root)
        total = len(batch_folder.good) + len(batch_folder.bad)
        assert (first.new, first.unchanged, first.changed) == (total, 0, 0)
        again = session.ingest(root)
        assert (again.new, again.unchanged, again.changed, again.missing) == (0, total, 0, 0)
        assert not again.unreadable  # nothing was read again
        # same size and time: not opened (a corrupted header goes unnoticed, by design)
        ct = root / "ct.dcm"
        st = ct.stat()
        data = bytearray(ct.read_bytes())
        data[128:132] = b"XXXX"
        ct.write_bytes(bytes(data))
        os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert session.ingest(root).unchanged == total
        os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # now it is read again
        changed = session.ingest(root)
        assert (changed.changed, changed.unchanged) == (1, total - 1)
        assert [p for p, _ in changed.unreadable] == [str(ct)]
        mr = (root / "mr.dcm").read_bytes()
        (root / "mr.dcm").unlink()
        assert session.ingest(root).missing == 1
        assert len(session.instances) == len(batch_folder.good) - 2
        assert session.ingest(root).missing == 0  # missing once, not again
        (root / "mr.dcm").write_bytes(mr)  # back: read again, as the file it was indexed as
        back = session.ingest(root)
        assert (back.new, back.changed, back.unchanged, back.missing) == (0, 1, total - 1, 0)
        assert len(session.instances) == len(batch_folder.good) - 1
        (root / "sub").mkdir()
        (root / "sub" / "mr-copy.dcm").write_bytes(mr)  # a new file in a new folder
        new = session.ingest(root)
        assert (new.new, new.changed, new.unchanged, new.duplicates) == (1, 0, total, 1)
        alone = session.ingest(root / "sub" / "mr-copy.dcm")  # a file as the source
        assert (alone.new, alone.changed, alone.unchanged) == (0, 0, 1)


def test_duplicates_and_conflicts(batch_folder: Any, tmp_path: Path, site_key_env: bytes) -> None:
    import shutil

    import pydicom

    root = tmp_path / "in"
    shutil.copytree(batch_folder.root / "study", root)
    shutil.copy2(root / "17136.dcm", root / "17136-copy.dcm")  # identical: one instance
    ds = pydicom.dcmread(root / "17166.dcm")
    ds.SeriesDescription = "another content, the same SOP Instance UID"
    ds.save_as(root / "17166-other.dcm")
    with gantry.Session(tmp_path / "s.gantry", workers=2, progress=False) as session:
        summary = session.ingest(root)
        assert (summary.duplicates, summary.conflicts) == (1, 1)
        assert "1 identical duplicate" in str(summary) and "1 SOP Instance UIDs in conflict" \
            in str(summary)
        assert len(session.instances) == 3  # 17136 once, 17166 and its rival
        result = session.export(tmp_path / "out")
    assert result.outcomes == {"exported": 1, "duplicate": 1, "quarantined": 2}
    assert len(tree(tmp_path / "out")) == 1
    reasons = {n: d.decode() for n, d in tree(tmp_path / "out-quarantine").items()
               if n.endswith(".reason.txt")}
    assert sorted(reasons) == ["17166-other.dcm.reason.txt", "17166.dcm.reason.txt"]
    assert all(r.startswith("conflict:") for r in reasons.values())


def test_navigation_and_dataframe(batch_folder: Any, tmp_path: Path) -> None:
    import pydicom

    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        session.ingest(batch_folder.root)
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in batch_folder.good]
        assert len(session.patients) == len({h.PatientID for h in headers})
        assert len(session.studies) == len({h.StudyInstanceUID for h in headers})
        assert len(session.series) == len({h.SeriesInstanceUID for h in headers})
        assert len(session.instances) == len(headers)
        walked = [i.sop_instance_uid for p in session.patients for st in p.studies
                  for se in st.series for i in se.instances]
        assert sorted(walked) == sorted(str(h.SOPInstanceUID) for h in headers)
        study = next(s for s in session.studies if s.count == 2)  # the planted pair
        assert {i.path for i in study.instances} == {str(p) for p in batch_folder.same_study}
        assert session.instances[-1] == list(session.instances)[-1]
        with pytest.raises(IndexError):
            session.instances[len(headers)]
        instance = study.instances[0]
        assert instance.series.series_uid == instance.header().SeriesInstanceUID
        shown = repr([session, *session.patients, *session.studies, *session.instances])
        assert_nothing_planted(batch_folder.planted, shown)
        frame = session.dataframe()
        assert len(frame) == len(headers)
        assert set(frame["sop_instance_uid"]) == {str(h.SOPInstanceUID) for h in headers}


def test_bad_session_file_and_bad_config_are_named(tmp_path: Path) -> None:
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database\n")
    with pytest.raises(ValueError, match="notes.txt: not a session database"):
        gantry.Session(not_db)
    bad = write_config(tmp_path, "profile: {optoins: []}\n")
    with gantry.Session(tmp_path / "s.gantry") as session, \
            pytest.raises(gantry.ConfigError, match=r"gantry.yaml: profile.optoins: unknown key"):
        session.load_config(bad)


def test_export_refuses_a_folder_inside_the_ingested_tree(batch_folder: Any, tmp_path: Path,
                                                          site_key_env: bytes) -> None:
    import shutil

    root = tmp_path / "in"
    shutil.copytree(batch_folder.root / "study", root)
    with gantry.Session(tmp_path / "s.gantry", progress=False) as session:
        session.ingest(root)
        with pytest.raises(ValueError, match="inside the ingested folder"):
            session.export(root / "OUT")
        with pytest.raises(FileNotFoundError, match="no such file or folder"):
            session.ingest(tmp_path / "nowhere")
    assert not (root / "OUT").exists()


def test_export_has_no_unsafe_mode(batch_folder: Any, tmp_path: Path, site_key_env: bytes) -> None:
    """`export(out, safe=True)` is the export; `safe=False` is refused before anything is
    written, since the gatekeeper always runs."""
    import shutil

    root = tmp_path / "in"
    shutil.copytree(batch_folder.root / "study", root)
    with gantry.Session(tmp_path / "s.gantry", progress=False) as session:
        session.ingest(root)
        with pytest.raises(ValueError, match="no safe=False"):
            session.export(tmp_path / "unsafe", safe=False)
        assert not (tmp_path / "unsafe").exists()
        summary = session.export(tmp_path / "out", safe=True)
    assert any((tmp_path / "out").rglob("*.dcm"))
    assert summary is not None
