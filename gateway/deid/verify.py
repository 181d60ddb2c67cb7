"""The gatekeeper: inspect a remediated object again and refuse it if anything survived.

Every string value left, at every depth (file meta, sequences, private elements kept under
Retain Safe Private), must be valid for its VR and VM, hold no identifier of the original object
(the remediation's matcher, the one C used) and no original UID. So must every value of unknown
VR (UN: implicit VR without a dictionary entry, as most private elements are) and every kept
private OB value that reads as text: bytes without the control characters text never holds.
"""

from __future__ import annotations

import re

from pydicom.charset import decode_bytes
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from gateway.deid.identifiers import IdentifierSet
from gateway.deid.keyed import CLASS_UID_TAGS
from gateway.deid.profile import Profile
from gateway.deid.remediate import (
    ENCRYPTED_ATTRIBUTES,
    LONGITUDINAL_MODIFIED,
    Remediation,
    public_action,
)
from gateway.deid.tags import tag_str
from gateway.deid.validity import CHARACTERS, element_problem
from gateway.deid.values import element_vr, read_text, split_ascii, text_values
from gateway.deid.vr import STRING_VRS

SOP_CLASS_UID = 0x00080016
LONG_UID = 6  # original UIDs this long are also looked for inside other text
# Written by remediation and the stamp whatever the input held: the method's own words
# ("Retain Patient Characteristics Option") are no identifier of a patient named Patient.
OURS = frozenset({0x00120062, 0x00120063, 0x00120064, LONGITUDINAL_MODIFIED})
# Bytes no text holds (text may hold tab, LF, FF, CR and ISO 2022's ESC): a value with one is
# binary, not text of an unknown VR.
NOT_TEXT = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def verify(ds: Dataset, remediation: Remediation, profile: Profile) -> list[str]:
    """Problems that make `ds` unsafe to export; empty when it passes. Names tags, never values."""
    uids = set(remediation.uid_map)
    long_uids = [v for v in uids if len(v) >= LONG_UID]
    matcher = remediation.matcher
    problems: list[str] = []
    sop_class = read_text(ds, SOP_CLASS_UID)

    def check(item: Dataset, path: str, top: bool) -> None:
        creators: dict[tuple[int, int], str] = {}
        for key in sorted(item._dict, key=int):  # the store's keys; plain ints for the profile
            tag = int(key)
            if top and (tag == ENCRYPTED_ATTRIBUTES or tag in OURS):
                continue  # the one permitted carrier of originals (sealed); the stamp
            group, element = tag >> 16, tag & 0xFFFF
            vr = element_vr(item, key)
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators[(group, element)] = "\\".join(text_values(item, key))
                    continue
                override = profile.overrides.get(tag)
                creator = creators.get((group, element >> 8))
                if not (override and override.action == "keep") and not profile.is_safe_private(
                        group, creator, element):
                    problems.append(f"private element {path}{tag_str(tag)} is not safe to keep")
                    continue
            elif tag not in profile.overrides and element and group != 0x0002 and (
                    public_action(profile, tag, vr, sop_class) == "X"):
                problems.append(f"{path}{tag_str(tag)} should have been removed")
                continue
            if vr == "SQ":
                for i, sub in enumerate(item[key].value or ()):
                    check(sub, f"{path}{tag_str(tag)}[{i}].", False)
                continue
            if vr not in CHARACTERS:  # binary: pydicom's to check, unless it reads as text
                if vr == "UN" or (vr == "OB" and group & 1):
                    values = _as_text(item, key)
                    if any(v in uids or matcher.found_in(v) or any(u in v for u in long_uids)
                           for v in values):
                        problems.append(_survives(item, key, path, values, matcher))
                continue
            values = text_values(item, key)
            invalid = element_problem(item, key, values, vr)
            if invalid is not None:
                problems.append(f"{path}{tag_str(tag)} is not valid: {invalid}")
                continue
            if vr not in STRING_VRS or tag in CLASS_UID_TAGS:  # numbers, classes: no identifier
                continue
            if vr == "UI":
                leaked = any(v in uids for v in values)
            else:
                leaked = any(matcher.found_in(v) or any(u in v for u in long_uids)
                             for v in values)
            if leaked:
                problems.append(_survives(item, key, path, values, matcher))

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        check(meta, "file meta ", False)
    check(ds, "", True)
    return problems


def _as_text(item: Dataset, key: int) -> list[str]:
    """The values of a bytes element that reads as text (no byte text never holds; NUL and
    space padding aside), decoded in the object's character set; none if it is binary."""
    raw = item._dict[key].value  # pydicom's element store: bytes for UN and OB
    if not isinstance(raw, bytes):
        return []
    raw = raw.rstrip(b"\x00 ")
    if not raw or NOT_TEXT.search(raw):
        return []
    if raw.isascii():
        return list(split_ascii(raw))
    return [v.strip() for v in decode_bytes(raw, item._character_set, set()).split("\\")]


def _survives(item: Dataset, key: int, path: str, values: list[str],
              matcher: IdentifierSet) -> str:
    """The refusal for an identifier left in an element: where, and (for a newcomer to act on)
    the element of the original it came from, by tag and keyword only, never by value."""
    tag = int(key)
    where = f"{path}{tag_str(tag)}{_keyword(tag)}"
    origin = next((o for o in map(matcher.origin, values) if o is not None), None)
    source = "" if origin is None else f" (from {tag_str(origin)}{_keyword(origin)})"
    return f"an original identifier{source} survives in {where}"


def _keyword(tag: int) -> str:
    keyword = keyword_for_tag(tag) if tag >> 16 & 1 == 0 else ""
    return f" {keyword}" if keyword else ""
