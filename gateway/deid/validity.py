"""Whether a string value is valid for its VR (PS3.5 6.2: length, characters) and its element
for its VM (PS3.6). A value that is not (a CS of thousands of bytes, control characters in a
name) is what a corrupted length looks like: it may have swallowed the elements after it, so
nothing of it may be kept, logged or stored. Problems name the VR and the rule, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, lru_cache

from pydicom.datadict import DicomDictionary, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from gateway.deid.values import element_vr, split_ascii, text_values

# Longest value, in characters (PN: per component group, three groups at most).
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 18, "DS": 16, "DT": 54, "IS": 12, "LO": 64,
              "LT": 10240, "PN": 3 * 64 + 2, "SH": 16, "ST": 1024, "TM": 28, "UI": 64}
# Characters a value may hold. CS: any printable ASCII but the backslash (PS3.5 allows upper
# case, digits, space and underscore; vendors write '/' and '-', which hide nothing).
_TEXT = r"[^\x00-\x1a\x1c-\x1f\x7f]"
_PROSE = r"[^\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]"  # LT, ST, UT: also tab, CR, LF, FF
CHARACTERS = {
    "AE": _TEXT, "AS": r"[0-9DWMY ]", "CS": r"[\x20-\x5b\x5d-\x7e]", "DA": r"[0-9 .-]",
    "DS": r"[0-9+\-Ee. ]", "DT": r"[0-9+\-. ]", "IS": r"[0-9+\- ]", "LO": _TEXT, "LT": _PROSE,
    "PN": _TEXT, "SH": _TEXT, "ST": _PROSE, "TM": r"[0-9.: -]", "UC": _TEXT, "UI": r"[0-9.]",
    "UR": r"[^\x00-\x20\x7f]", "UT": _PROSE,
}
_PATTERNS = {vr: re.compile(f"{chars}*") for vr, chars in CHARACTERS.items()}
SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})  # a backslash in them is text
ASCII_ONLY = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})


@lru_cache(maxsize=8192)  # device and coded values recur from object to object
def value_problem(vr: str, value: str) -> str | None:
    """What makes one value invalid for `vr`, or None."""
    value = value.rstrip(" \x00")
    limit = MAX_LENGTH.get(vr)
    if limit is not None and len(value) > limit:
        return f"{vr} value of {len(value)} characters (at most {limit})"
    pattern = _PATTERNS.get(vr)
    if pattern is not None and not pattern.fullmatch(value):
        return f"{vr} value with characters {vr} does not allow"
    if vr == "PN" and (value.count("=") > 2 or any(g.count("^") > 4 for g in value.split("="))):
        return "PN value with more than 3 component groups or 5 components"
    return None


@cache
def max_values(tag: int) -> int | None:
    """The most values the data dictionary allows `tag` (None: unknown or unbounded)."""
    entry = DicomDictionary.get(tag)
    if entry is None:
        return None
    vm = entry[1]
    if vm.endswith("n"):
        return None
    try:
        return int(vm.split("-")[-1])
    except ValueError:
        return None


def element_problem(ds: Dataset, key: int, values: list[str] | None = None,
                    vr: str | None = None) -> str | None:
    """What makes a string element of `ds` invalid for its VR or VM, or None (non-string
    elements are pydicom's to check). `values`, `vr`: its text_values and element_vr, when the
    caller has them."""
    vr = vr or element_vr(ds, key)
    if vr not in CHARACTERS:
        return None
    raw = ds._dict[key]
    if isinstance(raw, RawDataElement) and raw.value:
        if raw.value.isascii():  # a function of the bytes, the tag and the VR
            return _ascii_problem(int(key), vr, raw.value)
        if vr in ASCII_ONLY:
            return f"{vr} value with bytes outside ASCII"
    if values is None:
        values = text_values(ds, key)
    return _values_problem(int(key), vr, values)


@lru_cache(maxsize=8192)  # the values of a series' objects recur
def _ascii_problem(tag: int, vr: str, value: bytes) -> str | None:
    """`element_problem` of an element still undecoded, whose value is the ASCII `value`."""
    return _values_problem(tag, vr, split_ascii(value))


def _values_problem(tag: int, vr: str, values: Sequence[str]) -> str | None:
    for value in values:
        problem = value_problem(vr, value)
        if problem is not None:
            return problem
    limit = max_values(tag) if vr not in SINGLE_VALUED and len(values) > 1 else None
    if limit is not None and len(values) > limit:
        return f"{len(values)} values where the element allows {limit}"
    return None


def valid_text(ds: Dataset, key: int) -> str | None:
    """An element's values joined by backslashes ('' when absent), or None when the element is
    invalid for its VR or VM (it must not be shown, logged or stored)."""
    if key not in ds._dict:
        return ""
    if element_problem(ds, key) is not None:
        return None
    return "\\".join(text_values(ds, key))


INVALID = "(invalid)"


def device_text(ds: Dataset, keyword: str) -> str:
    """A device attribute (Manufacturer, Modality ...) for a machine record or signature,
    spaces collapsed; '' when absent, INVALID when the value is not valid for its VR or VM."""
    tag = tag_for_keyword(keyword)
    text = valid_text(ds, tag) if tag is not None else ""
    return INVALID if text is None else " ".join(text.split())
