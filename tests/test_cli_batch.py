"""`gantry deidentify`, `gantry audit`, `gantry diff` as a user runs them (a subprocess each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

GANTRY = Path(sys.executable).parent / "gantry"
BANDS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")  # the bands, least to most risky
BatchFolder = Any  # the `batch_folder` fixture of tests/conftest.py


def gantry(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    command = [str(GANTRY)] if GANTRY.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=600)


def printed(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def planted_private_tag(path: Path) -> str:
    """'(gggg,eeee)' of the planted private element (its block depends on the file)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    tag = ds.private_block(0x0029, "GANTRY PLANTED QZ")[0x01].tag
    return f"({tag.group:04X},{tag.element:04X})"


def assert_nothing_planted(folder: BatchFolder, text: str) -> None:
    for value in folder.planted:
        assert value not in text, "a planted identifier was printed"


@pytest.fixture(scope="module")
def deidentified(batch_folder: BatchFolder, gantry_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`gantry deidentify` on the folder with --workers 2 and --workers 1."""
    runs = {}
    for workers in (2, 1):
        out = tmp_path_factory.mktemp(f"cli{workers}") / "OUTPUT"
        runs[workers] = (out, gantry(gantry_env, "deidentify", batch_folder.root, out,
                                     "--workers", str(workers)))
    return runs


def test_deidentify_reports_quarantine_and_exits_non_zero(batch_folder: BatchFolder,
                                                          deidentified: dict) -> None:
    out, run = deidentified[2]
    text = printed(run)
    assert run.returncode != 0, text
    for bad in batch_folder.bad:
        assert str(bad) in text, f"{bad.name} not named in the output"
    good, bad = len(batch_folder.good), len(batch_folder.bad)
    assert f"{good + bad} objects: {good} de-identified, {bad} quarantined\n" in run.stdout
    assert str(out.parent / "OUTPUT-quarantine") in run.stdout
    assert_nothing_planted(batch_folder, text)
    for src in batch_folder.bad:
        rel = src.relative_to(batch_folder.root)
        reason = out.parent / "OUTPUT-quarantine" / rel.parent / f"{rel.name}.reason.txt"
        assert_nothing_planted(batch_folder, reason.read_text())


def test_deidentify_layout_and_worker_count_do_not_change_bytes(batch_folder: BatchFolder,
                                                                deidentified: dict) -> None:
    (out2, run2), (out1, run1) = deidentified[2], deidentified[1]
    assert run1.returncode == run2.returncode != 0
    files = tree(out2)
    assert len(files) == len(batch_folder.good)
    for rel, data in files.items():
        ds = pydicom.dcmread(out2 / rel, stop_before_pixels=True)
        assert Path(rel).parts == (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                   f"{ds.SOPInstanceUID}.dcm")
        assert_nothing_planted(batch_folder, data.decode("latin-1"))
    assert tree(out1) == files
    assert tree(out1.parent / "OUTPUT-quarantine") == tree(out2.parent / "OUTPUT-quarantine")


def test_deidentify_only_good_files_exits_zero(batch_folder: BatchFolder, gantry_env: dict,
                                               tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for path in batch_folder.good:
        shutil.copy(path, src / path.name)
    run = gantry(gantry_env, "deidentify", src, tmp_path / "OUT", "--workers", "1")
    assert run.returncode == 0, printed(run)
    assert len(list((tmp_path / "OUT").rglob("*.dcm"))) == len(batch_folder.good)
    assert not (tmp_path / "OUT-quarantine").exists()
    assert_nothing_planted(batch_folder, printed(run))


def test_deidentify_refuses_a_worker_count_below_one(batch_folder: BatchFolder,
                                                     gantry_env: dict, tmp_path: Path) -> None:
    for count in ("0", "-2", "many"):
        run = gantry(gantry_env, "deidentify", batch_folder.root, tmp_path / "OUT",
                     "--workers", count)
        assert run.returncode == 2 and "--workers" in run.stderr, count
        assert "Traceback" not in run.stderr and not (tmp_path / "OUT").exists()


def test_deidentify_and_audit_name_a_missing_input_or_profile(gantry_env: dict,
                                                              tmp_path: Path) -> None:
    for args in (("deidentify", tmp_path / "nowhere", tmp_path / "OUT"),
                 ("audit", tmp_path / "nowhere")):
        run = gantry(gantry_env, *args)
        assert run.returncode != 0, args
        assert str(tmp_path / "nowhere") in run.stderr
    run = gantry(gantry_env, "audit", tmp_path, "--profile", "nosuch")
    assert run.returncode == 2 and "no profile 'nosuch'" in run.stderr
    assert "Traceback" not in run.stderr


def test_deidentify_with_a_missing_certificate_fails_once_by_name(
        batch_folder: BatchFolder, gantry_env: dict, tmp_path: Path) -> None:
    config = tmp_path / "gantry.yaml"
    config.write_text("site_key: {env: GANTRY_SITE_KEY}\n"
                      "backup: {enabled: true, recipients: [nowhere.cert.pem]}\n")
    run = gantry(gantry_env, "deidentify", batch_folder.root, tmp_path / "OUT", "--config",
                 config, "--workers", "2")
    assert run.returncode != 0
    assert "nowhere.cert.pem" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "OUT").exists()


def test_deidentify_refuses_an_output_inside_the_input(batch_folder: BatchFolder,
                                                       gantry_env: dict) -> None:
    out = batch_folder.root / "OUT"
    run = gantry(gantry_env, "deidentify", batch_folder.root, out)
    assert run.returncode != 0
    assert "inside the input folder" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def _audit(env: dict, path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    run = gantry(env, "audit", path, "--json")
    return run, json.loads(run.stdout)


def test_audit_json_scores_and_bands(batch_folder: BatchFolder, gantry_env: dict,
                                     tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(batch_folder.root, src,
                    ignore=lambda _d, names: [n for n in names if n == "bad_vr.dcm"])
    run, report = _audit(gantry_env, src)
    assert run.returncode != 0  # unreadable files were found
    assert_nothing_planted(batch_folder, printed(run))
    objects = report["objects"]
    good = {src / p.relative_to(batch_folder.root) for p in batch_folder.good}
    bad = {src / p.relative_to(batch_folder.root) for p in batch_folder.bad}
    assert {Path(o["file"]) for o in objects} >= good
    unreadable = {Path(u["file"]) for u in report["unreadable"]}
    assert {src / "bad" / "notes.txt", src / "bad" / "empty.dcm"} <= unreadable <= bad
    assert all(u["problem"] for u in report["unreadable"])
    for item in [report, *objects]:
        assert 0 <= item["score"] <= 100 and item["band"] in BANDS
    assert report["score"] == max(o["score"] for o in objects)
    # A higher score never has a lower band.
    ranked = sorted(objects, key=lambda o: o["score"])
    ranks = [BANDS.index(o["band"]) for o in ranked]
    assert ranks == sorted(ranks)
    # Planted identifiers are findings, named by tag and never by value.
    ct = next(o for o in objects if Path(o["file"]) == src / "ct.dcm")
    paths = {f["path"] for f in ct["findings"]}
    private = planted_private_tag(src / "ct.dcm")
    assert {"(0010,0010)", "(0010,0020)", "(0008,0050)", private} <= paths


def test_audit_lists_a_bad_vr_file_as_unreadable_and_goes_on(batch_folder: BatchFolder,
                                                             gantry_env: dict) -> None:
    run = gantry(gantry_env, "audit", batch_folder.root, "--json")
    report = json.loads(run.stdout)
    unreadable = {Path(u["file"]) for u in report["unreadable"]}
    assert batch_folder.root / "bad" / "bad_vr.dcm" in unreadable
    assert "Traceback" not in run.stderr


def test_audit_score_drops_after_deidentification(batch_folder: BatchFolder, gantry_env: dict,
                                                  tmp_path: Path) -> None:
    src = batch_folder.root / "ct.dcm"
    assert gantry(gantry_env, "deidentify", src, tmp_path / "OUT").returncode == 0
    (out,) = list((tmp_path / "OUT").rglob("*.dcm"))
    _, before = _audit(gantry_env, src)
    _, after = _audit(gantry_env, out)
    assert before["objects"][0]["score"] > 0 and before["objects"][0]["findings"]
    # Re-audit comes back empty: nothing left that the configuration would act on.
    assert after["objects"][0]["findings"] == [] and after["score"] == 0
    assert after["band"] == "LOW"


def test_audit_fail_on_risk_and_groups(batch_folder: BatchFolder, gantry_env: dict,
                                       tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for path in batch_folder.good:
        shutil.copy(path, src / path.name)
    run, report = _audit(gantry_env, src)
    assert run.returncode == 0, printed(run)
    score = report["score"]
    assert 0 < score <= 100 and report["instances"] == len(batch_folder.good)
    # The two CTs of one study group under one patient, one study; labels are the output's.
    (patient,) = report["patients"]  # the planted PatientID is one patient
    assert patient["patient"].startswith("GANTRY-") and patient["instances"] == 4
    assert sorted(s["instances"] for s in patient["children"]) == [1, 1, 2]
    assert_nothing_planted(batch_folder, printed(run))
    above = gantry(gantry_env, "audit", src, "--fail-on-risk", str(score - 1))
    assert above.returncode == 1 and f"above --fail-on-risk {score - 1}" in above.stderr
    at = gantry(gantry_env, "audit", src, "--fail-on-risk", str(score))
    assert at.returncode == 0, printed(at)
    assert f"session: 4 objects, risk {score}" in at.stdout
    assert_nothing_planted(batch_folder, printed(above) + printed(at))
    bad = gantry(gantry_env, "audit", src, "--fail-on-risk", "101")
    assert bad.returncode == 2 and "--fail-on-risk" in bad.stderr


def test_audit_of_unreadable_files_says_so(batch_folder: BatchFolder, gantry_env: dict) -> None:
    notes = batch_folder.root / "bad" / "notes.txt"
    run, report = _audit(gantry_env, notes)
    assert run.returncode == 1
    assert report["score"] is None and report["band"] == "UNREADABLE"
    assert report["objects"] == [] and report["unreadable"][0]["file"] == str(notes)
    text = gantry(gantry_env, "audit", notes)
    assert "UNREADABLE" in text.stdout and "LOW" not in text.stdout
    assert_nothing_planted(batch_folder, printed(run) + printed(text))


def test_audit_without_a_site_key_numbers_its_groups(batch_folder: BatchFolder,
                                                     gantry_env: dict) -> None:
    env = {k: v for k, v in gantry_env.items() if k != "GANTRY_SITE_KEY"}
    run = gantry(env, "audit", batch_folder.root / "study", "--json")
    report = json.loads(run.stdout)
    assert run.returncode == 0, printed(run)
    assert report["patients"][0]["patient"] == "patient 1"
    assert_nothing_planted(batch_folder, printed(run))


def test_audit_reports_device_minted_2_25_uids_until_the_object_declares_deidentification(
        batch_folder: BatchFolder, gantry_env: dict, tmp_path: Path) -> None:
    # Many devices mint 2.25 (UUID) UIDs: in an original object they identify the study.
    ds = pydicom.dcmread(batch_folder.root / "ct.dcm")
    ds.StudyInstanceUID = "2.25.329800735698586629295641978511506172918"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1" + "7" * 37
    src = tmp_path / "uuid.dcm"
    ds.save_as(src, enforce_file_format=True)
    _, before = _audit(gantry_env, src)
    found = {f["path"]: f["action"] for f in before["objects"][0]["findings"]}
    assert found.get("(0020,000D)") == "U" and found.get("(0008,0018)") == "U"
    assert gantry(gantry_env, "deidentify", src, tmp_path / "OUT").returncode == 0
    (out,) = list((tmp_path / "OUT").rglob("*.dcm"))
    _, after = _audit(gantry_env, out)
    assert not [f for f in after["objects"][0]["findings"] if f["vr"] == "UI"]


def test_diff_lists_changes(batch_folder: BatchFolder, gantry_env: dict, tmp_path: Path) -> None:
    src = batch_folder.root / "ct.dcm"
    assert gantry(gantry_env, "deidentify", src, tmp_path / "OUT").returncode == 0
    (out,) = list((tmp_path / "OUT").rglob("*.dcm"))
    run = gantry(gantry_env, "diff", src, out)
    assert run.returncode == 0, run.stderr
    assert_nothing_planted(batch_folder, printed(run))
    lines = run.stdout.strip().splitlines()
    changes = {}
    for line in lines[:-1]:
        kind, _vr, path = line.split(maxsplit=2)
        changes[path] = kind
    assert lines[-1] == f"{len(lines) - 1} differences"
    assert changes["(0010,0010)"] == "changed"
    assert changes["(0020,000D)"] == "changed"
    assert changes["file meta (0002,0003)"] == "changed"
    assert changes[planted_private_tag(src)] == "removed"
    assert changes["(0012,0062)"] == "added"  # Patient Identity Removed
    assert "(0008,0016)" not in changes  # SOP Class UID is kept
    same = gantry(gantry_env, "diff", src, src)
    assert same.stdout.strip().splitlines() == ["0 differences"]


def test_deidentify_with_a_config_and_a_key_file(batch_folder: BatchFolder, gantry_env: dict,
                                                 tmp_path: Path) -> None:
    """keys init → a config naming the key file → deidentify --config: the key decides the
    new UIDs (another key, other UIDs; the same key, the same UIDs)."""
    src = batch_folder.root / "ct.dcm"
    assert gantry(gantry_env, "keys", "init", tmp_path / "site.key").returncode == 0
    config = tmp_path / "gantry.yaml"
    config.write_text("site_key: {file: site.key}\nprofile:\n  options: []\n")
    names = []
    for run_dir, args in (("a", ["--config", config]), ("b", ["--config", config]),
                          ("c", [])):
        run = gantry(gantry_env, "deidentify", src, tmp_path / run_dir, *args)
        assert run.returncode == 0, printed(run)
        (out,) = list((tmp_path / run_dir).rglob("*.dcm"))
        names.append(out.relative_to(tmp_path / run_dir))
    assert names[0] == names[1] != names[2]


def test_workers_are_forked_from_a_process_without_threads(
        batch_folder: BatchFolder, gantry_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With its progress bar on a terminal, the command still forks no process that has
    threads (a lock another thread held at the fork stays held in the child for ever)."""
    import os
    import threading

    from rich.console import Console

    from gateway import fanout
    from gateway.cli import main

    threads_at_fork: list[int] = []
    fork = os.fork

    def counting_fork() -> int:
        threads_at_fork.append(threading.active_count())
        return fork()

    monkeypatch.setattr(fanout.os, "fork", counting_fork)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar is drawn ...
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))  # ... as on one
    monkeypatch.setenv("GANTRY_SITE_KEY", gantry_env["GANTRY_SITE_KEY"])
    before = threading.active_count()
    status = main(["deidentify", str(batch_folder.root), str(tmp_path / "OUT"), "--workers", "2"])
    assert status == 1  # the batch folder holds malformed files
    assert threads_at_fork and set(threads_at_fork) == {before}
    assert "de-identifying" in capsys.readouterr().err  # the progress bar was drawn


