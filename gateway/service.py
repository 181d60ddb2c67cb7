"""The gateway node: receiver (this process), worker processes, one forwarder process per
destination, all sharing the state directory (SQLite + files).

Start: every claim left by a previous run is requeued, every whole spool file without a job
gets one again (statedir.recover) and stray files are swept, then the children start, then the
receiver listens. SIGTERM/SIGINT: stop accepting associations, let receives in flight finish,
ask the children to stop after their current object, leave the rest queued for the next start.
SIGHUP: re-read and check the configuration file; a valid one replaces the running one
(workers and forwarders restart with it after their current object, the receiver keeps
listening), a bad one is refused loudly and the running one kept.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pynetdicom import evt

from gateway import logs, running
from gateway.children import SpareCores, StopFlag, child_setup, orphaned_check
from gateway.config import Config, ConfigError, load_config
from gateway.metrics import (
    SUCCESS,
    StageRecorder,
    StageTimes,
    node_metrics,
    success_times,
)
from gateway.receiver_pool import ReceiverPool
from gateway.statedir import StateDir
from gateway.store import Store
from gateway.worker import worker_main

STAGE_ROWS = 64  # children whose stage times the node can keep apart (more share rows)


def _say(text: str) -> None:
    """A line on stderr for the operator watching the node (a closed stderr is no error)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def state_root(config: Config) -> Path:
    """`state_dir`, relative to the configuration file when it names one."""
    root = Path(config.state_dir)
    if not root.is_absolute() and config.source.startswith("/"):
        root = Path(config.source).parent / root
    return root


def forwarder_main(config: Config, name: str, root: str, stop: Any,
                   times: StageRecorder | None = None) -> None:
    """Entry point of the forwarder process of one destination."""
    from gateway.net.forwarder import Outbox
    from gateway.net.tls import client_context

    child_setup(config, "forwarder", stop.node_pid)
    local_stop = threading.Event()  # the slots' flag, set when the node's flag is
    outbox = Outbox(name, config.destinations[name], StateDir(root),
                    calling_ae=config.network.ae_title, stop=local_stop,
                    tls=client_context(config, name), times=times)
    outbox.start()
    while not stop.wait(0.1):
        orphaned_check(stop.node_pid)
    local_stop.set()
    outbox.join(60)


# ---------------------------------------------------------------------------- the node


@dataclass
class _Child:
    name: str
    target: Any
    args: tuple
    process: Any = None
    current: Any = None  # a worker's job in hand (shared memory), b"" between jobs

    def owner_prefix(self) -> str:
        """How the claims of this child's current process are labelled."""
        if self.name.startswith("forwarder-"):
            return f"fwd-{self.name.removeprefix('forwarder-')}-{self.process.pid}:"
        return f"worker-{self.process.pid}-"


def _take_state_dir(config: Config) -> tuple[StateDir, TextIO]:
    """The node's state directory, created if needed, and its lock (ConfigError if another
    node holds it or it cannot be created)."""
    path = state_root(config)
    try:
        state = StateDir(path)
    except OSError as exc:
        raise ConfigError(config.source, "state_dir",
                          f"cannot use {path}: {exc.strerror or exc}") from None
    lock = state.lock()
    if lock is None:
        raise ConfigError(config.source, "state_dir",
                          f"{state.root.resolve()} is in use by another `gantry serve` (pid "
                          f"{state.lock_holder()}); one node per state directory")
    return state, lock


