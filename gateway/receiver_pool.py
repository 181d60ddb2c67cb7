"""The node's extra receiver processes (`network.receivers: N`): N - 1 processes beside the
node's own receiver, each listening on the same port (SO_REUSEPORT: the kernel spreads new
connections over them) and spooling into the same state directory, so that concurrent
associations are received in parallel. They are respawned if they die and stopped like the
node's own receiver: stop accepting, let receives in flight finish, then close. Each sends the
ATNA messages of the associations it takes, and counts its Successes into its row of the node's
shared `success_times` (row 0 is the node's own receiver), which /metrics sums.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

from gateway.config import Config
from gateway.metrics import StageRecorder, StageTimes
from gateway.statedir import StateDir

#: Seconds a stopping receiver process lets its associations in flight finish.
STOP_GRACE = 30.0


def receiver_main(config: Config, site_key: bytes, root: str, port: int, stop: Any,
                  successes: StageRecorder) -> None:
    """A receiver process's life: listen on `port` beside the node until `stop` is set."""
    from gateway import logs
    from gateway.children import die_with_parent, name_process
    from gateway.net.receiver import Receiver

    die_with_parent(stop.node_pid)
    name_process("gantry-receiver")  # not niced: receiving comes first, as in the node
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the node decides when we stop
    logs.configure(config.log_level, role="receiver", pid=os.getpid())
    state = StateDir(root)
    config = dataclasses.replace(config, network=dataclasses.replace(config.network, port=port))
    receiver = Receiver(config, site_key, state.db, state.spool, on_success=successes.success)
    receiver.start()
    audit = None
    if config.audit.syslog:
        from gateway.auditfeed import AuditFeed

        audit = AuditFeed(config, state.root)  # only its association messages: the node
        audit.listen_to(receiver)  # sends every job event's, read from the database
    try:
        while not stop.wait(0.5):
            if os.getppid() != stop.node_pid:
                break  # the node is gone
    finally:
        receiver.stop_accepting()
        receiver.wait_idle(STOP_GRACE)
        receiver.abort_all()
        receiver.close()
        if audit is not None:
            audit.sender.close()


class ReceiverPool:
    """`network.receivers` - 1 receiver processes on `port` (started by `start`, kept alive
    by `check`); the i-th counts into row i + 1 of `successes`."""

    def __init__(self, ctx: Any, config: Config, site_key: bytes, root: str, stop_flag: Any,
                 successes: StageTimes) -> None:
        self.ctx, self.config, self.key, self.root = ctx, config, site_key, root
        self.count, self.stop_flag = config.network.receivers - 1, stop_flag
        self.successes = successes
        self.processes: list[Any] = []
        self.port = 0

    def start(self, port: int) -> None:
        self.port = port
        self.processes = [self._spawn(i) for i in range(self.count)]

    def _spawn(self, i: int) -> Any:
        process = self.ctx.Process(
            target=receiver_main, name=f"receiver-{i}", daemon=True,
            args=(self.config, self.key, self.root, self.port, self.stop_flag,
                  self.successes.recorder(i + 1)))
        process.start()
        return process

    def check(self) -> list[int | None]:
        """Respawn receiver processes that died; their exit codes."""
        died = []
        for i, process in enumerate(self.processes):
            if not process.is_alive():
                died.append(process.exitcode)
                self.processes[i] = self._spawn(i)
        return died

    def stop(self, grace: float = STOP_GRACE) -> None:
        self.stop_flag.set()
        for process in self.processes:
            process.join(grace + 5)
            if process.is_alive():
                process.kill()
                process.join(5)
