"""Identifiers matched as tokens by clean, verify and the audit alike; unknown person names and
unknown VRs; values invalid for their VR.

Each test plants known values into pydicom's CT_small (a real CT header) and runs the real
pipeline (or the worker, with its SQLite store): an identifier either leaves no trace in the
output or refuses the object with a reason that names the element and never the value.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.config import ProfileConfig, load_config, parse_config
from gateway.deid.dummies import TEXT as DUMMY
from gateway.deid.inspect import inspect
from gateway.deid.profile import Profile
from gateway.deid.remediate import remediate
from gateway.deid.verify import verify
from gateway.pipeline import Forwarded, Pipeline, Quarantined
from gateway.statedir import StateDir
from gateway.store import QUARANTINED, Store
from gateway.worker import Worker

KEY = b"t" * 32
FAMILY, GIVEN = "Jones", "Philip"
NAME = f"{FAMILY}^{GIVEN}"
PID = "1CT1"
BIRTH = "19610429"
STUDY_DATE = "20240312"
# Must pass untouched: name components inside device words, IDs inside longer numbers.
LOOK_ALIKES = {
    "Manufacturer": "PHILIPS MEDICAL SYSTEMS",
    "ManufacturerModelName": "Ingenia Philips",
    "StationName": "JONESTOWN CT",
    "BodyPartExamined": "CHEST 11CT1",
    "SoftwareVersions": "PHILIPS 5.1CT12",
    "DeviceSerialNumber": "191961042901",
}
# Must be caught: identifiers embedded in kept or cleaned text, in any case and punctuation.
EMBEDDED = [
    "CHEST 1CT1 X", "chest_1ct1", "Seen by JONES", "seen by jones", "Dr. Philip J.",
    "pHiLiP", "dob 19610429", "born 1961-04-29", "born 29/04/1961", "29.04.61",
    "scan 2024-03-12", "12/03/2024 follow-up", "12.03.24", "12 Mar 2024",
]
# Kept (K or unlisted) in every profile below, or cleaned (C) under Clean Descriptors.
HOLDERS = ["BodyPartExamined", "ProtocolName", "StudyDescription", "ImageComments",
           "SeriesDescription"]
PROFILES = {
    "basic": ProfileConfig(options=()),
    "clean": ProfileConfig(options=("Clean Descriptors Option",)),
    "device": ProfileConfig(options=("Retain Device Identity Option",
                                     "Retain Safe Private Option")),
    "default": None,
}


def header(**values: object) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = NAME
    ds.PatientID = PID
    ds.PatientBirthDate = BIRTH
    ds.StudyDate = STUDY_DATE
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    config = load_config(None)
    profiles = {k: v for k, v in PROFILES.items() if v is not None}
    return Pipeline(dataclasses.replace(config, profiles=profiles), KEY)


def run(pipeline: Pipeline, ds: Dataset, tmp_path: Path, profile: str) -> Forwarded | Quarantined:
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    return pipeline.process(src, tmp_path / profile / "out.dcm", profile=profile,
                            burned_in="pass")


def leaks(data: bytes, *values: str) -> list[str]:
    """Which planted values (in any case) appear in `data`: the count, never the value."""
    text = data.decode("latin-1").lower()
    return [v for v in values if v.lower() in text]


# ------------------------------------------------------------------ the cases


@pytest.mark.parametrize("tag", [0x00142006, 0x00140104, 0x0010A310],
                         ids=["EvaluatorName", "SecondaryReviewerName", "unknown (0010,A310)"])
@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_patients_name_copied_into_another_person_name_never_leaves(
        tag: int, profile: str, pipeline: Pipeline, tmp_path: Path) -> None:
    ds = header()
    ds.add_new(tag, "PN", NAME)
    outcome = run(pipeline, ds, tmp_path, profile)
    assert isinstance(outcome, Forwarded), outcome
    out = pydicom.dcmread(outcome.path)
    assert tag not in out or out[tag].is_empty
    assert not leaks(outcome.path.read_bytes(), FAMILY, GIVEN)


def test_an_unknown_public_element_of_vr_un_is_removed(pipeline: Pipeline,
                                                        tmp_path: Path) -> None:
    ds = header()
    ds.add_new(0x0010A310, "UN", NAME.encode())
    outcome = run(pipeline, ds, tmp_path, "basic")
    assert isinstance(outcome, Forwarded), outcome
    assert 0x0010A310 not in pydicom.dcmread(outcome.path)
    assert not leaks(outcome.path.read_bytes(), FAMILY, GIVEN)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_a_short_id_inside_a_kept_value_is_refused(profile: str, pipeline: Pipeline,
                                                   tmp_path: Path) -> None:
    outcome = run(pipeline, header(BodyPartExamined="CHEST 1CT1 X"), tmp_path, profile)
    assert isinstance(outcome, Quarantined)
    assert outcome.reason == ("verify refused: an original identifier (from (0010,0020) PatientID)"
                              " survives in (0018,0015) BodyPartExamined")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_a_given_name_inside_the_manufacturers_name_is_no_identifier(
        profile: str, pipeline: Pipeline, tmp_path: Path) -> None:
    outcome = run(pipeline, header(**LOOK_ALIKES), tmp_path, profile)
    assert isinstance(outcome, Forwarded), outcome
    out = pydicom.dcmread(outcome.path)
    device = ("StationName", "DeviceSerialNumber")  # kept under Retain Device Identity only
    for keyword, value in LOOK_ALIKES.items():
        if profile == "device" or keyword not in device:
            assert out.data_element(keyword).value == value, keyword


# ------------------------------------------------------------------ the corpus


@pytest.mark.parametrize("text", EMBEDDED)
@pytest.mark.parametrize("holder", HOLDERS)
def test_embedded_identifiers_never_leave(holder: str, text: str, pipeline: Pipeline,
                                          tmp_path: Path) -> None:
    """In each profile: cleaned away (C), removed (X) or refused naming the element (K)."""
    ds = header(**{holder: text})
    tag = ds.data_element(holder).tag
    for profile in PROFILES:
        outcome = run(pipeline, ds, tmp_path, profile)
        if isinstance(outcome, Forwarded):
            out = pydicom.dcmread(outcome.path)
            kept = str(out.get(holder, "") or "")
            assert kept != text, f"{profile}: kept as it was"
            assert not leaks(outcome.path.read_bytes(), FAMILY, GIVEN, PID, BIRTH, STUDY_DATE)
        else:
            assert f"({tag.group:04X},{tag.element:04X})" in outcome.reason


@pytest.mark.parametrize("text", ["Philips Ingenia", "JONESTOWN", "11CT1 1CT11 CT1",
                                  "1961 20240313 13.03.24", "SERIES 12 03 2025"])
@pytest.mark.parametrize("holder", HOLDERS)
def test_look_alikes_stay_as_they_are(holder: str, text: str, pipeline: Pipeline,
                                      tmp_path: Path) -> None:
    ds = header(**{holder: text[:16] if holder == "BodyPartExamined" else text})
    expected = str(ds.data_element(holder).value)
    for profile in PROFILES:
        outcome = run(pipeline, ds, tmp_path, profile)
        assert isinstance(outcome, Forwarded), (profile, outcome)
        out = pydicom.dcmread(outcome.path)
        value = out.get(holder)
        if value and value != DUMMY:  # kept or cleaned, not removed (X, Z) nor replaced (D)
            assert value == expected, profile


def test_identifiers_at_every_depth_are_refused_where_kept() -> None:
    """A nested item's kept text, a private element kept under Retain Safe Private, file meta."""
    profile = Profile.basic("Retain Safe Private Option")
    ds = header()
    item = Dataset()
    item.BodyPartExamined = "jones"
    ds.ReferencedImageSequence = Sequence([item])
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x9E, "LO", "SEQ 1ct1")
    result = remediate(ds, profile, KEY)
    ds.file_meta.SourceApplicationEntityTitle = "29/04/1961"
    problems = verify(ds, result, profile)
    assert problems == [
        "an original identifier (from (0010,0030) PatientBirthDate) survives in file meta"
        " (0002,0016) SourceApplicationEntityTitle",
        "an original identifier (from (0010,0010) PatientName) survives in"
        " (0008,1140)[0].(0018,0015) BodyPartExamined",
        "an original identifier (from (0010,0020) PatientID) survives in (0019,109E)",
    ]
    assert not [p for p in problems if leaks(p.encode(), FAMILY, PID, "1961")]


