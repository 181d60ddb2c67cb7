"""Stamping a de-identified object: PatientIdentityRemoved and the method, with CID 7050 codes.

DeidentificationMethod (0012,0063) is LO, 1-n: one value per profile and option (the CID 7050
meaning, at most 64 characters each), never one long text cut at 64."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from gateway.deid.profile import METHOD_CODES, Profile
from gateway.deid.values import transfer_syntax
from gateway.dicomencode import encode_items

_MEANING = dict(METHOD_CODES.values())
LO_MAX = 64
assert all(len(m) <= LO_MAX for m in _MEANING.values()), "a CID 7050 meaning exceeds LO"
PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD = BaseTag(0x00120062), BaseTag(0x00120063)
METHOD_CODE_SEQUENCE = BaseTag(0x00120064)
CODE_VALUE, CODING_SCHEME, CODE_MEANING = BaseTag(0x00080100), BaseTag(0x00080102), \
    BaseTag(0x00080104)


@lru_cache(maxsize=64)  # one per profile, options applied and encoding
def _encoded(codes: tuple[tuple[str, str], ...], implicit: bool
             ) -> tuple[RawDataElement, RawDataElement, tuple[Dataset, ...], RawDataElement]:
    """(0012,0062), (0012,0063), the items of (0012,0064) and (0012,0064) itself, as the bytes
    the writer copies (raw elements are immutable: every object shares them; pydicom decodes
    them when they are read, as those of a file). The items are templates, never handed out.
    Building pydicom elements and items was most of this step."""

    def raw(tag: BaseTag, vr: str, data: bytes) -> RawDataElement:
        return RawDataElement(tag, vr, len(data), data, 0, implicit, True)

    def text(tag: BaseTag, vr: str, values: list[str]) -> RawDataElement:
        data = "\\".join(values).encode("ascii")
        return raw(tag, vr, data + b" " * (len(data) % 2))

    items = []
    for value, meaning in codes:
        item = Dataset()
        for elem in (text(CODE_VALUE, "SH", [value]), text(CODING_SCHEME, "SH", ["DCM"]),
                     text(CODE_MEANING, "LO", [meaning])):
            item._dict[elem.tag] = elem
        items.append(item)
    encoded = encode_items(items, implicit)
    assert encoded is not None, "the method code items are plain ASCII"
    return (text(PATIENT_IDENTITY_REMOVED, "CS", ["YES"]),
            text(DEIDENTIFICATION_METHOD, "LO", [meaning for _, meaning in codes]),
            tuple(items), raw(METHOD_CODE_SEQUENCE, "SQ", encoded))


def stamp(ds: Dataset, profile: Profile, extra_codes: Iterable[str] = ()) -> None:
    """Set (0012,0062) YES, (0012,0063) one value per profile and option and (0012,0064) the
    method codes."""
    codes = profile.method_codes() + [(c, _MEANING[c]) for c in extra_codes]
    syntax = transfer_syntax(ds)
    removed, method, items, sequence = _encoded(tuple(dict(codes).items()),
                                                syntax == ImplicitVRLittleEndian)
    ds._dict[PATIENT_IDENTITY_REMOVED] = removed
    ds._dict[DEIDENTIFICATION_METHOD] = method
    if syntax == ExplicitVRBigEndian:  # the encoded items are little endian: new items
        sequence = DataElement(METHOD_CODE_SEQUENCE, "SQ", Sequence(
            _copy(item) for item in items))
    ds._dict[METHOD_CODE_SEQUENCE] = sequence


def _copy(item: Dataset) -> Dataset:
    copied = Dataset()
    copied._dict.update(item._dict)
    return copied
