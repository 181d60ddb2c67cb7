"""Fleet QC beyond CT: generated MR, DX and US series from eleven machines of three models, each
model with one faulty machine (MR intensity drift, DX noise, US pixel spacing): exactly those
flagged, each with its reason in words; no planted identifier in the output."""

from __future__ import annotations

import json

import pytest
from otherfleet import FAULTS, FLEET, PLANTED, write_fleet

from gateway.cli import main
from gateway.qc import fleet_qc


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    root = tmp_path_factory.mktemp("other")
    write_fleet(root)
    return root


def test_exactly_the_faulty_machine_of_each_model_is_flagged(other):
    result = fleet_qc([other], clusters=False)
    assert len(result.series) == 2 * len(FLEET) and not result.unreadable
    assert result.flagged_machines() == sorted(FAULTS)
    for machine, measure in FAULTS.items():
        found = [o for o in result.outliers if o.machine == machine]
        assert len(found) == 2 and {o.measure for o in found} == {measure}, found
    reasons = {o.machine: o.reason for o in result.outliers}
    assert reasons["Magnetix Field 3T #M3"].startswith("median intensity 1")
    assert "inside the body, model median 10" in reasons["Magnetix Field 3T #M3"]
    assert reasons["Radiant Flat 43 #D2"].startswith("noise 3.0\u00d7 the model's median")
    assert reasons["Sonora Wave 5 #U2"] == "pixel spacing 0.4 mm, model median 0.2 mm"
    mr = result.machines()["Magnetix Field 3T #M1"]
    assert mr["air"] is None and abs(mr["p50"] - 1000) < 15 and abs(mr["noise"] - 20) < 3


def test_qc_command_names_non_ct_outliers_without_identifiers(other, capsys):
    assert main(["qc", str(other), "--json", "--slices", "1"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert sorted({o["machine"] for o in data["outliers"]}) == sorted(FAULTS)
    us = data["machines"]["Sonora Wave 5 #U1"]["slice_clusters"]
    assert us["k"] == 2 and abs(us["centers"][1] - 120) < 5  # the disc against the background
    for value in PLANTED.values():
        assert value not in out


def test_plots_and_report_of_other_modalities(other, tmp_path):
    """The plots of a fleet without CT are written (a figure of each machine's series), and
    the report of the folder shows every machine, the three outliers and the plot."""
    from gateway.qc.plots import write_plots

    result = fleet_qc([other], slices=1)
    files = write_plots(result, tmp_path / "plots")
    assert [f.name for f in files] == ["qc-plot-1.png"] and files[0].stat().st_size > 2000
    assert main(["report", str(other), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert html.count('<li class="outlier">') == 2 * len(FAULTS)
    assert "per-machine series, other modalities" in html
    for maker, model, serial in {(m, n, s) for _, m, n, s, *_ in FLEET}:
        assert f'<tr class="machine"><td>{maker} {model} #{serial}</td>' in html
