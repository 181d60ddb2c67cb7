"""The audit (gateway/risk.py): findings reflect the configuration in force (profile options,
`phi_tags` overrides, pseudonyms), weights come from `risk.weights`, a de-identified output
re-audits empty, reports roll up per series, study, patient and session, and an unreadable file
is said to be unreadable, never rated "0 LOW"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.config import ConfigError, load_config, parse_config
from gateway.deid.inspect import inspect
from gateway.deid.profile import Profile
from gateway.dicomio import read_header
from gateway.pipeline import Forwarded, Pipeline
from gateway.risk import UNREADABLE, Auditor, aggregate

REPO = Path(__file__).resolve().parents[1]
CT = Path(get_testdata_file("CT_small.dcm"))


def _config(data: dict) -> object:
    return parse_config({"site_key": {"env": "GANTRY_SITE_KEY"}, **data}, "test.yaml")


def _findings(config, ds) -> dict[str, str]:
    return {f.path: f.action for f in Auditor(config).assess(ds).findings}


def test_findings_follow_phi_tags_overrides_and_pseudonyms() -> None:
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    plain = _findings(_config({}), ds)
    assert plain["(0010,0010)"] == plain["(0010,0020)"] == "pseudonym"
    assert plain["(0008,0080)"] in ("X", "D")  # InstitutionName under the Basic Profile
    assert "(0020,0010)" in plain  # StudyID
    overridden = _findings(_config({"profile": {"phi_tags": {
        "PatientName": {"action": "keep"},
        "InstitutionName": {"action": "replace", "value": "SITE"},
        "StudyID": {"action": "HASH"},
        "(0008,0090)": {"action": "remove"},
    }}}), ds)
    assert "(0010,0010)" not in overridden  # kept: the configuration will not touch it
    assert overridden["(0008,0080)"] == "replace"
    assert overridden["(0020,0010)"] == "hash"
    ds.InstitutionName = "SITE"  # already the replacement: nothing left to do
    assert "(0008,0080)" not in _findings(_config({"profile": {"phi_tags": {
        "InstitutionName": {"action": "replace", "value": "SITE"}}}}), ds)


def test_options_change_the_findings() -> None:
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    assert ds.get("PatientAge") or ds.get("PatientSex")
    research = _findings(_config({}), ds)
    bare = _findings(_config({"profile": {"options": []}}), ds)
    characteristics = {"(0010,1010)", "(0010,0040)", "(0010,1020)", "(0010,1030)"}
    present = {p for p in characteristics if p in bare}
    assert present and not present & set(research)  # kept by Retain Patient Characteristics


def test_weights_are_configurable() -> None:
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    default = Auditor(_config({})).assess(ds)
    light = Auditor(_config({"risk": {"weights": {"identity": 0, "private": 0, "uid": 0,
                                                  "date": 0, "text": 0, "other": 0,
                                                  "person_name": 0, "sequence": 0}}})).assess(ds)
    assert default.score == 100 and default.band == "CRITICAL"
    assert light.score == 0 and light.band == "LOW"
    assert [f.path for f in light.findings] == [f.path for f in default.findings]
    one = Auditor(_config({"risk": {"weights": {"identity": 7}}})).assess(ds)
    identity = {f.weight for f in one.findings if f.path in ("(0010,0010)", "(0010,0020)")}
    assert identity == {7}
    with pytest.raises(ConfigError, match=r"risk: .*'identity_theft'"):
        _config({"risk": {"weights": {"identity_theft": 5}}})


def _sample(corpus: tuple[Path, ...]) -> list[Path]:
    """Every seventh corpus file, CT_small among them."""
    return sorted(set(corpus[::7]) | {CT.resolve()})


PROFILES = [
    pytest.param({}, id="research-defaults"),
    pytest.param({"profile": {"options": []}}, id="basic"),
    pytest.param({"profile": {"options": ["Retain Safe Private Option", "Retain UIDs Option",
                                          "Clean Descriptors Option",
                                          "Retain Device Identity Option"]}}, id="retain-more"),
    pytest.param("example", id="config/gantry.yaml"),
]


@pytest.mark.parametrize("data", PROFILES)
def test_a_deidentified_output_re_audits_empty(data, corpus, site_key: bytes,
                                               tmp_path: Path) -> None:
    config = (load_config(REPO / "config" / "gantry.yaml") if data == "example"
              else _config(data))
    pipeline, auditor = Pipeline(config, site_key), Auditor(config)
    outputs = 0
    for i, src in enumerate(_sample(corpus)):
        outcome = pipeline.process(src, tmp_path / f"{i}.dcm")
        if not isinstance(outcome, Forwarded):
            continue
        outputs += 1
        before = auditor.assess(read_header(src))
        after = auditor.assess(read_header(outcome.path))
        assert before.findings, f"{src.name}: the original should have findings"
        assert not after.findings, f"{src.name}: {after.findings}"
        assert after.score == 0 and after.band == "LOW"
    assert outputs >= 10


def test_aggregation_per_series_study_patient_and_session(tmp_path: Path, site_key) -> None:
    study = [Path(get_testdata_file(f"dicomdirtests/77654033/CT2/{n}")) for n in (17136, 17166)]
    files = [*study, CT, Path(get_testdata_file("MR_small.dcm"))]
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"\x00" * 200)
    config = _config({})
    auditor = Auditor(config, key=site_key)
    session = aggregate(auditor.assess_file(p) for p in [*files, bad])
    assert session.level == "session" and session.instances == 5 and session.unreadable == 1
    instances = session.walk("instance")
    assert len(instances) == 5
    unreadable = [r for r in instances if r.label == str(bad)]
    assert unreadable[0].score is None and unreadable[0].band == UNREADABLE
    assert unreadable[0].problem
    scores = [r.score for r in instances if r.score is not None]
    assert session.score == max(scores)
    patients, studies, series = (session.walk(level) for level in ("patient", "study", "series"))
    assert len(patients) == 3 and len(studies) == 3
    both = next(s for s in studies if s.instances == 2)
    assert both.score == max(r.score for r in both.walk("instance"))
    assert sum(s.instances for s in series) == 4
    # Labels are what the output will carry (keyed), never an original identifier.
    originals = {str(read_header(p).get(k, "")) for p in files
                 for k in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID")}
    for report in session.walk():
        if report.level != "instance":
            assert report.label not in originals
    out = tmp_path / "out.dcm"
    outcome = Pipeline(config, site_key).process(CT, out)
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    ct_report, where = auditor.assess_file(CT)
    assert isinstance(outcome, Forwarded)
    assert (where.patient, where.study, where.series) == (
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID)


def test_unreadable_files_are_never_rated_low(tmp_path: Path) -> None:
    bad = tmp_path / "junk.dcm"
    bad.write_text("not DICOM")
    report, where = Auditor(_config({})).assess_file(bad)
    assert where is None and report.score is None and report.band == UNREADABLE
    session = aggregate([(report, where)])
    assert session.band == UNREADABLE and session.score is None and session.unreadable == 1
    assert aggregate([]).band == "LOW"  # nothing at all is nothing at risk


def test_inspect_without_weights_keeps_the_defaults() -> None:
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    profile = Profile.from_config(_config({}).profile)
    assert inspect(ds, profile) == inspect(ds, profile, dataclasses.asdict(
        _config({}).risk)["weights"])
