"""Batch de-identification (`gateway.batch.run_batch`): good files out by new study/series UID,
malformed ones quarantined beside OUTPUT with a reason, the same result on 1 or 2 workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.batch import quarantine_dir, run_batch
from gateway.config import load_config
from gateway.pipeline import Forwarded, Outcome, Quarantined

# `batch_folder` is the BatchFolder fixture of tests/conftest.py (conftest is not importable by
# name when other test folders have their own conftest.py).
BatchFolder = Any


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path → bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def runs(batch_folder: BatchFolder, tmp_path_factory: pytest.TempPathFactory,
         site_key: bytes) -> dict:
    """The same folder on one worker and on two, each into its own OUTPUT."""
    config = load_config(None)
    results = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"w{workers}") / "OUTPUT"
        seen: list[tuple[Path, Outcome]] = []
        summary = run_batch(batch_folder.root, out, config, site_key, workers,
                            on_result=lambda src, outcome, seen=seen: seen.append((src, outcome)))
        results[workers] = (out, summary, seen)
    return results


def test_counts_and_every_input_reported_once(batch_folder: BatchFolder, runs: dict) -> None:
    out, summary, seen = runs[1]
    assert summary.written == len(batch_folder.good)
    assert summary.quarantined == len(batch_folder.bad)
    assert sorted(src for src, _ in seen) == sorted(batch_folder.good + list(batch_folder.bad))
    for src, outcome in seen:
        expected = Forwarded if src in batch_folder.good else Quarantined
        assert isinstance(outcome, expected), src.name


def test_good_files_laid_out_by_new_uids(batch_folder: BatchFolder, runs: dict) -> None:
    out, _, _ = runs[1]
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(batch_folder.good)
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                 for p in batch_folder.good}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rel = path.relative_to(out).parts
        assert rel == (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                       f"{ds.SOPInstanceUID}.dcm")
        assert str(ds.StudyInstanceUID).startswith("2.25.")
        assert str(ds.StudyInstanceUID) not in originals
        data = path.read_bytes()
        for value in batch_folder.planted:
            assert value.encode() not in data
    # The two objects of one original study and series land in one folder.
    a, b = (pydicom.dcmread(p, stop_before_pixels=True) for p in batch_folder.same_study)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    folders = {p.parent for p in files}
    assert len(folders) == len(batch_folder.good) - 1


def test_malformed_files_quarantined_with_reasons(batch_folder: BatchFolder, runs: dict) -> None:
    out, summary, _ = runs[1]
    qdir = out.parent / f"{out.name}-quarantine"
    assert summary.quarantine == qdir == quarantine_dir(out)
    for src, words in batch_folder.bad.items():
        rel = src.relative_to(batch_folder.root)
        copy = qdir / rel
        assert copy.read_bytes() == src.read_bytes(), f"{rel} not copied as it was"
        reason = (qdir / rel.parent / f"{rel.name}.reason.txt").read_text()
        assert reason.strip(), f"{rel}: empty reason"
        for word in words:
            assert word.lower() in reason.lower(), f"{rel}: reason does not say {word!r}"
        for value in batch_folder.planted:
            assert value not in reason
    # Nothing but the bad files and their reasons in the quarantine.
    assert len(tree(qdir)) == 2 * len(batch_folder.bad)


def test_two_workers_give_the_same_bytes(runs: dict) -> None:
    (out1, summary1, _), (out2, summary2, _) = runs[1], runs[2]
    assert tree(out1) == tree(out2)
    assert tree(out1.parent / "OUTPUT-quarantine") == tree(out2.parent / "OUTPUT-quarantine")
    assert summary1.counts == summary2.counts and summary1.reasons == summary2.reasons


def test_rerun_into_the_same_output_is_byte_identical(batch_folder: BatchFolder, runs: dict,
                                                      site_key: bytes) -> None:
    out, _, _ = runs[1]
    before = tree(out)
    summary = run_batch(batch_folder.root, out, load_config(None), site_key, 1)
    assert summary.written == len(batch_folder.good)
    assert tree(out) == before


def test_a_single_file_as_input(tmp_path: Path, site_key: bytes) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    summary = run_batch(src, tmp_path / "OUT", load_config(None), site_key, 1)
    assert summary.written == 1 and summary.quarantined == 0
    assert len(list((tmp_path / "OUT").rglob("*.dcm"))) == 1


def test_file_cut_inside_an_element_header_is_quarantined(tmp_path: Path, site_key: bytes
                                                           ) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    with open(src, "rb") as fh:
        pydicom.dcmread(fh, stop_before_pixels=True)
        pixel_start = fh.tell()
    cut = tmp_path / "in" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(src.read_bytes()[:pixel_start + 4])
    summary = run_batch(cut.parent, tmp_path / "OUT", load_config(None), site_key, 1)
    assert summary.quarantined == 1 and summary.written == 0
