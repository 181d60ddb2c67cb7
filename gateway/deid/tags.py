"""Naming tags: parse the ways a config or a table writes a tag into an int; one BaseTag
object per tag for the element stores the header scan builds."""

from __future__ import annotations

import re

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag

_TAG_RE = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")


def parse_tag_key(key: str) -> int:
    """'(0010,0010)', '0010,0010', '00100010' or 'PatientName' → 0x00100010."""
    match = _TAG_RE.match(key.strip())
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(key.strip())
    if tag is None:
        raise ValueError(f"{key!r} is neither a tag like (0010,0010) nor a DICOM keyword")
    return tag


def tag_str(tag: int) -> str:
    """0x00100010 → '(0010,0010)'."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: tag → its one BaseTag object (the first INTERNED_MAX tags seen in this process)
INTERNED: dict[int, BaseTag] = {}
INTERNED_MAX = 1 << 16


def interned(tag: int) -> BaseTag:
    """The one BaseTag object for `tag`. An element store keyed by these objects finds an
    element by identity when it is looked up with the same object (`INTERNED.get(tag, tag)`),
    without BaseTag's __eq__, a Python call, on every hit."""
    key = INTERNED.get(tag)
    if key is None:
        key = BaseTag(tag)
        if len(INTERNED) < INTERNED_MAX:
            INTERNED[int(tag)] = key
    return key
