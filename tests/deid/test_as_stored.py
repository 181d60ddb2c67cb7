"""Stages read string elements undecoded where that is the same as decoding them
(`values.as_stored`): no output byte may depend on it. Elements stored under UN or in a form
pydicom normalises are decoded, as pydicom's accessors did, and written decoded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement

from gateway.config import parse_config
from gateway.deid import remediate, values
from gateway.dicomio import read_for_deid
from gateway.pipeline import Forwarded, Pipeline

MODALITY, SOP_CLASS_UID, STUDY_TIME = 0x00080060, 0x00080016, 0x00080030


def _pipeline(site_key: bytes) -> Pipeline:
    config = parse_config({"site_key": {"env": "UNUSED"}, "redaction": {"on_risk": "pass"}},
                          "<test>")
    return Pipeline(config, site_key)


def _outputs(files: tuple[Path, ...], out: Path, site_key: bytes) -> dict[str, str]:
    pipeline, found = _pipeline(site_key), {}
    out.mkdir()
    for i, src in enumerate(files):
        result = pipeline.process(src, out / f"{i}.dcm")
        found[src.name + str(i)] = (hashlib.sha256((out / f"{i}.dcm").read_bytes()).hexdigest()
                                    if isinstance(result, Forwarded) else result.reason)
    return found


def test_reading_undecoded_changes_no_output_byte(corpus: tuple[Path, ...], tmp_path: Path,
                                                  site_key: bytes,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _outputs(corpus, tmp_path / "fast", site_key)
    assert sum(len(v) == 64 for v in fast.values()) >= 100  # most of the corpus is written
    monkeypatch.setattr(values, "as_stored", lambda ds, key: False)
    monkeypatch.setattr(remediate, "as_stored", lambda ds, key: False)
    decoded = _outputs(corpus, tmp_path / "decoded", site_key)
    assert {k: v for k, v in fast.items() if decoded[k] != v} == {}


def test_as_stored_tells_which_elements_read_the_same_undecoded() -> None:
    ds = read_for_deid(get_testdata_file("CT_small.dcm")).ds
    assert isinstance(ds._dict[MODALITY], RawDataElement) and values.as_stored(ds, MODALITY)
    assert values.as_stored(ds, SOP_CLASS_UID)  # a UI padded with its NUL
    raw = ds._dict[STUDY_TIME]
    for value, same in ((b"101500", True), (b"10150 ", True), (b"10150\x00", False),
                        (b"1015  ", False), (b" 10150", False), (b"101500\\1016 ", True),
                        (b"101500\\ 1016", False), (b"", True)):
        ds._dict[STUDY_TIME] = raw._replace(value=value, length=len(value))
        assert values.as_stored(ds, STUDY_TIME) is same, value
    ds._dict[MODALITY] = ds._dict[MODALITY]._replace(VR="UN")
    assert not values.as_stored(ds, MODALITY)  # decoding gives it its VR


def test_elements_stored_as_un_are_written_decoded_as_before(tmp_path: Path,
                                                             site_key: bytes) -> None:
    """explicit_VR-UN.dcm stores every element as UN: those the stages read by value (the
    modality and SOP class for the burned-in text decision, the times the profile cleans) come
    out under their own VRs; a CT's are copied as they were read."""
    src = Path(get_testdata_file("explicit_VR-UN.dcm"))
    assert pydicom.dcmread(src)._dict[MODALITY].VR == "UN"
    result = _pipeline(site_key).process(src, tmp_path / "un.dcm")
    assert isinstance(result, Forwarded)
    out = pydicom.dcmread(tmp_path / "un.dcm")
    assert (out._dict[MODALITY].VR, out._dict[SOP_CLASS_UID].VR) == ("CS", "UI")
    assert out._dict[STUDY_TIME].VR == "TM"

    ct = Path(get_testdata_file("CT_small.dcm"))
    result = _pipeline(site_key).process(ct, tmp_path / "ct.dcm")
    assert isinstance(result, Forwarded)
    before, after = pydicom.dcmread(ct), pydicom.dcmread(tmp_path / "ct.dcm")
    for tag in (MODALITY, SOP_CLASS_UID, STUDY_TIME):
        assert after._dict[tag].value == before._dict[tag].value
