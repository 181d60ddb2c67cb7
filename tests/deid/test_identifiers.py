"""IdentifierSet: an object's identifiers, matched as whole tokens in any text.

Each test plants known values into pydicom's CT_small (a real CT header) and asks the matcher
about text as people write it: look-alikes must pass, embedded identifiers must be found in
upper, lower and mixed case, whatever the punctuation around them.
"""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.deid.identifiers import IdentifierSet, date_forms
from gateway.deid.profile import Profile
from gateway.deid.remediate import remediate

KEY = b"k" * 32


def ct(**values: str) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "JONES^PHILIP"
    ds.PatientID = "1CT1"
    ds.PatientBirthDate = "19610429"
    ds.AccessionNumber = "ACC-77315"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.StudyDate = "20240312"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="module")
def matcher() -> IdentifierSet:
    return IdentifierSet.from_dataset(ct())


@pytest.mark.parametrize("text", [
    "CHEST 1CT1 X", "chest 1ct1 x", "Chest_1Ct1_x", "ID:1CT1.", "1-CT-1",
    "JONES", "jones", "Dr Jones said", "PHILIP", "philip jones", "Jones,Philip", "JONES2",
    "station jones07",
    "ACC-77315", "acc77315", "ref acc 77315",
    "born 19610429", "DOB 1961-04-29", "29/04/1961", "04/29/1961", "29.04.61", "29 Apr 1961",
    "April 29, 1961", "29-APR-1961", "4/29/61",
    "seen 20240312", "2024-03-12", "12/03/2024", "12.03.24", "12 March 2024", "3/12/2024",
    "St Elsewhere Hospital", "st. elsewhere hospital",
])
def test_embedded_identifiers_are_found(matcher: IdentifierSet, text: str) -> None:
    assert matcher.found_in(text)
    assert matcher.spans(text)


@pytest.mark.parametrize("text", [
    "PHILIPS MEDICAL SYSTEMS", "Philips", "INGENIA PHILIPS", "JONESTOWN PROTOCOL",
    "11CT1", "1CT11", "CT1", "SIEMENS", "ACC-773150", "177315", "ACC",
    "HOSPITAL", "Elsewhere", "MEDICAL CENTER",
    "20240313", "2024031299", "12/03/2025", "13.03.24", "19610430", "1961",
    "",
])
def test_look_alikes_pass(matcher: IdentifierSet, text: str) -> None:
    assert not matcher.found_in(text)
    assert matcher.spans(text) == []


def test_spans_point_at_the_identifiers_in_the_original_text() -> None:
    matcher = IdentifierSet.from_dataset(ct())
    text = "Seen by Jones, Philip on 12/03/2024 (PHILIPS scanner), id 1ct1."
    found = [text[a:b] for a, b in matcher.spans(text)]
    assert found == ["Jones", "Philip", "12/03/2024", "1ct1"]
    assert matcher.scrub(text) == "Seen by ,  on  (PHILIPS scanner), id ."


def test_identifiers_at_every_depth_and_of_every_person_name() -> None:
    ds = ct()
    item = Dataset()
    item.ReferringPhysicianName = "Quillfeather^Ortensia"
    item.ProcedureCodeSequence = Sequence([Dataset()])
    item.ProcedureCodeSequence[0].add_new(0x00400244, "DA", "20230105")
    ds.RequestAttributesSequence = Sequence([item])
    ds.add_new(0x00142006, "PN", "Brightwater^Olek")  # EvaluatorName, unlisted in the table
    matcher = IdentifierSet.from_dataset(ds)
    for text in ("QUILLFEATHER", "ortensia", "05/01/2023", "Olek Brightwater"):
        assert matcher.found_in(text), text


def test_short_values_count_and_single_characters_do_not() -> None:
    matcher = IdentifierSet.from_dataset(ct(PatientID="AB", PatientName="Ng^J^Q", StudyID="17",
                                            AccessionNumber="123"))
    assert matcher.found_in("series ab 3")
    assert matcher.found_in("NG")
    assert matcher.found_in("acc 123")
    assert not matcher.found_in("J Q")
    assert not matcher.found_in("syngo MR B17")  # a two-digit Study ID is no identifier


