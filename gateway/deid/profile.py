"""The profile as data: Table E.1-1 (+ options) and Table E.3.10-1 compiled to a tag → action map.

Combined codes are resolved to the member that keeps the object valid whatever the attribute's
Type in the IOD: X/Z → Z, X/D, Z/D, X/Z/D → D, X/Z/U* → U (sequences, which have no
dummy value: X/Z, X/D, X/Z/D → X, except Type 2 sequences → Z). When several options speak for one
attribute, C beats K (the more protective wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import DicomDictionary

from gateway.config import OPTION_NAMES, ProfileConfig, TagOverride
from gateway.deid.tables import E11Row, table_e1_1, table_e3_10_1
from gateway.deid.tags import parse_tag_key

RESOLVE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
# A sequence has no dummy value: X/D and X/Z/D remove it, X/Z removes it unless it is Type 2.
RESOLVE_SQ = {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "U"}
TYPE2_SEQUENCES = frozenset({0x00400555})  # Acquisition Context Sequence
# Sequences that are Type 2 only in some IODs: tag -> SOP Class UID prefix of those IODs.
TYPE2_IN_IOD = {0x00081111: "1.2.840.10008.5.1.4.1.1.88."}  # Ref. PPS Sequence in SR Documents

# CID 7050 codes: the profile and each option (PS3.16).
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
    "clean_visual_features": ("113102", "Clean Recognizable Visual Features Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_long_modified_dates": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}


def resolve_code(row: E11Row, columns: tuple[str, ...]) -> str:
    """The single action code for `row` under the options named by `columns`."""
    spoken = {row.options[c] for c in columns if row.options.get(c)}
    if "C" in spoken:
        return "C"
    if "K" in spoken:
        return "K"
    if not row.is_pattern and dictionary_vr(row.tag_int) == "SQ":
        if row.basic == "X/Z" and row.tag_int in TYPE2_SEQUENCES:
            return "Z"
        return RESOLVE_SQ.get(row.basic, row.basic)
    return RESOLVE.get(row.basic, row.basic)


def dictionary_vr(tag: int) -> str:
    """The VR the data dictionary gives `tag` ('' when unknown)."""
    entry = DicomDictionary.get(tag)
    return entry[0] if entry else ""


@dataclass(frozen=True)
class Profile:
    """A compiled profile: what to do with each tag, and the settings actions need."""

    columns: tuple[str, ...]
    actions: dict[int, str]
    curve_code: str
    overlay_data_code: str
    overlay_comments_code: str
    private_code: str
    # (group, creator, element offset) → the VR Table E.3.10-1 gives it ("" if none)
    safe_private: dict[tuple[int, str, int], str]
    overrides: dict[int, TagOverride] = field(default_factory=dict)
    date_shift_days: tuple[int, int] = (-365, -1)
    pseudonym_prefix: str = "GANTRY-"
    # remediate.public_action's answers, by (tag, VR, SOP class): a function of those and of
    # this (immutable) profile
    actions_seen: dict[tuple[int, str, str], str | None] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, cfg: ProfileConfig) -> Profile:
        return _compile(cfg.columns, tuple(sorted(cfg.phi_tags.items())), cfg.date_shift_days,
                        cfg.pseudonym_prefix)

    @classmethod
    def basic(cls, *option_names: str) -> Profile:
        """The Basic Profile plus options named as the standard names them."""
        return cls.from_config(ProfileConfig(options=tuple(option_names)))

    def has(self, column: str) -> bool:
        return column in self.columns

    @property
    def retain_uids(self) -> bool:
        return "retain_uids" in self.columns

    @property
    def modified_dates(self) -> bool:
        return "retain_long_modified_dates" in self.columns

    @property
    def full_dates(self) -> bool:
        return "retain_long_full_dates" in self.columns

    def code_for(self, tag: int, sop_class: str = "") -> str | None:
        """The action code for a public tag, or None when Table E.1-1 does not list it."""
        tag = int(tag)  # a plain int: BaseTag's __eq__ makes dict lookups slow
        code = self.actions.get(tag)
        if code is not None:
            if code == "X" and tag in TYPE2_IN_IOD and sop_class.startswith(TYPE2_IN_IOD[tag]):
                return "Z"
            return code
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF and not group & 1:
            return self.curve_code
        if 0x6000 <= group <= 0x60FF and not group & 1:
            element = tag & 0xFFFF
            if element == 0x3000:
                return self.overlay_data_code
            if element == 0x4000:
                return self.overlay_comments_code
        return None

    def is_safe_private(self, group: int, creator: str | None, element: int) -> bool:
        """Whether a private element is kept under Retain Safe Private (Table E.3.10-1)."""
        if not self.has("retain_safe_private") or creator is None:
            return False
        return (group, creator.strip(), element & 0xFF) in self.safe_private

    def safe_private_vr(self, group: int, creator: str, element: int) -> str:
        """The VR Table E.3.10-1 gives a safe private element ("" if it gives none; the first
        of two, as in OW/OB)."""
        vr = self.safe_private.get((group, creator.strip(), element & 0xFF), "")
        return vr.replace("/", " ").split(" ")[0] if vr else ""

    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 (code value, meaning) of the profile and every option applied."""
        return [METHOD_CODES["basic"]] + [METHOD_CODES[c] for c in self.columns]

    def describe(self) -> str:
        names = {v: k for k, v in OPTION_NAMES.items()}
        return "; ".join(["Basic Application Confidentiality Profile"]
                         + [names[c] for c in self.columns])


@cache
def _compile(columns: tuple[str, ...], overrides: tuple[tuple[str, TagOverride], ...],
             date_shift_days: tuple[int, int], prefix: str) -> Profile:
    ordered = tuple(c for c in OPTION_NAMES.values() if c in columns)
    actions: dict[int, str] = {}
    patterns: dict[str, str] = {}
    for row in table_e1_1():
        code = resolve_code(row, ordered)
        if row.is_pattern:
            patterns[row.tag.split(" ")[0]] = code
        else:
            actions[row.tag_int] = code
    safe = {(r.group, r.creator, r.element_offset): r.vr.strip() for r in table_e3_10_1()}
    return Profile(
        columns=ordered,
        actions=actions,
        curve_code=patterns["(50xx,xxxx)"],
        overlay_data_code=patterns["(60xx,3000)"],
        overlay_comments_code=patterns["(60xx,4000)"],
        private_code=patterns["(gggg,eeee)"],
        safe_private=safe,
        overrides={parse_tag_key(k): v for k, v in overrides},
        date_shift_days=date_shift_days,
        pseudonym_prefix=prefix,
    )
