"""CTP DicomPixelAnonymizer.script: the grammar, the real 52-signature library, YAML rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from gateway.config import parse_config
from gateway.deid.ctp_script import (
    CtpScriptError,
    builtin_script_path,
    first_match,
    load_script,
    parse_expression,
    parse_script,
)
from gateway.deid.signatures import (
    compile_match,
    expr_to_match,
    machine_signature,
    rule_from_config,
    rule_from_signature,
)

SHARED = Path("/work/shared/ctp/DicomPixelAnonymizer.script")
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "ctp" / "DicomPixelAnonymizer.script"


def header(**kw: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for key, value in kw.items():
        if key == "ImplementationVersionName":
            ds.file_meta.ImplementationVersionName = value
        else:
            setattr(ds, key, value)
    return ds


@pytest.fixture(scope="module")
def library():
    return load_script(SHIPPED)


def test_shipped_copies_are_the_shared_file():
    data = SHIPPED.read_bytes()
    assert builtin_script_path().read_bytes() == data
    if SHARED.exists():
        assert SHARED.read_bytes() == data


def test_real_library_parses_all_52_signatures(library):
    assert len(library) == 52
    assert all(sig.regions for sig in library)
    lines = [sig.line for sig in library]
    assert lines == sorted(lines) and len(set(lines)) == 52
    by_line = {sig.line: sig for sig in library}
    assert by_line[53].regions == ((350, 0, 162, 30), (390, 80, 122, 15))
    assert by_line[214].regions == ((0, 0, 1024, 60), (200, 60, 20, 20), (800, 65, 104, 14))
    assert "Logiq" in by_line[141].label


# (headers, lines of the library's signatures that must match it — and no others)
SYNTHETIC = [
    ("GE LOGIQ E9 ultrasound", dict(Modality="US", Manufacturer="GE Healthcare",
                                    ManufacturerModelName="LOGIQE9", Rows=720, Columns=960),
     {141}),
    ("GE LOGIQ 9", dict(Modality="US", ManufacturerModelName="LOGIQ9", Rows=480), {138}),
    ("Philips iU22 768 rows", dict(Modality="US", Manufacturer="Philips Medical Systems",
                                   ManufacturerModelName="iU22", Rows=768, Columns=1024), {155}),
    ("Philips iU22 other size", dict(Modality="US", Manufacturer="Philips Medical Systems",
                                     ManufacturerModelName="iU22", Rows=700, Columns=1024), set()),
    ("GE CT 512 screen capture", dict(Modality="CT", Manufacturer="GE MEDICAL SYSTEMS",
                                      BurnedInAnnotation="YES", Rows=512, Columns=512), {40}),
    ("GE CT 512 no burned-in flag", dict(Modality="CT", Manufacturer="GE MEDICAL SYSTEMS",
                                         Rows=512, Columns=512), set()),
    ("Vitrea report (OR branch)", dict(Manufacturer="Vital Images, Inc.",
                                       SeriesDescription="EVAR report", Rows=1041), {67}),
    ("Vitrea other series", dict(Manufacturer="Vital Images, Inc.", SeriesDescription="CTA",
                                 Rows=1041), set()),
    ("PET Gemini by tag", dict(Modality="PT", Manufacturer="Philips Medical Systems",
                               ManufacturerModelName="GEMINI TF", Rows=445, Columns=493), {113}),
    ("Mindray from file meta", dict(Modality="US", ImplementationVersionName="MINDRAY_1.0"),
     {132}),
    ("Mindray name in lower case", dict(Modality="US", ImplementationVersionName="mindray"),
     set()),
    ("ADAC dual detector", dict(Manufacturer="ADAC", Rows=832, Columns=1024,
                                ProtocolName="DUAL DETECTOR"), {361, 366}),
    ("Siemens overlay description", dict(Manufacturer="SIEMENS"), set()),
    ("Toshiba Aquilion dose", dict(Modality="CT", Manufacturer="TOSHIBA",
                                   ManufacturerModelName="Aquilion ONE", ImageType=[
                                       "DERIVED", "SECONDARY"], Rows=512, Columns=512,
                                   WindowWidth="1"), {88}),
    ("Toshiba Aquilion window 1.0 is not '1'", dict(
        Modality="CT", Manufacturer="TOSHIBA", ManufacturerModelName="Aquilion ONE",
        ImageType=["DERIVED", "SECONDARY"], Rows=512, Columns=512, WindowWidth="1.0"), set()),
    ("plain MR", dict(Modality="MR", Manufacturer="SIEMENS", ManufacturerModelName="Skyra",
                      Rows=256, Columns=256), set()),
]


@pytest.mark.parametrize("name,attrs,expected", SYNTHETIC, ids=[s[0] for s in SYNTHETIC])
def test_library_matches_exactly_the_expected_signatures(library, name, attrs, expected):
    ds = header(**attrs)
    assert {sig.line for sig in library if sig.matches(ds)} == expected


def test_first_match_wins(library):
    ds = header(Manufacturer="ADAC", Rows=832, Columns=1024, ProtocolName="DUAL DETECTOR")
    assert first_match(library, ds).line == 361  # the later, more specific entry never wins


def test_overlay_tag_condition(library):
    ds = header(Manufacturer="SIEMENS")
    ds.add_new(0x60000022, "LO", "Siemens MedCom Object Graphics")
    assert {sig.line for sig in library if sig.matches(ds)} == {102}


def test_yaml_conversion_is_equivalent_on_every_synthetic_header(library):
    headers = [header(**attrs) for _, attrs, _ in SYNTHETIC]
    for sig in library:
        rule = rule_from_config("x", expr_to_match(sig.expr), sig.regions)
        for ds in headers:
            assert rule.matches(ds) == sig.matches(ds), (sig.name, str(sig.expr))
    vitrea = next(sig for sig in library if sig.line == 67)
    assert list(expr_to_match(vitrea.expr)) == ["ctp"]  # OR is kept as a CTP expression
    gemini = expr_to_match(next(sig for sig in library if sig.line == 106).expr)
    assert gemini["(0028,0010)"] == "446" and gemini["(0008,0070)"] == {
        "icontains": "Philips Medical Systems"}


# ---------------------------------------------------------------------------- grammar


def test_precedence_not_and_or():
    ds = header(Modality="US", Manufacturer="ACME")
    assert parse_expression('Modality.equals("CT") + Modality.equals("US") * '
                            'Manufacturer.equals("ACME")').evaluate(ds)
    assert not parse_expression('(Modality.equals("CT") + Modality.equals("US")) * '
                                '!Manufacturer.equals("ACME")').evaluate(ds)
    assert parse_expression('!Modality.equals("CT") * !!Manufacturer.equals("ACME")').evaluate(ds)
    assert parse_expression("true.").evaluate(ds)
    assert not parse_expression("false. + !true.").evaluate(ds)
    assert parse_expression("false. * true. + true.").evaluate(ds)  # (false AND true) OR true


def test_methods():
    ds = header(SeriesDescription="Dose Report 2", Rows=480, WindowWidth="400")
    cases = {
        'SeriesDescription.equals("Dose Report 2")': True,
        'SeriesDescription.equals("dose report 2")': False,
        'SeriesDescription.equalsIgnoreCase("dose REPORT 2")': True,
        'SeriesDescription.matches("Dose.*\\\\d")': True,
        'SeriesDescription.matches("Dose")': False,  # whole value, like Java's String.matches
        'SeriesDescription.contains("Report")': True,
        'SeriesDescription.containsIgnoreCase("REPORT")': True,
        'SeriesDescription.startsWith("Dose")': True,
        'SeriesDescription.startsWithIgnoreCase("DOSE")': True,
        'SeriesDescription.endsWith("2")': True,
        'SeriesDescription.endsWithIgnoreCase("REPORT 2")': True,
        'Rows.isLessThan("500")': True,
        'Rows.isGreaterThan("500")': False,
        'WindowWidth.isGreaterThan("width 399.5")': True,
        'StationName.equals("")': True,  # a missing element is the empty string
        'StationName.isLessThan("5")': False,
    }
    for text, expected in cases.items():
        assert parse_expression(text).evaluate(ds) is expected, text


def test_sequence_chain_and_bracket_tags():
    ds = header(Modality="US")
    region = Dataset()
    region.RegionLocationMinY0 = 42
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    assert parse_expression('SequenceOfUltrasoundRegions::RegionLocationMinY0.equals("42")'
                            ).evaluate(ds)
    assert parse_expression('SeqOfUltrasoundRegions::[0018,601A].equals("42")').evaluate(ds)
    assert parse_expression('[0018,6011]::[0018,601a].equals("42")').evaluate(ds)
    assert parse_expression('ReferencedImageSequence::ReferencedSOPClassUID.equals("")'
                            ).evaluate(ds)


@pytest.mark.parametrize("text,line,problem", [
    ('{ Rows.equals("1") ', 1, "without a closing"),
    ('{ Rows.equals("1") }', 1, "followed by a region"),
    ('x\n{ Rows.equals("1") } (0,0,10)', 2, "integers"),
    ('{ Rows.equals("1") } (0,0,0,10)', 1, "greater than 0"),
    ('\n\n{ Rows.equal("1") } (0,0,1,1)', 3, "unknown method"),
    ('{ NoSuchKeyword.equals("1") } (0,0,1,1)', 1, "unknown element name"),
    ('{ [0028,010].equals("1") } (0,0,1,1)', 1, "unknown element name"),
    ('{ Rows::Columns.equals("1") } (0,0,1,1)', 1, "only a sequence"),
    ('{ Rows.equals("1") * } (0,0,1,1)', 1, "ends too early"),
    ('{ (Rows.equals("1") } (0,0,1,1)', 1, "missing ')'"),
    ('{ Rows.equals("1") Columns.equals("1") } (0,0,1,1)', 1, "unexpected"),
    ('{ Rows.equals(1) } (0,0,1,1)', 1, "cannot parse"),
    ('{ Rows.matches("(") } (0,0,1,1)', 1, "regular expression"),
    ('{ Rows.equals("1") } (0,0,1,1) }', 1, "without '{'"),
    ('{\n\n}', 1, "empty signature"),
])
def test_errors_name_the_line(text, line, problem):
    with pytest.raises(CtpScriptError) as info:
        parse_script(text, "site.script")
    assert info.value.line == line
    assert problem in info.value.problem
    assert str(info.value).startswith(f"site.script: line {line}:")


def test_line_comments_inside_a_signature():
    (sig,) = parse_script('{ Modality.equals("US") // the modality\n'
                          '  * StationName.equals("http://x") } (0,0,1,1)', "s")
    assert sig.matches(header(Modality="US", StationName="http://x"))
    assert not sig.matches(header(Modality="US", StationName="http:"))


def test_comments_regions_and_whitespace():
    text = """Comment with (parentheses) and * stars
    Section A
      { Manufacturer.containsIgnoreCase ( "ACME" ) *
        Rows.equals("600") }
      (0, 0, 800, 59) (-100,-20,100,20)
    trailing comment (not a region)
    """
    (sig,) = parse_script(text, "s")
    assert sig.regions == ((0, 0, 800, 59), (-100, -20, 100, 20))
    assert sig.label == "Comment with (parentheses) and * stars / Section A"
    assert sig.matches(header(Manufacturer="acme corp", Rows=600))


# ---------------------------------------------------------------------------- YAML rules


def test_yaml_match_forms():
    ds = header(Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="LOGIQE9",
                Rows=720, ImageType=["ORIGINAL", "PRIMARY"], Modality="US")
    good = {
        "Manufacturer": "GE MEDICAL SYSTEMS",
        "ManufacturerModelName": ["LOGIQ9", "LOGIQE9"],
        "Rows": 720,
        "(0008,0060)": {"iequals": "us"},
        "ImageType": {"contains": "PRIMARY", "startswith": "ORIGINAL\\"},
        "0008,1090": {"regex": "E9$"},
        "[0028,0010]": {"gt": 700, "le": 720},
        "StationName": {"present": False},
        "Modality": {"not": ["CT", "MR"]},
        "ctp": 'Manufacturer.startsWith("GE") + false.',
    }
    assert compile_match(good)(ds)
    for key, spec in [("Manufacturer", "GE"), ("Rows", 721), ("Modality", {"not": "US"}),
                      ("ImageType", {"matches": "PRIMARY"}), ("StationName", {"present": True}),
                      ("ManufacturerModelName", ["X", {"istartswith": "logiq9"}])]:
        assert not compile_match({**good, key: spec})(ds), key


@pytest.mark.parametrize("match,problem", [
    ({}, "empty"),
    ({"NoSuchKeyword": "x"}, "NoSuchKeyword"),
    ({"Rows": {"between": 1}}, "unknown test 'between'"),
    ({"Rows": {"gt": "ten"}}, "expected a number"),
    ({"Rows": True}, "present"),
    ({"Rows": []}, "empty list"),
    ({"Rows": {"regex": "("}}, "bad regular expression"),
    ({"ctp": 'Rows.equals("1") *'}, "ctp"),
])
def test_yaml_match_errors_name_the_key(match, problem):
    with pytest.raises(ValueError, match="rule 'r'") as info:
        rule_from_config("r", match, [(0, 0, 1, 1)])
    assert problem in str(info.value)


def test_config_rejects_a_bad_rule_with_its_key_path():
    data = {"redaction": {"rules": [{"name": "r", "match": {"Rows": {"gt": "x"}},
                                     "regions": [[0, 0, 1, 1]]}]}}
    with pytest.raises(ValueError) as info:
        parse_config(data, "site.yaml")
    assert "site.yaml" in str(info.value) and "redaction.rules[0]" in str(info.value)


def test_machine_signature_is_device_text():
    assert machine_signature(header(Manufacturer="GE  MEDICAL SYSTEMS",
                                    ManufacturerModelName="LOGIQE9", PatientName="Doe^Jane")
                             ) == "GE MEDICAL SYSTEMS / LOGIQE9"
    assert machine_signature(header()) == "(no manufacturer) / (no model)"


def test_rules_from_signature_keep_names(library):
    rule = rule_from_signature(library[0])
    assert rule.name == "DicomPixelAnonymizer.script:22"
    assert rule.regions == ((0, 0, 512, 200),)


def test_import_ctp_yaml_round_trip(library, tmp_path):
    from gateway.examine import ctp_rules_yaml

    text = ctp_rules_yaml(library)
    cfg = parse_config(yaml.safe_load(text), "rules.yaml")
    assert len(cfg.redaction.rules) == 52
    headers = [header(**attrs) for _, attrs, _ in SYNTHETIC]
    for sig, rule_cfg in zip(library, cfg.redaction.rules, strict=True):
        rule = rule_from_config(rule_cfg.name, rule_cfg.match, rule_cfg.regions)
        assert rule.regions == sig.regions
        for ds in headers:
            assert rule.matches(ds) == sig.matches(ds)