def test_the_gateways_own_stamp_is_no_identifier(pipeline: Pipeline, tmp_path: Path) -> None:
    """A placeholder name whose words the method's description repeats (pydicom's ALOKA file:
    NAME^PATIENT^NAME; 'Retain Patient Characteristics Option')."""
    outcome = run(pipeline, header(PatientName="NAME^PATIENT^NAME"), tmp_path, "default")
    assert isinstance(outcome, Forwarded), outcome


def test_clean_verify_and_the_audit_agree() -> None:
    """What C leaves passes verify; what the audit flags in kept text, verify refuses."""
    profile = Profile.basic("Clean Descriptors Option")
    ds = header(StudyDescription="CT for JONES, dob 29.04.61", BodyPartExamined="CHEST 1CT1 X",
                ProtocolName="PHILIPS routine")
    findings = {f.path: f.action for f in inspect(ds, profile).findings}
    assert findings["(0018,0015)"] == "identifier"
    assert findings["(0008,1030)"] == "C"
    result = remediate(ds, profile, KEY)
    assert ds.StudyDescription == "CT for , dob "
    assert ds.ProtocolName == "PHILIPS routine"
    assert verify(ds, result, profile) == [
        "an original identifier (from (0010,0020) PatientID) survives in (0018,0015)"
        " BodyPartExamined"]


