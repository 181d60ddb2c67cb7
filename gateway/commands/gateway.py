"""`gantry serve`, `gantry status`, `gantry quarantine list|show|release|purge`, `gantry prune`,
`gantry demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from gateway.config import Config, ConfigError, load_config


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the DICOM gateway node (C-STORE in, de-identify, "
                                     "forward) until SIGTERM")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="jobs by state, backlog and last error per destination")
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: embedded)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    q = sub.add_parser("quarantine", help="list, show, release or purge quarantined objects")
    qsub = q.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (("list", "quarantined objects with their reasons"),
                            ("show", "one object: audit row, deliveries and history"),
                            ("release", "run the pipeline again (e.g. after a config fix)"),
                            ("purge", "delete the quarantined original")):
        a = qsub.add_parser(name, help=help_text)
        a.add_argument("--config", metavar="FILE", help="YAML configuration")
        if name != "list":
            target = a.add_mutually_exclusive_group(required=True)
            target.add_argument("job", nargs="?", help="job id (or a unique prefix)")
            if name != "show":
                target.add_argument("--all", action="store_true", help="every quarantined job")
        a.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("prune", help="forget objects delivered or purged more than DAYS ago "
                                     "(audit rows, deliveries, history, machine records), so "
                                     "the database stops growing; quarantined objects stay")
    p.add_argument("--config", metavar="FILE", help="YAML configuration")
    p.add_argument("--older-than", required=True, type=_days, metavar="DAYS",
                   help="keep what finished within the last DAYS days")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("demo", help="run the gateway on loopback with a stand-in research PACS "
                                    "and send it pydicom's sample studies")
    p.add_argument("--dir", metavar="DIR", help="where to keep state and output "
                                                "(default: a new temporary directory)")
    p.add_argument("--limit", type=int, default=None, help="send at most N sample files")
    p.set_defaults(func=cmd_demo)


def _open(config_path: str | None) -> tuple[Config, Any, Any]:
    from gateway.service import state_root
    from gateway.statedir import StateDir
    from gateway.store import Store

    config = load_config(config_path)
    root = state_root(config)
    if not (root / "gantry.db").exists():
        raise ConfigError(config.source, "state_dir", f"no gateway state in {root} "
                          "(has `gantry serve` run with this configuration?)")
    state = StateDir(root)
    return config, state, Store(state.db, durable=False)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.service import Service
    from gateway.sitekey import load_site_key
    from gateway.statedir import OWNER_ONLY_UMASK

    config = load_config(args.config)
    logs.configure(config.log_level, role="node")
    os.umask(OWNER_ONLY_UMASK)  # spool, quarantine and database hold originals: owner-only
    return Service(config, load_site_key(config)).serve()


def cmd_status(args: argparse.Namespace) -> int:
    config, _state, store = _open(args.config)
    age = store.oldest_pending_age()
    report = {
        "state_dir": str(_state.root),
        "jobs": store.counts(),
        "pending": store.pending_jobs(),
        "oldest_pending_s": None if age is None else round(age, 1),
        "destinations": [{**d, "configured": d["destination"] in config.destinations}
                         for d in store.destination_status()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"state: {report['state_dir']}")
    jobs = report["jobs"]
    print("jobs:  " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    print(f"pending: {report['pending']}" + (
        f" (oldest {report['oldest_pending_s']} s)" if age is not None else ""))
    for d in report["destinations"]:
        age_s = "" if d["oldest_pending_s"] is None else f", oldest {d['oldest_pending_s']} s"
        err = f", last error: {d['last_error']}" if d["last_error"] else ""
        gone = ("" if d["configured"] else
                " (not in the configuration: its backlog waits until it is configured again)")
        print(f"  {d['destination']}{gone}: backlog {d['backlog']}{age_s}, delivered "
              f"{d['delivered']}, failed {d['failed']}{err}")
    return 0


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0 or more)")
    return days


def cmd_prune(args: argparse.Namespace) -> int:
    _config, _state, store = _open(args.config)
    before = time.time() - args.older_than * 86400
    pruned = store.prune(before)
    print(f"pruned {pruned} objects delivered or purged before {_when(before)}")
    return 0


def _when(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cmd_quarantine(args: argparse.Namespace) -> int:
    from gateway.store import StoreError

    _config, state, store = _open(args.config)
    if args.action == "list":
        rows = store.quarantined()
        for r in rows:
            print(f"{r['id']}  {_when(r['updated_at'])}  {r['calling_ae'] or '-':16}  "
                  f"{r['reason']}")
        print(f"{len(rows)} quarantined", file=sys.stderr)
        return 0
    try:
        jobs = ([r["id"] for r in store.quarantined()] if getattr(args, "all", False)
                else [store.find_job(args.job)["id"]])
    except StoreError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 1
    if args.action == "show":
        job = jobs[0]
        row = next((a for a in store.audit() if a["job_id"] == job), {})
        for key, value in row.items():
            print(f"{key:20} {value}")
        original = state.original(job)
        print(f"{'original':20} {original if original else '(none)'}")
        for e in store.events(job):
            print(f"  {_when(e['at'])}  {e['from_state'] or '-'} → {e['to_state']}  "
                  f"{e['detail'] or ''}")
        return 0
    done = 0
    for job in jobs:
        try:
            if args.action == "release":
                store.release(job)
                state.move_to_spool(job)
            else:
                store.purge(job)
                state.purge(job)
            done += 1
        except StoreError as exc:
            print(f"gantry: {exc}", file=sys.stderr)
    verb = "released" if args.action == "release" else "purged"
    print(f"{done} {verb}")
    return 0 if done == len(jobs) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.dir, limit=args.limit)
