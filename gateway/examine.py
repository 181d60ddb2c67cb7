"""The examine step of curation: a machine-centric index of a set of DICOM headers.

For each machine signature (Manufacturer / ManufacturerModelName) the index counts objects,
image sizes, modalities, SOP classes and BurnedInAnnotation values, how many are at risk of
burned-in text, which rules cover them, and how many would be refused (at risk, no rule). It only
keeps device text and counts, never patient data (gateway/scaffold.py turns an index into a
starting configuration); `ctp_rules_yaml` turns a CTP script into YAML rules.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom.dataset import Dataset

from gateway.deid.ctp_script import Signature, first_match
from gateway.deid.redact import Decision, Redactor
from gateway.deid.signatures import expr_to_match
from gateway.dicomio import DicomReadError, read_header


def _size(ds: Dataset) -> str:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    return f"{rows}x{cols}" if rows and cols else "-"


def _text(ds: Dataset, keyword: str) -> str:
    return " ".join(str(ds.get(keyword, "") or "").split())


@dataclass(frozen=True)
class MachineRecord:
    """What the index keeps of one object: device text and flags, never patient data."""

    signature: str
    manufacturer: str
    model: str
    size: str
    modality: str
    sop_class: str
    burned_in: str  # YES / NO / absent
    at_risk: bool
    rule: str  # '' when no rule covers it
    refused: bool


def machine_record(header: Dataset, decision: Decision) -> MachineRecord:
    """Describe one header by its machine signature and the redaction decision for it."""
    return MachineRecord(
        signature=decision.signature,
        manufacturer=_text(header, "Manufacturer"),
        model=_text(header, "ManufacturerModelName"),
        size=_size(header),
        modality=_text(header, "Modality"),
        sop_class=str(header.get("SOPClassUID", "") or ""),
        burned_in=_text(header, "BurnedInAnnotation").upper() or "absent",
        at_risk=decision.at_risk,
        rule=decision.rule or "",
        refused=decision.refused,
    )


@dataclass
class Group:
    """Objects of one machine signature and one image size (a scaffold entry)."""

    manufacturer: str
    model: str
    size: str
    count: int = 0
    at_risk: int = 0
    ctp: Counter[str] = field(default_factory=Counter)  # CTP signature name ('' = none)


@dataclass
class MachineEntry:
    """Everything the index knows about one machine signature."""

    signature: str
    count: int = 0
    sizes: Counter[str] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)
    sop_classes: Counter[str] = field(default_factory=Counter)
    burned_in: Counter[str] = field(default_factory=Counter)  # YES / NO / absent
    at_risk: int = 0
    rules: Counter[str] = field(default_factory=Counter)  # rule name ('' = no rule)
    refused: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "objects": self.count,
            "sizes": dict(self.sizes.most_common()),
            "modalities": dict(self.modalities.most_common()),
            "sop_classes": dict(self.sop_classes.most_common()),
            "burned_in_annotation": dict(self.burned_in.most_common()),
            "at_risk": self.at_risk,
            "covered": sum(n for name, n in self.rules.items() if name),
            "rules": {name: n for name, n in self.rules.most_common() if name},
            "refused": self.refused,
        }


class MachineIndex:
    """Accumulates headers; `add` is cheap, so the gateway can feed it what it receives."""

    def __init__(self, redactor: Redactor, ctp: list[Signature] | None = None) -> None:
        self.redactor = redactor
        self.ctp = ctp or []
        self.machines: dict[str, MachineEntry] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        self.unreadable = 0

    def add(self, header: Dataset) -> None:
        record = machine_record(header, self.redactor.decide(header))
        known = first_match(self.ctp, header) if self.ctp else None
        self.add_record(record, known.name if known else "")

    def add_record(self, record: MachineRecord, ctp_name: str = "") -> None:
        """Count one object already described (as the gateway stores what it receives)."""
        entry = self.machines.setdefault(record.signature, MachineEntry(record.signature))
        entry.count += 1
        entry.sizes[record.size] += 1
        entry.modalities[record.modality or "-"] += 1
        entry.sop_classes[record.sop_class or "-"] += 1
        entry.burned_in[record.burned_in] += 1
        entry.at_risk += record.at_risk
        entry.rules[record.rule] += 1
        entry.refused += record.refused
        group = self.groups.setdefault(
            (record.signature, record.size),
            Group(record.manufacturer, record.model, record.size),
        )
        group.count += 1
        group.at_risk += record.at_risk
        group.ctp[ctp_name] += 1

    def entries(self) -> list[MachineEntry]:
        return sorted(self.machines.values(), key=lambda e: (-e.count, e.signature))

    def as_json(self) -> str:
        total = sum(e.count for e in self.machines.values())
        return json.dumps({"objects": total, "unreadable": self.unreadable,
                           "machines": [e.as_dict() for e in self.entries()]}, indent=2)

    def table(self) -> str:
        head = ("machine signature", "objects", "modalities", "sizes", "burned-in",
                "at risk", "covered by", "refused")
        rows = [head]
        for e in self.entries():
            d = e.as_dict()
            rows.append((
                e.signature, str(e.count), _counts(e.modalities), _counts(e.sizes),
                _counts(e.burned_in), str(e.at_risk),
                _counts(Counter(d["rules"])) or "-", str(e.refused),
            ))
        widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(head))]
        lines = ["  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        total = sum(e.count for e in self.machines.values())
        refused = sum(e.refused for e in self.machines.values())
        lines.append(f"\n{total} objects, {len(self.machines)} machine signatures, "
                     f"{refused} refused (burned-in text risk, no rule), "
                     f"{self.unreadable} unreadable files")
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} ({n})" if len(counter) > 1 else k for k, n in counter.most_common())


def iter_files(root: Path) -> Iterator[Path]:
    """Every file under `root` (or `root` itself), in a stable order."""
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def index_folder(root: Path, redactor: Redactor, ctp: list[Signature] | None = None
                 ) -> MachineIndex:
    """Read every header under `root` into a MachineIndex (unreadable files are only counted)."""
    index = MachineIndex(redactor, ctp)
    for path in iter_files(root):
        try:
            header = read_header(path)
        except DicomReadError:
            index.unreadable += 1
            continue
        index.add(header)
    return index


# ---------------------------------------------------------------------------- YAML writers


def ctp_rules_yaml(signatures: Iterable[Signature], source: str = "") -> str:
    """CTP signatures → a `redaction.rules` YAML document, in the same order (first match wins)."""
    sigs = list(signatures)
    rules = []
    for sig in sigs:
        name = f"{sig.name} {sig.label}".strip() if sig.label else sig.name
        rules.append({"name": name, "match": expr_to_match(sig.expr),
                      "regions": [list(r) for r in sig.regions]})
    head = (f"# Converted by `gantry rules import-ctp` from {source or 'a CTP script'}: "
            f"{len(sigs)} signatures.\n# The first rule that matches wins, top to bottom.\n")
    return head + yaml.safe_dump({"redaction": {"rules": rules}}, sort_keys=False,
                                 allow_unicode=True, width=100)
