"""`gantry deidentify --scheduler`: the batch on a real Dask cluster, byte-identical to a local
run, with the site key read on the workers, and a worker killed mid-run losing nothing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.batch import quarantine_dir, run_batch
from gateway.config import load_config
from gateway.pipeline import Outcome

distributed = pytest.importorskip("distributed", reason="needs gantry[dask] (dask, distributed)")

GANTRY = Path(sys.executable).parent / "gantry"
DASK = Path(sys.executable).parent / "dask"
BatchFolder = Any  # the `batch_folder` fixture of tests/conftest.py


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones included: a leftover temp file is a defect)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_local_cluster_output_is_byte_identical_and_the_key_stays_on_the_workers(
        batch_folder: BatchFolder, site_key: bytes, gantry_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = tmp_path / "local"
    run_batch(batch_folder.root, local, load_config(None), site_key, workers=1)

    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())  # the workers' environment only
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        env = {k: v for k, v in gantry_env.items() if k != "GANTRY_SITE_KEY"}
        remote = tmp_path / "remote"
        command = [str(GANTRY)] if GANTRY.exists() else [sys.executable, "-m", "gateway.cli"]
        run = subprocess.run(command + ["deidentify", str(batch_folder.root), str(remote),
                                        "--scheduler", cluster.scheduler_address],
                             capture_output=True, text=True, env=env, timeout=600)
        with distributed.Client(cluster) as client:
            logs = str(client.get_worker_logs()) + str(client.get_scheduler_logs())
    printed = run.stdout + run.stderr
    assert run.returncode == 1, printed  # the malformed files are quarantined
    assert f"{len(batch_folder.good)} de-identified" in printed
    assert tree(remote) == tree(local) and tree(local)
    assert tree(quarantine_dir(remote)) == tree(quarantine_dir(local))
    for text in (printed, logs):
        assert site_key.hex() not in text
        for value in batch_folder.planted:
            assert value not in text, "a planted identifier was printed or logged"


def test_without_the_key_on_the_workers_the_run_fails_by_name(
        batch_folder: BatchFolder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway.config import ConfigError
    from gateway.dask_batch import run_batch_dask

    monkeypatch.delenv("GANTRY_SITE_KEY", raising=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        with pytest.raises(ConfigError, match="GANTRY_SITE_KEY is not set"):
            run_batch_dask(batch_folder.root, tmp_path / "out", load_config(None),
                           cluster.scheduler_address)
    assert tree(tmp_path / "out") == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def many_files(tmp_path: Path) -> Path:
    """80 small CTs, each its own object (distinct SOP Instance UIDs)."""
    folder = tmp_path / "in"
    folder.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i in range(80):
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.7.{i + 1}"
        ds.save_as(folder / f"{i:03d}.dcm")
    return folder


def test_tasks_cover_the_files_in_order_and_shrink_towards_the_end() -> None:
    """Tasks of at most `most` files, in order, none left out or repeated; the last ones small,
    so that no worker idles through another's last full task."""
    from gateway.dask_batch import _chunks

    for n, workers, most in [(2000, 2, 64), (10_000, 8, 64), (100, 2, 64), (80, 2, 2), (7, 2, 64),
                             (1, 4, 64), (0, 2, 64)]:
        parts = _chunks(n, workers, most)
        assert [i for part in parts for i in part] == list(range(n))
        sizes = [len(part) for part in parts]
        assert all(0 < size <= most for size in sizes)
        assert sizes == sorted(sizes, reverse=True), sizes
        if n >= 64 * workers * 2:
            assert sizes[0] == most and sizes[-1] <= most // 8, sizes


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
        many_files: Path, site_key: bytes, tmp_path: Path) -> None:
    """`dask scheduler` and two `dask worker` processes on loopback; one is SIGKILLed while it
    holds tasks; its tasks run on the other, and OUTPUT is exactly a local run's."""
    from gateway.dask_batch import run_batch_dask

    if not DASK.exists():
        pytest.skip("the `dask` command (gantry[dask]) is not in this environment")
    local = tmp_path / "local"
    run_batch(many_files, local, load_config(None), site_key, workers=1)

    env = dict(os.environ, GANTRY_SITE_KEY=site_key.hex())
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        with distributed.Client(address, timeout=120) as watcher:
            for _ in range(2):
                procs.append(subprocess.Popen(
                    [str(DASK), "worker", address, "--nthreads", "1", "--no-nanny",
                     "--host", "127.0.0.1", "--no-dashboard", "--preload", "gateway.dask_batch"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            watcher.wait_for_workers(2, timeout=180)
            pids = watcher.run(os.getpid)
            # The preload readied each worker: the engine imported, what exists frozen out of
            # the garbage collections, Dask's statistical profiler stopped.
            def _preloaded(dask_worker: Any) -> dict[str, bool]:  # sent by value (nested)
                import gc

                return {"engine": "gateway.pipeline" in sys.modules,
                        "frozen": gc.get_freeze_count() > 0,
                        "profiler": "profile" in dask_worker.periodic_callbacks}

            for ready in watcher.run(_preloaded).values():
                assert ready == {"engine": True, "frozen": True, "profiler": False}
            killed: dict[str, Any] = {}

            def kill_one(_src: Path, _outcome: Outcome) -> None:
                if killed:
                    return
                busy = {w: tasks for w, tasks in watcher.processing().items() if tasks}
                if not busy:
                    return  # between tasks: try again at the next result
                worker = sorted(busy)[0]
                os.kill(pids[worker], signal.SIGKILL)
                killed[worker] = busy[worker]

            remote = tmp_path / "remote"
            summary = run_batch_dask(many_files, remote, load_config(None), address,
                                     on_result=kill_one, chunk=2)
            assert killed, "no worker was holding a task when results came in"
            deadline = time.monotonic() + 120
            while len(watcher.scheduler_info()["workers"]) != 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(watcher.scheduler_info()["workers"]) == 1
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait()
    assert summary.written == 80 and summary.quarantined == 0 and not summary.duplicates
    assert tree(remote) == tree(local)
    assert len(tree(remote)) == 80
    assert not quarantine_dir(remote).exists()
    shutil.rmtree(remote)


def _loaded(env: dict[str, str], *args: str
            ) -> tuple[subprocess.CompletedProcess, set[str], int, bool]:
    """`gantry ARGS` run in a Python that prints, last, the modules it imported (gateway's by
    name, the others by top-level package), how many objects were left frozen out of the
    garbage collections, and whether the collector is on."""
    script = ("import gc, sys\nfrom gateway.cli import main\ncode = main(sys.argv[1:])\n"
              "print((sorted({m if m.startswith('gateway.') else m.split('.')[0] "
              "for m in sys.modules}), gc.get_freeze_count(), gc.isenabled()))\n"
              "sys.exit(code)\n")
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=env, timeout=600)
    modules, frozen, collecting = eval(run.stdout.splitlines()[-1])  # noqa: S307 - our repr
    return run, set(modules), frozen, collecting


def test_each_form_of_deidentify_imports_only_what_it_runs(
        batch_folder: BatchFolder, site_key: bytes, gantry_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The command's start is part of its time: the Dask client reads no DICOM (the workers
    do), and neither form loads the network stack, metrics, logging, crypto or rich."""
    never = {"pynetdicom", "prometheus_client", "structlog", "cryptography", "rich"}
    run, local, _, _ = _loaded(gantry_env, "deidentify", str(batch_folder.root),
                               str(tmp_path / "a"), "--workers", "1")
    assert run.returncode == 1 and {"pydicom", "gateway.pipeline"} <= local, run.stderr
    assert not local & never, local & never

    monkeypatch.setenv("GANTRY_SITE_KEY", site_key.hex())  # the workers' environment
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        run, client, frozen, collecting = _loaded(
            gantry_env, "deidentify", str(batch_folder.root), str(tmp_path / "b"),
            "--scheduler", cluster.scheduler_address)
    assert run.returncode == 1 and "distributed" in client, run.stderr
    assert not client & (never | {"pydicom", "gateway.pipeline"}), client
    # What `distributed`'s import made is frozen out of the collections (and of the exit's),
    # and the collector, off while it was imported, is on again.
    assert frozen > 10_000 and collecting, (frozen, collecting)
    assert tree(tmp_path / "b") == tree(tmp_path / "a")


def test_the_sweep_removes_what_a_worker_killed_mid_write_left(tmp_path: Path) -> None:
    """A worker killed while writing leaves the writer's temp file of its staged copy; the
    client's sweep removes it with the lost staged copies, and keeps every output."""
    from gateway.dask_batch import _sweep
    from gateway.dicomio import temp_name

    folder = tmp_path / "out" / "study" / "series"
    folder.mkdir(parents=True)
    final = folder / "1.2.3.dcm"
    final.write_bytes(b"kept")
    kept_staged = folder / ".1.2.4.dcm.77-ab.1.staged"
    kept_staged.write_bytes(b"a conflict kept beside its name")
    lost = folder / ".1.2.5.dcm.88-cd.2.staged"
    lost.write_bytes(b"lost")
    writing = folder / temp_name(".1.2.6.dcm.99-ef.3.staged", 99)
    writing.write_bytes(b"half")
    _sweep(tmp_path / "out", {final, kept_staged})
    assert sorted(p.name for p in folder.iterdir()) == sorted([final.name, kept_staged.name])