def test_sigterm_stops_the_workers_with_the_command(gantry_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    """`kill` of the command alone (a scheduler's timeout, say) ends its workers too, and they
    leave no half-written file behind."""
    import os
    import signal
    import time

    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    src.mkdir()
    first = src / "00000.dcm"
    first.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    for i in range(1, 3000):
        os.link(first, src / f"{i:05d}.dcm")  # one file, 3,000 names: the same object each
    out = tmp_path / "OUT"
    command = [str(GANTRY)] if GANTRY.exists() else [sys.executable, "-m", "gateway.cli"]
    proc = subprocess.Popen(command + ["deidentify", str(src), str(out), "--workers", "2"],
                            env=gantry_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(out.rglob("*.dcm")) and time.monotonic() < deadline:
        time.sleep(0.01)
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers = [int(p) for p in children_file.read_text().split()]
    assert len(workers) == 2, "the two workers are running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # stopped part-way, by the signal
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped by the command, not orphaned
    assert not list(out.rglob("*.tmp")), "a half-written file was left"


# ------------------------------------------------------------------ one output per instance


def _summary(run: subprocess.CompletedProcess) -> tuple[int, int, int, int]:
    import re

    found = re.search(r"(\d+) objects: (\d+) de-identified, (\d+) quarantined"
                      r"(?:, (\d+) duplicates)?\n", run.stdout)
    assert found, printed(run)
    return tuple(int(n or 0) for n in found.groups())  # type: ignore[return-value]


def test_deidentify_writes_one_output_per_instance_and_reports_the_rest(
        gantry_env: dict, tmp_path: Path) -> None:
    """Two inputs with one SOP Instance UID: identical bytes → one output and a duplicate;
    different bytes (another value, or another study) → a conflict, nothing written for either."""
    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    (src / "copies").mkdir(parents=True)
    ct = Path(get_testdata_file("CT_small.dcm"))
    shutil.copy(ct, src / "a.dcm")
    shutil.copy(ct, src / "copies" / "b.dcm")
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    mr.save_as(src / "c.dcm")
    mr.PatientAge = "077Y"
    mr.save_as(src / "d.dcm")
    mr.StudyInstanceUID = mr.StudyInstanceUID + ".9"  # another folder of OUTPUT, same instance
    mr.save_as(src / "e.dcm")
    trees = []
    for workers in ("2", "1"):
        out = tmp_path / f"OUT{workers}"
        run = gantry(gantry_env, "deidentify", src, out, "--workers", workers)
        assert run.returncode == 1, printed(run)  # conflicts are refused
        assert _summary(run) == (5, 1, 3, 1)
        assert (f"duplicate {src / 'copies' / 'b.dcm'}: the same bytes as {src / 'a.dcm'}"
                in run.stdout)
        for name in ("c.dcm", "d.dcm", "e.dcm"):
            assert f"quarantined {src / name}: conflict" in run.stdout
            reason = tmp_path / f"OUT{workers}-quarantine" / f"{name}.reason.txt"
            assert reason.read_text().startswith("conflict: another file has the same SOP")
        files = tree(out)
        assert len(files) == 1 and next(iter(files.values()))[128:132] == b"DICM"
        assert not [p for p in out.rglob(".*")], "a staged copy was left in OUTPUT"
        trees.append(files)
    assert trees[0] == trees[1]
    # Again into the same OUTPUT (whose files are there already): the same outcome and files.
    again = gantry(gantry_env, "deidentify", src, tmp_path / "OUT1", "--workers", "2")
    assert again.returncode == 1 and _summary(again) == (5, 1, 3, 1)
    assert tree(tmp_path / "OUT1") == trees[0]
    assert not [p for p in (tmp_path / "OUT1").rglob(".*")]


def test_deidentify_of_pydicom_test_files_writes_what_it_reports(
        gantry_env: dict, tmp_path: Path) -> None:
    """pydicom's test files hold several copies of one instance in other encodings: the count
    printed is the count written, every input is accounted for, and the output is the same
    from run to run."""
    import pydicom.data

    PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # noqa: N806
    inputs = [p for p in PYDICOM_TEST_FILES.rglob("*")
              if p.is_file() and not any(part.startswith(".")
                                         for part in p.relative_to(PYDICOM_TEST_FILES).parts)]
    trees = []
    for run_no, workers in enumerate(("2", "2")):
        out = tmp_path / f"OUT{run_no}"
        run = gantry(gantry_env, "deidentify", PYDICOM_TEST_FILES, out, "--workers", workers,
                     "--quiet")
        total, written, quarantined, duplicates = _summary(run)
        assert total == len(inputs) == written + quarantined + duplicates
        assert "conflict" in run.stdout  # MR_small in several transfer syntaxes, for one
        files = tree(out)
        assert len(files) == written
        assert not [p for p in out.rglob(".*")]
        trees.append(files)
    assert trees[0] == trees[1]


def test_deidentify_with_a_named_profile(batch_folder: BatchFolder, gantry_env: dict,
                                         tmp_path: Path) -> None:
    config = tmp_path / "gantry.yaml"
    config.write_text("site_key: {env: GANTRY_SITE_KEY}\nprofiles:\n  bare: {options: []}\n")
    src = batch_folder.root / "ct.dcm"
    assert pydicom.dcmread(src).PatientSex
    ages = {}
    for name in ("default", "bare"):
        run = gantry(gantry_env, "deidentify", src, tmp_path / name, "--config", config,
                     "--profile", name)
        assert run.returncode == 0, printed(run)
        (out,) = (tmp_path / name).rglob("*.dcm")
        ages[name] = pydicom.dcmread(out).get("PatientSex")
    assert ages["default"]  # Retain Patient Characteristics, a research default
    assert not ages["bare"]  # the Basic Profile alone empties it
    run = gantry(gantry_env, "deidentify", src, tmp_path / "x", "--config", config,
                 "--profile", "nosuch")
    assert run.returncode == 2 and "no profile 'nosuch'" in run.stderr
    assert "known: default, bare" in run.stderr and not (tmp_path / "x").exists()


def test_audit_of_a_session_database_is_the_audit_of_its_instances(
        batch_folder: BatchFolder, gantry_env: dict, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for path in batch_folder.good:
        shutil.copy(path, src / path.name)
    shutil.copy(src / "ct.dcm", src / "zz-ct.dcm")  # an identical duplicate: one instance
    db = tmp_path / "work.db"
    ingest = gantry(gantry_env, "ingest", db, src, "--workers", "1", "--quiet")
    assert ingest.returncode == 0, printed(ingest)
    run, report = _audit(gantry_env, db)
    assert run.returncode == 0, printed(run)
    (src / "zz-ct.dcm").unlink()
    _, by_path = _audit(gantry_env, src)
    assert report["instances"] == len(batch_folder.good)
    assert sorted((Path(o["file"]).name, o["score"]) for o in report["objects"]) == sorted(
        (Path(o["file"]).name, o["score"]) for o in by_path["objects"])
    assert report["score"] == by_path["score"] and report["patients"] == by_path["patients"]
    above = gantry(gantry_env, "audit", db, "--fail-on-risk", str(report["score"] - 1))
    assert above.returncode == 1 and "above --fail-on-risk" in above.stderr
    assert_nothing_planted(batch_folder, printed(run) + printed(above))