@pytest.mark.parametrize("action", ["clean", "CLEAN"])
def test_a_clean_override_scrubs_the_identifier_out_of_a_kept_element(
        action: str, pipeline: Pipeline, tmp_path: Path) -> None:
    """The remedy the refusal points to: `phi_tags: {BodyPartExamined: {action: clean}}`."""
    config = parse_config({"profile": {"phi_tags": {"BodyPartExamined": {"action": action}}}},
                          "test")
    ds = header(BodyPartExamined="CHEST 1CT1 X")
    findings = {f.path: f.action for f in inspect(ds, Profile.from_config(config.profile))
                .findings}
    assert findings["(0018,0015)"] == "C"
    outcome = Pipeline(config, KEY).process(_saved(ds, tmp_path), tmp_path / "out.dcm",
                                            burned_in="pass")
    assert isinstance(outcome, Forwarded), outcome
    assert pydicom.dcmread(outcome.path).BodyPartExamined == "CHEST  X"
    assert not leaks(outcome.path.read_bytes(), PID)


def test_joined_initials_are_no_word_of_the_name(pipeline: Pipeline, tmp_path: Path) -> None:
    """A middle name written as initials (`Test^S R`) does not make Modality SR an identifier;
    a real name component still refuses where kept."""
    ds = header(PatientName="Test^S R", BodyPartExamined="SR")
    assert isinstance(run(pipeline, ds, tmp_path, "basic"), Forwarded)
    ds = header(PatientName="Test^S R", BodyPartExamined="TEST")
    assert isinstance(run(pipeline, ds, tmp_path, "basic"), Quarantined)


def _saved(ds: Dataset, tmp_path: Path) -> Path:
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    return src


# ------------------------------------------------------------------ values invalid for their VR


def test_a_cs_of_4599_bytes_refuses_the_object(pipeline: Pipeline, tmp_path: Path) -> None:
    ds = header(Modality="CT" + "A" * 4597)
    assert ("(0008,0060)", "invalid") in {(f.path, f.action)
                                          for f in inspect(ds, Profile.basic()).findings}
    outcome = run(pipeline, ds, tmp_path, "basic")
    assert isinstance(outcome, Quarantined)
    assert outcome.reason == ("verify refused: (0008,0060) is not valid: CS value of 4599 "
                              "characters (at most 16)")


