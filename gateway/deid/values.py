"""Element values as stored: read without pydicom decoding them where the bytes are ASCII
(decoding is the slow part of de-identification)."""

from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from gateway.deid.tags import INTERNED


def str_values(value: object) -> list[str]:
    """A decoded value as a list of strings (none for None, one per value of a multi-value)."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def text_values(ds: Dataset, key: int) -> list[str]:
    """The values of a string element, stripped; raw ASCII is split without decoding (pydicom's
    decoding is the slow part of de-identification). LT, ST and UT split at backslashes too."""
    elem = ds._dict[key]  # pydicom's element store: reading it never decodes a value
    if isinstance(elem, RawDataElement):
        if not elem.value:
            return []
        if elem.value.isascii():
            return list(split_ascii(elem.value))
        elem = ds[key]  # decoded once, in place
    return [v.strip() for v in str_values(elem.value)]


@lru_cache(maxsize=8192)  # an object's values recur in the next objects of its series
def split_ascii(value: bytes) -> tuple[str, ...]:
    """ASCII bytes as values: split at backslashes, spaces and NULs stripped."""
    return tuple(v.strip(" \x00") for v in value.decode("ascii").split("\\"))


def stored_text(ds: Dataset, tag: int) -> str:
    """An element's values joined as in the file ("" when absent), not decoded if ASCII (the
    UIDs the pipeline names files by are read this way too)."""
    tag = INTERNED.get(tag, tag)  # the store's own key object, if the scan made the store
    return "\\".join(text_values(ds, tag)) if tag in ds._dict else ""


def element_vr(ds: Dataset, tag: int) -> str:
    """The VR of an element without decoding its value (the dictionary's for implicit VR and
    for UN, which pydicom replaces with the known VR when it decodes the element)."""
    vr = ds._dict[tag].VR  # pydicom's element store: reading it never decodes a value
    if vr and vr != "UN":
        return vr
    entry = DicomDictionary.get(tag)  # implicit VR, or UN standing for a known VR
    return entry[0] if entry else "UN"


def as_stored(ds: Dataset, key: int) -> bool:
    """Whether reading the string element `key` undecoded is the same as decoding it: it is
    decoded already, or raw under its own VR (not UN) with an ASCII value in the form the
    encoder writes (values joined by backslashes, no space or NUL around them but the one that
    pads to even length). Decoding any other element changes how it is written (its VR, its
    padding): stages that read it decode it, as pydicom's accessors do."""
    elem = ds._dict[key]
    if not isinstance(elem, RawDataElement):
        return True
    if elem.VR == "UN":
        return False
    value = elem.value
    if not value:
        return True
    if not value.isascii():
        return False
    text = "\\".join(split_ascii(value)).encode()
    if len(text) % 2:
        text += b"\x00" if element_vr(ds, key) == "UI" else b" "
    return text == value


def read_text(ds: Dataset, tag: int) -> str:
    """`stored_text`, the element decoded in place first unless it is `as_stored` (so that it
    is written as pydicom's accessors, which read it before, left it)."""
    if tag in ds._dict and not as_stored(ds, tag):
        ds[tag]
    return stored_text(ds, tag)


TRANSFER_SYNTAX = 0x00020010


def transfer_syntax(ds: Dataset) -> UID | None:
    """`ds.file_meta.TransferSyntaxUID` (None without one), read from the element store: pydicom's
    keyword look-up costs more than the rest of this, and the stages ask for it several times."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    key = INTERNED.get(TRANSFER_SYNTAX, TRANSFER_SYNTAX)
    elem = meta._dict.get(key)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        elem = meta[key]  # decoded once, in place
    return elem.value
