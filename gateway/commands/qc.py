"""`gantry qc PATH|DB [--json] [--output-only]`: fleet QC (per-machine statistics, outliers
with reasons); `gantry report PATH|DB|--config FILE -o FILE [--output-only]`: the visual report
of a folder of DICOM files, a curation session or a gateway node."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.commands.batch import _positive


def register(sub: argparse._SubParsersAction, command: str | None = None) -> None:
    p = sub.add_parser("qc", help="fleet QC: per-machine image statistics and outliers")
    p.add_argument("path", type=Path, help="a DICOM file or folder tree, or a session database")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--slices", type=_positive, default=5,
                   help="slices read per series for pixel statistics (default 5)")
    p.add_argument("--plots", type=Path, metavar="FOLDER",
                   help="also write the QC plots there as PNG files")
    p.add_argument("--output-only", action="store_true",
                   help="of a session database: QC of what its latest export wrote (scanners "
                        "named by a keyed hash of their serial number), not of the originals")
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("report", help="one self-contained HTML page: counts, risk, quarantine "
                                      "reasons, fleet QC, contact sheets")
    p.add_argument("source", type=Path, nargs="?",
                   help="a session database, or a DICOM file or folder tree")
    p.add_argument("--config", type=Path,
                   help="instead of a PATH or DB: the gateway of this configuration, from its "
                        "state (outcomes, quarantine reasons; thumbnails and QC of the originals "
                        "and outbox copies it still holds)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--output-only", action="store_true",
                   help="from de-identified objects alone, fit to share: a session's latest "
                        "export, a folder's files that declare their identity removed, a "
                        "gateway's outbox (without it the report shows originals: patient data)")
    p.set_defaults(func=cmd_report)


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def print_result(result) -> None:  # noqa: ANN001 - gateway.qc.QCResult
    """The per-machine table, then the outliers with their reasons."""
    machines = result.machines()
    cols = ("series", "files", "kvp", "air", "tissue", "p50", "noise")
    width = max([len(m) for m in machines] + [7])
    print(f"{'machine':<{width}}  " + "  ".join(f"{c:>7}" for c in cols))
    for name, row in machines.items():
        print(f"{name:<{width}}  " + "  ".join(f"{_fmt(row[c]):>7}" for c in cols))
    if not result.outliers:
        print("no outliers")
    for o in result.outliers:
        print(f"OUTLIER {o.label}: {o.reason} ({o.evidence})")
    for line in result.unreadable:
        print(f"skipped {line}")


def _session(path: Path):  # noqa: ANN202 - gateway.session.Session
    from gateway.session import Session
    from gateway.session.db import is_session_db

    if not (path.is_file() and is_session_db(path)):
        raise ValueError(f"{path}: not a session database (make one with gantry ingest)")
    return Session(path, progress=False)


def cmd_qc(args: argparse.Namespace) -> int:
    from gateway.qc import fleet_qc
    from gateway.session.db import is_session_db

    if args.path.is_file() and is_session_db(args.path):
        with _session(args.path) as session:
            result = session.qc(output=args.output_only, slices=args.slices)
    elif args.output_only:
        raise ValueError(f"{args.path}: --output-only is for a session database; for a folder, "
                         "give the folder the de-identified objects were written to")
    else:
        result = fleet_qc([args.path], slices=args.slices)
    if args.plots:
        from gateway.qc.plots import write_plots

        for f in write_plots(result, args.plots):
            print(f"plot written: {f}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_result(result)
    return 0


def node_report(config_path: Path, output: Path, output_only: bool) -> Path:
    """The report of a gateway node from its state: every job's machine, modality, outcome and
    reason; thumbnails and QC of what the node still holds (gateway.qc.sources.node_source)."""
    from gateway.commands.gateway import _open
    from gateway.deid.redact import Redactor
    from gateway.qc import fleet_qc
    from gateway.qc.report import write_report
    from gateway.qc.sources import NodeJob, node_source
    from gateway.sitekey import load_site_key

    config, state, store = _open(str(config_path))
    try:
        rows = store.conn.execute(
            "SELECT j.id, j.state, j.reason, m.manufacturer, m.model, m.modality "
            "FROM jobs j LEFT JOIN machines m ON m.job_id = j.id ORDER BY j.received_at"
        ).fetchall()
    finally:
        store.close()
    jobs = [NodeJob(job, outcome, reason,
                    " ".join(x for x in (maker, model) if x) or "unknown machine", modality or "?")
            for job, outcome, reason, maker, model, modality in rows]
    source = node_source(jobs, state, Redactor(config.redaction, config.base_dir),
                         output_only=output_only,
                         key=load_site_key(config) if output_only else None)
    qc = fleet_qc(source.qc_files, machines=source.machines) if source.qc_files else None
    return write_report(output, source.objects, qc=qc, output_only=output_only,
                        notes=source.notes,
                        title=f"Gantry gateway report: {config.network.ae_title}")


def folder_report(path: Path, output: Path, output_only: bool) -> Path:
    """The report of a DICOM file or folder tree (no session, no configuration)."""
    from gateway.qc import fleet_qc
    from gateway.qc.report import write_report
    from gateway.qc.sources import folder_source

    source = folder_source([path], output_only=output_only)
    return write_report(output, source.objects, qc=fleet_qc(source.qc_files),
                        output_only=output_only, notes=source.notes,
                        title=f"Gantry report: {path.resolve().name}")


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.session.db import is_session_db

    if (args.source is None) == (args.config is None):
        raise ValueError("gantry report: give a session database, a DICOM file or folder, or "
                         "--config FILE (one of them)")
    if args.config is not None:
        out = node_report(args.config, args.output, args.output_only)
    elif args.source.is_file() and is_session_db(args.source):
        with _session(args.source) as session:
            out = session.report(args.output, output_only=args.output_only)
    else:
        out = folder_report(args.source, args.output, args.output_only)
    print(f"report written: {out}" + ("" if args.output_only else
                                      " (it shows original images: patient data)"))
    return 0