def test_name_particles_alone_do_not_identify_but_the_name_does() -> None:
    matcher = IdentifierSet.from_dataset(ct(PatientName="van der Berg^Anna"))
    assert matcher.found_in("VAN DER BERG")
    assert matcher.found_in("Berg")
    assert not matcher.found_in("van de Graaff")


def test_what_the_profile_keeps_is_no_identifier() -> None:
    ds = ct()
    basic = IdentifierSet.from_dataset(ds, Profile.basic())
    kept = IdentifierSet.from_dataset(ds, Profile.basic("Retain Institution Identity Option",
                                                        "Retain Longitudinal Temporal "
                                                        "Information with Full Dates Option"))
    assert basic.found_in("St Elsewhere Hospital") and basic.found_in("2024-03-12")
    assert not kept.found_in("St Elsewhere Hospital") and not kept.found_in("2024-03-12")
    assert kept.found_in("29/04/1961") and kept.found_in("1CT1")  # birth date, ID: removed


def test_an_object_without_identifiers_is_falsy() -> None:
    assert not IdentifierSet.from_dataset(Dataset())
    assert not IdentifierSet()
    assert IdentifierSet.from_dataset(ct())


def test_unreadable_dates_give_no_forms() -> None:
    assert date_forms("2024") == set() and date_forms("20241399") == set()
    assert ("12032024",) in date_forms("2024.03.12")  # ACR-NEMA style


def test_remediation_carries_the_matcher_of_the_original_header() -> None:
    ds = ct()
    result = remediate(ds, Profile.basic(), KEY)
    assert str(ds.PatientName) != "JONES^PHILIP"
    assert result.matcher.found_in("JONES") and result.matcher.found_in("1CT1")


def test_values_are_the_names_and_ids_not_dates_nor_places() -> None:
    values = IdentifierSet.from_dataset(ct(), Profile.basic()).values
    assert {"JONES^PHILIP", "1CT1", "ACC-77315"} <= values
    assert "St Elsewhere Hospital" not in values and "19610429" not in values


UNSPACED_NAMES = [
    # (patient name, text people write with it, the part that must go)
    ("山田^太郎", "山田太郎様 胸部CT", "山田"),
    ("Yamada^Taro=山田^太郎", "山田太郎様の造影", "太郎"),
    ("김^철수", "김철수님 흉부", "철수"),
    ("王^小明", "患者王小明复查", "小明"),
    ("ยามาดะ^ทาโร", "ผู้ป่วยยามาดะ", "ยามาดะ"),
]


@pytest.mark.parametrize(("name", "text", "part"), UNSPACED_NAMES)
def test_names_in_scripts_without_spaces_are_found_inside_words(name: str, text: str,
                                                                part: str) -> None:
    """Chinese, Japanese, Korean and Thai run words together (a name and its honorific, 山田
    and 様): an identifier of these scripts is found anywhere in the text, and scrubbed."""
    ds = ct(SpecificCharacterSet="ISO_IR 192", PatientName=name)
    matcher = IdentifierSet.from_dataset(ds)
    assert matcher.found_in(text)
    scrubbed = matcher.scrub(text)
    assert part not in scrubbed and not matcher.found_in(scrubbed)
    assert matcher.origin(text) == 0x00100010
    # the same words elsewhere in the text do not stand for anyone else
    assert not IdentifierSet.from_dataset(ct()).found_in(text)


def test_a_name_run_into_unspaced_text_is_cleaned_and_verified(tmp_path) -> None:
    """Through the real pipeline (Clean Descriptors): the description keeps what is not the
    name; a kept element holding the name run into other words is refused."""
    from gateway.config import parse_config
    from gateway.pipeline import Forwarded, Pipeline, Quarantined

    config = parse_config({"site_key": {"env": "GANTRY_SITE_KEY"},
                           "profile": {"options": ["Clean Descriptors Option"],
                                       "phi_tags": {"SeriesDescription": {"action": "keep"}}}},
                          "<test>")
    pipeline = Pipeline(config, KEY)
    ds = ct(SpecificCharacterSet="ISO_IR 192", PatientName="山田^太郎",
            StudyDescription="山田太郎様 胸部CT")
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    result = pipeline.process(tmp_path / "in.dcm", tmp_path / "out.dcm")
    assert isinstance(result, Forwarded)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.StudyDescription == "様 胸部CT"
    assert "山田".encode() not in (tmp_path / "out.dcm").read_bytes()
    ds.SeriesDescription = "山田太郎様"  # kept as it is by choice: verify's to refuse
    ds.save_as(tmp_path / "in2.dcm", enforce_file_format=True)
    result = pipeline.process(tmp_path / "in2.dcm", tmp_path / "out2.dcm")
    assert isinstance(result, Quarantined) and "SeriesDescription" in result.reason


