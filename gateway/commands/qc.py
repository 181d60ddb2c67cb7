"""`gantry qc PATH|DB [--json]`: fleet QC (per-machine statistics, outliers with reasons)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gateway.commands.batch import _positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qc", help="fleet QC: per-machine image statistics and outliers")
    p.add_argument("path", type=Path, help="a DICOM file or folder tree, or a session database")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--slices", type=_positive, default=5,
                   help="slices read per series for pixel statistics (default 5)")
    p.set_defaults(func=cmd_qc)


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def print_result(result) -> None:  # noqa: ANN001 - gateway.qc.QCResult
    """The per-machine table, then the outliers with their reasons."""
    machines = result.machines()
    cols = ("series", "files", "kvp", "air", "tissue", "noise")
    width = max([len(m) for m in machines] + [7])
    print(f"{'machine':<{width}}  " + "  ".join(f"{c:>7}" for c in cols))
    for name, row in machines.items():
        print(f"{name:<{width}}  " + "  ".join(f"{_fmt(row[c]):>7}" for c in cols))
    if not result.outliers:
        print("no outliers")
    for o in result.outliers:
        print(f"OUTLIER {o.label}: {o.reason} (robust z {o.z})")
    for line in result.unreadable:
        print(f"skipped {line}")


def cmd_qc(args: argparse.Namespace) -> int:
    from gateway.qc import fleet_qc

    result = fleet_qc([args.path], slices=args.slices)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_result(result)
    return 0
