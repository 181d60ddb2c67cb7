"""Private elements kept under Retain Safe Private, in the files where their VR is not written:
implicit VR little endian, the transfer syntax most modalities send by default. pydicom's
dictionary knows few of Table E.3.10-1's private elements, so it reads the others as UN bytes;
the gatekeeper used to let such bytes pass unread (a patient's name in a kept LO, an original
UID in a kept UI, a name inside a kept sequence), where the same object in explicit VR was
refused or remapped. Now the table's VR applies, and any UN or private OB value that reads as
text is verified as text.

Every row of the table (pydicom-data's rules, the real pipeline, files written to disk and read
back the way the gateway and the batch read them). Runs ~5 s.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.config import parse_config
from gateway.deid.tables import E3_10_1_FILE
from gateway.pipeline import Forwarded, Pipeline, Quarantined

KEY = b"s" * 32
FAMILY = "QUIXOTEFAMILY"
TABLE = Path(__file__).resolve().parents[2] / "gateway" / "deid" / "data" / E3_10_1_FILE
SYNTAXES = {"implicit": ImplicitVRLittleEndian, "explicit": ExplicitVRLittleEndian}
TEXT_VRS = ("CS", "LO", "SH", "ST", "LT", "OB")


def rows(*vrs: str) -> list:
    with open(TABLE, encoding="utf-8") as f:
        found = [r for r in csv.DictReader(f) if r["vr"].split("/")[0] in vrs]
    return [pytest.param(r["tag"], r["private_creator"], r["vr"].split("/")[0], syntax,
                         id=f"{syntax}-{r['tag']}-{r['private_creator']}")
            for r in found for syntax in SYNTAXES]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    config = parse_config({"site_key": {"env": "GANTRY_SITE_KEY"},
                           "profile": {"options": ["Retain Safe Private Option"]}}, "<test>")
    return Pipeline(config, KEY)


def ct(name: str = f"{FAMILY}^ROSINANTE") -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = name
    return ds


def plant(ds: Dataset, tag: str, creator: str, vr: str, value: object) -> int:
    """Add `value` as the private element `tag` (e.g. "(0019,xx9E)") of `creator`."""
    group, element = tag.strip("()").split(",")
    block = ds.private_block(int(group, 16), creator, create=True)
    block.add_new(int(element[2:], 16), vr, value)
    return block.get_tag(int(element[2:], 16))


def run(pipeline: Pipeline, ds: Dataset, syntax: str, tmp_path: Path) -> tuple[object, Path]:
    ds.file_meta.TransferSyntaxUID = SYNTAXES[syntax]
    src, out = tmp_path / "in.dcm", tmp_path / "out.dcm"
    ds.save_as(src, implicit_vr=syntax == "implicit", little_endian=True,
               enforce_file_format=True)
    return pipeline.process(src, out), out


@pytest.mark.parametrize(("tag", "creator", "vr", "syntax"), rows(*TEXT_VRS))
def test_a_name_in_a_kept_text_element_is_refused(pipeline, tag, creator, vr, syntax, tmp_path):
    ds = ct()
    value = f"{FAMILY} ROSINANTE"
    planted = plant(ds, tag, creator, vr, value.encode() + b" " if vr == "OB" else value)
    result, out = run(pipeline, ds, syntax, tmp_path)
    assert isinstance(result, Quarantined), "a patient's name left in a kept private element"
    assert "verify refused" in result.reason and f"({planted >> 16:04X}," in result.reason
    assert FAMILY not in result.reason and not out.exists()


@pytest.mark.parametrize(("tag", "creator", "vr", "syntax"), rows("UI"))
def test_an_original_uid_in_a_kept_ui_element_is_remapped(pipeline, tag, creator, vr, syntax,
                                                          tmp_path):
    ds = ct()
    study = str(ds.StudyInstanceUID)
    planted = plant(ds, tag, creator, vr, study)
    result, out = run(pipeline, ds, syntax, tmp_path)
    assert isinstance(result, Forwarded), getattr(result, "reason", "")
    data = out.read_bytes()
    assert study.encode() not in data
    written = pydicom.dcmread(out)
    block = written.private_block(planted >> 16, creator)
    value = block[planted & 0xFF].value  # bytes when read back from implicit VR
    value = value.decode("ascii").rstrip("\x00") if isinstance(value, bytes) else value
    assert value == written.StudyInstanceUID  # the same keyed new UID


@pytest.mark.parametrize(("tag", "creator", "vr", "syntax"), rows("SQ"))
def test_a_name_inside_a_kept_sequence_is_refused(pipeline, tag, creator, vr, syntax,
                                                  tmp_path):
    ds = ct()
    item = Dataset()
    item.ContentDescription = f"{FAMILY} follow-up"
    plant(ds, tag, creator, "SQ", Sequence([item]))
    result, out = run(pipeline, ds, syntax, tmp_path)
    assert isinstance(result, Quarantined) and "verify refused" in result.reason
    assert not out.exists()


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_clean_kept_values_pass_unchanged(pipeline, syntax, tmp_path):
    """What the table keeps, with nothing identifying in it, still leaves as it came: text,
    and binary that happens to hold a run of a name's letters (no false refusal)."""
    ds = ct("LI^QUIXOTEFAMILY")
    pitch = plant(ds, "(0043,xx27)", "GEMS_PARM_01", "SH", "1.375:1")
    kind = plant(ds, "(0019,xx9E)", "GEMS_ACQU_01", "LO", "FIESTA")
    blob = bytes(range(256)) + b"\x01LI\x02" + os.urandom(4096)
    stream = plant(ds, "(7FD1,xx01)", "SIEMENS Ultrasound SC2000", "OB", blob)
    result, out = run(pipeline, ds, syntax, tmp_path)
    assert isinstance(result, Forwarded), getattr(result, "reason", "")
    written = pydicom.dcmread(out)
    assert written[pitch].value == "1.375:1" and written[kind].value == "FIESTA"
    assert written[stream].value == blob


def test_a_name_in_the_objects_own_character_set_is_refused(pipeline, tmp_path):
    """Latin-1 text in a kept element of unknown VR is read in the object's character set."""
    ds = ct("MÜLLERSTEIN^JÖRG")
    ds.SpecificCharacterSet = "ISO_IR 100"
    group, creator = 0x0019, "GEMS_ACQU_01"
    block = ds.private_block(group, creator, create=True)
    block.add_new(0x9E, "LO", "Dr. Müllerstein".encode("latin-1"))  # bytes as a modality sends
    result, out = run(pipeline, ds, "implicit", tmp_path)
    assert isinstance(result, Quarantined) and "verify refused" in result.reason
    assert "ller" not in result.reason and not out.exists()


def test_a_name_in_a_private_element_kept_by_choice_is_refused(tmp_path):
    """Kept by a `phi_tags` override, not by the table: in implicit VR nothing says its VR, so
    it is UN to verify, which reads it as text all the same."""
    config = parse_config({"site_key": {"env": "GANTRY_SITE_KEY"},
                           "profile": {"phi_tags": {"(0071,1010)": {"action": "keep"}}}},
                          "<test>")
    ds = ct()
    ds.private_block(0x0071, "ACME NOTES", create=True).add_new(0x10, "LO", f"{FAMILY} seen")
    result, out = run(Pipeline(config, KEY), ds, "implicit", tmp_path)
    assert isinstance(result, Quarantined), "a name in a kept private element of unknown VR"
    assert "(0071,1010)" in result.reason and FAMILY not in result.reason
    assert not out.exists()