ASCII_SPELLINGS = [
    # (patient name, how a system that writes ASCII wrote it)
    ("GARCÍA^JOSÉ", "Jose Garcia follow-up"),
    ("GARCÍA^JOSÉ", "GARCIA"),
    ("MÜLLER^JÖRG", "Dr. Mueller"),
    ("MÜLLER^JÖRG", "MULLER J"),
    ("MÜLLER^JÖRG", "joerg"),
    ("ŁUKASZEWSKA^ŻANETA", "Lukaszewska"),
    ("SØRENSEN^ÅSE", "Soerensen"),
    ("SØRENSEN^ÅSE", "sorensen"),
    ("NGUYỄN^THỊ", "Nguyen Thi"),
]


@pytest.mark.parametrize(("name", "text"), ASCII_SPELLINGS)
def test_a_name_written_without_its_accents_is_found(name: str, text: str) -> None:
    """Systems that write ASCII drop accents or spell letters out (Müller → Muller, Mueller):
    the name is found, scrubbed, and burned in (OCR reads ASCII) found too."""
    from gateway.deid.ocr import IdentifierTokens

    ds = ct(SpecificCharacterSet="ISO_IR 192", PatientName=name)
    matcher = IdentifierSet.from_dataset(ds)
    assert matcher.found_in(text) and matcher.origin(text) == 0x00100010
    assert not matcher.found_in(matcher.scrub(text))
    assert IdentifierTokens(matcher.values).spans(text.upper())
    assert not IdentifierSet.from_dataset(ct()).found_in(text)


def test_accents_do_not_make_look_alikes() -> None:
    """Folding accents keeps whole tokens whole: GARCÍA is not in GARCIAS, MÜLLER not in
    MUELLERSTRASSE."""
    ds = ct(SpecificCharacterSet="ISO_IR 192", PatientName="MÜLLER^GARCÍA")
    matcher = IdentifierSet.from_dataset(ds)
    for text in ("GARCIAS", "Muellerstrasse 4", "MULLERS"):
        assert not matcher.found_in(text), text


def test_an_id_padded_with_zeros_is_found_without_them() -> None:
    """Another system's copy of MRN 00012345 reads 12345; a short remainder (accession 0000123
    → 123) is too common a number to stand for anyone."""
    matcher = IdentifierSet.from_dataset(ct(PatientID="00012345", AccessionNumber="0000123"))
    assert matcher.found_in("MRN 12345") and matcher.found_in("MRN 00012345")
    assert matcher.origin("MRN 12345") == 0x00100020
    for text in ("123", "acc 123", "9912345", "123456"):
        assert not matcher.found_in(text), text


def test_ocr_finds_a_name_read_with_its_accents() -> None:
    """Tesseract may read the accents burned into an image: GARCÍA read as GARCÍA is found,
    its span the word's own."""
    from gateway.deid.ocr import IdentifierTokens

    matcher = IdentifierSet.from_dataset(ct(SpecificCharacterSet="ISO_IR 192",
                                            PatientName="GARCÍA^JOSÉ"))
    text = "PT: GARCÍA, JOSÉ  12/03"
    assert IdentifierTokens(matcher.values).spans(text) == [(4, 10), (12, 16)]


@pytest.mark.parametrize("text", ["born April 29th, 1961", "29th April 1961",
                                  "the 29th of April 1961", "Apr 29th 1961"])
def test_a_date_written_with_an_ordinal_is_found(text: str) -> None:
    """People write a birth date as the 29th of April 1961: found, and scrubbed whole."""
    matcher = IdentifierSet.from_dataset(ct())
    assert matcher.found_in(text) and matcher.origin(text) == 0x00100030
    assert not any(c.isdigit() for c in matcher.scrub(text))
    assert not matcher.found_in("the 5th floor, 29th of the month")
