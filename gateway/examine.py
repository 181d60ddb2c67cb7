"""The examine step of curation: a machine-centric index of a set of DICOM headers.

For each machine signature (Manufacturer / ManufacturerModelName) the index counts objects,
image sizes, modalities, SOP classes and BurnedInAnnotation values, how many are at risk of
burned-in text, which rules cover them, and how many would be refused (at risk, no rule). It only
keeps device text and counts, never patient data (gateway/scaffold.py turns an index into a
starting configuration); `ctp_rules_yaml` turns a CTP script into YAML rules.

With OCR (`index_folder(..., ocr=policy)`), each at-risk image is also read for burned-in text:
per machine, how many images carried text, how many identifying text and of what kind (a name or
ID of the object, a date, a long number, a configured pattern), and the rectangle that holds all
identifying text found, a starting point for a rule. Words themselves are never kept.
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
from gateway.deid.identifiers import IdentifierSet
from gateway.deid.ocr import TextPolicy, read_words
from gateway.deid.redact import Decision, RedactionError, Redactor, decode_pixels, palette
from gateway.deid.signatures import expr_to_match
from gateway.deid.validity import device_text
from gateway.dicomio import DicomReadError, read_full, read_header


def _size(ds: Dataset) -> str:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    return f"{rows}x{cols}" if rows and cols else "-"


def _text(ds: Dataset, keyword: str) -> str:
    return device_text(ds, keyword)  # never a value invalid for its VR: it may hide identifiers


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
        sop_class=_text(header, "SOPClassUID"),
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
    text: TextSeen | None = None  # with OCR: what the at-risk images carried

    def as_dict(self) -> dict[str, Any]:
        text = {"text": self.text.as_dict()} if self.text is not None else {}
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
            **text,
        }


@dataclass
class TextSeen:
    """What OCR found in the at-risk images of one machine (counts and places, no words)."""

    read: int = 0  # images OCR read
    unreadable: int = 0  # images whose pixels could not be decoded
    with_text: int = 0
    identifying: int = 0  # images with identifying text
    kinds: Counter[str] = field(default_factory=Counter)  # kind → images
    region: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 of all identifying text

    def add(self, words: int, findings: list) -> None:
        self.read += 1
        self.with_text += words > 0
        self.identifying += bool(findings)
        for kind in {f.kind for f in findings}:
            self.kinds[kind] += 1
        for f in findings:
            x, y, w, h = f.box
            x0, y0, x1, y1 = self.region or (x, y, x + w, y + h)
            self.region = (min(x0, x), min(y0, y), max(x1, x + w), max(y1, y + h))

    def as_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.region or (0, 0, 0, 0)
        return {"read": self.read, "unreadable": self.unreadable, "with_text": self.with_text,
                "identifying": self.identifying, "kinds": dict(self.kinds.most_common()),
                "identifying_region": [x0, y0, x1 - x0, y1 - y0] if self.region else None}

    def summary(self) -> str:
        if not self.read:
            return "-" if not self.unreadable else f"{self.unreadable} unreadable"
        kinds = ", ".join(f"{k} ({n})" for k, n in self.kinds.most_common())
        return (f"{self.with_text}/{self.read} with text, {self.identifying} identifying"
                + (f": {kinds}" if kinds else ""))


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

    def add_text(self, ds: Dataset, policy: TextPolicy) -> None:
        """Read one whole object's burned-in text by OCR into its machine's counts."""
        entry = self.machines[self.redactor.decide(ds).signature]
        seen = entry.text = entry.text or TextSeen()
        try:
            pixels = decode_pixels(ds)
        except (RedactionError, ValueError):  # no pixel data, or data that does not decode
            seen.unreadable += 1
            return
        words = read_words(pixels.array, pixels.photometric, palette(ds, pixels))
        seen.add(len(words), policy.classify(words, [IdentifierSet.from_dataset(ds).spans]))

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
        ocr = any(e.text is not None for e in self.machines.values())
        head = ("machine signature", "objects", "modalities", "sizes", "burned-in",
                "at risk", "covered by", "refused") + (("burned-in text (OCR)",) if ocr else ())
        rows = [head]
        for e in self.entries():
            d = e.as_dict()
            rows.append((
                e.signature, str(e.count), _counts(e.modalities), _counts(e.sizes),
                _counts(e.burned_in), str(e.at_risk),
                _counts(Counter(d["rules"])) or "-", str(e.refused),
            ) + ((e.text.summary() if e.text else "-",) if ocr else ()))
        widths = [min(48 if i < 8 else 96, max(len(r[i]) for r in rows))
                  for i in range(len(head))]
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


def index_folder(root: Path, redactor: Redactor, ctp: list[Signature] | None = None,
                 ocr: TextPolicy | None = None) -> MachineIndex:
    """Read every header under `root` into a MachineIndex (unreadable files are only counted);
    with `ocr`, also the burned-in text of every at-risk image."""
    index = MachineIndex(redactor, ctp)
    for path in iter_files(root):
        try:
            header = read_header(path)
        except DicomReadError:
            index.unreadable += 1
            continue
        index.add(header)
        if ocr is not None and redactor.at_risk(header):
            try:
                full = read_full(path)
            except DicomReadError:
                full = header  # no pixel data: counted as unreadable
            index.add_text(full, ocr)
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
