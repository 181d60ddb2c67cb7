"""Fleet QC and the report over pydicom's own test files, real objects from many machines: series
of no known model are not compared with each other (they are not one machine), a zero spread
is said in words (never "robust z inf"), and the report's tables fit a 1280 px window even with
long machine names (a planning system's, a URL)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from html import unescape
from pathlib import Path

import pydicom
import pytest
from browser import assert_fits, chromium
from PIL import Image
from pydicom.data import get_testdata_file

from gateway.cli import main
from gateway.qc import fleet_qc

NAMED = ["rtdose_1frame.dcm", "liver_1frame.dcm", "CT_small.dcm", "JPEG2000.dcm",
         "examples_palette.dcm"]
# No Manufacturer, no Model Name, no Modality: three series, one 400x400 and two 256x256
UNKNOWN = ["GDCMJ2K_TextGBR.dcm", "SC_jpeg_no_color_transform.dcm",
           "SC_jpeg_no_color_transform_2.dcm", "SC_rgb_jpeg_app14_dcmd.dcm"]


def copy(names: list[str], folder: Path, serial: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        ds = pydicom.dcmread(get_testdata_file(name))
        if serial is not None:
            ds.DeviceSerialNumber = serial
        ds.save_as(folder / name)
    return folder


def test_series_of_unknown_model_are_not_compared(tmp_path):
    """Different objects of no known model are no group: nothing is flagged among them (the
    old grouping flagged the 400x400 one, 'robust z inf')."""
    result = fleet_qc([copy(UNKNOWN, tmp_path / "f")], slices=1, clusters=False)
    assert [s.model for s in result.series] == ["unknown model"] * 3
    assert result.outliers == []


def test_unknown_model_of_one_machine_and_no_spread_in_words(tmp_path, capsys):
    """The same series, named by one serial number, are one machine: compared within it. Two
    of its three series are 256x256 exactly (no spread): the third's evidence says that in
    words, its z is None, and the JSON is strict."""
    folder = copy(UNKNOWN, tmp_path / "f", serial="UNIT-7")
    result = fleet_qc([folder], slices=1, clusters=False)
    size = [o for o in result.outliers if o.measure == "pixels"]
    assert len(size) == 1 and size[0].machine == "unknown model #UNIT-7"
    assert size[0].reason == "image of 160000 pixels, 2.44\u00d7 the machine's median (65536)"
    assert size[0].z is None
    assert size[0].evidence == ("2 of the machine's 3 series have 65536 pixels exactly: "
                                "no spread")
    assert main(["qc", str(folder), "--slices", "1"]) == 0
    text = capsys.readouterr().out
    assert "OUTLIER unknown model #UNIT-7" in text and "no spread" in text and "inf" not in text
    assert main(["qc", str(folder), "--slices", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert {o["z"] for o in data["outliers"] if o["measure"] == "pixels"} == {None}


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian chromium (headless browser for the report)")
def test_report_tables_fit_a_1280_px_window(tmp_path):
    """A folder report with long machine names and the unknown-model series: no table wider
    than a 1280 px window (the old QC table, with a model column and the outlier reasons in
    its last column, ran 60 px past it)."""
    folder = copy(NAMED, tmp_path / "f")
    copy(UNKNOWN, folder)
    page = tmp_path / "r.html"
    assert main(["report", str(folder), "-o", str(page)]) == 0
    html = page.read_text()
    assert "QIICR https://github.com/fedorov/dcmqi.git" in html and "robust z inf" not in html
    assert_fits(page, tmp_path / "p1")
    shot = tmp_path / "r.png"
    assert chromium(page, shot, tmp_path / "p2", size="1280,1600") == []
    Image.open(shot).load()


def test_demo_report_counts_what_the_demo_says(tmp_path):
    """The demo prints how many objects the gateway forwarded, more than the distinct SOP
    instances its research PACS keeps: the report counts the instances and the quarantined
    objects, says so, and relates them to the number forwarded."""
    from gateway.demo import demo_report

    pacs = copy(["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"], tmp_path / "pacs")
    reasons = Counter({"unreadable: missing (0008,0016) SOP Class UID": 2,
                       "verify refused: an original identifier survives": 1})
    page = Path(demo_report(tmp_path, sorted(pacs.iterdir()), reasons, forwarded=5))
    html = unescape(page.read_text())
    assert ('<p id="total">6 objects: the 3 distinct SOP instances in the research PACS\'s '
            "folder and the 3 objects quarantined at the gateway.</p>") in html
    assert "The gateway forwarded 5 objects; some samples are one image in several" in html
    assert '<tr class="machine"><td>held back at the gateway</td><td>0</td><td>3</td>' in html
    assert "<th>in the research PACS</th><th>quarantined</th>" in html
    assert html.count('alt="after"') == 3


def test_a_machine_of_several_modalities_gets_a_row_per_modality(tmp_path):
    """CT and MR files that name no manufacturer are both "unknown model": the per-machine
    summary gives each modality its own row, so no median mixes Hounsfield units with MR
    values (one row of both had a p50 between the two)."""
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        for keyword in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber",
                        "StationName"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(folder / name)
    result = fleet_qc([folder], slices=1, clusters=False)
    rows = result.machines()
    assert set(rows) == {"unknown model (CT)", "unknown model (MR)"}
    by_modality = {s.modality: s for s in result.series}
    for modality in ("CT", "MR"):
        row = rows[f"unknown model ({modality})"]
        assert row["modalities"] == [modality] and row["series"] == 1
        assert row["p50"] == round(by_modality[modality].p50, 2)
