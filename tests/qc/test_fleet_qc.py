"""Fleet QC on generated CT series from eight scanners of two models: the one with a +150 HU
calibration drift and the one with three times the noise are flagged with reasons, no other."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from ctfleet import DRIFT, FLEET, NOISY, PLANTED, write_fleet

from gateway.cli import main
from gateway.qc import fleet_qc
from gateway.qc.hu import WINDOWS, modality_values, object_window, preset, window


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    write_fleet(root)
    return root


def test_exactly_the_drifting_and_the_noisy_scanner_are_flagged(fleet):
    result = fleet_qc([fleet])
    assert len(result.series) == 2 * len(FLEET)
    assert result.flagged_machines() == sorted([DRIFT, NOISY])
    drift = {o.measure: o for o in result.outliers if o.machine == DRIFT}
    noisy = {o.measure: o for o in result.outliers if o.machine == NOISY}
    assert set(drift) == {"air", "tissue"} and set(noisy) == {"noise"}
    assert drift["air"].reason == "air at -850 HU, model median -999"
    assert drift["tissue"].reason == "soft tissue (water) at 150 HU, model median 1"
    assert noisy["noise"].reason.startswith("noise 2.9\u00d7 the model's median (35.4 HU")
    machines = result.machines()
    assert abs(machines["Acme Scan 64 #SN7741-A1"]["air"] + 1000) < 5
    assert abs(machines["Acme Scan 64 #SN7741-A1"]["noise"] - 10) < 1.5
    assert machines[DRIFT]["outliers"] and not machines["Acme Scan 64 #SN7741-A2"]["outliers"]


def test_hounsfield_units_and_windows(fleet):
    ds = pydicom.dcmread(next(fleet.rglob("*.dcm")))
    hu = modality_values(ds)
    assert hu.dtype == np.float32 and abs(float(np.median(hu[:5, :5])) + 1000) < 40
    assert object_window(ds, hu) == (40.0, 400.0)
    brain = window(hu, *preset("brain"))
    assert brain.dtype == np.uint8 and brain[0, 0] == 0 and brain.max() == 255
    lung = window(hu, *preset("lung"))
    assert 40 < np.median(lung[:5, :5]) < 80  # air is grey, not black, in a lung window
    assert set(WINDOWS) >= {"brain", "subdural", "stroke", "lung", "mediastinum", "abdomen",
                            "liver", "bone"}
    with pytest.raises(ValueError, match="unknown window preset 'lungs'"):
        preset("lungs")


def test_qc_command_text_and_json(fleet, capsys):
    assert main(["qc", str(fleet)]) == 0
    out = capsys.readouterr().out
    assert f"OUTLIER {DRIFT}" in out and f"OUTLIER {NOISY}" in out
    assert out.count("OUTLIER") == 6  # two series each: air and water of one, noise of other
    assert main(["qc", str(fleet), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert sorted({o["machine"] for o in data["outliers"]}) == sorted([DRIFT, NOISY])
    for value in PLANTED.values():
        assert value not in out


def test_unreadable_file_is_named_not_fatal(fleet, tmp_path, capsys):
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"not dicom at all")
    result = fleet_qc([bad])
    assert result.series == [] and result.unreadable[0].startswith(f"{bad}: not readable")
    assert main(["qc", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_series_of_like_labels_are_told_apart(tmp_path):
    """De-identified scanners share a dummy serial number: their series get distinct labels,
    so an outlier names one series, not all that look alike."""
    fleet = [(maker, model, "ANON", shift, noise) for maker, model, _, shift, noise in FLEET]
    write_fleet(tmp_path, series_per_machine=1, slices=1, fleet=fleet[4:])
    result = fleet_qc([tmp_path], slices=1)
    labels = [s.label for s in result.series]
    assert len(set(labels)) == len(labels) == 4
    assert len(result.outliers) == 1 and result.outliers[0].reason.startswith("noise 3.0\u00d7")


def test_kmeans_of_a_slice_and_of_the_fleet(fleet):
    from gateway.qc.cluster import fleet_clusters, slice_clusters

    ds = pydicom.dcmread(sorted(fleet.rglob("*.dcm"))[0])
    found = slice_clusters(modality_values(ds))
    air, water, bone = found.centers
    assert abs(air + 1000) < 20 and abs(water) < 20 and abs(bone - 700) < 60
    assert found.silhouette > 0.8
    with pytest.raises(ValueError, match="fewer than 3 distinct values"):
        slice_clusters(np.zeros((8, 8)))
    result = fleet_qc([fleet], slices=2)
    clusters = fleet_clusters(result.series)
    ct = [s for s in result.series if s.modality == "CT"]
    groups = {}
    for s, label in zip(ct, clusters.labels, strict=True):
        groups.setdefault(label, set()).add(s.machine)
    # the drifting and the noisy scanner each form a cluster of their own
    assert {DRIFT} in groups.values() and {NOISY} in groups.values()
    assert clusters.silhouette > 0.5


def test_slice_clusters_per_series_and_machine(fleet):
    """Each series' middle slice is clustered: the phantom's air, water and bone come out as
    k=3 with their HU as centres; the drifted scanner's centres are 150 HU higher."""
    machines = fleet_qc([fleet], slices=2).machines()
    ok = machines["Acme Scan 64 #SN7741-A1"]["slice_clusters"]
    assert ok["k"] == 3 and ok["series"] == ok["of"] == 2 and ok["silhouette"] > 0.9
    air, water, bone = ok["centers"]
    assert abs(air + 1000) < 20 and abs(water) < 20 and abs(bone - 700) < 60
    drift = machines[DRIFT]["slice_clusters"]
    assert drift["k"] == 3 and abs(drift["centers"][0] + 850) < 20
    assert all(row["slice_clusters"] for row in machines.values())
    assert all(m["slice_clusters"] is None
               for m in fleet_qc([fleet], slices=1, clusters=False).machines().values())