@pytest.mark.parametrize(("keyword", "value", "problem"), [
    ("Modality", "CT\\MR", "2 values where the element allows 1"),
    ("ImageType", "ORIGINAL\\PRIMARY\\AXIAL\x00LOCALIZER",
     "CS value with characters CS does not allow"),
    ("SoftwareVersions", "V" * 65, "LO value of 65 characters (at most 64)"),
    ("Manufacturer", "GE\x01MEDICAL", "LO value with characters LO does not allow"),
    ("StationName", "S" * 17, "SH value of 17 characters (at most 16)"),
])
def test_values_invalid_for_their_vr_or_vm_are_refused(keyword: str, value: str, problem: str,
                                                        pipeline: Pipeline,
                                                        tmp_path: Path) -> None:
    ds = header()
    tag = tag_for_keyword(keyword)
    ds.add_new(tag, dictionary_VR(tag), value)
    outcome = run(pipeline, ds, tmp_path, "device")
    assert isinstance(outcome, Quarantined)
    assert f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not valid: {problem}" in outcome.reason


def swallowing_file(path: Path) -> None:
    """CT_small whose Modality (CS) length is corrupted so that it swallows the elements up to
    and including Patient's Name and Patient ID."""
    ds = header()
    ds.save_as(path, enforce_file_format=True)
    raw = pydicom.dcmread(path, stop_before_pixels=True)
    modality = raw._dict[0x00080060]
    keys = sorted(raw._dict)
    after = raw._dict[keys[keys.index(0x00100020) + 1]]  # explicit VR, a short-length VR
    assert after.VR in ("DA", "CS", "LO", "SH", "PN")
    end = after.value_tell - 8
    data = bytearray(path.read_bytes())
    assert data[modality.value_tell - 2:modality.value_tell] == struct.pack("<H", 2)
    data[modality.value_tell - 2:modality.value_tell] = struct.pack("<H", end - modality.value_tell)
    path.write_bytes(bytes(data))


def test_a_modality_that_swallowed_the_patient_reaches_neither_output_nor_database(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = parse_config({"destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                                  "port": 104}},
                        "routes": [{"name": "all", "destinations": ["pacs"]}]}, "<test>")
    state = StateDir(tmp_path / "state")
    worker, store = Worker(cfg, KEY, state), Store(state.db)
    swallowing_file(state.spooled("j1"))
    assert 0x00100010 not in pydicom.dcmread(state.spooled("j1"))  # it was swallowed
    store.add_job("j1", calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1", sop_hash="H",
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="x", size=1)
    assert worker.run_once()
    row = store.job("j1")
    assert row["state"] == QUARANTINED
    assert row["reason"].startswith("verify refused: (0008,0060) is not valid: CS value of ")
    assert store.machines()[0]["modality"] == "(invalid)"
    store.close()
    worker.store.close()
    with sqlite3.connect(state.db) as db:
        dump = "\n".join(db.iterdump())
    files = b"".join(p.read_bytes() for p in Path(state.db).parent.glob("*.db*"))
    logged = capfd.readouterr()
    for where in (dump.encode(), files, (logged.out + logged.err).encode()):
        assert not leaks(where, FAMILY, GIVEN, PID)
    shutil.rmtree(tmp_path / "state", ignore_errors=True)


def test_a_number_kept_as_it_is_must_be_one(pipeline: Pipeline, tmp_path: Path) -> None:
    """pydicom's badVR.dcm: Number of Frames (IS) '1A' is refused, the value never quoted."""
    outcome = pipeline.process(Path(get_testdata_file("badVR.dcm")), tmp_path / "out.dcm",
                               profile="basic", burned_in="pass")
    assert isinstance(outcome, Quarantined)
    assert outcome.reason == ("verify refused: (0028,0008) is not valid: IS value with "
                              "characters IS does not allow")
