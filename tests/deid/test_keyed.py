"""Keyed determinism: new UIDs, well-known UIDs, pseudonyms and per-patient date offsets."""

from __future__ import annotations

import copy
import datetime as dt

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from gateway.config import ProfileConfig
from gateway.deid import keyed
from gateway.deid.inspect import inspect
from gateway.deid.profile import Profile
from gateway.deid.remediate import remediate
from gateway.deid.verify import verify

MODIFIED = "Retain Longitudinal Temporal Information with Modified Dates Option"
INSTANCE_UIDS = (
    "1.2.3.4",
    "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
    "2.25.329800735698586629295641978511506172918",
    "1.2.826.0.1.3680043.8.498." + "9" * 37,  # 64 characters
)


def well_known_uids() -> list[str]:
    return sorted(UID_dictionary)


def is_valid_new_uid(uid: str) -> bool:
    digits = uid[5:]
    return (uid.startswith("2.25.") and len(uid) <= 64 and digits.isdigit()
            and (digits == "0" or not digits.startswith("0")))


@pytest.mark.parametrize("uid", INSTANCE_UIDS)
def test_new_uid_format_and_determinism(uid: str, site_key: bytes, other_key: bytes) -> None:
    new = keyed.new_uid(site_key, uid)
    assert is_valid_new_uid(new)
    assert new != uid
    assert keyed.new_uid(site_key, uid) == new
    assert keyed.new_uid(other_key, uid) != new
    assert int(new[5:]) < 2**128  # 2.25 takes a 128-bit UUID-sized integer


def test_new_uids_of_different_uids_differ(site_key: bytes) -> None:
    news = {keyed.new_uid(site_key, f"1.2.826.0.1.3680043.2.1143.{i}") for i in range(2000)}
    assert len(news) == 2000


def test_well_known_uids_are_recognised() -> None:
    known = well_known_uids()
    assert len(known) > 100
    assert all(keyed.is_well_known_uid(uid) for uid in known)
    assert keyed.is_well_known_uid("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assert not any(keyed.is_well_known_uid(uid) for uid in INSTANCE_UIDS)


def _object(study: str, patient: str, sop: str) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = patient
    ds.PatientName = f"Family{patient}^Given"
    ds.StudyInstanceUID = study
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyDate = "20200229"
    ds.SeriesDate = "20200305"
    ds.AcquisitionDateTime = "20200305101500.250000"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = sop
    ds.ReferencedImageSequence = Sequence([item])
    ds.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence = Sequence([Dataset()])
    code = ds.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0]
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121311", "DCM", "Localizer"
    code.CodingSchemeUID = "1.2.840.10008.2.16.4"
    return ds


def test_remediate_keeps_well_known_and_maps_every_occurrence_alike(site_key: bytes) -> None:
    ds = _object("1.2.826.0.1.3680043.2.1143.50", "P-1", "1.2.826.0.1.3680043.2.1143.51")
    sop_class, ts = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
    remediate(ds, Profile.basic(), site_key)
    new_sop = str(ds.SOPInstanceUID)
    assert is_valid_new_uid(new_sop)
    assert str(ds.file_meta.MediaStorageSOPInstanceUID) == new_sop
    ref = ds.ReferencedImageSequence[0]
    assert str(ref.ReferencedSOPInstanceUID) == new_sop
    assert str(ds.SOPClassUID) == sop_class
    assert str(ref.ReferencedSOPClassUID) == sop_class
    assert str(ds.file_meta.MediaStorageSOPClassUID) == sop_class
    assert str(ds.file_meta.TransferSyntaxUID) == ts
    assert ref.PurposeOfReferenceCodeSequence[0].CodingSchemeUID == "1.2.840.10008.2.16.4"


def test_a_vendor_private_sop_class_is_kept_wherever_it_names_a_class(site_key: bytes) -> None:
    """Siemens' CSA Non-Image class is not under the DICOM root, yet it names a class: the
    object and its references keep it, and the inspector does not count it."""
    csa = "1.3.12.2.1107.5.9.1"
    ds = _object("1.2.826.0.1.3680043.2.1143.70", "P-3", "1.2.826.0.1.3680043.2.1143.71")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = csa
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = csa
    profile = Profile.basic()
    assert not [f for f in inspect(ds, profile).findings
                if f.path in ("(0008,0016)", "(0008,1140)[0].(0008,1150)")]
    result = remediate(ds, profile, site_key)
    ref = ds.ReferencedImageSequence[0]
    assert ds.SOPClassUID == ref.ReferencedSOPClassUID == csa
    assert ds.file_meta.MediaStorageSOPClassUID == csa
    assert is_valid_new_uid(str(ref.ReferencedSOPInstanceUID))
    assert csa not in result.uid_map and not verify(ds, result, profile)


