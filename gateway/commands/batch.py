"""`gantry deidentify`, `gantry audit`, `gantry diff`: the engine over files and folders."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gateway.batch import CONFLICT, iter_inputs, run_batch
from gateway.commands.args import exit_on_sigterm as _exit_on_sigterm
from gateway.commands.args import positive as _positive
from gateway.config import Config, ConfigError, load_config
from gateway.deid.diff import diff
from gateway.dicomio import read_full
from gateway.pipeline import Forwarded, Outcome
from gateway.risk import LEVELS, RiskReport, audit_paths
from gateway.sitekey import SiteKeyError, load_site_key


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deidentify", help="de-identify a file or folder tree into OUTPUT")
    p.add_argument("input", type=Path, help="a DICOM file, or a folder tree of them")
    p.add_argument("output", type=Path,
                   help="folder outside INPUT for the de-identified objects (by new study and "
                        "series UID); refused inputs go to OUTPUT-quarantine with their reasons")
    p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    p.add_argument("--profile", default="default",
                   help="profile name from the config's `profiles` (default: its `profile`)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="processes (default: all cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster at ADDRESS (e.g. tcp://host:8786; needs "
                        "gantry[dask]); INPUT and OUTPUT must be at the same paths on its "
                        "workers, which read the site key themselves")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no line per refused file: the summary only (the "
                        "reasons stay in OUTPUT-quarantine)")
    p.set_defaults(func=cmd_deidentify)

    p = sub.add_parser("audit", help="what the configuration will change, and risk scores")
    p.add_argument("path", type=Path,
                   help="a DICOM file, a folder tree of them, or a session database")
    p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    p.add_argument("--profile", default="default", help="profile name from the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fail-on-risk", type=_risk_limit, metavar="N",
                   help="exit status 1 when the risk of the whole is above N (0-100)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("diff", help="what changed between two objects, element by element")
    p.add_argument("a", type=Path, help="a DICOM file (e.g. the original)")
    p.add_argument("b", type=Path, help="another (e.g. its de-identified copy)")
    p.set_defaults(func=cmd_diff)


def cmd_deidentify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # On a cluster the workers read the key (it never travels); here only a local run needs it.
    key = load_site_key(config) if args.scheduler is None else b""
    if not args.input.exists():
        print(f"gantry: {args.input}: no such file or folder", file=sys.stderr)
        return 2
    if args.profile != "default" and args.profile not in config.profiles:
        return _no_profile("deidentify", args.profile, config)
    total = sum(1 for _ in iter_inputs(args.input))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    # Redrawn from on_result, not by rich's refresh thread: the workers are forked, and a
    # process with threads is not safe to fork.
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                        disable=args.quiet or not console.is_terminal, auto_refresh=False)
    with progress:
        task = progress.add_task("de-identifying", total=total)
        drawn = 0.0

        def on_result(src: Path, outcome: Outcome) -> None:
            nonlocal drawn
            progress.advance(task)
            if not isinstance(outcome, Forwarded) and not args.quiet:
                # One line per file, never wrapped at the console's width (80 when piped).
                console.print(f"quarantined {src}: {outcome.reason}", highlight=False,
                              markup=False, soft_wrap=True)
            if time.monotonic() - drawn > 0.1:
                drawn = time.monotonic()
                progress.refresh()

        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            if args.scheduler is not None:
                from gateway.dask_batch import run_batch_dask

                summary = run_batch_dask(args.input, args.output, config, args.scheduler,
                                         on_result, profile=args.profile)
            else:
                summary = run_batch(args.input, args.output, config, key, args.workers,
                                    on_result, profile=args.profile)
        finally:
            signal.signal(signal.SIGTERM, previous)
    for copy, first in summary.duplicates:
        print(f"duplicate {copy}: the same bytes as {first}, written once")
    for src in summary.conflicts:
        print(f"quarantined {src}: {CONFLICT}")
    duplicates = f", {len(summary.duplicates)} duplicates" if summary.duplicates else ""
    print(f"{summary.total} objects: {summary.written} de-identified, "
          f"{summary.quarantined} quarantined{duplicates}")
    if summary.counts:
        actions = ", ".join(f"{code} {n}" for code, n in sorted(summary.counts.items()))
        print(f"elements changed per action: {actions}")
    print(f"output: {summary.output}")
    if summary.quarantined:
        reasons = ", ".join(f"{r} ({n})" for r, n in summary.reasons.most_common())
        print(f"quarantine: {summary.quarantine} — {reasons}")
        return 1
    return 0


def _no_profile(command: str, name: str, config: Config) -> int:
    known = ", ".join(["default", *config.profiles])
    print(f"gantry {command}: no profile {name!r} in {config.source} (known: {known})",
          file=sys.stderr)
    return 2


def _risk_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a risk score (0 to 100)")
    return value


def _session_audit(db: Path, config_path: Path | None) -> RiskReport:
    """A session database's audit, under its configuration (or `config_path`, loaded into it)."""
    from gateway.session import Session

    with Session(db) as session:
        if config_path is not None:
            session.load_config(config_path)
        audit = getattr(session, "audit", None)
        if audit is not None:
            return audit()
        return audit_paths((i.path for i in session.instances), session.config,
                           _key_or_none(session.config))


