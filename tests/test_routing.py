"""Routing: ordered rules, first match wins, AE titles and tag conditions, default route."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from gateway.config import ConfigError, parse_config
from gateway.routing import Router

DESTS = {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104},
         "other": {"ae_title": "OTHER", "host": "127.0.0.1", "port": 105}}


def router(routes: list[dict], default: str | None = None) -> Router:
    data = {"destinations": DESTS, "routes": routes}
    if default:
        data["default_route"] = default
    return Router(parse_config(data, "<test>"))


@pytest.fixture(scope="module")
def ct():
    return dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)


@pytest.fixture(scope="module")
def mr():
    return dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)


def test_one_of_a_list_and_first_match_wins(ct, mr):
    r = router([
        {"name": "xsect", "tags": {"Modality": ["CT", "MR"]}, "destinations": ["pacs"]},
        {"name": "ct-only", "tags": {"Modality": "CT"}, "destinations": ["other"]},
    ])
    assert r.route(ct).name == "xsect"
    assert r.route(mr).name == "xsect"


def test_equals_and_regex(ct, mr):
    r = router([
        {"name": "station", "tags": {"StationName": {"regex": "CT[0-9]+_.*"}},
         "destinations": ["pacs"]},
        {"name": "mr", "tags": {"(0008,0060)": "MR"}, "destinations": ["other"]},
    ])
    assert r.route(ct).name == "station"
    assert r.route(mr).name == "mr"


def test_regex_searches_and_matches_is_whole(ct):
    def route(test: dict):
        return router([{"name": "r", "tags": {"StationName": test},
                        "destinations": ["pacs"]}]).route(ct)

    assert route({"regex": "^CT01"}).name == "r"  # station CT01_OC0
    assert route({"regex": "OC0$"}).name == "r"
    assert route({"matches": "CT01"}) is None
    assert route({"matches": "CT01_.*"}).name == "r"
    assert route({"istartswith": "ct01"}).name == "r"


def test_multi_valued_element_is_its_values_joined_by_backslashes(ct, mr):
    axial = router([{"name": "axial", "tags": {"ImageType": {"contains": "AXIAL"}},
                     "destinations": ["pacs"]}])
    assert axial.route(ct).name == "axial" and axial.route(mr) is None
    whole = router([{"name": "w", "tags": {"ImageType": "ORIGINAL\\PRIMARY\\AXIAL"},
                     "destinations": ["pacs"]}])
    assert whole.route(ct).name == "w"
    part = router([{"name": "p", "tags": {"ImageType": "AXIAL"}, "destinations": ["pacs"]}])
    assert part.route(ct) is None


def test_the_shipped_ultrasound_route_takes_a_us_station():
    from gateway.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "config" / "gantry.yaml")
    ds = Dataset()
    ds.Modality, ds.StationName = "US", "US-ROOM2"
    assert Router(config).route(ds, "US_ROOM_2").name == "ultrasound"
    ds.StationName = "CARDIO-US"
    assert Router(config).route(ds, "US_ROOM_2") is None


def test_calling_and_called_ae(ct):
    r = router([
        {"name": "scanner1", "calling_ae": ["SCANNER1"], "destinations": ["pacs"]},
        {"name": "to-research", "called_ae": ["GANTRY_R"], "destinations": ["other"]},
    ])
    assert r.route(ct, "SCANNER1", "GANTRY").name == "scanner1"
    assert r.route(ct, "SCANNER2", "GANTRY_R").name == "to-research"
    assert r.route(ct, "SCANNER2", "GANTRY") is None


def test_all_conditions_must_hold(ct):
    r = router([{"name": "both", "calling_ae": ["SCANNER1"], "tags": {"Modality": "MR"},
                 "destinations": ["pacs"]}])
    assert r.route(ct, "SCANNER1") is None


def test_missing_element_does_not_match(ct):
    for test in ({"present": True}, {"regex": ".+"}, "CHEST"):
        r = router([{"name": "x", "tags": {"BodyPartExamined": test}, "destinations": ["pacs"]}])
        assert r.route(ct) is None
    absent = router([{"name": "x", "tags": {"BodyPartExamined": {"present": False}},
                      "destinations": ["pacs"]}])
    assert absent.route(ct).name == "x"


def test_default_route_when_nothing_matches(ct):
    r = router([
        {"name": "mr", "tags": {"Modality": "MR"}, "destinations": ["pacs"]},
        {"name": "catch", "tags": {"Modality": "XA"}, "destinations": ["other"]},
    ], default="catch")
    assert r.route(ct).name == "catch"


def test_bad_conditions_fail_at_load_naming_the_route_and_key():
    with pytest.raises(ConfigError, match=r"routes\[0\]: tags.NoSuchKeyword"):
        router([{"name": "r1", "tags": {"NoSuchKeyword": "x"}, "destinations": ["pacs"]}])
    with pytest.raises(ConfigError, match=r"routes\[1\]: tags.Modality.regex: bad regular"):
        router([{"name": "ok", "destinations": ["pacs"]},
                {"name": "r2", "tags": {"Modality": {"regex": "("}}, "destinations": ["pacs"]}])
    with pytest.raises(ConfigError, match=r"tags.Modality: unknown test 'regexx'"):
        router([{"name": "r3", "tags": {"Modality": {"regexx": "CT"}}, "destinations": ["pacs"]}])


def test_unknown_destination_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown destination"):
        router([{"name": "r", "destinations": ["nowhere"]}])
