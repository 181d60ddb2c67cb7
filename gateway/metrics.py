"""Prometheus metrics and the health check of a gateway node, served over HTTP on
`metrics: {host, port}` at /metrics and /healthz.

The node's processes share nothing but the database and what the node hands them at start, so
each number comes from where it is known: received objects and the Success latency from every
receiver process (the node's own and `network.receivers` - 1 more), per-stage times from the
workers and forwarders, each through a block of shared memory (one row per process, summed when
scraped); objects forwarded and quarantined from
the database's history, read as it grows (counted from the node's start, as Prometheus
counters are); backlog and oldest pending age from the database when scraped. Labels are route
and destination names and a reason *class* (never a reason's text: it can name a device).
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest

from gateway.config import Config, ConfigError
from gateway.logs import get_logger

STAGES = ("queue", "read", "route", "deidentify", "record", "send")
SUCCESS = "success"  # a receiver's one histogram: C-STORE request to Success answer
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 300.0)
_WIDTH = len(BUCKETS) + 2  # per stage: a count per bucket, one for +Inf, then the sum

# Quarantine reason → class: the first pattern found in the reason wins.
REASON_CLASSES: tuple[tuple[str, str], ...] = (
    (r"^no route", "no route"),
    (r"^burned-in text risk", "burned-in text risk"),
    (r"^verify refused", "verify refused"),
    (r"^de-identification failed", "de-identification failed"),
    (r"^pipeline error", "de-identification failed"),
    (r"^cannot write the de-identified", "write failed"),
    (r"^processing did not finish|^its worker process died", "worker died"),
    (r"^processing failed", "processing failed"),
    (r"^original missing|^de-identified file missing", "file missing"),
    (r"^unreadable", "unreadable"),
    (r"^not an object", "not an object"),
    (r" answered status ", "refused by destination"),
    (r" does not accept | accepts no ", "not accepted by destination"),
    (r"^cannot send to ", "cannot send"),
)
_CLASSES = [(re.compile(p), c) for p, c in REASON_CLASSES]


def reason_class(reason: str | None) -> str:
    """The class of a quarantine reason ('other' when none matches)."""
    for pattern, name in _CLASSES:
        if reason and pattern.search(reason):
            return name
    return "other"


# ---------------------------------------------------------------------------- stage times


class StageTimes:
    """Histograms of seconds in shared memory, one per name of `stages`, one row per process
    (summed when scraped, so that a process that dies or is replaced loses no count)."""

    def __init__(self, ctx: Any, rows: int, stages: tuple[str, ...] = STAGES) -> None:
        self.rows, self.stages = rows, stages
        self.array = ctx.RawArray("d", rows * len(stages) * _WIDTH)

    def recorder(self, row: int) -> StageRecorder:
        return StageRecorder(self.array, row, self.stages)

    def merged(self, stage: str) -> tuple[list[tuple[str, float]], float]:
        """(cumulative buckets, sum of seconds) of `stage` over every row."""
        s, values = self.stages.index(stage), list(self.array)
        counts = [0.0] * (_WIDTH - 1)
        total = 0.0
        for row in range(self.rows):
            base = (row * len(self.stages) + s) * _WIDTH
            for i in range(_WIDTH - 1):
                counts[i] += values[base + i]
            total += values[base + _WIDTH - 1]
        cumulative, buckets = 0.0, []
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return buckets, total

    def collect(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("gantry_stage_seconds", "Seconds an object spent in a "
                                       "stage (queue: received or released until a worker took it)",
                                       labels=["stage"])
        for stage in self.stages:
            family.add_metric([stage], *self.merged(stage))
        return family


def success_times(ctx: Any, receivers: int) -> StageTimes:
    """Each receiver process's Success latencies (row 0: the node's own receiver)."""
    return StageTimes(ctx, max(1, receivers), (SUCCESS,))


class StageRecorder:
    """What a process writes into its row of StageTimes (thread-safe within it)."""

    def __init__(self, array: Any, row: int, stages: tuple[str, ...] = STAGES) -> None:
        self.array, self.row, self.stages = array, row, stages
        self._lock = threading.Lock()

    def observe(self, stage: str, seconds: float) -> None:
        base = (self.row * len(self.stages) + self.stages.index(stage)) * _WIDTH
        with self._lock:
            self.array[base + bisect.bisect_left(BUCKETS, seconds)] += 1
            self.array[base + _WIDTH - 1] += seconds

    def success(self, seconds: float) -> None:
        """A receiver answered Success after `seconds` (its `on_success`)."""
        self.observe(SUCCESS, seconds)

    def __getstate__(self) -> dict[str, Any]:  # the lock is per process
        return {"array": self.array, "row": self.row, "stages": self.stages}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["array"], state["row"], state["stages"])  # type: ignore[misc]


class Lap:
    """Times consecutive stages of one object: `lap(stage)` records the time since the last
    lap (or since the Lap was made) into `recorder`, if there is one."""

    def __init__(self, recorder: StageRecorder | None) -> None:
        self.recorder = recorder
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.recorder is not None:
            now = time.perf_counter()
            self.recorder.observe(stage, now - self.last)
            self.last = now


# ---------------------------------------------------------------------------- outcomes


class Outcomes:
    """Objects forwarded and quarantined since `since`, read from the database's history."""

    SLACK = 300.0  # s: a delivery's time is taken before its commit, which may wait that long

    def __init__(self, db: Path, since: float) -> None:
        self.conn = sqlite3.connect(str(db), timeout=5.0, isolation_level=None,
                                    check_same_thread=False)
        self.since = since
        self.forwarded: dict[tuple[str, str], int] = {}
        self.quarantined: dict[tuple[str, str], int] = {}
        self._event = self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        self._delivered_at = since
        self._seen: dict[tuple[str, str], float] = {}

    def refresh(self) -> None:
        conn = self.conn
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            top = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
            if top < self._event:  # the newest events were pruned: ids are reused
                self._event = top
            for route, detail in conn.execute(
                    "SELECT j.route, e.detail FROM events e LEFT JOIN jobs j ON j.id = e.job_id "
                    "WHERE e.id > ? AND e.id <= ? AND e.to_state = 'quarantined'",
                    (self._event, top)):
                key = (route or "", reason_class(detail))
                self.quarantined[key] = self.quarantined.get(key, 0) + 1
            self._event = top
            for job, dest, at, route in conn.execute(
                    "SELECT d.job_id, d.destination, d.updated_at, j.route FROM deliveries d "
                    "JOIN jobs j ON j.id = d.job_id WHERE d.state = 'delivered' "
                    "AND d.updated_at >= ?", (self._delivered_at - self.SLACK,)):
                if at < self.since or (job, dest) in self._seen:
                    continue
                self._seen[job, dest] = at
                key = (route or "", dest)
                self.forwarded[key] = self.forwarded.get(key, 0) + 1
                self._delivered_at = max(self._delivered_at, at)
        finally:
            conn.execute("COMMIT")
        horizon = self._delivered_at - 2 * self.SLACK
        self._seen = {k: at for k, at in self._seen.items() if at >= horizon}


