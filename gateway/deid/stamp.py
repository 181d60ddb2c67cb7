"""Stamping a de-identified object: PatientIdentityRemoved and the method, with CID 7050 codes."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.deid.profile import METHOD_CODES, Profile

_MEANING = dict(METHOD_CODES.values())


def stamp(ds: Dataset, profile: Profile, extra_codes: Iterable[str] = ()) -> None:
    """Set (0012,0062) YES, (0012,0063) a description and (0012,0064) the method codes."""
    codes = profile.method_codes() + [(c, _MEANING[c]) for c in extra_codes]
    seen: dict[str, str] = dict(codes)
    items = []
    for value, meaning in seen.items():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ("Gantry: " + "; ".join(seen.values()))[:64]
    ds.DeidentificationMethodCodeSequence = Sequence(items)