def test_same_input_same_output_and_keys_differ(site_key: bytes, other_key: bytes) -> None:
    original = _object("1.2.826.0.1.3680043.2.1143.60", "P-2", "1.2.826.0.1.3680043.2.1143.61")
    a, b, c = (copy.deepcopy(original) for _ in range(3))
    profile = Profile.basic(MODIFIED)
    remediate(a, profile, site_key)
    remediate(b, profile, site_key)
    remediate(c, profile, other_key)
    assert a == b and a.file_meta == b.file_meta
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SeriesInstanceUID", "PatientID"):
        assert a.get(keyword) != c.get(keyword), keyword


def test_studies_of_one_patient_share_pseudonym_and_date_shift(site_key: bytes) -> None:
    profile = Profile.basic(MODIFIED)
    first = _object("1.2.826.0.1.3680043.2.1143.70", "P-3", "1.2.826.0.1.3680043.2.1143.71")
    second = _object("1.2.826.0.1.3680043.2.1143.72", "P-3", "1.2.826.0.1.3680043.2.1143.73")
    second.StudyDate, second.SeriesDate = "20210110", "20210111"
    remediate(first, profile, site_key)
    remediate(second, profile, site_key)
    assert first.PatientID == second.PatientID == first.PatientName
    assert str(first.PatientID).startswith(ProfileConfig().pseudonym_prefix)
    assert first.StudyInstanceUID != second.StudyInstanceUID
    shift_1 = _days(first.StudyDate, "20200229")
    shift_2 = _days(second.StudyDate, "20210110")
    assert shift_1 == shift_2
    # Intervals within the patient are kept: study → series, and across the two studies.
    assert _days(first.SeriesDate, first.StudyDate) == 5
    assert _days(second.StudyDate, first.StudyDate) == _days("20210110", "20200229")
    assert str(first.AcquisitionDateTime)[8:] == "101500.250000"
    assert _days(str(first.AcquisitionDateTime)[:8], "20200305") == shift_1


def _days(after: str, before: str) -> int:
    parse = lambda v: dt.datetime.strptime(str(v), "%Y%m%d")  # noqa: E731
    return (parse(after) - parse(before)).days


@pytest.mark.parametrize("bounds", [(-365, -1), (-30, -10), (5, 5), (-3, 3)])
def test_date_offsets_within_range_and_per_patient(site_key: bytes,
                                                   bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    offsets = {}
    for i in range(300):
        patient = f"PATIENT-{i}"
        offset = keyed.date_offset_days(site_key, patient, bounds)
        assert lo <= offset <= hi
        assert keyed.date_offset_days(site_key, patient, bounds) == offset
        offsets[patient] = offset
    expected_spread = min(hi - lo + 1, 3)
    assert len(set(offsets.values())) >= expected_spread  # not one fixed offset for all


def test_configured_range_is_used_by_remediate(site_key: bytes) -> None:
    profile = Profile.from_config(ProfileConfig(options=(MODIFIED,), date_shift_days=(-30, -10)))
    shifts = set()
    for i in range(40):
        ds = _object(f"1.2.826.0.1.3680043.2.1143.8{i}", f"P-{i}", f"1.2.826.0.1.3680043.9.{i}")
        remediate(ds, profile, site_key)
        shift = _days(ds.StudyDate, "20200229")
        assert -30 <= shift <= -10
        shifts.add(shift)
    assert len(shifts) > 1
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_pseudonym_prefix_and_keys(site_key: bytes, other_key: bytes) -> None:
    profile = Profile.from_config(ProfileConfig(pseudonym_prefix="RSCH-"))
    a = _object("1.2.826.0.1.3680043.2.1143.90", "P-9", "1.2.826.0.1.3680043.2.1143.91")
    b = copy.deepcopy(a)
    remediate(a, profile, site_key)
    remediate(b, profile, other_key)
    assert str(a.PatientID).startswith("RSCH-") and len(str(a.PatientID)) <= 64
    assert a.PatientID != b.PatientID
    assert "P-9" not in str(a.PatientID)
