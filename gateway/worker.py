"""A worker process of the gateway node: claims received jobs and runs each through route →
pipeline → outbox or quarantine."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import traceback
import uuid
from dataclasses import asdict
from typing import Any

from gateway import logs, spoolfile
from gateway.children import child_setup, orphaned_check
from gateway.config import Config
from gateway.dicomio import DicomReadError, is_transient, parse_problem, read_for_deid
from gateway.examine import machine_record
from gateway.metrics import Lap, StageRecorder
from gateway.statedir import StateDir
from gateway.store import IdlePoll, Store, StoreError

MAX_PROCESSING_ATTEMPTS = 3  # a job its worker died on this often is quarantined (poison)


class Worker:
    """Takes received jobs and runs route → pipeline → outbox or quarantine. Whatever one
    object does (a parse error, an engine bug) costs that object only: it is quarantined with
    a reason, and the traceback goes to the log. A failure of the machine (a full disk, a
    locked database) puts the job back, uncounted, and the worker waits before the next."""

    def __init__(self, config: Config, site_key: bytes, state: StateDir,
                 current: Any = None, times: StageRecorder | None = None) -> None:
        from gateway.pipeline import Pipeline
        from gateway.routing import Router

        self.state, self.times = state, times
        self.store = Store(state.db, durable=False)
        self.router = Router(config)
        self.pipeline = Pipeline(config, site_key)
        self.owner = f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.log = logs.get_logger("gateway.worker")
        self.current = current  # shared memory: the job in hand, read by the node if we die
        self.retry_at = 0.0  # after a failure of the machine: no claim before this
        self._delay = 0.0
        self._to_defer: dict[str, str] = {}  # claims to give back once the database lets us

    def run_once(self) -> bool:
        """Process the next jobs (up to two) if any; False when the queue is empty or the
        worker is waiting after a failure of the machine."""
        if time.monotonic() < self.retry_at:
            return False
        try:
            for job_id, problem in list(self._to_defer.items()):
                with contextlib.suppress(StoreError):  # requeued by the node meanwhile
                    self.store.defer(job_id, problem)
                del self._to_defer[job_id]
            rows = self.store.claim_jobs(self.owner, limit=2)
        except sqlite3.OperationalError as exc:
            self._wait_after(None, f"database: {exc}")
            return False
        for row in rows:
            self.process(row)
        return bool(rows)

    def process(self, row: Any) -> None:
        """One claimed job, whatever happens to it."""
        job_id = row["id"]
        if self.current is not None:
            self.current.value = job_id.encode()
        try:
            self._process(row)
            self._delay = 0.0
        except StoreError:  # the claim is no longer ours (its lease ran out): leave the job be
            self.log.warning("job.claim_lost", job=job_id)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            if is_transient(exc) or isinstance(exc, sqlite3.OperationalError):
                self._wait_after(job_id, parse_problem(exc) if isinstance(exc, OSError)
                                 else f"database: {exc}")
                return
            try:
                self._failed(job_id, exc)
            except sqlite3.OperationalError as again:  # quarantined once the database lets us
                self._wait_after(job_id, f"database: {again}")
            except StoreError:
                self.log.warning("job.claim_lost", job=job_id)
        finally:
            if self.current is not None:
                self.current.value = b""

    def _failed(self, job_id: str, exc: Exception) -> None:
        """An exception the stages did not turn into an outcome: quarantine, saying what (an
        unreadable object is no surprise; anything else logs where it was raised, the frames
        only: an exception's message may quote a value)."""
        if isinstance(exc, DicomReadError):
            return self._quarantine(job_id, f"{exc.kind}: {exc.problem}")
        self.log.error("job.failed", job=job_id, error=type(exc).__name__,
                       traceback=[f"{f.filename}:{f.lineno} {f.name}"
                                  for f in traceback.extract_tb(exc.__traceback__)])
        self._quarantine(job_id, f"processing failed: {parse_problem(exc)}")

    def _wait_after(self, job_id: str | None, problem: str) -> None:
        """Put the job back uncounted and claim nothing for a while (1 s doubling to 30 s)."""
        self._delay = min(30.0, max(1.0, self._delay * 2))
        self.retry_at = time.monotonic() + self._delay
        self.log.warning("job.deferred", job=job_id, problem=problem, retry_in_s=self._delay)
        if job_id is None:
            return
        self.state.discard(self.state.output(job_id))
        try:
            self.store.defer(job_id, problem)
        except sqlite3.OperationalError:  # the database is what fails: give it back later
            self._to_defer[job_id] = problem
        except StoreError:  # requeued by the node meanwhile
            pass

    def _process(self, row: Any) -> None:
        from gateway.pipeline import Forwarded
        from gateway.routing import no_route_reason

        job_id = row["id"]
        if self.times is not None:  # since it last entered the queue (received, released)
            queued = self.store.conn.execute(
                "SELECT max(at) FROM events WHERE job_id = ? AND to_state = 'received'",
                (job_id,)).fetchone()[0]
            self.times.observe("queue", max(0.0, time.time() - (queued or row["received_at"])))
        lap = Lap(self.times)
        if row["attempts"] > MAX_PROCESSING_ATTEMPTS:
            return self._quarantine(job_id, f"its worker process died (or overran its lease) "
                                            f"{MAX_PROCESSING_ATTEMPTS} times processing it")
        src = self.state.original(job_id)
        if src is None:
            return self._quarantine(job_id, "original missing from the spool")
        short = spoolfile.cut_short(src)
        if short is not None:  # never read: a file cut short can still parse
            return self._quarantine(job_id, f"spool file cut short ({short}): the node stopped "
                                            "before it was on disk, and before the sender was "
                                            "answered")
        if src.parent != self.state.spool:
            self.state.move_to_spool(job_id)
            src = self.state.spooled(job_id)
        parsed = read_for_deid(src)  # read once: routed on its header, then processed
        lap("read")
        header = parsed.ds
        decision = self.pipeline.redactor.decide(header)
        machine = asdict(machine_record(header, decision))
        calling, called = row["calling_ae"] or "", row["called_ae"] or ""
        route = self.router.route(header, calling, called)
        if route is None:
            return self._quarantine(job_id, no_route_reason(header, calling, called),
                                    machine=machine)
        lap("route")
        out = self.state.output(job_id)
        outcome = self.pipeline.run(parsed, out, profile=route.profile, backup=route.backup,
                                    burned_in=route.burned_in, fsync=True, decision=decision)
        lap("deidentify")
        if not isinstance(outcome, Forwarded):
            return self._quarantine(job_id, outcome.reason, route.name, route.profile, machine)
        self.store.finish_processing(
            job_id, route=route.name, profile=route.profile, new_study_uid=outcome.study_uid,
            new_series_uid=outcome.series_uid, new_sop_uid=outcome.sop_uid,
            out_transfer_syntax=outcome.transfer_syntax, counts=outcome.counts,
            not_backed_up=outcome.not_backed_up, destinations=route.destinations,
            machine=machine)
        lap("record")
        if not route.destinations:
            self.state.done(job_id)

    def _quarantine(self, job_id: str, reason: str, route: str | None = None,
                    profile: str | None = None, machine: dict[str, Any] | None = None) -> None:
        self.store.quarantine(job_id, reason, route=route, profile=profile, machine=machine)
        self.state.move_to_quarantine(job_id)


def worker_main(config: Config, site_key: bytes, root: str, stop: Any,
                current: Any = None, times: StageRecorder | None = None) -> None:
    """Entry point of a worker process (`current`: where it notes the job in hand)."""
    child_setup(config, "worker", stop.node_pid)
    worker = Worker(config, site_key, StateDir(root), current, times)
    poll = IdlePoll()
    while not stop.is_set():
        orphaned_check(stop.node_pid)
        if worker.run_once():
            poll.found_work()
        else:
            stop.wait(poll.wait_time())
