"""Naming tags: parse the ways a config or a table writes a tag into an int."""

from __future__ import annotations

import re

from pydicom.datadict import tag_for_keyword

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
