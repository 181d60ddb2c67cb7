"""`gantry serve`, `gantry reload`, `gantry status`, `gantry quarantine list|show|release|purge`,
`gantry prune`, `gantry demo`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway import logs, running
from gateway.config import Config, ConfigError, load_config


def register(sub: Any, command: str | None = None) -> None:
    p = sub.add_parser("serve", help="run the DICOM gateway node (C-STORE in, de-identify, "
                                     "forward) until SIGTERM")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reload", help="check a configuration, then have the running node use it "
                                      "(as SIGHUP does); a bad one is refused and the node "
                                      "keeps its own")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the YAML configuration the node runs with, as edited")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the node's answer (default 120)")
    p.set_defaults(func=cmd_reload)

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
                target.add_argument("--all", action="store_true",
                                    help="every quarantined job (that the filters select)")
        if name != "show":
            a.add_argument("--reason", metavar="TEXT",
                           help="only objects whose reason contains TEXT (any case)")
            a.add_argument("--calling-ae", metavar="AE", help="only objects sent by AE")
        if name == "list":
            a.add_argument("--json", action="store_true", help="print JSON")
        if name == "purge":
            a.add_argument("--yes", action="store_true",
                           help="do not ask before purging --all (for scripts)")
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
    # One summary line per command on stdout; the per-job log lines go to $GANTRY_LOG_FILE
    # when it is set, and only warnings and errors reach stderr otherwise.
    logs.configure(config.log_level if os.environ.get(logs.LOG_FILE_ENV) else "warning",
                   role="cli")
    root = state_root(config)
    if not (root / "gantry.db").exists():
        raise ConfigError(config.source, "state_dir", f"no gateway state in {root} "
                          "(has `gantry serve` run with this configuration?)")
    state = StateDir(root)
    return config, state, Store(state.db, durable=False)


def cmd_serve(args: argparse.Namespace) -> int:
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
    node = running.read(_state.root)
    report = {
        "state_dir": str(_state.root),
        "node": None if node is None else {
            "pid": node.pid, "config": node.config, "sha256": node.digest,
            "loaded_at": _when(node.loaded_at), "config_file_changed": node.file_changed()},
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
    if node is None:
        print("node:  not running")
    else:
        changed = " (the file has changed since: `gantry reload`)" if node.file_changed() else ""
        print(f"node:  pid {node.pid}, {node.describe()}{changed}")
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
        rows = _selected(store.quarantined(), args)
        if args.json:
            print(json.dumps([{"job": r["id"], "quarantined_at": _when(r["updated_at"]),
                               "calling_ae": r["calling_ae"], "route": r["route"],
                               "sop_class_uid": r["sop_class_uid"], "reason": r["reason"]}
                              for r in rows], indent=2))
            return 0
        for r in rows:
            print(f"{r['id']}  {_when(r['updated_at'])}  {r['calling_ae'] or '-':16}  "
                  f"{r['reason']}")
        print(f"{len(rows)} quarantined", file=sys.stderr)
        return 0
    try:
        jobs = ([r["id"] for r in _selected(store.quarantined(), args)]
                if getattr(args, "all", False) else [store.find_job(args.job)["id"]])
    except StoreError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 1
    if args.action == "purge" and args.all and not args.yes and not _confirm(
            f"purge {len(jobs)} quarantined originals from {state.root}? They are deleted for "
            "good."):
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
    node = running.read(state.root)
    if args.action == "release" and node is not None and node.file_changed():
        # Released now, the objects would be re-run with the configuration the node has: the
        # fix being released for would not apply, and they would come back for the same reason.
        print(f"gantry: {node.config} has changed since the running node (pid {node.pid}) "
              f"loaded it; nothing released. Have the node use it first (`gantry reload "
              f"--config {node.config}`, or `kill -HUP {node.pid}`), then release.",
              file=sys.stderr)
        return 1
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
    if args.action != "release":
        print(f"{done} {verb}")
    elif node is not None:
        print(f"{done} released: the running node (pid {node.pid}) re-runs them with "
              f"{node.describe()}")
    else:
        print(f"{done} released: no node is running on {state.root}; `gantry serve` will "
              "re-run them with the configuration it is started with")
    return 0 if done == len(jobs) else 1


def _selected(rows: list[Any], args: argparse.Namespace) -> list[Any]:
    """The quarantined rows that `--reason` and `--calling-ae` select."""
    reason = (getattr(args, "reason", None) or "").casefold()
    calling = getattr(args, "calling_ae", None)
    return [r for r in rows if reason in (r["reason"] or "").casefold()
            and (calling is None or (r["calling_ae"] or "").strip() == calling.strip())]


def _confirm(question: str) -> bool:
    """Ask on the terminal; without one (a script, cron), refuse and say how to confirm."""
    if not sys.stdin.isatty():
        print(f"gantry: {question} Not done: there is no terminal to ask; add --yes to "
              "confirm.", file=sys.stderr)
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        print("nothing purged", file=sys.stderr)
        return False
    return True


def cmd_reload(args: argparse.Namespace) -> int:
    """Check FILE as the node would, then SIGHUP the node running on its state directory and
    report its answer."""
    from gateway.pipeline import Pipeline
    from gateway.service import state_root
    from gateway.sitekey import load_site_key

    config = load_config(args.config)  # a bad file stops here: nothing is sent to the node
    Pipeline(config, load_site_key(config))
    root = state_root(config)
    node = running.read(root)
    if node is None:
        print(f"gantry: no node is running on {root}: nothing to reload", file=sys.stderr)
        return 1
    path = str(Path(args.config).resolve())
    if node.config != path:
        print(f"gantry: the node (pid {node.pid}) on {root} runs with {node.config}, not "
              f"{path}: edit that file, or restart the node with this one", file=sys.stderr)
        return 2
    os.kill(node.pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    answer = node
    while answer is not None and answer.reloads == node.reloads:
        if time.monotonic() > deadline:
            print(f"gantry: the node (pid {node.pid}) has not answered in {args.timeout:g} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
        answer = running.read(root)
    if answer is None:
        print(f"gantry: the node (pid {node.pid}) stopped", file=sys.stderr)
        return 1
    if answer.refused:
        print(f"gantry: the node (pid {node.pid}) refused it and keeps its running "
              f"configuration: {answer.refused}", file=sys.stderr)
        return 1
    print(f"reloaded: the node (pid {node.pid}) uses {answer.describe()}")
    for section in answer.restart_needed:
        print(f"gantry: {section} changed: that takes a restart of the node", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.dir, limit=args.limit)
