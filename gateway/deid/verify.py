"""The gatekeeper: inspect a remediated object again and refuse it if anything survived."""

from __future__ import annotations

from pydicom.dataset import Dataset

from gateway.deid.keyed import CLASS_UID_TAGS
from gateway.deid.profile import Profile
from gateway.deid.remediate import ENCRYPTED_ATTRIBUTES, Remediation, element_vr
from gateway.deid.tags import tag_str
from gateway.deid.values import text_values
from gateway.deid.vr import STRING_VRS

LONG_IDENTIFIER = 6  # identifiers this long are also looked for inside other values


def verify(ds: Dataset, remediation: Remediation, profile: Profile) -> list[str]:
    """Problems that make `ds` unsafe to export; empty when it passes. Names tags, never values."""
    exact = remediation.identifiers
    long_ones = [v for v in exact if len(v) >= LONG_IDENTIFIER]
    problems: list[str] = []
    sop_class = str(ds.get("SOPClassUID", "") or "")

    def check(item: Dataset, path: str, top: bool) -> None:
        creators: dict[tuple[int, int], str] = {}
        for key in sorted(item._dict, key=int):  # the store's keys; plain ints for the profile
            tag = int(key)
            if tag == ENCRYPTED_ATTRIBUTES and top:
                continue  # the one permitted carrier of originals (sealed)
            group, element = tag >> 16, tag & 0xFFFF
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
            elif tag in profile.overrides:
                continue
            elif profile.code_for(tag, sop_class) == "X":
                problems.append(f"{path}{tag_str(tag)} should have been removed")
                continue
            vr = element_vr(item, key)
            if vr == "SQ":
                for i, sub in enumerate(item[key].value or ()):
                    check(sub, f"{path}{tag_str(tag)}[{i}].", False)
                continue
            if vr not in STRING_VRS or tag in CLASS_UID_TAGS:  # a class is no identifier
                continue
            for value in text_values(item, key):
                if value in exact or (len(value) >= LONG_IDENTIFIER
                                      and any(v in value for v in long_ones)):
                    problems.append(f"an original identifier survives in {path}{tag_str(tag)}")
                    break

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        check(meta, "file meta ", False)
    check(ds, "", True)
    return problems
