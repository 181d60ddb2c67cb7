"""Batch de-identification on a Dask distributed cluster (`gantry deidentify --scheduler`).

The client sends the configuration to every worker once, never the site key, and cuts the inputs
into tasks of many files: every worker reads the key from the file or environment variable the
configuration names (at each task, so a long-running worker follows a new key), compiles the same
Pipeline once per configuration and key, and writes outputs (temp file, then link: never partial)
to the filesystem it shares with the client. Outcomes come back per file as plain tuples, so the
client imports none of the engine; it quarantines refused inputs and resolves duplicates exactly
as `run_batch` does, so the output is byte-identical to a local run. A worker lost mid-task has
its task run again elsewhere: an output it had already linked is found in place (same bytes), a
temp file it left is swept at the end.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The client imports none of the engine (no pydicom): only the summary and settling of results,
# which come back as plain tuples. The engine is imported on the workers, by the tasks (or
# beforehand by `--preload gateway.dask_batch`, which imports it at the worker's start).
from gateway.batch_results import STAGED, BatchSummary, Outcomes, iter_inputs, quarantine_dir
from gateway.config import Config
from gateway.outcome import Forwarded, Outcome, Quarantined
from gateway.safetext import safe_message

#: Files per task, at most: large enough that scheduling costs little, small enough that a lost
#: worker costs little and the progress bar moves.
MAX_CHUNK = 64

_PIPELINES: dict[tuple[str, bytes], Any] = {}  # per worker: compiled once per config and key


def _pipeline(config: Config, token: str) -> Any:
    """This worker's Pipeline for `config`, the site key read here (never sent by the client),
    at every task: a long-running worker follows a new key."""
    from gateway.sitekey import load_site_key

    key = load_site_key(config)
    pipeline = _PIPELINES.get((token, key))
    if pipeline is None:
        from gateway.pipeline import Pipeline

        _PIPELINES.clear()
        pipeline = _PIPELINES[token, key] = Pipeline(config, key)
    return pipeline


def dask_setup(server: Any) -> None:
    """`dask worker --preload gateway.dask_batch`: at the worker's start, import the engine
    (not in its first task), freeze what exists out of the garbage collector's walks (as the
    local workers do), and stop Dask's statistical profiler, which samples the running task's
    stack every 10 ms under the GIL the task needs (the dashboard's profile page stays empty)."""
    import gateway.batch  # noqa: F401 - the engine: pydicom, the pipeline, the codecs

    for name in ("profile", "profile-cycle"):
        callback = getattr(server, "periodic_callbacks", {}).pop(name, None)
        if callback is not None:
            callback.stop()
    gc.freeze()


def _prepare(config: Config, token: str) -> None:
    """Compile the pipeline on a worker: a missing key or certificate fails once, by name."""
    _pipeline(config, token)


Compact = str | tuple  # a Quarantined's reason, or a Forwarded's fields in order


def _compact(outcome: Outcome) -> Compact:
    if isinstance(outcome, Quarantined):
        return outcome.reason
    o = outcome
    return (str(o.path), o.study_uid, o.series_uid, o.sop_uid, o.sop_class_uid,
            o.transfer_syntax, o.original_sop_hash, tuple(o.counts.items()), o.not_backed_up,
            o.redaction_rule)


def _outcome(compact: Compact) -> Outcome:
    if isinstance(compact, str):
        return Quarantined(compact)
    path, *uids, counts, not_backed_up, rule = compact
    return Forwarded(Path(path), *uids, dict(counts), not_backed_up, rule)


def _deidentify_chunk(paths: list[str], output: str, config: Config, token: str,
                      profile: str) -> list[Compact]:
    """One task: every file of `paths` through the pipeline into `output`, one outcome each."""
    from gateway.batch import _write_once
    from gateway.pipeline import layout_path

    pipeline, place = _pipeline(config, token), layout_path(Path(output))
    outcomes: list[Compact] = []
    for src in paths:
        try:
            outcomes.append(_compact(_write_once(pipeline, Path(src), place, profile)))
        except OSError as exc:  # a full disk: the file is refused, saying why
            outcomes.append(f"cannot write the de-identified object: {safe_message(exc)}")
    return outcomes


def _chunks(n: int, workers: int, most: int) -> list[range]:
    """Consecutive tasks covering range(n), each of half what remains per worker (at most
    `most` files, at least `most // 8`): tasks shrink towards the end (the cluster starts them
    in this order), so the workers finish together instead of one idling through the other's
    last full task."""
    least = max(1, most // 8)
    parts: list[range] = []
    start = 0
    while start < n:
        size = max(least, min(most, (n - start) // max(1, workers * 2)))
        parts.append(range(start, min(start + size, n)))
        start += size
    return parts


def run_batch_dask(source: Path | list[Path], output: Path, config: Config, scheduler: str,
                   on_result: Callable[[Path, Outcome], None] | None = None,
                   profile: str = "default", chunk: int = MAX_CHUNK) -> BatchSummary:
    """De-identify `source` (a file, a folder tree, or a list of files) into `output` on the
    Dask cluster at `scheduler`; the same outputs, quarantine and summary as `run_batch`. The
    inputs and `output` must be at the same paths on the workers (a shared filesystem)."""
    first, collecting = "distributed" not in sys.modules, gc.isenabled()
    if first:
        # The import makes some 300,000 objects that live as long as the process in a command,
        # and nothing to collect: without collections while it runs (~150 of them, 30-40 ms of
        # its ~0.33 s here), then frozen out of the collector's walks, it is not walked again
        # by this run's collections nor by the interpreter's exit (~85 ms of a `gantry
        # deidentify --scheduler` here). Done once: a process that imported Dask is left alone.
        gc.disable()
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("running on a Dask cluster needs the dask extra: "
                           "pip install 'gantry[dask]'") from None
    finally:
        if first:
            gc.freeze()
            if collecting:
                gc.enable()

    output = Path(output).absolute()
    if profile != "default" and profile not in config.profiles:
        known = ", ".join(["default", *config.profiles])
        raise ValueError(f"no profile {profile!r} in {config.source} (known: {known})")
    if isinstance(source, list):
        files = [Path(p).absolute() for p in source]
        root = Path(os.path.commonpath([p.parent for p in files])) if files else output
    else:
        source = Path(source).absolute()
        if source.is_dir():
            for folder in (output, quarantine_dir(output)):
                if folder.resolve().is_relative_to(source.resolve()):
                    raise ValueError(f"{folder} is inside the input folder {source}: choose a "
                                     "folder outside it")
        files = list(iter_inputs(source))
        root = source if source.is_dir() else source.parent
    summary = BatchSummary(output, quarantine_dir(output))
    output.mkdir(parents=True, exist_ok=True)
    token = hashlib.sha256(pickle.dumps(config)).hexdigest()
    outcomes = Outcomes(files, root, summary, on_result)
    record = outcomes.record

    with Client(scheduler, set_as_default=False) as client:
        # The configuration goes to every worker once, not in every task.
        shared = client.scatter(config, broadcast=True, hash=False)
        prepared = client.submit(_prepare, shared, token, pure=False)
        workers = sum(client.nthreads().values()) or 1
        parts = _chunks(len(files), workers, chunk)
        futures = client.map(_deidentify_chunk, [[str(files[i]) for i in p] for p in parts],
                             output=str(output), config=shared, token=token, profile=profile,
                             pure=False)
        # A worker without the key or a certificate fails the run here, by name; the tasks
        # submitted meanwhile fail the same way on such a worker, before writing anything.
        prepared.result()
        tasks = dict(zip(futures, parts, strict=True))
        pending = as_completed(futures, loop=client.loop)
        for future in pending:
            part = tasks.pop(future)
            if future.status == "finished":
                for i, compact in zip(part, future.result(), strict=True):
                    record(i, _outcome(compact))
                continue
            how = safe_message(future.exception())
            if len(part) > 1:  # one file may kill every worker it meets: find which, alone
                for i in part:
                    single = client.submit(_deidentify_chunk, [str(files[i])], str(output),
                                           shared, token, profile, pure=False)
                    tasks[single] = range(i, i + 1)
                    pending.add(single)
            else:
                record(part[0], Quarantined(f"worker died: the task de-identifying this file "
                                            f"failed on every worker it was given to ({how})"))
    kept = {path for group in outcomes.by_sop.values() for _, path in group}
    outcomes.settle()
    _sweep(output, kept)
    return summary


def _sweep(output: Path, kept: set[Path]) -> None:
    """Remove temp files a lost worker left in `output` (a run's own were resolved above)."""
    for folder, _, names in os.walk(output):
        for name in names:
            if not name.startswith("."):  # an output: most of them
                continue
            path = Path(folder) / name
            staged = name.endswith(STAGED) and path not in kept
            writing = name.endswith(".tmp") and f"{STAGED}." in name  # killed mid-write
            if staged or writing:
                path.unlink(missing_ok=True)
