"""`gantry examine`, `gantry scaffold`, `gantry rules import-ctp`, and the burned-in policy in
the pipeline, over a small folder of real files given machine identities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.deid.ctp_script import builtin_script_path
from gateway.deid.redact import Redactor
from gateway.examine import index_folder

PATIENT = "Zzyzx^Quintessa"  # must never reach any output


def _source(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} is not available")
    return Path(path)


def _write(src: str, dst: Path, **attrs: object) -> Path:
    ds = pydicom.dcmread(_source(src))
    ds.PatientName = PATIENT
    uid = generate_uid(entropy_srcs=[str(dst)])  # each copy is its own object
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """3 GE LOGIQ 9 ultrasounds (CTP knows them), 2 ACME captures (at risk, unknown), 2 CTs."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(3):
        _write("US1_UNCR.dcm", root / "us" / f"{i}.dcm", Manufacturer="GE Healthcare",
               ManufacturerModelName="LOGIQ9", BurnedInAnnotation="YES", Modality="US")
    for i in range(2):
        _write("SC_rgb.dcm", root / "sc" / f"{i}.dcm", Manufacturer="ACME",
               ManufacturerModelName="Capture 1", Modality="OT")
    for i in range(2):
        _write("CT_small.dcm", root / "ct" / f"{i}.dcm", BurnedInAnnotation=None)
    (root / "notes.txt").write_text("not DICOM")
    return root


def test_index_counts_machines(archive):
    index = index_folder(archive, Redactor(load_config(None).redaction))
    machines = {e.signature: e for e in index.entries()}
    assert set(machines) == {"GE Healthcare / LOGIQ9", "ACME / Capture 1",
                             "GE MEDICAL SYSTEMS / RHAPSODE"}
    us = machines["GE Healthcare / LOGIQ9"]
    assert (us.count, dict(us.sizes), dict(us.modalities), dict(us.burned_in)) == (
        3, {"480x640": 3}, {"US": 3}, {"YES": 3})
    assert (us.at_risk, us.refused) == (3, 3)
    sc = machines["ACME / Capture 1"]
    assert (sc.count, sc.at_risk, sc.refused, dict(sc.sizes)) == (2, 2, 2, {"100x100": 2})
    ct = machines["GE MEDICAL SYSTEMS / RHAPSODE"]
    assert (ct.count, ct.at_risk, ct.refused, dict(ct.burned_in)) == (2, 0, 0, {"absent": 2})
    assert index.unreadable == 1


