"""The gatekeeper: inspect a remediated object again and refuse it if anything survived."""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from gateway.deid.profile import Profile
from gateway.deid.remediate import ENCRYPTED_ATTRIBUTES, Remediation, _values, element_vr
from gateway.deid.tags import tag_str
from gateway.deid.vr import STRING_VRS

LONG_IDENTIFIER = 6  # identifiers this long are also looked for inside other values


def _text_values(item: Dataset, tag: int) -> list[str]:
    """The values of a text element; still-raw ASCII values are read without decoding."""
    raw = item._dict[tag]  # pydicom's element store: reading it never decodes a value
    if isinstance(raw, RawDataElement):
        if not raw.value:
            return []
        if raw.value.isascii():
            return [v.strip(" \x00") for v in raw.value.decode("ascii").split("\\")]
        raw = item[tag]  # decoded once, in place
    return [v.strip() for v in _values(raw.value)]


def verify(ds: Dataset, remediation: Remediation, profile: Profile) -> list[str]:
    """Problems that make `ds` unsafe to export; empty when it passes. Names tags, never values."""
    exact = remediation.identifiers
    long_ones = [v for v in exact if len(v) >= LONG_IDENTIFIER]
    problems: list[str] = []
    sop_class = str(ds.get("SOPClassUID", "") or "")

    def check(item: Dataset, path: str, top: bool) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in sorted(int(t) for t in item._dict):  # plain ints: BaseTag's __eq__ is slow
            if tag == ENCRYPTED_ATTRIBUTES and top:
                continue  # the one permitted carrier of originals (sealed)
            group, element = tag >> 16, tag & 0xFFFF
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators[(group, element)] = str(item[tag].value).strip()
                    continue
                override = profile.overrides.get(tag)
                creator = creators.get((group, element >> 8))
                if not (override and override.action == "keep") and not profile.is_safe_private(
                        group, creator, element):
                    problems.append(f"private element {path}{tag_str(tag)} is not safe to keep")
                    continue
            elif tag in profile.overrides:
                continue
            elif profile.code_for(tag, sop_class) == "X":
                problems.append(f"{path}{tag_str(tag)} should have been removed")
                continue
            vr = element_vr(item, tag)
            if vr == "SQ":
                for i, sub in enumerate(item[tag].value or ()):
                    check(sub, f"{path}{tag_str(tag)}[{i}].", False)
                continue
            if vr not in STRING_VRS:
                continue
            for value in _text_values(item, tag):
                if value in exact or (len(value) >= LONG_IDENTIFIER
                                      and any(v in value for v in long_ones)):
                    problems.append(f"an original identifier survives in {path}{tag_str(tag)}")
                    break

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        check(meta, "file meta ", False)
    check(ds, "", True)
    return problems
