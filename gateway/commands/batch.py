"""`gantry deidentify`, `gantry audit`, `gantry diff`: the engine over files and folders."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gateway.batch import iter_inputs, run_batch
from gateway.config import load_config
from gateway.deid.diff import diff
from gateway.deid.inspect import band, folder_score, inspect
from gateway.deid.profile import Profile
from gateway.dicomio import DicomReadError, read_full, read_header
from gateway.pipeline import Forwarded, Outcome
from gateway.safetext import safe_message
from gateway.sitekey import load_site_key


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of processes (1 or more)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deidentify", help="de-identify a file or folder tree into OUTPUT")
    p.add_argument("input", type=Path, help="a DICOM file, or a folder tree of them")
    p.add_argument("output", type=Path,
                   help="folder outside INPUT for the de-identified objects (by new study and "
                        "series UID); refused inputs go to OUTPUT-quarantine with their reasons")
    p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no line per refused file: the summary only (the "
                        "reasons stay in OUTPUT-quarantine)")
    p.set_defaults(func=cmd_deidentify)

    p = sub.add_parser("audit", help="the inspector's findings and risk scores")
    p.add_argument("path", type=Path, help="a DICOM file, or a folder tree of them")
    p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    p.add_argument("--profile", default="default", help="profile name from the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("diff", help="what changed between two objects, element by element")
    p.add_argument("a", type=Path, help="a DICOM file (e.g. the original)")
    p.add_argument("b", type=Path, help="another (e.g. its de-identified copy)")
    p.set_defaults(func=cmd_diff)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)  # unwinds: the workers are stopped, not orphaned


def cmd_deidentify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key = load_site_key(config)
    if not args.input.exists():
        print(f"gantry: {args.input}: no such file or folder", file=sys.stderr)
        return 2
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
            summary = run_batch(args.input, args.output, config, key, args.workers, on_result)
        finally:
            signal.signal(signal.SIGTERM, previous)
    print(f"{summary.total} objects: {summary.written} de-identified, "
          f"{summary.quarantined} quarantined")
    if summary.counts:
        actions = ", ".join(f"{code} {n}" for code, n in sorted(summary.counts.items()))
        print(f"elements changed per action: {actions}")
    print(f"output: {summary.output}")
    if summary.quarantined:
        reasons = ", ".join(f"{r} ({n})" for r, n in summary.reasons.most_common())
        print(f"quarantine: {summary.quarantine} — {reasons}")
        return 1
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not args.path.exists():
        print(f"gantry: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    if args.profile != "default" and args.profile not in config.profiles:
        known = ", ".join(["default", *config.profiles])
        print(f"gantry audit: no profile {args.profile!r} in {config.source} (known: {known})",
              file=sys.stderr)
        return 2
    profile = Profile.from_config(config.profile_named(args.profile))
    reports, unreadable = [], []
    for path in iter_inputs(args.path):
        try:
            reports.append((path, inspect(read_header(path), profile)))
        except DicomReadError as exc:
            unreadable.append({"file": str(path), "problem": exc.problem})
        except Exception as exc:  # elements are decoded lazily: a bad VR surfaces here
            unreadable.append({"file": str(path), "problem": f"cannot parse: {safe_message(exc)}"})
    score = folder_score(r for _, r in reports)
    if args.json:
        print(json.dumps({
            "score": score, "band": band(score),
            "objects": [{"file": str(p), "score": r.score, "band": r.band,
                         "findings": [asdict(f) for f in r.findings]} for p, r in reports],
            "unreadable": unreadable,
        }, indent=2))
    else:
        for path, report in reports:
            actions: dict[str, int] = {}
            for f in report.findings:
                actions[f.action] = actions.get(f.action, 0) + 1
            summary = " ".join(f"{a}:{n}" for a, n in sorted(actions.items()))
            print(f"{report.score:3d} {report.band:8s} {path}  ({summary})")
        for item in unreadable:
            print(f"  - UNREADABLE {item['file']}: {item['problem']}")
        print(f"folder: {len(reports)} objects, risk {score} {band(score)}, "
              f"{len(unreadable)} unreadable")
    return 1 if unreadable else 0


def cmd_diff(args: argparse.Namespace) -> int:
    a, b = read_full(args.a), read_full(args.b)
    changes = diff(a, b)
    for change in changes:
        print(f"{change.kind:8s} {change.vr:2s} {change.path}")
    print(f"{len(changes)} differences")
    return 0
