"""`gantry deidentify`, `gantry audit`, `gantry diff`: the engine over files and folders.

Each command imports what it runs when it runs (the `gantry` process's start is part of every
command's time): `deidentify --scheduler` never imports pydicom in the client, and a run whose
progress bar is not shown never imports rich."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.commands.args import exit_on_sigterm as _exit_on_sigterm
from gateway.commands.args import positive as _positive
from gateway.config import Config, ConfigError, load_config
from gateway.sitekey import SiteKeyError, load_site_key

if TYPE_CHECKING:
    from gateway.pipeline import Outcome
    from gateway.risk import RiskReport


def register(sub: argparse._SubParsersAction, command: str | None = None) -> None:
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
    progress = _Progress(args.input) if not args.quiet and sys.stderr.isatty() else None

    def on_result(src: Path, outcome: Outcome) -> None:
        reason = getattr(outcome, "reason", None)  # Quarantined (never imported here)
        if reason is not None and not args.quiet:
            line = f"quarantined {src}: {reason}"
            if progress is not None:
                progress.say(line)
            else:
                print(line, file=sys.stderr)
        if progress is not None:
            progress.advance()

    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with progress or _NoProgress():
            if args.scheduler is not None:
                from gateway.dask_batch import run_batch_dask

                summary = run_batch_dask(args.input, args.output, config, args.scheduler,
                                         on_result, profile=args.profile)
            else:
                from gateway.batch import run_batch

                summary = run_batch(args.input, args.output, config, key, args.workers,
                                    on_result, profile=args.profile)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # The command ends here: what the run made is frozen out of the garbage collector, so the
    # interpreter's exit does not walk it all again (40-50 ms of a 2,000-file run here).
    gc.freeze()
    from gateway.batch_results import CONFLICT

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


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


class _Progress:
    """The progress bar on a terminal (rich), redrawn from the results, at most 10 times a
    second, not by rich's refresh thread: local workers are forked, and a process with threads
    is not safe to fork."""

    def __init__(self, source: Path) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from gateway.batch_results import iter_inputs

        self.console = Console(stderr=True)
        self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=self.console,
                            auto_refresh=False)
        self.task = self.bar.add_task("de-identifying",
                                      total=sum(1 for _ in iter_inputs(source)))
        self.drawn = 0.0

    def __enter__(self) -> None:
        self.bar.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def say(self, line: str) -> None:
        # One line per file, never wrapped at the console's width.
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def advance(self) -> None:
        self.bar.advance(self.task)
        if time.monotonic() - self.drawn > 0.1:
            self.drawn = time.monotonic()
            self.bar.refresh()


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
    from gateway.risk import audit_paths
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
    from gateway.batch_results import iter_inputs
    from gateway.risk import audit_paths
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
    if args.json:
        import json

        print(json.dumps(_audit_json(session), indent=2))
    else:
        print(_audit_text(session))
    status = 0
    if session.unreadable:
        status = 1
    if args.fail_on_risk is not None and (session.score or 0) > args.fail_on_risk:
        print(f"gantry audit: risk {session.score} is above --fail-on-risk "
              f"{args.fail_on_risk}", file=sys.stderr)
        status = 1
    return status


def _audit_json(session: RiskReport) -> dict:
    from dataclasses import asdict

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
    from gateway.risk import LEVELS

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
    from gateway.deid.diff import diff
    from gateway.dicomio import read_full

    a, b = read_full(args.a), read_full(args.b)
    changes = diff(a, b)
    for change in changes:
        print(f"{change.kind:8s} {change.vr:2s} {change.path}")
    print(f"{len(changes)} differences")
    return 0
