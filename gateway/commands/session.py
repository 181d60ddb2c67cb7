"""`gantry ingest|configure|backup|anonymize|redact|verify|export DB ...`: the checkpoints of a
curation session on the command line (`gantry examine DB` is in gateway.commands.pixels)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from gateway.commands.args import exit_on_sigterm, positive

# No pathlib here, and only the parser of the command given: `gantry ingest` of an unchanged
# tree takes under a tenth of a second, and both would be a twentieth of it.


def register(sub: argparse._SubParsersAction, command: str | None = None) -> None:
    def session_parser(name: str, help_text: str,
                       workers: bool = True) -> argparse.ArgumentParser | None:
        if command not in (None, name):
            return None
        p = sub.add_parser(name, help=help_text)
        p.add_argument("db", help="session database (created 0600 if new)")
        if workers:
            p.add_argument("--workers", type=positive, default=None,
                           help="processes (default: all cores)")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    if p := session_parser("ingest", "index a file or folder tree into a session (headers only)"):
        p.add_argument("path", help="a DICOM file, or a folder tree of them")
        p.set_defaults(func=cmd_ingest)

    if p := session_parser("configure", "check a configuration and make it the session's",
                           workers=False):
        p.add_argument("config", help="YAML configuration")
        p.set_defaults(func=cmd_configure)

    if p := session_parser("backup", "seal original values for these recipients from now on",
                           workers=False):
        p.add_argument("--recipient", action="append", required=True,
                       help="an honest broker's certificate (repeat for several)")
        p.set_defaults(func=cmd_backup)

    for name, what in (("anonymize", "what the profile changes in each file"),
                       ("redact", "burned-in text risk, rules and regions per file"),
                       ("verify", "the gatekeeper's verdict and residual findings per file")):
        if p := session_parser(name, f"checkpoint: {what} (nothing is written)"):
            p.add_argument("--all", action="store_true", help="a row for every file")
            p.set_defaults(func=cmd_checkpoint, checkpoint=name)

    if p := session_parser("export", "write the session's objects through the pipeline "
                                     "(resumable)"):
        p.add_argument("output",
                       help="folder for the de-identified objects, laid out like `gantry "
                            "deidentify`; refused originals go to OUTPUT-quarantine with reasons")
        p.add_argument("--config", help="make this configuration the session's first")
        p.set_defaults(func=cmd_export)


def _open(args: argparse.Namespace):  # noqa: ANN202 - gateway.session.Session
    from gateway.session import Session

    return Session(args.db, workers=getattr(args, "workers", None),
                   progress=not getattr(args, "quiet", True))


def cmd_ingest(args: argparse.Namespace) -> int:
    from gateway.session.db import instance_count  # not navigation's classes: start-up

    if not os.path.exists(args.path):
        print(f"gantry: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    with _open(args) as session:
        previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
        try:
            summary = session.ingest(args.path)
        finally:
            signal.signal(signal.SIGTERM, previous)
        print(summary)
        print(f"{args.db}: {instance_count(session.db)} instances")
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    with _open(args) as session:
        session.load_config(args.config)
        print(f"{args.db}: configuration {args.config} (sha256 {session.config_hash})")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    with _open(args) as session:
        session.backup_identities(args.recipient)
    print(f"{args.db}: original values sealed for {len(args.recipient)} recipient(s)")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with _open(args) as session:
        result = {"anonymize": session.anonymize_metadata, "redact": session.redact_pixels,
                  "verify": session.verify}[args.checkpoint]()
    print(result.table(limit=len(result.records) if args.all else 40))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as session:
        if args.config:
            session.load_config(args.config)
        previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
        try:
            summary = session.export(args.output)
        finally:
            signal.signal(signal.SIGTERM, previous)
    print(summary)
    return 1 if summary.outcomes["quarantined"] else 0
