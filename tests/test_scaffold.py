"""The scaffold (gateway/scaffold.py, `gantry scaffold PATH -o FILE`): a complete commented
configuration that `load_config` accepts unchanged: the research defaults, the backup section
and a redaction entry per machine, prefilled from CTP's library where it knows the machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.cli import main
from gateway.config import DEFAULT_OPTIONS, ProfileConfig, load_config
from gateway.dicomio import read_header
from gateway.scaffold import scaffold_index, scaffold_yaml

PATIENT = "Vandersloot^Ermintrude"  # must never reach the scaffold


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two GE LOGIQ 9 ultrasounds (CTP's library knows the machine) and a CT (not at risk)."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(2):
        ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
        ds.PatientName, ds.Manufacturer, ds.ManufacturerModelName = (
            PATIENT, "GE Healthcare", "LOGIQ9")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{i}"
        ds.save_as(root / f"us{i}.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = PATIENT
    ds.save_as(root / "ct.dcm", enforce_file_format=True)
    return root


def test_scaffold_is_a_complete_configuration_that_loads_unchanged(archive: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "site.yaml"
    assert main(["scaffold", str(archive), "-o", str(out)]) == 0
    text = out.read_text()
    assert PATIENT.split("^")[0] not in text and "Ermintrude" not in text
    config = load_config(out)
    # The research defaults, written out: Modified Dates within -365..-1, Retain Patient
    # Characteristics, no private elements.
    assert config.profile == ProfileConfig()
    assert config.profile.options == DEFAULT_OPTIONS
    assert "Retain Safe Private Option" not in config.profile.options
    assert config.profile.date_shift_days == (-365, -1)
    for section in ("profile:", "backup:", "redaction:", "site_key:", "date_shift_days:",
                    "pseudonym_prefix:", "phi_tags:", "recipients:"):
        assert section in text
    assert not config.backup.enabled
    # One active entry per machine CTP knows, with CTP's regions; the CT left commented.
    (rule,) = config.redaction.rules
    assert rule.regions == ((0, 0, 640, 40),)
    assert rule.match["ManufacturerModelName"] == "LOGIQ9"
    assert "# - name:" in text
    # Everything but the redaction rules is the embedded default.
    embedded = load_config(None)
    assert dataclasses.replace(config, redaction=embedded.redaction, source="x") == (
        dataclasses.replace(embedded, source="x"))


def test_scaffold_from_headers_is_what_the_command_writes(archive: Path, tmp_path: Path) -> None:
    """What a session calls: an index fed header by header, then the YAML."""
    index = scaffold_index(load_config(None))
    for path in sorted(archive.iterdir()):
        index.add(read_header(path))
    text = scaffold_yaml(index, str(archive))
    out = tmp_path / "cli.yaml"
    assert main(["scaffold", str(archive), "-o", str(out)]) == 0
    assert text == out.read_text()
    assert load_config(out).redaction.rules[0].name == "ge-healthcare-logiq9-480x640"
