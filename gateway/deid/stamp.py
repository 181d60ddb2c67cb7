"""Stamping a de-identified object: PatientIdentityRemoved and the method, with CID 7050 codes.

DeidentificationMethod (0012,0063) is LO, 1-n: one value per profile and option (the CID 7050
meaning, at most 64 characters each), never one long text cut at 64."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from gateway.deid.profile import METHOD_CODES, Profile

_MEANING = dict(METHOD_CODES.values())
LO_MAX = 64
assert all(len(m) <= LO_MAX for m in _MEANING.values()), "a CID 7050 meaning exceeds LO"
PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD = BaseTag(0x00120062), BaseTag(0x00120063)
METHOD_CODE_SEQUENCE = BaseTag(0x00120064)
CODE_VALUE, CODING_SCHEME, CODE_MEANING = BaseTag(0x00080100), BaseTag(0x00080102), \
    BaseTag(0x00080104)


def _put(ds: Dataset, tag: BaseTag, vr: str, value: object) -> None:
    """Set an element straight in the element store: these values are valid by construction,
    and pydicom's keyword lookup and validation were half of this step's time."""
    ds._dict[tag] = DataElement(tag, vr, value)


def stamp(ds: Dataset, profile: Profile, extra_codes: Iterable[str] = ()) -> None:
    """Set (0012,0062) YES, (0012,0063) one value per profile and option and (0012,0064) the
    method codes."""
    codes = profile.method_codes() + [(c, _MEANING[c]) for c in extra_codes]
    seen: dict[str, str] = dict(codes)
    items = []
    for value, meaning in seen.items():
        item = Dataset()
        _put(item, CODE_VALUE, "SH", value)
        _put(item, CODING_SCHEME, "SH", "DCM")
        _put(item, CODE_MEANING, "LO", meaning)
        items.append(item)
    _put(ds, PATIENT_IDENTITY_REMOVED, "CS", "YES")
    _put(ds, DEIDENTIFICATION_METHOD, "LO", list(seen.values()))
    _put(ds, METHOD_CODE_SEQUENCE, "SQ", Sequence(items))
