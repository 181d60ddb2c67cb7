"""`gantry examine`, `gantry scaffold`, `gantry rules import-ctp`: machines and redaction rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import Config, ConfigError, load_config
from gateway.deid.ctp_script import CtpScriptError, builtin_script_path, load_script
from gateway.deid.redact import Redactor
from gateway.examine import (
    MachineIndex,
    MachineRecord,
    ctp_rules_yaml,
    index_folder,
)
from gateway.scaffold import scaffold_index, scaffold_yaml


def register(sub: argparse._SubParsersAction, command: str | None = None) -> None:
    p = sub.add_parser("examine", help="machine signatures in a folder or a session (or, "
                                       "without PATH, in what the gateway has received), and "
                                       "which rules cover them")
    p.add_argument("path", type=Path, nargs="?",
                   help="file, folder or session database; omitted: the gateway's state named "
                        "by --config")
    p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ocr", action="store_true",
                   help="also read the burned-in text of at-risk images (a folder only): per "
                        "machine, images with text, identifying text and its kinds, and where")
    p.set_defaults(func=cmd_examine)

    p = sub.add_parser("scaffold", help="write a configuration with a redaction entry per "
                                        "machine signature found in PATH (a folder or a session)")
    p.add_argument("path", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="configuration to write")
    p.add_argument("--ctp", type=Path, default=None,
                   help="CTP script whose regions pre-fill entries (default: the shipped library)")
    p.add_argument("--config", type=Path, help="configuration whose at-risk lists to use")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=cmd_scaffold)

    p = sub.add_parser("rules", help="redaction rules")
    rules = p.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    q = rules.add_parser("import-ctp", help="convert a CTP DicomPixelAnonymizer.script to YAML")
    q.add_argument("file", type=Path)
    q.add_argument("-o", "--output", type=Path, help="YAML to write (default: standard output)")
    q.set_defaults(func=cmd_import_ctp)


def _missing(path: Path) -> int:
    print(f"gantry: {path}: no such file or folder", file=sys.stderr)
    return 2


def cmd_examine(args: argparse.Namespace) -> int:
    from gateway.session.db import is_session_db

    if args.path is not None and args.path.is_file() and is_session_db(args.path):
        from gateway.session import Session

        if args.ocr:
            print(f"gantry examine: --ocr reads pixels, which a session does not index: give "
                  f"the folder {args.path} was ingested from", file=sys.stderr)
            return 2
        with Session(args.path) as session:
            if args.config:
                session.load_config(args.config)
            inventory = session.examine()
        print(inventory.as_json() if args.json else inventory)
        return 0
    config = load_config(args.config)
    redactor = Redactor(config.redaction, config.base_dir)
    if args.path is None:
        index = _received_index(config, redactor)
    elif not args.path.exists():
        return _missing(args.path)
    else:
        index = index_folder(args.path, redactor, ocr=redactor.verify_policy if args.ocr else None)
    print(index.as_json() if args.json else index.table())
    return 0


def _received_index(config: Config, redactor: Redactor) -> MachineIndex:
    """The index over what the gateway has received, from its SQLite state."""
    from gateway.service import state_root
    from gateway.store import Store

    db = state_root(config) / "gantry.db"
    if not db.exists():
        raise ConfigError(config.source, "state_dir", f"no gateway state in {db.parent} "
                          "(has `gantry serve` run with this configuration?)")
    store = Store(db, durable=False)
    try:
        index = MachineIndex(redactor)
        for row in store.machines():
            del row["job_id"]
            index.add_record(MachineRecord(**row))
    finally:
        store.close()
    return index


def cmd_scaffold(args: argparse.Namespace) -> int:
    from gateway.session.db import is_session_db

    if not args.path.exists():
        return _missing(args.path)
    if args.output.exists() and not args.force:
        print(f"gantry: {args.output}: exists (use --force to overwrite)", file=sys.stderr)
        return 2
    if args.path.is_file() and is_session_db(args.path):
        from gateway.session import Session

        if args.ctp:
            print("gantry scaffold: --ctp is for a folder; a session prefills from the shipped "
                  "library", file=sys.stderr)
            return 2
        args.output.unlink(missing_ok=True)  # --force
        with Session(args.path) as session:
            if args.config:
                session.load_config(args.config)
            session.scaffold_config(args.output)
            count = len(session.instances)
        print(f"{args.output}: scaffolded from {count} instances of {args.path}")
        return 0
    try:
        ctp = load_script(args.ctp or builtin_script_path())
    except CtpScriptError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2
    empty = scaffold_index(load_config(args.config), ctp)  # the config's at-risk lists only
    index = index_folder(args.path, empty.redactor, empty.ctp)
    args.output.write_text(scaffold_yaml(index, str(args.path)))
    known = sum(1 for g in index.groups.values()
                if len([n for n in g.ctp if n]) == 1 and not g.ctp[""])
    print(f"{args.output}: {len(index.groups)} entries ({known} with regions from "
          f"{Path(args.ctp or builtin_script_path()).name}), from "
          f"{sum(g.count for g in index.groups.values())} objects")
    return 0


def cmd_import_ctp(args: argparse.Namespace) -> int:
    if not args.file.exists():
        return _missing(args.file)
    try:
        signatures = load_script(args.file)
    except CtpScriptError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2
    text = ctp_rules_yaml(signatures, args.file.name)
    if args.output:
        args.output.write_text(text)
        print(f"{args.output}: {len(signatures)} rules", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