def test_examine_cli_json_and_table(archive, capsys):
    assert main(["examine", str(archive), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["objects"] == 7 and data["unreadable"] == 1
    assert [m["objects"] for m in data["machines"]] == [3, 2, 2]
    assert PATIENT.split("^")[0] not in out
    assert main(["examine", str(archive)]) == 0
    table = capsys.readouterr().out
    assert "GE Healthcare / LOGIQ9" in table and "480x640" in table
    assert "7 objects, 3 machine signatures, 5 refused" in table
    assert PATIENT.split("^")[0] not in table


def test_scaffold_then_examine_with_it(archive, tmp_path, capsys):
    out = tmp_path / "site.yaml"
    assert main(["scaffold", str(archive), "-o", str(out)]) == 0
    text = out.read_text()
    assert PATIENT.split("^")[0] not in text
    cfg = load_config(out)  # the scaffold is a valid configuration
    (rule,) = cfg.redaction.rules  # only the machine CTP knows is active
    assert rule.regions == ((0, 0, 640, 40),)  # CTP's LOGIQ9 region
    assert rule.match == {"Manufacturer": "GE Healthcare", "ManufacturerModelName": "LOGIQ9",
                          "Rows": 480, "Columns": 640}
    assert "DicomPixelAnonymizer.script:138" in text
    commented = [ln for ln in text.splitlines() if ln.startswith("    # - name:")]
    assert len(commented) == 2  # ACME (fill in regions) and the CT (not at risk)
    uncommented = text.replace("    # - name:", "    - name:").replace("    #   ", "      ")
    with pytest.raises(ValueError, match="regions"):  # regions must be filled in first
        parse_config(yaml.safe_load(uncommented), "uncommented.yaml")
    assert main(["scaffold", str(archive), "-o", str(out)]) == 2  # no silent overwrite
    capsys.readouterr()

    assert main(["examine", str(archive), "--config", str(out), "--json"]) == 0
    data = {m["signature"]: m for m in json.loads(capsys.readouterr().out)["machines"]}
    us = data["GE Healthcare / LOGIQ9"]
    assert (us["covered"], us["refused"]) == (3, 0)
    assert data["ACME / Capture 1"]["refused"] == 2


def test_import_ctp_cli(tmp_path, capsys):
    out = tmp_path / "rules.yaml"
    assert main(["rules", "import-ctp", str(builtin_script_path()), "-o", str(out)]) == 0
    cfg = parse_config(yaml.safe_load(out.read_text()), str(out))
    assert len(cfg.redaction.rules) == 52
    assert cfg.redaction.rules[0].regions == ((0, 0, 512, 200),)
    bad = tmp_path / "bad.script"
    bad.write_text("{ Rows.equals(\"1\") * } (0,0,1,1)")
    assert main(["rules", "import-ctp", str(bad)]) == 2
    assert "bad.script: line 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pipeline


def _pipeline(tmp_path: Path, redaction: dict, site_key: bytes):
    from gateway.pipeline import Pipeline

    config = parse_config({"redaction": redaction}, str(tmp_path / "gantry.yaml"))
    return Pipeline(config, site_key)


def test_pipeline_quarantines_burned_in_without_rule(archive, tmp_path, site_key):
    from gateway.pipeline import Quarantined

    pipeline = _pipeline(tmp_path, {}, site_key)
    outcome = pipeline.process(archive / "us" / "0.dcm", tmp_path / "out.dcm")
    assert outcome == Quarantined(
        "burned-in text risk, no redaction rule for GE Healthcare / LOGIQ9")
    assert not (tmp_path / "out.dcm").exists()
    passed = pipeline.process(archive / "us" / "0.dcm", tmp_path / "out.dcm", burned_in="pass")
    assert not isinstance(passed, Quarantined)


def test_pipeline_redacts_with_a_rule(archive, tmp_path, site_key):
    from gateway.pipeline import Forwarded

    src = archive / "us" / "1.dcm"
    pipeline = _pipeline(tmp_path, {"ctp_scripts": ["builtin"], "output_encoding": "rle"},
                         site_key)
    outcome = pipeline.process(src, tmp_path / "out.dcm")
    assert isinstance(outcome, Forwarded), outcome
    assert outcome.redaction_rule == "DicomPixelAnonymizer.script:138"
    before = pydicom.dcmread(src).pixel_array
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert out.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert "113101" in codes
    after = out.pixel_array
    assert before[:40].any() and not after[:40].any()
    assert np.array_equal(after[40:], before[40:])


def test_batch_quarantines_burned_in_without_rule_and_redacts_with_one(archive, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("GANTRY_TEST_KEY", "00" * 32)
    cfg = tmp_path / "gantry.yaml"
    cfg.write_text("site_key: {env: GANTRY_TEST_KEY}\n")
    out = tmp_path / "out"
    assert main(["deidentify", str(archive / "us"), str(out), "--config", str(cfg),
                 "--workers", "1", "--quiet"]) == 1
    reasons = sorted((tmp_path / "out-quarantine").rglob("*.reason.txt"))
    assert len(reasons) == 3
    assert {r.read_text().strip() for r in reasons} == {
        "burned-in text risk, no redaction rule for GE Healthcare / LOGIQ9"}
    assert not list(out.rglob("*.dcm"))

    cfg.write_text("site_key: {env: GANTRY_TEST_KEY}\nredaction: {ctp_scripts: [builtin]}\n")
    out2 = tmp_path / "out2"
    assert main(["deidentify", str(archive / "us"), str(out2), "--config", str(cfg),
                 "--workers", "1", "--quiet"]) == 0
    written = sorted(out2.rglob("*.dcm"))
    assert len(written) == 3
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.BurnedInAnnotation == "NO" and not ds.pixel_array[:40].any()
    assert PATIENT.split("^")[0] not in capsys.readouterr().out


# ---------------------------------------------------------------------------- OCR report


def test_examine_ocr_reports_text_per_machine(tmp_path, capsys):
    """An at-risk capture with a name, a date and a measurement burned in, one without text,
    and a CT: per machine, images with text, identifying text and its kinds, and where."""
    pytest.importorskip("tesserocr", reason="the OCR extra is not installed")
    from PIL import Image, ImageDraw, ImageFont

    from gateway.deid.ocr import KIND_DATE, KIND_IDENTIFIER, OcrUnavailable, check_available
    from gateway.deid.redact import decode_pixels, store_pixels

    try:
        check_available()
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    face = ImageFont.truetype(str(font), 14) if font.exists() else ImageFont.load_default(14)
    folder = tmp_path / "archive"
    src = _write("SC_rgb_jpeg_dcmd.dcm", folder / "text.dcm", Manufacturer="ACME",
                 ManufacturerModelName="Capture 2", Modality="OT", StudyDate="20240312")
    ds = pydicom.dcmread(src)
    pixels = decode_pixels(ds)
    canvas = Image.new("L", (pixels.columns, pixels.rows), 0)
    draw = ImageDraw.Draw(canvas)
    for y, text in ((40, "ZZYZX, QUINTESSA"), (100, "2024-03-12"), (160, "EDV 45.3 ml")):
        x0, y0, x1, y1 = draw.textbbox((30, y), text, font=face)
        pixels.array[0, y0 - 3:y1 + 3, x0 - 3:x1 + 3] = 0
        draw.text((30, y), text, fill=255, font=face)
    pixels.array[0][np.asarray(canvas) > 96] = 255
    store_pixels(ds, pixels)
    ds.save_as(src, enforce_file_format=True)
    _write("SC_rgb_jpeg_dcmd.dcm", folder / "blank.dcm", Manufacturer="BLANK",
           ManufacturerModelName="Capture 3", Modality="OT")
    _write("CT_small.dcm", folder / "ct.dcm")

    assert main(["examine", str(folder), "--ocr", "--json"]) == 0
    out = capsys.readouterr().out
    machines = {m["signature"]: m for m in json.loads(out)["machines"]}
    text = machines["ACME / Capture 2"]["text"]
    assert (text["read"], text["with_text"], text["identifying"]) == (1, 1, 1)
    assert set(text["kinds"]) == {KIND_IDENTIFIER, KIND_DATE}
    x, y, w, h = text["identifying_region"]
    assert 25 <= x <= 40 and 30 <= y <= 48 and y + h < 160  # the name and date, not the EDV
    blank = machines["BLANK / Capture 3"]["text"]
    assert (blank["read"], blank["with_text"], blank["identifying"]) == (1, 0, 0)
    assert "text" not in machines["GE MEDICAL SYSTEMS / RHAPSODE"]
    assert main(["examine", str(folder), "--ocr"]) == 0
    table = capsys.readouterr().out
    assert "1/1 with text, 1 identifying" in table
    for output in (out, table):
        assert "ZZYZX" not in output.upper() and "2024-03-12" not in output