class Service:
    """One gateway node over one state directory."""

    def __init__(self, config: Config, site_key: bytes) -> None:
        from gateway.net.receiver import Receiver
        from gateway.net.tls import client_context
        from gateway.pipeline import Pipeline

        # What every worker compiles at its start (profiles, redaction rules and scripts,
        # recipient certificates), compiled once here: a configuration the workers could not
        # start with stops the node before it accepts an object, instead of a restart loop.
        Pipeline(config, site_key)
        for name in config.destinations:  # the same for the forwarders' TLS files
            client_context(config, name)
        self.config = config
        self.key = site_key
        self.digest = running.file_digest(config.source)
        self.loaded_at = time.time()
        self.state, self._lock = _take_state_dir(config)
        self.store = Store(self.state.db, checkpoints=False)  # it runs `checkpoint`
        self.log = logs.get_logger("gateway.service")
        self.ctx = mp.get_context("spawn")
        self.stop_children = StopFlag(self.ctx)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.reloads = 0
        self.stage_times = StageTimes(self.ctx, STAGE_ROWS)
        successes = success_times(self.ctx, config.network.receivers)
        self.receiver = Receiver(config, site_key, self.state.db, self.state.spool,
                                 on_success=successes.recorder(0).success)
        self.successes, self._answered = successes, 0.0
        self.cores = SpareCores(config.network.receivers)
        self._opened = threading.Event()  # an association was established since the last look
        self.metrics, self.metrics_server = node_metrics(config, self.state.db, self.state.root,
                                                         self.stage_times, self.receiver,
                                                         successes)
        self.children = self._children(config, site_key, self.stop_children)
        # receivers beyond this process's own (not restarted by a reload, like this one)
        self.receivers = ReceiverPool(self.ctx, config, site_key, str(self.state.root),
                                      StopFlag(self.ctx), successes)
        self.audit = None
        if config.audit.syslog:
            from gateway.auditfeed import AuditFeed

            self.audit = AuditFeed(config, self.state.root)

    def _children(self, config: Config, site_key: bytes, stop: StopFlag) -> list[_Child]:
        root = str(self.state.root)
        workers = [self.ctx.RawArray("c", 64) for _ in range(max(1, config.network.workers))]
        times = [self.stage_times.recorder(i % STAGE_ROWS)
                 for i in range(len(workers) + len(config.destinations))]
        return [
            _Child(f"worker-{i}", worker_main,
                   (config, site_key, root, stop, current, times.pop()), current=current)
            for i, current in enumerate(workers)
        ] + [
            _Child(f"forwarder-{name}", forwarder_main, (config, name, root, stop, times.pop()))
            for name in config.destinations
        ]

    @property
    def port(self) -> int:
        return self.receiver.port

    def start(self) -> None:
        """Recover, start the children, then listen. `serve` then runs `supervise`; a caller
        that embeds the node runs it too (in a thread, as the demo does): without it dead
        children stay dead, claims are never requeued, and the children keep off the receiver's
        CPU after the first association."""
        requeued = self.store.reclaim(everything=True)
        remade = self.state.recover(self.store, self.key)
        swept = self.state.sweep(self.store)
        self.log.info("service.recovered", requeued=requeued, jobs_from_spool=remade,
                      files_swept=swept, pending=self.store.pending_jobs())
        for dest in self.store.destination_status():
            if dest["backlog"] and dest["destination"] not in self.config.destinations:
                # No outbox serves it: its deliveries wait until it is configured again.
                self.log.warning("deliveries.unconfigured_destination",
                                 destination=dest["destination"], backlog=dest["backlog"])
        for child in self.children:
            self._spawn(child)
        if self.audit is not None:
            self.audit.started(self.store)
        self.receiver.start()
        self.receiver.bind(evt.EVT_ESTABLISHED, self._on_established)
        self.receivers.start(self.receiver.port)
        if self.metrics_server is not None:
            self.metrics_server.start()
        if self.audit is not None:
            self.audit.listen_to(self.receiver)
        self._record()

    def _record(self, refused: str | None = None, restart_needed: tuple[str, ...] = ()) -> None:
        """Tell the commands which configuration runs (node.json in the state directory)."""
        source = self.config.source
        path = str(Path(source).resolve()) if not source.startswith("<") else source
        try:
            running.write(self.state.root, running.NodeRecord(
                pid=os.getpid(), config=path, digest=self.digest, loaded_at=self.loaded_at,
                reloads=self.reloads, refused=refused, restart_needed=restart_needed))
        except OSError as exc:
            self.log.warning("service.record_failed", error=exc.strerror or type(exc).__name__)

    def _spawn(self, child: _Child) -> None:
        child.process = self.ctx.Process(target=child.target, args=child.args,
                                         name=child.name, daemon=True)
        child.process.start()

    def supervise(self) -> None:
        """Until asked to stop: respawn dead children, requeue expired claims."""
        last_reclaim = time.monotonic()
        while not self.stopping.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if self.audit is not None:
                try:
                    self.audit.poll(self.store)
                except (sqlite3.Error, OSError) as exc:  # the next round tries again
                    self.log.warning("audit.poll_failed", error=type(exc).__name__)
            self._share_cores()
            try:
                self.store.checkpoint()
            except sqlite3.Error as exc:  # the next round tries again; never stop supervising
                self.log.warning("store.checkpoint_failed", error=type(exc).__name__)
            for child in self.children:
                if not child.process.is_alive():
                    self._bury(child)
                    self._spawn(child)
            for exitcode in self.receivers.check():
                self.log.error("child.died", child="receiver", exitcode=exitcode)
            if time.monotonic() - last_reclaim > 30:
                try:
                    self.store.reclaim()
                    last_reclaim = time.monotonic()
                except sqlite3.Error as exc:
                    self.log.warning("store.reclaim_failed", error=type(exc).__name__)

    def _child_pids(self) -> list[int]:
        return [c.process.pid for c in self.children if c.process is not None]

    def _on_established(self, _event: Any) -> None:
        self._opened.set()
        self.cores.apply(self._child_pids(), receiving=True)  # at once, not at the next look

    def _share_cores(self) -> None:
        """Keep the children off the receivers' CPUs while the node receives (a Success answered
        by any receiver, or an association established here, since the last look); give them
        back once it is idle (an association held open with nothing to send is idle)."""
        answered = self.successes.merged(SUCCESS)[1]
        receiving = answered != self._answered or self._opened.is_set()
        self._answered = answered
        self._opened.clear()
        self.cores.apply(self._child_pids(), receiving)

    def _bury(self, child: _Child) -> None:
        """A child died: requeue its claims (its death counts against the job it was working
        on, no other) and remove the file it was writing."""
        culprit = child.current.value.decode() if child.current is not None else ""
        try:
            requeued = self.store.reclaim(owner=child.owner_prefix(), culprit=culprit or None)
        except sqlite3.Error:  # the claims' leases expire, and the next reclaim requeues them
            requeued = 0
        removed = self.state.discard_partial(child.process.pid)
        if child.current is not None:
            child.current.value = b""
        self.log.error("child.died", child=child.name, exitcode=child.process.exitcode,
                       job=culprit or None, requeued=requeued, partial_files_removed=removed)

    def reload(self) -> bool:
        """Re-read the configuration file. A valid one (it loads, its site key is the same, its
        profiles, rules and certificates compile, the state directory is the same) replaces the
        running one: the workers and forwarders stop after their current object and start again
        with it, and the receiver keeps listening (changes to `network` wait for a restart). A
        bad one is refused with the problem, logged and printed, and nothing changes."""
        from gateway.net.tls import client_context
        from gateway.pipeline import Pipeline
        from gateway.sitekey import SiteKeyError, load_site_key

        source = self.config.source
        self.reloads += 1
        digest = running.file_digest(source)
        try:
            config = load_config(source)
            key = load_site_key(config)
            if key != self.key:
                raise ConfigError(source, "site_key", "the site key is not the one the node "
                                  "runs with; a new key takes a restart")
            if state_root(config).resolve() != self.state.root.resolve():
                raise ConfigError(source, "state_dir", "the state directory cannot change "
                                  "while the node runs; a new one takes a restart")
            Pipeline(config, key)
            for name in config.destinations:
                client_context(config, name)
        except (ConfigError, SiteKeyError, ValueError, OSError) as exc:
            self.log.error("config.reload_refused", config=source, problem=str(exc))
            _say(f"gantry: reload refused, the node keeps its running configuration: {exc}")
            self._record(refused=str(exc))
            return False
        restart = tuple(name for name in ("network", "audit", "metrics")
                        if getattr(config, name) != getattr(self.config, name))
        self._stop_children(self.children, self.stop_children, grace=60)
        self.config, self.digest, self.loaded_at = config, digest, time.time()
        if self.audit is not None:
            self.audit.config = config  # destinations named in the transfer messages
        self.stop_children = StopFlag(self.ctx)
        self.children = self._children(config, key, self.stop_children)
        for child in self.children:
            self._spawn(child)
        if self.metrics is not None:
            self.metrics.destinations = list(config.destinations)
        self.log.info("config.reloaded", config=source, sha256=(digest or "")[:12],
                      workers=len(self.children) - len(config.destinations),
                      destinations=list(config.destinations))
        if restart:
            self.log.warning("config.restart_needed", sections=list(restart))
            _say(f"gantry: {', '.join(restart)} changed: that takes a restart of the node")
        self._record(restart_needed=restart)
        return True

    def _stop_children(self, children: list[_Child], flag: StopFlag, grace: float) -> None:
        """Ask `children` to stop after their current object; kill those that do not, and
        requeue what they held."""
        flag.set()
        for child in children:
            if child.process is None:
                continue
            child.process.join(grace)
            if child.process.is_alive():
                self.log.warning("child.killed", child=child.name)
                child.process.kill()
                child.process.join(5)
            self.store.reclaim(owner=child.owner_prefix())  # stopped by us: nothing counted
            self.state.discard_partial(child.process.pid)
            self.log.debug("child.stopped", child=child.name, exitcode=child.process.exitcode)

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, finish receives in flight, stop the children, leave the rest."""
        self.stopping.set()
        self.receiver.stop_accepting()
        self.receivers.stop(grace)
        if not self.receiver.wait_idle(grace):
            self.log.warning("service.abort_in_flight", associations=self.receiver.active())
        self.receiver.abort_all()  # whatever is left: unfinished or never negotiated
        self.receiver.close()
        self.stop_children.set()
        for child in self.children:
            if child.process is not None:
                child.process.join(grace)
                if child.process.is_alive():
                    self.log.warning("child.killed", child=child.name)
                    child.process.kill()
                    child.process.join(5)
                self.log.debug("child.stopped", child=child.name,
                               exitcode=child.process.exitcode)
        self.log.info("service.stopped", pending=self.store.pending_jobs())
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self.audit is not None:
            self.audit.stopped(self.store)
        self.store.close()
        self._lock.close()

    def serve(self) -> int:
        """Run in the foreground until SIGTERM or SIGINT."""
        received: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            # Only set the flag: a handler that logs can raise (a dead log sink) or wait for
            # the lock of a line the main thread is writing, and then the node never stops.
            received.append(signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.reload_requested.set())
        try:
            self.start()
        except OSError as exc:  # e.g. the port is taken
            net = self.config.network
            self.log.error("service.cannot_listen", host=net.host, port=net.port,
                           error=exc.strerror or type(exc).__name__)
            print(f"gantry: cannot listen on {net.host}:{net.port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            self.stop(grace=5)
            return 2
        self.log.info("service.ready", port=self.port, workers=self.config.network.workers,
                      destinations=list(self.config.destinations))
        self.supervise()
        if received:
            self.log.info("service.signal", signal=signal.Signals(received[0]).name)
        self.stop()
        return 0
