"""The fast header reader agrees with pydicom's reader on every corpus file it accepts, and it
accepts the common files (so the fast path is the one the benchmarks and the gateway take)."""

from __future__ import annotations

import struct
from pathlib import Path

import data_store
import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from gateway.dicomio import DicomReadError, read_for_deid
from gateway.headerscan import Unusual, scan_header


def _pydicom_header(path: Path) -> tuple[pydicom.Dataset, int]:
    with open(path, "rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        return ds, fh.tell()


def test_scan_agrees_with_pydicom(corpus_file: Path) -> None:
    try:
        fast, pos, size = scan_header(corpus_file)
    except Unusual:
        return  # read by pydicom instead: the corpus test covers that path
    slow, slow_pos = _pydicom_header(corpus_file)
    # undecoded, each element is the tuple pydicom's reader makes, every field of it (pydicom
    # reads .is_raw and .is_buffered, and _replace()s a raw element to fix its VR or value)
    for tag in slow.keys():
        raw = slow._dict[tag]
        if isinstance(raw, RawDataElement):
            assert tuple(fast._dict[tag]) == tuple(raw), f"{tag} differs undecoded"
            assert fast._dict[tag]._replace(VR=raw.VR) == raw
    assert pos == slow_pos
    assert size == corpus_file.stat().st_size
    assert fast.file_meta == slow.file_meta
    assert sorted(fast.keys()) == sorted(slow.keys())
    for tag in slow.keys():  # decoded on both sides, sequences item by item
        assert fast[tag] == slow[tag], f"{tag} differs"
    assert fast.original_encoding == slow.original_encoding
    assert fast.original_character_set == slow.original_character_set


def _outcome(path: Path) -> str:
    try:
        parsed = read_for_deid(path)
    except DicomReadError as exc:
        return f"refused: {exc.problem}"
    return f"read: {sorted(parsed.ds.keys()) == sorted(_pydicom_header(path)[0].keys())}"


def test_the_fast_path_accepts_and_refuses_exactly_what_pydicom_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every candidate test file, readable or not: the same outcome with the scanner as with
    pydicom's reader alone (the corpus is the readable files, so a file the scanner wrongly
    refused would silently leave the corpus)."""
    candidates = [Path(p) for p in pydicom.data.get_testdata_files()]
    candidates += [p for p in (Path(data_store.__file__).parent / "data").rglob("*")
                   if p.is_file()]
    candidates = [p for p in candidates if p.suffix not in (".py", ".txt", ".json", ".md")]
    fast = {p: _outcome(p) for p in candidates}

    def unusual(path: Path) -> None:
        raise Unusual("forced")

    monkeypatch.setattr("gateway.dicomio.scan_header", unusual)
    slow = {p: _outcome(p) for p in candidates}
    assert {p.name: o for p, o in fast.items() if o != slow[p]} == {}
    assert sum(o.startswith("read") for o in fast.values()) >= 200


def test_most_of_the_corpus_takes_the_fast_path(corpus: tuple[Path, ...]) -> None:
    files = corpus
    fast = 0
    for path in files:
        try:
            scan_header(path)
            fast += 1
        except Unusual:
            pass
    assert fast >= 0.8 * len(files), f"only {fast} of {len(files)} files read by the scanner"


def _file(tmp_path: Path, body: bytes, ts: bytes = b"1.2.840.10008.1.2.1\x00") -> Path:
    def explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
        if vr in (b"OB", b"SQ", b"UN"):
            return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
        return struct.pack("<HH2sH", group, element, vr, len(value)) + value

    meta = (explicit(2, 1, b"OB", b"\x00\x01")
            + explicit(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.7\x00")
            + explicit(2, 3, b"UI", b"1.2.3.4")
            + explicit(2, 0x10, b"UI", ts))
    head = b"\x00" * 128 + b"DICM" + explicit(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    path = tmp_path / "x.dcm"
    path.write_bytes(head + body)
    return path


def test_unusual_files_go_to_pydicom_and_keep_their_precise_errors(tmp_path: Path) -> None:
    sop = (struct.pack("<HH2sH", 8, 0x16, b"UI", 8) + b"1.2.3.4\x00"
           + struct.pack("<HH2sH", 8, 0x18, b"UI", 8) + b"1.2.3.4\x00")
    truncated = struct.pack("<HH2sH", 0x10, 0x10, b"PN", 40) + b"DOE"
    with pytest.raises(Unusual):
        scan_header(_file(tmp_path, sop + truncated))
    with pytest.raises(DicomReadError, match=r"\(0010,0010\) is truncated"):
        read_for_deid(tmp_path / "x.dcm")
    big_endian = _file(tmp_path, sop, ts=b"1.2.840.10008.1.2.2\x00")
    with pytest.raises(Unusual):
        scan_header(big_endian)


def test_undefined_length_sequences_are_found_whole(tmp_path: Path) -> None:
    item = struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 4) + b"T-D1"
    nested = (struct.pack("<HH2s2xI", 0x0008, 0x1115, b"SQ", 0xFFFFFFFF)
              + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item
              + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
              + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    sop = (struct.pack("<HH2sH", 8, 0x16, b"UI", 8) + b"1.2.3.4\x00"
           + struct.pack("<HH2sH", 8, 0x18, b"UI", 8) + b"1.2.3.4\x00")
    after = struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 4) + b"DOE "
    path = _file(tmp_path, sop + nested + after)
    ds, pos, size = scan_header(path)
    assert pos == size
    assert ds.ReferencedSeriesSequence[0].CodeValue == "T-D1"
    assert str(ds.PatientName) == "DOE"
    slow, _ = _pydicom_header(path)
    assert ds == slow


def test_elements_after_the_pixel_data_stay_after_it(tmp_path: Path) -> None:
    """CT_small.dcm ends with (FFFC,FFFC) Data Set Trailing Padding: the pixel bytes are still
    copied as they are, and what follows them is written after them again."""
    from pydicom.data import get_testdata_file

    from gateway.dicomio import write

    src = Path(get_testdata_file("CT_small.dcm"))
    original = pydicom.dcmread(src)
    assert list(original.keys())[-2:] == [0x7FE00010, 0xFFFCFFFC]
    parsed = read_for_deid(src)
    assert parsed.tail is not None and parsed.tail_stop is not None  # the fast path
    parsed.ds.PatientName = "CHANGED"
    write(parsed, tmp_path / "out.dcm")
    got = pydicom.dcmread(tmp_path / "out.dcm")
    assert list(got.keys())[-2:] == [0x7FE00010, 0xFFFCFFFC]
    assert got.PixelData == original.PixelData
    assert got[0xFFFCFFFC].value == original[0xFFFCFFFC].value
    assert str(got.PatientName) == "CHANGED"


def test_the_profile_removes_trailing_padding_and_keeps_the_pixels(tmp_path: Path,
                                                                    site_key: bytes) -> None:
    from pydicom.data import get_testdata_file

    from gateway.config import load_config
    from gateway.pipeline import Forwarded, Pipeline

    src = Path(get_testdata_file("CT_small.dcm"))
    outcome = Pipeline(load_config(None), site_key).process(src, tmp_path / "out.dcm")
    assert isinstance(outcome, Forwarded)
    got = pydicom.dcmread(tmp_path / "out.dcm")
    assert 0xFFFCFFFC not in got  # X in the Basic Profile
    assert got.PixelData == pydicom.dcmread(src).PixelData
