"""What every child process of a gateway node shares: dying with the node, a name in `ps`, a
low priority (and the CPUs they keep off while the node receives), logging, and the stop flag
the node sets."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import platform
import signal
import threading
import time
from typing import Any

from gateway import logs
from gateway.config import Config

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
CHILD_NICENESS = 19
IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())  # the syscall's number
IOPRIO_WHO_PROCESS, IOPRIO_CLASS_IDLE, IOPRIO_CLASS_SHIFT = 1, 3, 13


def die_with_parent(parent: int) -> None:
    """Children die with the node even on kill -9 (no orphan keeps working on the state)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    orphaned_check(parent)  # the node may have died before we asked to die with it


def orphaned_check(parent: int) -> None:
    """Exit at once if the node that started us is gone (we were re-parented)."""
    if os.getppid() != parent:
        os._exit(1)


def name_process(name: str) -> None:
    """The name `ps -o comm`, top and /proc/<pid>/comm show (at most 15 bytes)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_NAME, name.encode()[:15])
    except (OSError, AttributeError):
        pass


def idle_io() -> None:
    """Put this process's disk I/O in the idle class (its threads started later inherit it):
    the receiver's fsync, which a sender waits for, is not queued behind a worker's output
    files. The kernel's I/O scheduler still serves idle I/O when the disk has nothing else (and
    mq-deadline and BFQ at least every few seconds); with no scheduler it changes nothing."""
    if IOPRIO_SET is None:
        return
    try:
        syscall = ctypes.CDLL("libc.so.6", use_errno=True).syscall
        for task in os.listdir("/proc/self/task"):  # the threads already running too
            syscall(IOPRIO_SET, IOPRIO_WHO_PROCESS, int(task),
                    IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT)
    except (OSError, AttributeError):
        pass


def child_setup(config: Config, role: str, parent: int) -> None:
    die_with_parent(parent)
    name_process({"forwarder": "gantry-forward"}.get(role, f"gantry-{role}"))
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: stack dump on stderr
    # Receiving (the sender waits for our answer) comes first; de-identification and
    # forwarding drain the queue with the CPU left over (at 19 rather than 5, a single sender
    # got Success at 97 instead of 74 objects/s, and the last object arrived sooner too);
    # their disk I/O likewise waits for the receiver's (the idle I/O class).
    os.nice(CHILD_NICENESS)
    idle_io()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent decides when we stop
    logs.configure(config.log_level, role=role, pid=os.getpid())


class SpareCores:
    """While the node receives, its children (workers, forwarders) keep off `reserve` of the
    CPUs the node may use, so that the receiver, whose every answer a sender waits for, always
    finds one free at once instead of waiting for a niced child to be preempted; while it is
    idle they may use them all. At least one CPU is always left to the children. (One sender,
    2 cores: 0.73x -> 0.96x the durable floor's Success rate with the children kept off one.)"""

    def __init__(self, reserve: int) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.every = set(cpus)
        self.spare = set(cpus[min(reserve, len(cpus) - 1):])
        self._lock = threading.Lock()

    def apply(self, pids: list[int], receiving: bool) -> None:
        """Give every thread of `pids` the CPUs it may use now."""
        cpus = self.spare if receiving else self.every
        with self._lock:
            for pid in pids:
                try:
                    tasks = os.listdir(f"/proc/{pid}/task")
                except OSError:  # gone
                    continue
                for task in tasks:
                    try:
                        os.sched_setaffinity(int(task), cpus)
                    except OSError:  # a thread that ended meanwhile
                        pass


class StopFlag:
    """A stop flag shared with child processes: one byte of shared memory, polled.
    (multiprocessing.Event's notify_all can block the setter when waiters time out.)"""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)
        self.node_pid = os.getpid()  # the children's parent: they exit if it is gone

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._value.value:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.05))
        return True
