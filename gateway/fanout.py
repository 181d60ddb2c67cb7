"""Run one function over many inputs in forked worker processes.

The parent hands each worker chunks of input indices over its own pipe, two chunks ahead so that
no worker waits for it, and gets a chunk's results back in one message. It runs no threads and
pickles no inputs: the workers are forked and read the inputs they inherited. Each worker notes
in shared memory the input it is on, so that when a worker dies (a decoder's crash, the OOM
killer) that input is reported as the cause, a new worker takes its place, and the rest of its
chunks are done by the others.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pipe, RawArray
from multiprocessing.connection import Connection, wait
from typing import Any

#: Deaths of workers holding work but on no input (killed between inputs, or at their
#: start), beyond which the run stops.
MAX_UNEXPLAINED_DEATHS = 3
#: When the parent stops early, how long workers get to unwind (remove a half-written file).
STOP_GRACE_SECONDS = 5.0


class WorkersDying(RuntimeError):
    """Worker processes die before they finish any input: the run cannot go on."""


@dataclass
class _Worker:
    pid: int
    slot: int
    conn: Connection
    chunks: deque[list[int]] = field(default_factory=deque)
    stopped: bool = False  # told there is no more work


def exit_description(status: int) -> str:
    """A waitpid status in words: 'killed by SIGSEGV' or 'exit status 1'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class _Terminated(BaseException):
    """SIGTERM, raised where the worker is, so that the work in hand unwinds."""


def _unwind(_signum: int, _frame: object) -> None:
    raise _Terminated


def _serve(conn: Connection, slot: int, current: Any, items: Sequence[Any],
           work: Callable[[Any], Any]) -> None:
    """A worker's life: chunks in, results out, until told to stop. Never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop ...
        signal.signal(signal.SIGTERM, _unwind)  # ... and then the work's cleanup runs
        while (chunk := conn.recv()) is not None:
            results = []
            for i in chunk:
                current[slot] = i
                results.append((i, work(items[i])))
            conn.send(results)
    except _Terminated:  # unwound: now die of the signal, so the exit status says so
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    except BaseException:  # noqa: BLE001 - the parent sees the exit status and says what died
        code = 1
    os._exit(code)  # no atexit handlers or flushing of stdio inherited from the parent


def fan_out(items: Sequence[Any], work: Callable[[Any], Any], workers: int,
            on_result: Callable[[int, Any], None],
            on_death: Callable[[int, str], None]) -> None:
    """Call `work(item)` for every item in `workers` forked processes. The parent is told of each
    result as `on_result(index, result)`, in the order they finish; of an item whose worker died
    on it as `on_death(index, how)`, `how` being e.g. 'killed by SIGSEGV'. `work` should not
    raise: an exception ends its worker like a crash."""
    if workers < 1:
        raise ValueError(f"workers: {workers} is not a number of processes (1 or more)")
    n = len(items)
    size = max(1, min(16, n // (workers * 8)))
    pending: deque[list[int]] = deque(list(range(i, min(i + size, n))) for i in range(0, n, size))
    current = RawArray("q", workers)
    live: dict[Connection, _Worker] = {}
    done = bytearray(n)
    unexplained = 0

    def feed(worker: _Worker) -> None:
        message = None
        if pending:
            message = pending.popleft()
            worker.chunks.append(message)  # a worker that died before it gets it gives it back
        elif worker.stopped:
            return
        worker.stopped = message is None
        try:
            worker.conn.send(message)
        except OSError:  # it died: its end of the pipe reads as closed next, and bury() sees why
            pass

    def spawn(slot: int) -> _Worker:
        current[slot] = -1
        parent_end, child_end = Pipe()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            for other in live:
                other.close()
            _serve(child_end, slot, current, items, work)
        child_end.close()
        worker = _Worker(pid, slot, parent_end)
        live[parent_end] = worker
        feed(worker)
        return worker

    def bury(worker: _Worker) -> None:
        nonlocal unexplained
        del live[worker.conn]
        worker.conn.close()
        _, status = os.waitpid(worker.pid, 0)
        left = [i for chunk in worker.chunks for i in chunk if not done[i]]
        if not left and os.waitstatus_to_exitcode(status) == 0:
            return
        how = exit_description(status)
        culprit = current[worker.slot]
        if culprit in left:
            left.remove(culprit)
            done[culprit] = 1
            on_death(culprit, how)
        elif left:  # it died holding work, on none of it: between inputs, or at its start
            unexplained += 1
            if unexplained > MAX_UNEXPLAINED_DEATHS:
                raise WorkersDying(f"worker processes keep dying between inputs (last: {how})")
        if left:
            pending.appendleft(left)
        if pending:
            feed(spawn(worker.slot))

    try:
        # One chunk to each worker, then one more each: a few large files are shared out.
        for worker in [spawn(slot) for slot in range(min(workers, len(pending)))]:
            feed(worker)
        while live:
            for conn in wait(list(live)):
                worker = live[conn]  # type: ignore[index]
                try:
                    results = worker.conn.recv()
                except (EOFError, OSError):
                    bury(worker)
                    continue
                worker.chunks.popleft()
                feed(worker)
                for i, result in results:
                    done[i] = 1
                    on_result(i, result)
    finally:
        _stop([worker.pid for worker in live.values()])


def _stop(pids: list[int]) -> None:
    """End workers the parent no longer waits for: SIGTERM, so that the work unwinds (a file
    being written is removed), then SIGKILL for any still there after the grace period."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for pid in pids:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
