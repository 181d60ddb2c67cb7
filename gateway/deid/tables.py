"""The PS3.15 tables shipped as package data: Table E.1-1 and Table E.3.10-1, loaded lazily."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

EDITION = "2026d"
E1_1_FILE = f"ps315_table_E.1-1_{EDITION}.csv"
E3_10_1_FILE = f"ps315_table_E.3.10-1_safe_private_{EDITION}.csv"

# Columns of Table E.1-1 after the Basic Profile column, in the standard's order.
OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)


@dataclass(frozen=True)
class E11Row:
    """One row of Table E.1-1: the attribute, its tag pattern and an action code per column."""

    name: str
    tag: str  # as printed: "(0010,0010)", "(50xx,xxxx)", "(gggg,eeee) where gggg is odd"
    retired: bool
    basic: str
    options: dict[str, str]  # column -> code ('' when the option says nothing)

    @property
    def is_pattern(self) -> bool:
        return "x" in self.tag.lower() or "gggg" in self.tag

    @property
    def tag_int(self) -> int:
        group, element = self.tag.strip("()").split(",")
        return int(group + element, 16)


@dataclass(frozen=True)
class SafePrivate:
    """One row of Table E.3.10-1: a private element safe to keep under Retain Safe Private."""

    group: int
    element_offset: int  # low byte of the element within its private block
    creator: str
    vr: str


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files("gateway.deid").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@cache
def table_e1_1() -> tuple[E11Row, ...]:
    """All rows of Table E.1-1 (single tags and the four pattern rows)."""
    return tuple(
        E11Row(
            name=r["name"],
            tag=r["tag"],
            retired=r["retired"] == "Y",
            basic=r["basic_profile"],
            options={c: r[c] for c in OPTION_COLUMNS},
        )
        for r in _read(E1_1_FILE)
    )


@cache
def table_e3_10_1() -> tuple[SafePrivate, ...]:
    """All rows of Table E.3.10-1 (safe private attributes)."""
    rows = []
    for r in _read(E3_10_1_FILE):
        group, element = r["tag"].strip("()").split(",")
        rows.append(
            SafePrivate(int(group, 16), int(element[2:], 16), r["private_creator"], r["vr"]))
    return tuple(rows)
