"""What changed between two objects, element by element (values never printed for PN/IDs)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.deid.tags import tag_str


@dataclass(frozen=True)
class Change:
    """One element that differs: 'added', 'removed' or 'changed'."""

    path: str
    kind: str
    vr: str


def diff(a: Dataset, b: Dataset, path: str = "") -> list[Change]:
    """Element-by-element differences from `a` to `b`, at every depth (file meta included)."""
    changes: list[Change] = []
    if not path:
        meta_a = getattr(a, "file_meta", None) or Dataset()
        meta_b = getattr(b, "file_meta", None) or Dataset()
        changes += diff(meta_a, meta_b, "file meta ")
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        where = f"{path}{tag_str(tag)}"
        if tag not in b:
            changes.append(Change(where, "removed", a[tag].VR))
        elif tag not in a:
            changes.append(Change(where, "added", b[tag].VR))
        else:
            ea, eb = a[tag], b[tag]
            if ea.VR == "SQ" and eb.VR == "SQ":
                items_a, items_b = list(ea.value or ()), list(eb.value or ())
                if len(items_a) != len(items_b):
                    changes.append(Change(where, "changed", "SQ"))
                    continue
                for i, (ia, ib) in enumerate(zip(items_a, items_b, strict=True)):
                    changes += diff(ia, ib, f"{where}[{i}].")
            elif ea.value != eb.value:
                changes.append(Change(where, "changed", eb.VR))
    return changes