# ---------------------------------------------------------------------------- the node's


class NodeMetrics:
    """The registry a node serves, and its health checks."""

    def __init__(self, db: Path, state_root: Path, min_free_mb: int, stage_times: StageTimes,
                 destinations: Iterable[str], listening: Callable[[], bool],
                 successes: StageTimes | None = None) -> None:
        self.db, self.state_root, self.min_free_mb = db, state_root, min_free_mb
        self.stage_times = stage_times
        # every receiver process's Successes (row 0: this process's receiver)
        self.successes = successes or success_times(multiprocessing, 1)
        self._own = self.successes.recorder(0)
        self.destinations = list(destinations)
        self.listening = listening
        self.registry = CollectorRegistry(auto_describe=True)
        self.outcomes = Outcomes(db, time.time())
        self._lock = threading.Lock()
        self._health = sqlite3.connect(str(db), timeout=2.0, isolation_level=None,
                                       check_same_thread=False)
        self.registry.register(self)  # collect() below

    def received(self, seconds: float) -> None:
        """This process's receiver answered Success after `seconds`."""
        self._own.success(seconds)

    def collect(self) -> Iterable[Any]:
        """The metrics read at scrape time (prometheus_client's collector protocol)."""
        with self._lock:
            self.outcomes.refresh()
            forwarded = dict(self.outcomes.forwarded)
            quarantined = dict(self.outcomes.quarantined)
            status = self._destination_status()
        buckets, seconds = self.successes.merged(SUCCESS)
        yield CounterMetricFamily("gantry_objects_received", "Objects answered Success "
                                  "(spooled and committed), by every receiver process",
                                  value=buckets[-1][1])
        latency = HistogramMetricFamily("gantry_store_success_seconds", "Seconds from a "
                                        "C-STORE request to its Success answer")
        latency.add_metric([], buckets, seconds)
        yield latency
        yield _counter("gantry_objects_forwarded", "Objects a destination accepted",
                       ["route", "destination"], forwarded)
        yield _counter("gantry_objects_quarantined", "Objects quarantined, by reason class",
                       ["route", "reason"], quarantined)
        backlog = GaugeMetricFamily("gantry_backlog_objects", "Objects waiting for a "
                                    "destination", labels=["destination"])
        oldest = GaugeMetricFamily("gantry_oldest_pending_seconds", "Age of the oldest object "
                                   "waiting for a destination (0: none)", labels=["destination"])
        for dest, (n, age) in status.items():
            backlog.add_metric([dest], n)
            oldest.add_metric([dest], age)
        yield backlog
        yield oldest
        yield self.stage_times.collect()

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def _destination_status(self) -> dict[str, tuple[int, float]]:
        now = time.time()
        status = {d: (0, 0.0) for d in self.destinations}
        for dest, n, oldest in self._health.execute(
                "SELECT d.destination, count(*), min(j.received_at) FROM deliveries d "
                "JOIN jobs j ON j.id = d.job_id WHERE d.state IN ('pending', 'sending') "
                "GROUP BY d.destination"):
            status[dest] = (n, max(0.0, now - oldest))
        return status

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ready, what was checked): the receiver listens, the database takes a write lock,
        the state directory's disk has `min_free_mb` free."""
        checks: dict[str, Any] = {"receiver_listening": self.listening()}
        with self._lock:
            try:
                self._health.execute("BEGIN IMMEDIATE")
                self._health.execute("ROLLBACK")
                checks["database_writable"] = True
            except sqlite3.Error as exc:
                checks["database_writable"] = False
                checks["database_error"] = str(exc)
        free = shutil.disk_usage(self.state_root).free // 2**20
        checks["disk_free_mb"] = free
        checks["disk_min_free_mb"] = self.min_free_mb
        ready = (checks["receiver_listening"] and checks["database_writable"]
                 and free >= self.min_free_mb)
        return ready, checks

    def close(self) -> None:
        self.outcomes.conn.close()
        self._health.close()