def _key_or_none(config: Config) -> bytes | None:
    """With the key, groups are named as the output names them; without, by number."""
    try:
        return load_site_key(config)
    except (ConfigError, SiteKeyError):
        return None


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.session.db import is_session_db

    if not args.path.exists():
        print(f"gantry: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    if args.path.is_file() and is_session_db(args.path):
        if args.profile != "default":
            print("gantry audit: --profile is for a file or folder; a session audits with its "
                  "configuration's profile", file=sys.stderr)
            return 2
        session = _session_audit(args.path, args.config)
    else:
        config = load_config(args.config)
        if args.profile != "default" and args.profile not in config.profiles:
            return _no_profile("audit", args.profile, config)
        session = audit_paths(iter_inputs(args.path), config, _key_or_none(config), args.profile)
    print(json.dumps(_audit_json(session), indent=2) if args.json else _audit_text(session))
    status = 0
    if session.unreadable:
        status = 1
    if args.fail_on_risk is not None and (session.score or 0) > args.fail_on_risk:
        print(f"gantry audit: risk {session.score} is above --fail-on-risk "
              f"{args.fail_on_risk}", file=sys.stderr)
        status = 1
    return status


def _audit_json(session: RiskReport) -> dict:
    def tree(report: RiskReport) -> dict:
        if report.level == "series":
            return {"series": report.label, "score": report.score, "band": report.band,
                    "files": [r.label for r in report.children]}
        key = report.level
        return {key: report.label, "score": report.score, "band": report.band,
                "instances": report.instances,
                "children": [tree(c) for c in report.children if c.level != "instance"]}

    instances = session.walk("instance")
    return {
        "score": session.score, "band": session.band, "instances": session.instances,
        "objects": [{"file": r.label, "score": r.score, "band": r.band,
                     "findings": [asdict(f) for f in r.findings]}
                    for r in instances if r.score is not None],
        "unreadable": [{"file": r.label, "problem": r.problem}
                       for r in instances if r.score is None],
        "patients": [tree(p) for p in session.children if p.level == "patient"],
    }


def _audit_text(session: RiskReport) -> str:
    lines = []
    for report in session.walk("instance"):
        if report.score is None:
            lines.append(f"  - UNREADABLE {report.label}: {report.problem}")
            continue
        actions: dict[str, int] = {}
        for f in report.findings:
            actions[f.action] = actions.get(f.action, 0) + 1
        summary = " ".join(f"{a}:{n}" for a, n in sorted(actions.items()))
        lines.append(f"{report.score:3d} {report.band:8s} {report.label}  ({summary})")
    for group in session.walk():
        if group.level in ("patient", "study", "series"):
            indent = "  " * LEVELS.index(group.level)
            lines.append(f"{indent}{group.level} {group.label}: {group.instances} objects, "
                         f"risk {group.score} {group.band}")
    score = "-" if session.score is None else session.score
    lines.append(f"session: {session.instances - session.unreadable} objects, risk {score} "
                 f"{session.band}, {session.unreadable} unreadable")
    return "\n".join(lines)


def cmd_diff(args: argparse.Namespace) -> int:
    a, b = read_full(args.a), read_full(args.b)
    changes = diff(a, b)
    for change in changes:
        print(f"{change.kind:8s} {change.vr:2s} {change.path}")
    print(f"{len(changes)} differences")
    return 0
