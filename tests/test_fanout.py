"""Forked workers (`gateway.fanout`): every input's result reaches the parent once; a worker
that dies on an input is blamed for that input alone, replaced, and the rest still get done."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import time
from pathlib import Path

import pytest

from gateway import fanout
from gateway.batch import quarantine_dir, run_batch
from gateway.config import load_config
from gateway.fanout import WorkersDying, fan_out
from gateway.pipeline import Pipeline


def run(items: list, work, workers: int = 2) -> tuple[dict[int, object], dict[int, str]]:
    results: dict[int, object] = {}
    deaths: dict[int, str] = {}

    def on_result(i: int, result: object) -> None:
        assert i not in results and i not in deaths, f"item {i} reported twice"
        results[i] = result

    def on_death(i: int, how: str) -> None:
        assert i not in results and i not in deaths, f"item {i} reported twice"
        deaths[i] = how

    fan_out(items, work, workers, on_result, on_death)
    return results, deaths


def square_in_a_worker(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_every_item_done_once_in_the_workers() -> None:
    results, deaths = run(list(range(203)), square_in_a_worker)
    assert deaths == {}
    assert {i: r[0] for i, r in results.items()} == {i: i * i for i in range(203)}
    pids = {r[1] for r in results.values()}
    assert os.getpid() not in pids and len(pids) == 2


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_fewer_items_than_workers_or_chunks(workers: int) -> None:
    results, _ = run([3, 4], square_in_a_worker, workers)
    assert {i: r[0] for i, r in results.items()} == {0: 9, 1: 16}
    if workers > 1:  # two large files on two workers go one to each, not both to the first
        assert len({r[1] for r in results.values()}) == 2


def segfault() -> None:
    """What a decoder's bad pointer does (without pytest's faulthandler printing the stack of
    a crash that is meant; this runs in the worker, so the parent keeps its handler)."""
    faulthandler.disable()
    ctypes.string_at(0)


@pytest.mark.parametrize("workers", [0, -2])
def test_a_number_of_workers_below_one_is_refused(workers: int) -> None:
    with pytest.raises(ValueError, match="1 or more"):
        run([1, 2], square_in_a_worker, workers)


def crash_on(bad: set[int], how: str):
    def work(x: int) -> int:
        if x in bad:
            if how == "segfault":
                segfault()
            if how == "term":  # an operator's kill: the worker unwinds, then dies of it
                os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
        return x + 1000
    return work


@pytest.mark.parametrize("how, words", [("segfault", "killed by SIGSEGV"),
                                        ("kill", "killed by SIGKILL"),
                                        ("term", "killed by SIGTERM")])
def test_a_worker_that_dies_is_blamed_for_its_item_alone(how: str, words: str) -> None:
    bad = {7, 50, 51, 99}
    results, deaths = run(list(range(100)), crash_on(bad, how))
    assert deaths == {i: words for i in bad}
    assert results == {i: i + 1000 for i in range(100) if i not in bad}


def test_workers_that_die_before_any_item_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot(*_args: object) -> None:
        raise OSError("no signals here")

    # The worker's first act; the parent does not call it (fork carries the patch across).
    monkeypatch.setattr(fanout.signal, "signal", cannot)
    with pytest.raises(WorkersDying, match="exit status 1"):
        run(list(range(10)), square_in_a_worker)


def test_no_worker_outlives_an_error_in_the_parent() -> None:
    pids: set[int] = set()

    def on_result(_i: int, result: tuple[int, int]) -> None:
        pids.add(result[1])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fan_out(list(range(100)), square_in_a_worker, 2, on_result, lambda i, how: None)
    assert pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: no zombie, no orphan still working


def test_a_stopped_run_lets_the_item_in_hand_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "half-written"

    def work(x: int) -> int:
        if x == 1:  # the other worker's only item: it is in hand when the parent stops
            marker.touch()
            try:
                time.sleep(60)
            finally:
                marker.unlink()  # what write() does with its temporary file
        return x

    def on_result(_i: int, _result: int) -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the other worker never started its item"
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fan_out([0, 1], work, 2, on_result, lambda i, how: None)
    assert not marker.exists(), "the worker was killed without unwinding"
    assert time.monotonic() - start < 30, "the parent waited for the item to finish"


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_quarantines_the_file_a_worker_died_on(batch_folder, tmp_path: Path,
                                                     site_key: bytes, workers: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    victim = batch_folder.good[0]
    read = Pipeline.read

    def crashing(self: Pipeline, src: Path):
        if src == victim:
            segfault()
        return read(self, src)

    monkeypatch.setattr(Pipeline, "read", crashing)
    out = tmp_path / "OUT"
    summary = run_batch(batch_folder.root, out, load_config(None), site_key, workers)
    assert summary.written == len(batch_folder.good) - 1
    assert summary.quarantined == len(batch_folder.bad) + 1
    assert summary.reasons["worker died"] == 1
    rel = victim.relative_to(batch_folder.root)
    copy = quarantine_dir(out) / rel
    assert copy.read_bytes() == victim.read_bytes()
    reason = copy.with_name(copy.name + ".reason.txt").read_text()
    assert "killed by SIGSEGV" in reason
    assert len(list(out.rglob("*.dcm"))) == summary.written
