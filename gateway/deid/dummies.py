"""Dummy values (action D) valid for each VR."""

from __future__ import annotations

from typing import Any

TEXT = "ANONYMIZED"
_DUMMY: dict[str, Any] = {
    "AE": TEXT, "AS": "000Y", "CS": TEXT, "DA": "19000101", "DS": "0", "DT": "19000101000000",
    "IS": "0", "LO": TEXT, "LT": TEXT, "PN": TEXT, "SH": TEXT, "ST": TEXT, "TM": "000000",
    "UC": TEXT, "UR": "urn:x-anonymized", "UT": TEXT,
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0, "AT": 0,
    "OB": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4,
    "OV": b"\x00" * 8, "OW": b"\x00\x00", "UN": b"\x00\x00",
}


def dummy_for(vr: str) -> Any:
    """A non-empty value valid for `vr` (US or SS style VRs like 'US or SS' take the first)."""
    return _DUMMY.get(vr.split(" ")[0], b"\x00\x00")
