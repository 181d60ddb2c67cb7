"""The visual report of a curation session over the generated CT fleet: HTML checks (every
machine present, every image decodes, no original identifier in an --output-only report), and a
real headless Chromium rendering it without console errors, with a screenshot."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from browser import assert_fits, chromium
from ctfleet import DRIFT, FLEET, PLANTED, write_fleet
from net.nethelpers import free_port, storescu, wait_for, write_config
from PIL import Image

from gateway.cli import main
from gateway.deid.keyed import keyed_hash
from gateway.session import Session

CONFIG = """\
site_key: {env: GANTRY_SITE_KEY}
redaction:
  rules:
    - name: acme-corner
      match: {Manufacturer: Acme, ManufacturerModelName: Scan 64}
      regions: [[0, 0, 40, 12]]
"""
IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
MODELS = sorted({f"{maker} {model}" for maker, model, *_ in FLEET})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, site_key: bytes) -> tuple[Path, Path]:
    """(session database, its dump): the fleet, one series of 3 slices per scanner, exported
    under a configuration that redacts a corner of one model."""
    root = tmp_path_factory.mktemp("report")
    write_fleet(root / "dump", series_per_machine=1, slices=3)
    (root / "gantry.yaml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTRY_SITE_KEY", site_key.hex())
        with Session(root / "s.gantry", workers=1, progress=False) as session:
            session.ingest(root / "dump")
            session.load_config(root / "gantry.yaml")
            summary = session.export(root / "out")
            assert summary.exported == 3 * len(FLEET) and summary.quarantined == 0
    return root / "s.gantry", root / "dump"


def originals(dump: Path) -> set[str]:
    """Every planted identifier and original UID of the dump."""
    found = set(PLANTED.values())
    for f in dump.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        found |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return found


def images(html: str) -> list[Image.Image]:
    """Every inlined image, fully decoded (a broken PNG raises)."""
    out = []
    for b64 in IMG.findall(html):
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.load()
        out.append(im)
    return out


def test_output_only_report_holds_no_original_identifier(exported, tmp_path, monkeypatch,
                                                         capsys, site_key):
    db, dump = exported
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    out = tmp_path / "share.html"
    assert main(["report", str(db), "-o", str(out), "--output-only"]) == 0
    assert "report written" in capsys.readouterr().out
    html = out.read_text()
    assert 'class="banner safe"' in html and "patient data" not in html
    for value in originals(dump):
        assert value not in html, "an original identifier is in the output-only report"
    assert "SN7741" not in html  # no scanner's serial number
    # Scanners of one model stay apart, named by the keyed hash of their serial number; the
    # drifting one is the one flagged.
    keyed = {f"{maker} {model} #{keyed_hash(site_key, serial, 8)}"
             for maker, model, serial, *_ in FLEET}
    rows = set(re.findall(r'<tr class="machine"><td>([^<]+)</td>', html))
    qc_table = html[html.index('<table id="qc">'):]
    qc_rows = set(re.findall(r"<tr><td>([^<]+)</td><td>CT</td>",
                             qc_table[:qc_table.index("</table>")]))
    assert rows == qc_rows == keyed and len(keyed) == len(FLEET)
    drift = FLEET[[f"{m} {n} #{s}" for m, n, s, *_ in FLEET].index(DRIFT)]
    drift_keyed = f"Acme Scan 64 #{keyed_hash(site_key, drift[2], 8)}"
    assert f"{drift_keyed} series 1: air at -85" in html
    for model in MODELS:
        assert html.count(f"<h3>{model} #") == len(FLEET) // 2
    decoded = images(html)
    assert len(IMG.findall(html)) == len(decoded) >= 2 * len(MODELS) + 2  # thumbs + plots
    assert 'alt="before"' not in html and 'alt="after"' in html


def test_full_report_shows_originals_boxes_and_outliers(exported, tmp_path, monkeypatch,
                                                        site_key):
    db, _ = exported
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    with Session(db, progress=False) as session:
        qc = session.qc()
        path = session.report(tmp_path / "full.html")
    assert DRIFT in qc.flagged_machines()
    html = path.read_text()
    assert 'class="banner phi"' in html and "contain patient data" in html
    assert f"{DRIFT} series 1 qc phantom: air at -850 HU" in html
    assert 'alt="before"' in html and "1 redaction box" in html
    assert 'id="clustering"' in html and "silhouette" in html
    table = html[html.index('<table id="slice-clusters">'):]
    table = table[:table.index("</table>")]
    row = re.search(r"<tr><td>Acme Scan 64 #SN7741-A1</td><td>CT</td>\s*<td>3</td><td>1 of 1</td>"
                    r"<td>(0\.\d+)</td>\s*<td>([-\d., ]+) HU</td>", table)
    assert row and float(row[1]) > 0.9, table
    air, water, bone = (float(x) for x in row[2].split(","))
    assert abs(air + 1000) < 20 and abs(water) < 20 and abs(bone - 700) < 60
    assert table.count("<tr><td>") == len(FLEET)
    before = [im for im in images(html) if im.size == (96, 96)]
    assert before and any(im.convert("RGB").getpixel((20, 0)) == (255, 40, 40) for im in before)


def test_qc_of_a_session_database(exported, monkeypatch, capsys, site_key):
    db, _ = exported
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    assert main(["qc", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["machines"]) == len(FLEET)
    assert main(["report", str(db.parent / "missing"), "-o", "x.html"]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_qc_of_a_session_export_names_scanners_by_keyed_serial(exported, monkeypatch, capsys,
                                                                site_key):
    db, dump = exported
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    assert main(["qc", str(db), "--output-only"]) == 0
    text = capsys.readouterr().out
    keyed = {f"{maker} {model} #{keyed_hash(site_key, serial, 8)}"
             for maker, model, serial, *_ in FLEET}
    assert {line.split("  ")[0].strip() for line in text.splitlines()[1:1 + len(FLEET)]} == keyed
    drift = FLEET[[f"{m} {n} #{s}" for m, n, s, *_ in FLEET].index(DRIFT)]
    assert f"OUTLIER Acme Scan 64 #{keyed_hash(site_key, drift[2], 8)} series 1" in text
    for value in originals(dump) | {serial for _, _, serial, *_ in FLEET}:
        assert value not in text, "an original identifier is in the QC of the export"
    assert main(["qc", str(dump), "--output-only"]) == 2
    assert "--output-only is for a session database" in capsys.readouterr().err


def test_report_of_a_folder_of_originals(exported, tmp_path, capsys):
    """`gantry report FOLDER`: no session, no configuration; the files shown as they are, with
    their QC, and a banner saying they hold patient data."""
    _, dump = exported
    out = tmp_path / "dump.html"
    assert main(["report", str(dump), "-o", str(out)]) == 0
    assert "it shows original images" in capsys.readouterr().out
    html = out.read_text()
    assert 'class="banner phi"' in html and 'id="notes"' not in html
    machines = {f"{maker} {model} #{serial}" for maker, model, serial, *_ in FLEET}
    assert set(re.findall(r'<tr class="machine"><td>([^<]+)</td><td>3</td>', html)) == machines
    assert f"{DRIFT} series 1 qc phantom: air at -850 HU" in html
    assert html.count('alt="before"') == len(FLEET) * 3 and 'alt="after"' not in html
    assert len(images(html)) == len(IMG.findall(html))


def test_output_only_report_of_a_folder_leaves_out_what_is_not_de_identified(exported, tmp_path):
    """`gantry report FOLDER --output-only` shows the files that declare their identity
    removed; an original slipped in among them is counted, and nothing of it is shown."""
    db, dump = exported
    mixed = tmp_path / "mixed"
    shutil.copytree(db.parent / "out", mixed)
    raw = sorted(dump.rglob("*.dcm"))[0]
    shutil.copy(raw, mixed / "stray.dcm")
    (mixed / "notes.txt").write_text("not dicom")
    out = tmp_path / "mixed.html"
    assert main(["report", str(mixed), "-o", str(out), "--output-only"]) == 0
    html = out.read_text()
    assert 'class="banner safe"' in html
    for value in originals(dump) | {"SN7741"}:
        assert value not in html
    assert "1 file(s) do not declare their patient identity removed" in html
    assert '<tr class="machine"><td>left out (not de-identified)</td>' in html
    assert '<tr class="machine"><td>not readable as DICOM</td>' in html
    assert "<h3>left out" not in html and "<h3>not readable" not in html
    assert html.count('alt="after"') == len(MODELS) * 6 and 'alt="before"' not in html
    for model in MODELS:  # the serial number was removed: a model is one machine here
        assert f'<tr class="machine"><td>{model}</td><td>{3 * len(FLEET) // 2}</td>' in html


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian chromium (headless browser for the report)")
def test_report_renders_in_headless_chromium(exported, tmp_path, monkeypatch, site_key):
    db, _ = exported
    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())
    with Session(db, progress=False) as session:
        page = session.report(tmp_path / "report.html", output_only=True)
    # The console capture sees errors: a page with one is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('qc-probe')</script></body></html>")
    assert any("qc-probe" in m for m in chromium(bad, tmp_path / "bad.png", tmp_path / "p1"))
    shot = tmp_path / "report.png"
    assert chromium(page, shot, tmp_path / "p2") == []
    image = Image.open(shot)
    image.load()
    assert image.size == (1200, 1600)
    assert len(np.unique(np.asarray(image.convert("L")))) > 20  # a page was drawn, not a blank
    assert_fits(page, tmp_path / "p3")


def _section(html: str, table_id: str) -> str:
    table = html[html.index(f'<table id="{table_id}">'):]
    return table[:table.index("</table>")]


@pytest.mark.skipif(shutil.which("storescu") is None,
                    reason="needs dcmtk storescu and storescp (Debian dcmtk) as modality/PACS")
def test_gateway_report_shows_what_the_node_holds(tmp_path, storescp, gateway):
    """`gantry report --config FILE` of a node that delivered Borealis objects to a dcmtk PACS,
    quarantined one Borealis scanner's (burned-in text, no rule) and still holds Acme's in the
    outbox (its PACS is down): before thumbnails of the originals it keeps, after thumbnails of
    the outbox copies, the redaction boxes on both, the QC of what it holds, notes saying what
    it no longer has; output-only: keyed scanner names, no identifier; Chromium renders it."""
    from gateway.config import load_config
    from gateway.sitekey import load_site_key

    files = write_fleet(tmp_path / "in", series_per_machine=1, slices=3)
    for f in files:
        if "SN7741-B1" in f.parent.name:
            ds = pydicom.dcmread(f)
            ds.BurnedInAnnotation = "YES"
            ds.save_as(f)
    pacs = storescp()
    config = write_config(
        tmp_path, {"pacs": ("PACS", pacs.port), "down": ("DOWN", free_port())},
        routes=[{"name": "acme", "tags": {"Manufacturer": "Acme"}, "destinations": ["down"]},
                {"name": "rest", "destinations": ["pacs"]}],
        redaction={"rules": [{"name": "acme-corner", "regions": [[0, 0, 40, 12]],
                              "match": {"Manufacturer": "Acme"}}]})
    gw = gateway(config, tmp_path / "log.jsonl")
    sent = storescu(gw.port, files)
    assert sent.returncode == 0, sent.stderr
    store = gw.store()
    want = {"delivered": 9, "quarantined": 3, "forwarding": 12}
    assert wait_for(lambda: store.counts() == want, 120), store.counts()
    store.close()
    assert gw.stop() == 0

    full, share = tmp_path / "node.html", tmp_path / "share.html"
    assert main(["report", "--config", str(config), "-o", str(full)]) == 0
    html = full.read_text()
    assert 'class="banner phi"' in html
    assert "9 delivered object(s): the node keeps neither" in html
    assert "before: the 15 originals the node still holds" in html
    assert html.count('alt="before"') == 6 + 3 and html.count('alt="after"') == 6
    acme = [im for im in images(html) if im.size == (96, 96)]
    assert sum(im.convert("RGB").getpixel((20, 0)) == (255, 40, 40) for im in acme) == 12
    assert f"{DRIFT} series 1 qc phantom: air at -850 HU" in html
    assert _section(html, "qc").count("<tr><td>") == 5  # Acme's 4 scanners, Borealis B1
    assert _section(html, "slice-clusters").count("<tr><td>") == 5

    assert main(["report", "--config", str(config), "-o", str(share), "--output-only"]) == 0
    html = share.read_text()
    assert 'class="banner safe"' in html and 'alt="before"' not in html
    assert html.count('alt="after"') == 6 and html.count("after, 1 redaction box") == 6
    for value in originals(tmp_path / "in") | {"SN7741", "PLANTSTATION"}:
        assert value not in html
    key = load_site_key(load_config(str(config)))
    acme_keyed = {f"Acme Scan 64 #{keyed_hash(key, serial, 8)}"
                  for maker, _, serial, *_ in FLEET if maker == "Acme"}
    names = re.findall(r"<tr><td>([^<]+)</td>", _section(html, "qc"))
    assert {n for n in names if n.startswith("Acme")} == acme_keyed
    drift_serial = next(s for m, n, s, *_ in FLEET if f"{m} {n} #{s}" == DRIFT)
    assert f"Acme Scan 64 #{keyed_hash(key, drift_serial, 8)} series 1: air at -85" in html
    if shutil.which("chromium"):
        shot = tmp_path / "share.png"
        assert chromium(share, shot, tmp_path / "profile") == []
        Image.open(shot).load()
