"""The staged checkpoints: anonymize, redact, verify — every stage of the one pipeline run over
the session's files without writing anything, and what each stage did kept in the session.

The first checkpoint called under a configuration runs the stages once for every file (in
forked workers) and stores, per file, the action counts and the elements changed (paths and
VRs, never values), the redaction rule and regions, the verdict with its reason, and what the
inspector still finds in the result. Each checkpoint then shows its part; a later call under the
same configuration reads the stored results. Originals are never modified.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.deid.diff import diff
from gateway.deid.inspect import inspect
from gateway.dicomio import DicomReadError, read_for_deid
from gateway.pipeline import Pipeline, Quarantined
from gateway.session.export import CONFLICT
from gateway.session.parallel import run_parallel
from gateway.session.settings import redaction_hash, settings_hash

PIXEL_PATHS = ("(7FE0,0008)", "(7FE0,0009)", "(7FE0,0010)")


@dataclass(frozen=True)
class StagedFile:
    """One file through the stages: its verdict and what each stage did (no values)."""

    path: str
    outcome: str  # pass | quarantine
    reason: str | None
    counts: dict[str, int]  # elements per action code
    changes: list[tuple[str, str, str]]  # (element path, added|removed|changed, VR)
    at_risk: bool
    rule: str | None
    regions: int
    residual: list[tuple[str, str, str, int]]  # inspector findings: (path, VR, action, weight)


@dataclass
class Checkpoint:
    """A checkpoint's view of the staged files: `records`, and a table when printed."""

    name: str
    records: list[StagedFile] = field(default_factory=list)

    @property
    def quarantined(self) -> list[StagedFile]:
        """The files that would be quarantined, with their reasons."""
        return [r for r in self.records if r.outcome != "pass"]

    def row(self, r: StagedFile) -> tuple[str, ...]:
        verdict = "pass" if r.outcome == "pass" else f"quarantine: {r.reason}"
        if self.name == "anonymize":
            actions = " ".join(f"{k}:{n}" for k, n in sorted(r.counts.items()))
            return (r.path, str(len(r.changes)), actions or "-", verdict)
        if self.name == "redact":
            rule = r.rule or ("no rule" if r.at_risk else "-")
            return (r.path, "yes" if r.at_risk else "no", rule, str(r.regions), verdict)
        return (r.path, str(len(r.residual)), str(min(100, sum(f[3] for f in r.residual))),
                verdict)

    def header(self) -> tuple[str, ...]:
        if self.name == "anonymize":
            return ("file", "elements changed", "actions", "verdict")
        if self.name == "redact":
            return ("file", "at risk", "rule", "regions", "verdict")
        return ("file", "residual findings", "residual score", "verdict")

    def __str__(self) -> str:
        return self.table()

    def table(self, limit: int = 40) -> str:
        """The first `limit` records as a table, and the counts."""
        rows = [self.header()] + [self.row(r) for r in self.records[:limit]]
        widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
        lines = ["  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if len(self.records) > limit:
            lines.append(f"... and {len(self.records) - limit} more (see .records)")
        passed = len(self.records) - len(self.quarantined)
        lines.append(f"\n{self.name}: {len(self.records)} files, {passed} pass, "
                     f"{len(self.quarantined)} would be quarantined")
        return "\n".join(lines)


def _stage_one(pipeline: Pipeline, path: str) -> dict[str, Any]:
    """In a worker: every stage but the write, and what each did."""
    empty: dict[str, Any] = {"counts": {}, "changes": [], "residual": [], "rule": None,
                             "regions": 0, "at_risk": False}
    try:
        parsed = read_for_deid(path)
    except DicomReadError as exc:
        return {**empty, "outcome": "quarantine", "reason": f"{exc.kind}: {exc.problem}"}
    before = copy.deepcopy(parsed.ds)
    try:
        decision = pipeline.redactor.decide(parsed.ds)
    except Exception:  # noqa: BLE001 - stage() decides again and says why it fails
        decision = None
    staged = pipeline.stage(parsed, decision=decision)
    facts = {**empty, "rule": decision.rule if decision else None,
             "regions": len(decision.regions) if decision else 0,
             "at_risk": bool(decision and decision.at_risk)}
    if isinstance(staged, Quarantined):
        return {**facts, "outcome": "quarantine", "reason": staged.reason}
    after = parsed.ds
    changes = [(c.path, c.kind, c.vr) for c in diff(before, after)
               if not c.path.startswith(PIXEL_PATHS)]
    if decision is not None and decision.regions:
        changes.append(("(7FE0,0010)", "redacted", "OB/OW"))
    residual = [(f.path, f.vr, f.action, f.weight)
                for f in inspect(after, pipeline.profile("default")).findings]
    return {**facts, "outcome": "pass", "reason": None, "counts": staged.counts,
            "changes": changes, "residual": residual}


def stage_files(db: sqlite3.Connection, config: Config, key: bytes,
                workers: int | None = None, progress: bool = True) -> None:
    """Stage every file not yet staged under this configuration (see the module notes)."""
    pipeline = Pipeline(config, key)
    stage_hash = settings_hash(config, key) + redaction_hash(config)
    rows = db.execute(
        "SELECT f.id, f.path, f.version, f.conflict FROM files f LEFT JOIN staged s "
        "ON s.file_id = f.id AND s.file_version = f.version AND s.stage_hash = ? "
        "WHERE f.state != 'missing' AND f.duplicate_of IS NULL AND s.file_id IS NULL "
        "ORDER BY f.path", [stage_hash]).fetchall()
    todo = []
    for file_id, path, version, conflict in rows:
        if conflict:
            _store(db, file_id, version, stage_hash, {
                "outcome": "quarantine", "reason": CONFLICT, "counts": {}, "changes": [],
                "residual": [], "rule": None, "regions": 0, "at_risk": False})
        else:
            todo.append((file_id, path, version))

    def on_result(i: int, facts: dict[str, Any]) -> None:
        file_id, _, version = todo[i]
        _store(db, file_id, version, stage_hash, facts)

    def on_death(i: int, how: str) -> None:
        on_result(i, {"outcome": "quarantine", "counts": {}, "changes": [], "residual": [],
                      "rule": None, "regions": 0, "at_risk": False,
                      "reason": f"worker died: the process de-identifying this file was {how}"})

    run_parallel(todo, lambda item: _stage_one(pipeline, item[1]), on_result, on_death,
                 "staging", workers, progress)


def _store(db: sqlite3.Connection, file_id: int, version: int, stage_hash: str,
           facts: dict[str, Any]) -> None:
    with db:
        db.execute(
            "INSERT OR REPLACE INTO staged (file_id, file_version, stage_hash, outcome, reason, "
            "rule, regions, at_risk, counts, changes, residual) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [file_id, version, stage_hash, facts["outcome"], facts["reason"], facts["rule"],
             facts["regions"], int(facts["at_risk"]), json.dumps(facts["counts"]),
             json.dumps(facts["changes"]), json.dumps(facts["residual"])])


def checkpoint(db: sqlite3.Connection, name: str, config: Config, key: bytes) -> Checkpoint:
    """The staged results under this configuration, as checkpoint `name` shows them."""
    stage_hash = settings_hash(config, key) + redaction_hash(config)
    result = Checkpoint(name)
    for row in db.execute(
            "SELECT f.path, s.outcome, s.reason, s.counts, s.changes, s.at_risk, s.rule, "
            "s.regions, s.residual FROM staged s JOIN files f ON f.id = s.file_id "
            "AND f.version = s.file_version WHERE s.stage_hash = ? AND f.state != 'missing' "
            "AND f.duplicate_of IS NULL ORDER BY f.path", [stage_hash]):
        path, outcome, reason, counts, changes, at_risk, rule, regions, residual = row
        result.records.append(StagedFile(
            path, outcome, reason, json.loads(counts),
            [tuple(c) for c in json.loads(changes)], bool(at_risk), rule, regions,
            [tuple(f) for f in json.loads(residual)]))
    return result
