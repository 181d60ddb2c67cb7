"""Configuration: bad files fail at start naming the file, the key path and the problem; the
site key comes from a file (made by `gantry keys init`, owner-only) or an environment variable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import OPTION_NAMES, ConfigError, load_config
from gateway.sitekey import SiteKeyError, load_site_key

REPO = Path(__file__).resolve().parents[1]
MODIFIED = "Retain Longitudinal Temporal Information with Modified Dates Option"
FULL = "Retain Longitudinal Temporal Information with Full Dates Option"


def write(tmp_path: Path, data: object, name: str = "gantry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


BAD = [
    # (config, key path the message must name, a word of the problem)
    pytest.param({"profil": {}}, "profil", "unknown key", id="unknown-top-key"),
    pytest.param({"profile": {"optionz": []}}, "profile.optionz", "unknown key",
                 id="unknown-nested-key"),
    pytest.param({"network": {"port": "eleven"}}, "network.port", "integer", id="wrong-type-int"),
    pytest.param({"network": {"port": True}}, "network.port", "integer", id="bool-is-not-int"),
    pytest.param({"backup": {"enabled": "yes"}}, "backup.enabled", "true or false",
                 id="wrong-type-bool"),
    pytest.param({"profile": {"options": "Clean Descriptors Option"}}, "profile.options", "list",
                 id="wrong-type-list"),
    pytest.param({"destinations": []}, "destinations", "mapping", id="wrong-type-mapping"),
    pytest.param({"log_level": "loud"}, "log_level", "loud", id="bad-literal"),
    pytest.param({"network": {"port": 70000}}, "network", "70000", id="bad-port"),
    pytest.param({"network": {"ae_title": "A\\B"}}, "network", "AE title", id="bad-ae-title"),
    pytest.param({"profile": {"options": ["Retain Everything Option"]}}, "profile",
                 "Retain Everything Option", id="bad-option-name"),
    pytest.param({"profile": {"options": ["retain_uids"]}}, "profile", "retain_uids",
                 id="option-column-is-not-the-standard-name"),
    pytest.param({"profile": {"options": [MODIFIED, FULL]}}, "profile", "exclude",
                 id="full-and-modified-dates"),
    pytest.param({"profile": {"date_shift_days": [-1, -365]}}, "profile", "greater",
                 id="date-range-reversed"),
    pytest.param({"profile": {"date_shift_days": [-1]}}, "profile.date_shift_days", "list of 2",
                 id="date-range-length"),
    pytest.param({"profile": {"phi_tags": {"NotAKeyword": {"action": "keep"}}}}, "profile",
                 "NotAKeyword", id="phi-tag-unknown-keyword"),
    pytest.param({"profile": {"phi_tags": {"PatientName": {"action": "explode"}}}},
                 "profile.phi_tags.PatientName.action", "explode", id="phi-tag-bad-action"),
    pytest.param({"profile": {"phi_tags": {"PatientName": {"action": "replace"}}}},
                 "profile.phi_tags.PatientName", "value", id="phi-tag-replace-needs-value"),
    pytest.param({"site_key": {"file": "a.key", "env": "KEY"}}, "site_key", "exactly one",
                 id="site-key-file-and-env"),
    pytest.param({"site_key": "deadbeef" * 8}, "site_key", "mapping", id="site-key-inline"),
    pytest.param({"routes": [{"name": "r", "destinations": ["nowhere"]}]}, "", "nowhere",
                 id="route-unknown-destination"),
    pytest.param({"profiles": {"strict": {"options": ["Nope"]}}}, "profiles.strict", "Nope",
                 id="named-profile-bad-option"),
    pytest.param(["a", "list"], "<top>", "mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize(("data", "key_path", "problem"), BAD)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, data: object, key_path: str,
                                               problem: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert f": {key_path}: " in message or (key_path == "" and "<top>" in message)
    assert problem in message


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "profile: [unclosed\n")
    with pytest.raises(ConfigError, match=str(path).replace(".", r"\.")):
        load_config(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "cannot read" in str(info.value)


def test_every_standard_option_name_is_accepted(tmp_path: Path) -> None:
    options = [name for name in OPTION_NAMES if name != FULL]
    config = load_config(write(tmp_path, {"profile": {"options": options}}))
    assert config.profile.options == tuple(options)


def test_shipped_and_embedded_configs_load() -> None:
    shipped = load_config(REPO / "config" / "gantry.yaml")
    assert shipped.profile.options
    embedded = load_config(None)
    assert embedded.source == "<embedded default>"
    assert set(embedded.profile.options) <= set(OPTION_NAMES)


def test_the_cli_reports_a_bad_config_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {"profile": {"optionz": []}})
    status = main(["audit", str(tmp_path), "--config", str(path)])
    assert status != 0
    err = capsys.readouterr().err
    assert str(path) in err and "profile.optionz" in err


# ------------------------------------------------------------------ the site key


def test_keys_init_makes_an_owner_only_key_that_the_config_loads(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "site.key"
    assert main(["keys", "init", str(key_path)]) == 0
    mode = stat.S_IMODE(key_path.stat().st_mode)
    assert mode == 0o600
    config = load_config(write(tmp_path, {"site_key": {"file": str(key_path)}}))
    key = load_site_key(config)
    assert len(key) >= 32
    # Never overwritten: a second init refuses and leaves the key as it was.
    before = key_path.read_bytes()
    assert main(["keys", "init", str(key_path)]) != 0
    assert key_path.read_bytes() == before
    # Two inits make two different keys.
    other = tmp_path / "other.key"
    assert main(["keys", "init", str(other)]) == 0
    assert other.read_bytes() != before


def test_relative_key_file_is_found_beside_the_config(tmp_path: Path) -> None:
    assert main(["keys", "init", str(tmp_path / "site.key")]) == 0
    config = load_config(write(tmp_path, {"site_key": {"file": "site.key"}}))
    assert load_site_key(config) == bytes.fromhex((tmp_path / "site.key").read_text().strip())


def test_missing_key_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, {"site_key": {"file": str(tmp_path / "none.key")}}))
    with pytest.raises(ConfigError, match=r"site_key\.file"):
        load_site_key(config)
    monkeypatch.delenv("GANTRY_TEST_NO_SUCH_KEY", raising=False)
    config = load_config(write(tmp_path, {"site_key": {"env": "GANTRY_TEST_NO_SUCH_KEY"}}))
    with pytest.raises(ConfigError, match=r"site_key\.env"):
        load_site_key(config)
    monkeypatch.setenv("GANTRY_TEST_NO_SUCH_KEY", "abcd")
    with pytest.raises(SiteKeyError, match="16 bytes"):
        load_site_key(config)


def test_a_binary_key_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "raw.key").write_bytes(bytes(range(160, 192)))  # 32 random-looking bytes
    config = load_config(write(tmp_path, {"site_key": {"file": "raw.key"}}))
    with pytest.raises(ConfigError, match=r"site_key\.file.*raw\.key.*hex text") as info:
        load_site_key(config)
    assert "codec" not in str(info.value)


# ------------------------------------------------------------------ one set of defaults


def _fields(cls: type, prefix: str = "") -> list[str]:
    """Every key path of a configuration dataclass (sections walked, mappings not)."""
    import dataclasses
    import typing

    paths = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        paths.append(prefix + f.name)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            paths += _fields(hint, f"{prefix}{f.name}.")
    return paths


def test_no_file_no_profile_and_the_embedded_default_are_one_configuration(
        tmp_path: Path) -> None:
    from dataclasses import replace

    from gateway.config import DEFAULT_OPTIONS

    embedded = load_config(None)
    bare = load_config(write(tmp_path, {"site_key": {"env": "GANTRY_SITE_KEY"}}))
    assert replace(bare, source="x") == replace(embedded, source="x")
    # The research defaults: Modified Dates within -365..-1, Patient Characteristics kept, no
    # private elements (no Retain Safe Private).
    assert set(embedded.profile.options) == set(DEFAULT_OPTIONS) == {
        MODIFIED, "Retain Patient Characteristics Option"}
    assert embedded.profile.date_shift_days == (-365, -1)
    # A named profile that leaves its options out gets the same; `options: []` is bare Basic.
    named = load_config(write(tmp_path, {"profiles": {"a": {}, "bare": {"options": []}}}))
    assert named.profiles["a"] == embedded.profile
    assert named.profiles["bare"].options == ()


def test_every_key_is_documented_in_the_shipped_example() -> None:
    from gateway.config import Config

    text = (REPO / "config" / "gantry.yaml").read_text()
    missing = [path for path in _fields(Config) if f"{path.rsplit('.', 1)[-1]}:" not in text]
    assert not missing, f"config/gantry.yaml does not document {missing}"


def test_config_show_prints_what_loads_back_and_never_the_key(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "5e" * 24
    monkeypatch.setenv("GANTRY_SITE_KEY", secret)
    for source in (None, REPO / "config" / "gantry.yaml"):
        args = ["config", "show"] + (["--config", str(source)] if source else [])
        assert main(args) == 0
        shown = capsys.readouterr().out
        assert secret not in shown
        again = write(tmp_path, shown, "shown.yaml")
        expected = load_config(source)
        # Relative paths would move with the file: compare with the source's base directory.
        from dataclasses import replace
        assert replace(load_config(again), source="x") == replace(expected, source="x")
    assert "env: GANTRY_SITE_KEY" in main_output(["config", "show"], capsys)
    assert "Retain Patient Characteristics Option" in main_output(["config", "show"], capsys)
    key_file = tmp_path / "site.key"
    assert main(["keys", "init", str(key_file)]) == 0
    cfg = write(tmp_path, {"site_key": {"file": "site.key"}})
    shown = main_output(["config", "show", "--config", str(cfg)], capsys)
    assert "file: site.key" in shown and key_file.read_text().strip() not in shown


def main_output(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------ other tools' spellings

SEED = [
    # (configuration as another tool's documents write it, Gantry key the message names)
    pytest.param({"date_jitter": {"min_days": -30, "max_days": -1}},
                 "profile.date_shift_days: [-30, -1]", id="date_jitter"),
    pytest.param({"profile": {"date_jitter": {"min_days": -9, "max_days": -2}}},
                 "profile.date_shift_days: [-9, -2]", id="date_jitter-under-profile"),
    pytest.param({"remove_private_tags": True}, "Retain Safe Private Option",
                 id="remove_private_tags"),
    pytest.param({"privacy_profile": "basic"}, "profile.options", id="privacy_profile"),
    pytest.param({"phi_tags": {"0010,0010": {"action": "REMOVE"}}}, "profile.phi_tags",
                 id="phi_tags-at-top"),
    pytest.param({"profile": {"phi_tags": {"StudyDate": {"action": "SHIFT"}}}},
                 "profile.date_shift_days", id="shift-action"),
    pytest.param({"profile": {"phi_tags": {"StudyDate": {"action": "JITTER"}}}},
                 "profile.date_shift_days", id="jitter-action"),
    pytest.param({"profile": {"phi_tags": {"PatientName": {"action": "REPLACE"}}}},
                 "'value'", id="replace-without-value"),
]


@pytest.mark.parametrize(("data", "gantry_key"), SEED)
def test_other_tools_spellings_fail_naming_the_gantry_key(tmp_path: Path, data: dict,
                                                          gantry_key: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and gantry_key in message, message


def test_upper_case_actions_and_a_name_label_work(tmp_path: Path, site_key: bytes) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    from gateway.config import TagOverride
    from gateway.deid.profile import Profile
    from gateway.deid.remediate import remediate

    config = load_config(write(tmp_path, {"profile": {"phi_tags": {
        "0008,0090": {"name": "Referring Physician's Name", "action": "REMOVE"},
        "StudyID": {"action": "KEEP", "name": "Study ID"},
        "(0008,0080)": {"action": "Replace", "value": "SITE"},
    }}}))
    tags = config.profile.phi_tags
    assert tags["0008,0090"] == TagOverride("remove", name="Referring Physician's Name")
    assert tags["StudyID"].action == "keep" and tags["(0008,0080)"].action == "replace"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study_id = ds.StudyID
    assert "ReferringPhysicianName" in ds and study_id
    remediate(ds, Profile.from_config(config.profile), site_key)
    assert "ReferringPhysicianName" not in ds
    assert ds.StudyID == study_id and ds.InstitutionName == "SITE"
