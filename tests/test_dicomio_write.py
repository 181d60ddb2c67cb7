"""Writing de-identified objects: `write` replaces a file atomically, `write_new` never replaces
one; both give the same bytes, and neither ever leaves a partial or temporary file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

import gateway.dicomio as dicomio
from gateway.dicomio import DicomReadError, read_for_deid, write, write_new

# Native little endian with elements after the pixel data; big endian; deflated; and a file
# with no pixel data: each takes another branch of the writer.
SAMPLES = ["CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm"]


def _changed(src: Path) -> dicomio.Parsed:
    parsed = read_for_deid(src)
    parsed.ds.PatientName = "CHANGED"
    return parsed


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture(params=[True, False], ids=["O_TMPFILE", "named temp file"])
def anonymous(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """write_new both ways: with Linux's unnamed files, and as on a file system without them."""
    if request.param and not dicomio._ANONYMOUS:
        pytest.skip("no O_TMPFILE and /proc here")
    monkeypatch.setattr(dicomio, "_ANONYMOUS", request.param)
    return request.param


@pytest.mark.parametrize("name", SAMPLES)
def test_write_new_gives_the_bytes_write_gives(tmp_path: Path, name: str,
                                               anonymous: bool) -> None:
    src = Path(get_testdata_file(name))
    replaced = write(_changed(src), tmp_path / "a" / "out.dcm")
    created = write_new(_changed(src), [tmp_path / "b" / "out.dcm"])
    assert created == tmp_path / "b" / "out.dcm"
    assert created.read_bytes() == replaced.read_bytes()
    assert str(pydicom.dcmread(created).PatientName) == "CHANGED"
    assert _files(tmp_path) == ["out.dcm", "out.dcm"]  # no temporary file left


def test_write_new_never_replaces_a_file(tmp_path: Path, anonymous: bool) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    first, aside = tmp_path / "x.dcm", tmp_path / ".x.dcm.aside"
    first.write_bytes(b"an earlier run's output")
    assert write_new(_changed(src), [first, aside]) == aside
    assert first.read_bytes() == b"an earlier run's output"
    assert pydicom.dcmread(aside).PatientName == "CHANGED"
    with pytest.raises(FileExistsError):
        write_new(_changed(src), [first, aside])
    assert first.read_bytes() == b"an earlier run's output"
    assert _files(tmp_path) == [".x.dcm.aside", "x.dcm"]


def test_a_source_shortened_before_the_write_leaves_no_output(tmp_path: Path,
                                                               anonymous: bool) -> None:
    """The pixel bytes are read from the source when the output is written: a source cut short
    meanwhile is an error, never a truncated output under the final name. (The copy before
    this version stopped at the source's new end and renamed the short file into place.)"""
    src = tmp_path / "in" / "ct.dcm"
    src.parent.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src)
    for writer in (lambda p: write(p, tmp_path / "out" / "a.dcm"),
                   lambda p: write_new(p, [tmp_path / "out" / "b.dcm"])):
        parsed = _changed(src)
        with open(src, "r+b") as fh:
            fh.truncate(parsed.tail + 100)
        with pytest.raises(DicomReadError, match="shortened"):
            writer(parsed)
        shutil.copy(get_testdata_file("CT_small.dcm"), src)
    assert _files(tmp_path / "out") == []


def test_outputs_land_in_folders_made_on_demand(tmp_path: Path, anonymous: bool) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    deep = tmp_path / "study" / "series"
    assert write_new(_changed(src), [deep / "a.dcm"]) == deep / "a.dcm"
    assert write(_changed(src), tmp_path / "other" / "b.dcm").is_file()
