"""Redaction boxes in the report are drawn only where pixels were redacted: a rule's boxes once
the export blanked them (not on originals still pending), and the boxes OCR blanked on a real
ultrasound image with a patient's name and birth date burned in (found where the exported
pixels differ from the original's; an output-only report says it cannot show them)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctfleet import write_fleet
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from test_report import images

from gateway.deid import ocr
from gateway.qc.hu import modality_values
from gateway.qc.report import changed_boxes
from gateway.session import Session

try:
    ocr.check_available()
    OCR_MISSING = ""
except ocr.OcrUnavailable as exc:
    OCR_MISSING = str(exc)

CONFIG = """\
site_key: {env: GANTRY_SITE_KEY}
redaction:
  on_risk: ocr
  rules:
    - name: acme-corner
      match: {Manufacturer: Acme}
      regions: [[0, 0, 40, 12]]
"""
TEXT_AT = (20, 392)  # x, y: a black band of the image, under its "LYMPH NODE" label
RED = (255, 40, 40)
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def burned_in_ultrasound(path: Path) -> tuple[int, int, int, int]:
    """pydicom's US1_UNCR (RGB ultrasound, 640x480) with its patient's name and birth date
    burned in as people write them; returns the text's box (row0, row1, col0, col1)."""
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    ds.PatientName, ds.PatientBirthDate = "OKAFOR^GRACE", "19710312"
    image = Image.fromarray(ds.pixel_array)
    draw = ImageDraw.Draw(image)
    font = (ImageFont.truetype(str(FONT), 18) if FONT.exists()
            else ImageFont.load_default(18))
    text = "OKAFOR, GRACE  12/03/1971"
    draw.text(TEXT_AT, text, fill=(255, 255, 255), font=font)
    c0, r0, c1, r1 = draw.textbbox(TEXT_AT, text, font=font)
    ds.PixelData = np.asarray(image).tobytes()
    ds.save_as(path)
    return r0, r1, c0, c1


def red_pixels(im: Image.Image, area: tuple[int, int, int, int] | None = None) -> int:
    """Pixels of the red outline (exactly, or in `area` (row0, row1, col0, col1) of a
    downscaled thumbnail: mostly red, the outline blended with its neighbours)."""
    rgb = np.asarray(im.convert("RGB")).astype(int)
    if area is None:
        return int(np.all(rgb == RED, axis=-1).sum())
    r, g, b = np.moveaxis(rgb[area[0]:area[1], area[2]:area[3]], -1, 0)
    return int(((r > 150) & (r > 2 * g) & (r > 2 * b)).sum())


@pytest.mark.skipif(bool(OCR_MISSING), reason=f"OCR cannot run here: {OCR_MISSING}")
def test_boxes_only_where_pixels_were_redacted(tmp_path, monkeypatch, site_key):
    dump = tmp_path / "dump"
    write_fleet(dump, series_per_machine=1, slices=1)
    for serial in ("A2", "A3", "A4", "B2", "B3", "B4"):  # one scanner of each model is enough
        shutil.rmtree(next(dump.glob(f"*{serial}*")))
    (dump / "us").mkdir()
    text = burned_in_ultrasound(dump / "us" / "us.dcm")
    (tmp_path / "gantry.yaml").write_text(CONFIG)
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    with Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        session.ingest(dump)
        session.load_config(tmp_path / "gantry.yaml")
        # Nothing exported yet: nothing was redacted, no box is drawn (the rule's would be)
        html = session.report(tmp_path / "pending.html").read_text()
        assert "redaction box" not in html and 'alt="before"' in html
        assert sum(red_pixels(im) for im in images(html)) == 0

        summary = session.export(tmp_path / "out")
        assert summary.exported == 3 and summary.quarantined == 0
        html = session.report(tmp_path / "full.html").read_text()
        shared = session.report(tmp_path / "share.html", output_only=True).read_text()

    # The rule's box on Acme's CT, before and after; none on Borealis's (no rule covers it)
    assert html.count("before, 1 redaction box") == 1
    acme = html[html.index("<h3>Acme"):]
    acme = acme[:acme.index("</div>\n</div>")]
    assert [red_pixels(im) > 0 for im in images(acme)] == [True, True]
    borealis = html[html.index("<h3>Borealis"):]
    borealis = borealis[:borealis.index("</div>\n</div>")]
    assert sum(red_pixels(im) for im in images(borealis)) == 0

    # The ultrasound, redacted by OCR: the boxes drawn are where its pixels changed, and they
    # cover the burned-in name and date
    found = re.search(r"before, (\d+) redaction box(?:es)? by OCR", html)
    assert found, html[html.index("<h3>G.E."):][:3000]
    original = pydicom.dcmread(dump / "us" / "us.dcm")
    exported = next(ds for p in (tmp_path / "out").rglob("*.dcm")
                    if (ds := pydicom.dcmread(p)).Modality == "US")
    boxes = changed_boxes(modality_values(original), modality_values(exported))
    assert boxes and len(boxes) == int(found[1])
    r0, r1, c0, c1 = text
    inside = [b for b in boxes if b[0] < r1 and b[1] > r0 and b[2] < c1 and b[3] > c0]
    assert inside and min(b[2] for b in inside) <= c0 + 4 and max(b[3] for b in inside) >= c1 - 4
    us = html[html.index("<h3>G.E."):]
    thumbs = images(us[:us.index("</div>\n</div>")])
    scale = 640 // thumbs[0].size[0]  # where the text lies in the thumbnails, a margin around
    around = (r0 // scale - 3, r1 // scale + 3, max(c0 // scale - 3, 0), c1 // scale + 3)
    assert len(thumbs) == 2 and all(red_pixels(im, around) > 10 for im in thumbs)

    # Shared (output only): no original to compare with; the report says so
    assert "after, pixels redacted by OCR, boxes not shown" in shared
    assert shared.count("after, 1 redaction box") == 1


def test_changed_boxes_are_blanked_rectangles_or_nothing():
    """Where a frame was blanked, the boxes are exactly the blanked rectangles; a frame changed
    otherwise (noise, as a lossy re-encoding would) is not comparable: None, nothing drawn."""
    before = modality_values(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    after = before.copy()
    after[5:17, 20:60] = -2000.0
    after[40:44, 10:12] = -2000.0
    assert changed_boxes(before, after) == ((5, 17, 20, 60), (40, 44, 10, 12))
    assert changed_boxes(before, before.copy()) == ()
    noisy = before + np.random.default_rng(0).integers(-2, 3, before.shape)
    assert changed_boxes(before, noisy) is None
    noisy = before.copy()
    noisy[::40, ::40] += 1  # few pixels, each changed to a value of its own
    assert changed_boxes(before, noisy) is None
    assert changed_boxes(before, before[:32]) is None