def _counter(name: str, doc: str, labels: list[str],
             values: dict[tuple[str, str], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


# ---------------------------------------------------------------------------- HTTP


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 ready or 503, JSON) on a thread."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int) -> None:
        node = metrics
        log = get_logger("gateway.metrics")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, kind, code = generate_latest(node.registry), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    ready, checks = node.health()
                    body = json.dumps({"ready": bool(ready), **checks}).encode() + b"\n"
                    kind, code = "application/json", 200 if ready else 503
                else:
                    body, kind, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # scrapes are not news

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="gantry-metrics",
                                        daemon=True)
        self._log = log

    def start(self) -> None:
        self._thread.start()
        self._log.info("metrics.listening", host=self.httpd.server_address[0], port=self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def node_metrics(config: Config, db: Path, state_root: Path, stage_times: StageTimes,
                 receiver: Any, successes: StageTimes | None = None,
                 ) -> tuple[NodeMetrics | None, MetricsServer | None]:
    """A node's metrics (counting the receiver's Successes) and their HTTP server, bound but
    not yet serving; (None, None) without `metrics` in the configuration. ConfigError when the
    address cannot be bound."""
    if config.metrics is None:
        return None, None
    m = config.metrics
    metrics = NodeMetrics(db, state_root, m.min_free_disk_mb, stage_times, config.destinations,
                          receiver.listening, successes)
    receiver.on_success = metrics.received
    try:
        return metrics, MetricsServer(metrics, m.host, m.port)
    except OSError as exc:
        metrics.close()
        raise ConfigError(config.source, "metrics", f"cannot listen on {m.host}:{m.port}: "
                          f"{exc.strerror or exc}") from None


def check(url: str, timeout: float = 10.0) -> int:
    """The container's health check: 0 when `url` (a node's /healthz) answers ready, else 1;
    the answer goes to stdout."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    try:
        with urlopen(url, timeout=timeout) as answer:  # noqa: S310 - an operator's URL
            print(answer.read().decode().strip())
            return 0
    except HTTPError as exc:
        print(exc.read().decode().strip())
    except (URLError, OSError) as exc:
        print(f"{url}: {getattr(exc, 'reason', exc)}")
    return 1


if __name__ == "__main__":  # python -m gateway.metrics URL (the Dockerfile's HEALTHCHECK)
    import sys

    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9112/healthz"))
