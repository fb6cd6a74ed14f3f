"""A study: one run per (multiplier, seed), all from the same initial weights, and their summary.

Layout of a study folder::

    study.json                     the study's configuration and the list of its runs
    initial-weights/seed0.npz      the float32 network's initial weights, one file per seed
    float32/seed0/ ...             one run folder per multiplier and seed (see amsim.experiments.runner)
    mbm-M7/seed0/ ...
    summary.json .csv .md          final and best accuracy per multiplier (mean, spread over seeds),
                                   time per epoch, slowdown against float32, energy
    .lock                          held (flock) by the one process writing the study

A study refuses bad input before it touches the folder: another process's lock, occupied run
folders (without resume or force), the data, the model, the multipliers and the Dask scheduler are
checked first, so a refused study leaves the folder as it was.

The initial weights are drawn once per seed, written to ``initial-weights/``, and every run of that
seed gets a copy; a resumed study reads them back rather than drawing them again. Runs are
independent tasks: in this process one after another, or on a Dask cluster (``workers`` starts a
``LocalCluster`` of single-threaded worker processes; ``scheduler`` submits to an existing
cluster). A task writes only its own run folder and resumes from that folder's checkpoint, so a
lost worker costs one run's progress since its last epoch, and Dask's retry continues it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import tfquiet
from ..lut import atomic_write_bytes
from . import ExperimentError
from .energy import ENERGY_HEADER, EXACT_ENERGY_PJ, energy_table, format_energy
from .multipliers import FLOAT32, MultiplierSpec
from .runner import RunConfig, RunFolderError, read_run, weights_digest

__all__ = ["run_study", "study_runs", "summarize", "format_summary", "refuse_if_in_use", "StudyInUseError",
           "SUMMARY_HEADER", "LOCK_FILE", "SCHEDULER_CONNECT_TIMEOUT_S"]


def study_runs(base: RunConfig, multipliers, seeds) -> list[RunConfig]:
    """The study's runs, seed-major: every multiplier of seed 0, then of seed 1, ..."""
    return [dataclasses.replace(base, multiplier=m, seed=int(s)) for s in seeds for m in multipliers]


def run_folder(out: Path, config: RunConfig) -> Path:
    return Path(out) / config.multiplier.label / f"seed{config.seed}"


def _occupied(out: Path, runs) -> list[Path]:
    return [run_folder(out, r) for r in runs if run_folder(out, r).is_dir() and any(run_folder(out, r).iterdir())]


# ----------------------------------------------------------------------------------------------
# One study per folder at a time
# ----------------------------------------------------------------------------------------------

#: The lock file in a study folder, held (flock) by the process writing the study.
LOCK_FILE = ".lock"


class StudyInUseError(RunFolderError):
    """Another process is writing the study folder (it holds the folder's lock)."""


def _in_use(out: Path, fd: int) -> StudyInUseError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    who = f"process {holder}" if holder.isdigit() else "another process"
    return StudyInUseError(f"{out} is in use: {who} is training into it (it holds {out / LOCK_FILE}); wait for it "
                           "to end, or use another --out")


def refuse_if_in_use(out) -> None:
    """Refuse at once a study folder that another process is writing, before any work is done here.

    :func:`run_study` takes the lock itself once its inputs are checked; this only looks, so that a
    second ``amsim train`` on the same folder stops before it loads data or sweeps a LUT.
    """
    out = Path(out)
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(out, fd) from None
    finally:
        os.close(fd)  # also releases the shared lock just taken


@contextlib.contextmanager
def _study_lock(out: Path):
    """Hold the study folder's lock (an exclusive ``flock`` on DIR/.lock) while the study writes.

    The kernel releases a flock when its process ends, however it ends, so a killed study leaves no
    stale lock behind. The file stays: removing it would let a process that opened it just before
    lock a file no later process sees. Worker processes do not inherit it (Python opens files
    non-inheritable and Dask spawns its workers).
    """
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out, fd) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message of the process refused
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Initial weights
# ----------------------------------------------------------------------------------------------


def _weights_path(out: Path, seed: int) -> Path:
    return out / "initial-weights" / f"seed{seed}.npz"


def _initial_weights(out: Path, config: RunConfig, *, stored: bool) -> list[np.ndarray]:
    """The seed's initial weights: read from the study folder when ``stored`` and there, else drawn."""
    from .runner import initial_weights

    path = _weights_path(out, config.seed)
    if not (stored and path.is_file()):
        return initial_weights(config)
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[f"w{i:04d}"] for i in range(len(z.files))]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise RunFolderError(f"{path}: unreadable initial weights ({exc}); --force draws them again") from None


def _store_initial_weights(out: Path, weights: dict) -> None:
    """Write each seed's initial weights that the study folder does not hold yet."""
    for seed, arrays in weights.items():
        path = _weights_path(out, seed)
        if not path.is_file():
            buf = io.BytesIO()
            np.savez(buf, **{f"w{i:04d}": w for i, w in enumerate(arrays)})
            atomic_write_bytes(path, buf.getvalue())


def _run_task(config: dict, folder: str, weights, threads, study: dict) -> dict:
    """One run as a Dask task (a fresh worker process imports TensorFlow here)."""
    from .runner import run

    tfquiet.quiet_tensorflow()  # before the callback below imports Keras, and TensorFlow with it
    return run(RunConfig.from_dict(config), folder, initial=weights, resume=True, threads=threads, study=study,
               callbacks=[_stop_when_the_worker_closes()])


class WorkerClosing(ExperimentError):
    """A run on a Dask worker stopped because the worker is closing (its study was interrupted)."""


def _stop_when_the_worker_closes():
    """A Keras callback that ends the run at the next batch once its Dask worker is closing.

    Dask cannot interrupt a running task: a worker told to close (the study ended by a signal) waits
    for it, and its nanny kills it seconds later, after it has trained on and written checkpoints
    for epochs nobody asked for. Stopping here makes the worker end at once, the run's last
    complete checkpoint on disk, as a run in the study's own process stops on Ctrl-C.
    """
    import keras
    from distributed import get_worker
    from distributed.core import Status

    worker = get_worker()
    closing = (Status.closing, Status.closing_gracefully, Status.closed)

    class StopWhenTheWorkerCloses(keras.callbacks.Callback):
        def _check(self, batch, logs=None):
            if worker.status in closing:
                raise WorkerClosing(f"Dask worker {worker.address} is closing; the run stops at its last checkpoint")

        on_train_batch_end = on_test_batch_end = _check

    return StopWhenTheWorkerCloses()


def run_study(out, base: RunConfig, multipliers, seeds=(0,), *, workers: int = 0, scheduler: str | None = None,
              resume: bool = False, force: bool = False, verbose=0, threads: int | None = None,
              log=print) -> dict:
    """Train every (multiplier, seed) run of a study into ``out`` and return its summary.

    Parameters
    ----------
    base : RunConfig
        Dataset, architecture, epochs and training settings shared by every run.
    multipliers : list of MultiplierSpec
    seeds : iterable of int
    workers : int
        0: runs one after another in this process. N: a Dask LocalCluster of N single-threaded
        worker processes.
    scheduler : str, optional
        Address of an existing Dask scheduler to submit the runs to instead.
    resume, force : bool
        Continue the runs already in ``out`` / replace them. Without either, an occupied run
        folder stops the study before anything trains.
    threads : int, optional
        TensorFlow threads per run (default: all cores in this process; cores / workers on a
        LocalCluster).
    log : callable taking one line of text
    """
    out = Path(out)
    multipliers = list(multipliers)
    seeds = [int(s) for s in seeds]
    if not multipliers:
        raise ExperimentError("a study needs at least one multiplier")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ExperimentError(f"seeds must be distinct and at least one, not {seeds}")
    runs = study_runs(base, multipliers, seeds)
    # Everything that can refuse the study does so before the folder is touched: its lock, occupied
    # run folders, the data, the model, the multipliers, the initial weights, the Dask scheduler.
    refuse_if_in_use(out)
    occupied = _occupied(out, runs)
    if occupied and not (resume or force):
        raise RunFolderError(f"{len(occupied)} run folder(s) of this study exist already (first: {occupied[0]}); "
                             "--resume continues them, --force replaces them")
    from .runner import _tensorflow, preflight

    if not (workers or scheduler):
        _tensorflow(threads)  # before preflight runs TensorFlow's first op in this process
    preflight(base.resolved(), multipliers)
    weights = {s: _initial_weights(out, dataclasses.replace(base, seed=s).resolved(), stored=not force)
               for s in seeds}
    with contextlib.ExitStack() as stack:
        client = _dask_client(workers, scheduler, stack) if workers or scheduler else None
        stack.enter_context(_study_lock(out))
        if force:
            for folder in _occupied(out, runs):
                shutil.rmtree(folder)
            shutil.rmtree(out / "initial-weights", ignore_errors=True)
        _store_initial_weights(out, weights)
        shared = {k: v for k, v in base.resolved().to_dict().items() if k not in ("multiplier", "seed")}
        study = {"base": shared, "multipliers": [m.to_dict() for m in multipliers], "seeds": seeds,
                 "initial_weights_sha256": {str(s): weights_digest(w) for s, w in weights.items()},
                 "runs": [str(run_folder(out, r).relative_to(out)) for r in runs],
                 "execution": ("dask " + scheduler) if scheduler else (f"dask LocalCluster({workers})" if workers
                                                                       else "in process")}
        _write_json(out / "study.json", study)
        tag = {"folder": str(out.resolve()), "initial_weights_sha256": study["initial_weights_sha256"]}
        started = time.perf_counter()
        if client is not None:
            if workers:
                threads = threads or max(1, len(os.sched_getaffinity(0)) // workers)
            failures = _run_on_dask(client, out, runs, weights, threads, tag, log)
        else:
            failures = _run_here(out, runs, weights, verbose, threads, tag, log)
        summary = summarize(out, runs)
        summary["failures"] = failures
        summary["wall_time_s"] = time.perf_counter() - started
        _write_summary(out, summary)
    return summary


def _run_here(out, runs, weights, verbose, threads, tag, log) -> dict:
    from .runner import run

    failures = {}
    for i, config in enumerate(runs, 1):
        folder = run_folder(out, config)
        log(f"[{i}/{len(runs)}] {config.label}: training into {folder}")
        try:
            result = run(config, folder, initial=weights[config.seed], resume=True, verbose=verbose,
                         threads=threads, study=tag)
        except (ExperimentError, OSError):  # bad input, a full disk: every later run would fail alike
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run is reported; the others still train
            failures[config.label] = f"{type(exc).__name__}: {exc}"
            log(f"[{i}/{len(runs)}] {config.label}: FAILED: {failures[config.label]}")
            continue
        log(f"[{i}/{len(runs)}] {config.label}: {_one_line(result)}")
    return failures


#: Seconds to wait for a --scheduler to answer (Dask's own default is 30): a wrong address or a
#: scheduler that is down is reported promptly.
SCHEDULER_CONNECT_TIMEOUT_S = 5


def _dask_client(workers: int, scheduler: str | None, stack: contextlib.ExitStack):
    """A Dask client of the scheduler at ``scheduler``, or of a new LocalCluster of ``workers``
    single-threaded worker processes; ``stack`` closes both."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ExperimentError("--workers and --scheduler need Dask's distributed: pip install 'dask[distributed]'") \
            from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=SCHEDULER_CONNECT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a bad address, a refused or timed-out connection
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ExperimentError(f"cannot reach the Dask scheduler at {scheduler} ({reason}); nothing was "
                                  "trained") from None
    else:
        # Dask's warnings (a task cancelled by Ctrl-C, a busy worker killed on the way out) would bury
        # the command's one line; its errors still show, and --verbose shows everything. No dashboard;
        # the scheduler's HTTP routes, which it serves regardless, on a free port: on its default, a
        # second study at the same time warned that the port was taken.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": ":0"},
                               silence_logs=logging.WARNING if tfquiet.verbose() else logging.ERROR,
                               preload=[__name__])  # dask_setup below, in each worker
        stack.callback(cluster.close)
        client = Client(cluster)
    stack.callback(client.close)
    return client


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each LocalCluster worker process as it starts: Ctrl-C is left to
    the study's own process.

    A terminal sends SIGINT to every process of the job, workers included. The study's process
    answers it by closing the cluster, which stops each run at its next batch; a worker that took
    the signal itself would die mid-task and print Dask's tracebacks over the one line.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_on_dask(client, out, runs, weights, threads, tag, log) -> dict:
    from distributed import as_completed

    failures = {}
    shared = {s: client.scatter([w])[0] for s, w in weights.items()}
    futures = {}
    for config in runs:
        future = client.submit(_run_task, config.to_dict(), str(run_folder(out, config)), shared[config.seed],
                               threads, tag, key=f"amsim-train-{config.label}-{os.getpid()}-{time.time_ns()}",
                               pure=False, retries=1)
        futures[future] = config
    log(f"submitted {len(futures)} run(s) to {client.scheduler.address}")
    for future in as_completed(list(futures)):
        config = futures[future]
        if future.status == "error":
            exc = future.exception()
            failures[config.label] = f"{type(exc).__name__}: {exc}"
            log(f"{config.label}: FAILED: {failures[config.label]}")
        else:
            log(f"{config.label}: {_one_line(future.result())}")
    return failures


def _one_line(result: dict) -> str:
    final = result.get("final", {})
    acc = final.get("val_accuracy")
    return (f"{result['epochs']} epochs, final val acc {'-' if acc is None else f'{acc:.4f}'}, "
            f"test acc {result['test'].get('accuracy', float('nan')):.4f}, {result['mean_epoch_time_s']:.2f} s/epoch")


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def _stats(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(out, runs) -> dict:
    """Per multiplier over its seeds: final and best validation accuracy, test accuracy (mean, sample
    standard deviation), seconds per epoch, slowdown against float32, and the energy table."""
    out = Path(out)
    groups: dict[str, list] = {}
    specs: dict[str, MultiplierSpec] = {}
    for config in runs:
        specs[config.multiplier.label] = config.multiplier
        folder = run_folder(out, config)
        record = read_run(folder) if (folder / "config.json").is_file() else None
        groups.setdefault(config.multiplier.label, []).append((config, record))
    rows = []
    for label, members in groups.items():
        results = [r["result"] for _, r in members if r and r["result"]]
        row = {"multiplier": label, "runs": len(members), "complete": len(results), "coverage": None,
               "exact_layers": []}
        for key, pick in (("final_val_accuracy", lambda r: r["final"].get("val_accuracy")),
                          ("best_val_accuracy", lambda r: r["best_val_accuracy"]),
                          ("test_accuracy", lambda r: r["test"].get("accuracy")),
                          ("final_train_accuracy", lambda r: r["final"].get("accuracy"))):
            row[key], row[key + "_std"] = _stats([pick(r) for r in results])
        # The first epoch includes building the training function; later ones are the steady state.
        row["epoch_time_s"], _ = _stats([r["mean_epoch_time_after_first_s"] or r["mean_epoch_time_s"]
                                         for r in results])
        rows.append(row)
    reference = next((r["epoch_time_s"] for r in rows if r["multiplier"] == FLOAT32), None)
    for row in rows:
        row["slowdown"] = (row["epoch_time_s"] / reference if reference and row["epoch_time_s"] is not None
                           else None)
    _accuracy_deltas(rows, specs)
    energy_rows = []
    for row, (label, members) in zip(rows, groups.items(), strict=True):
        config, record = members[0]
        if record is None:
            continue
        products = record["config"].get("coverage")
        row["coverage"] = products["fraction"] if products else None
        row["exact_layers"] = products["exact_layers"] if products else []
        ds = record["config"]["dataset"]

        def per_epoch(per_example):
            return {"forward": per_example["forward"] * (ds["train"] + ds["validation"]),
                    "input_grad": per_example["input_grad"] * ds["train"],
                    "weight_grad": per_example["weight_grad"] * ds["train"]}

        if products:  # each layer's products priced on the multiplier that performs them
            pricing = record["config"]["pricing"]
            energy_rows.append({"label": label, "epochs": config.epochs, "groups": [
                (_FLOAT32_SPEC if key == FLOAT32 else MultiplierSpec.from_dict(pricing[key]), per_epoch(counts))
                for key, counts in products["by_multiplier"].items()]})
        else:  # a run recorded without its coverage: every counted product on the run's multiplier
            energy_rows.append({"label": label, "spec": specs[label], "gradient": config.gradient,
                                "epoch_counts": per_epoch(record["config"]["multiplications"]["per_example"]),
                                "epochs": config.epochs})
    return {"rows": rows, "energy": energy_table(energy_rows)}


_FLOAT32_SPEC = MultiplierSpec(FLOAT32, FLOAT32)


def _accuracy_deltas(rows, specs) -> None:
    """Each row's mean test accuracy against float32's (``test_accuracy_vs_float32``) and, for an 8-bit
    circuit, against the exact circuit of its scheme when the study ran it (``test_accuracy_vs_exact``,
    ``exact_baseline``): the exact integer multiplier is what an approximate circuit replaces. In
    accuracy points (fractions); None where either side is missing."""
    accuracy = {r["multiplier"]: r["test_accuracy"] for r in rows}

    def delta(label, baseline):
        mine, theirs = accuracy.get(label), accuracy.get(baseline)
        return None if mine is None or theirs is None else mine - theirs

    for row in rows:
        spec = specs[row["multiplier"]]
        row["scheme"] = spec.quantize
        row["test_accuracy_vs_float32"] = delta(row["multiplier"], FLOAT32)
        baseline = spec.exact_baseline if spec.exact_baseline in accuracy else None
        row["exact_baseline"] = baseline
        row["test_accuracy_vs_exact"] = delta(row["multiplier"], baseline) if baseline else None


def partial_coverage(summary: dict) -> list[str]:
    """One line per multiplier whose runs left matrix products exact (coverage below 100 %)."""
    return [f"{r['multiplier']}: {100 * r['coverage']:.1f} % of the products approximate; exact: "
            f"{', '.join(r['exact_layers'])}" for r in summary["rows"]
            if r["multiplier"] != FLOAT32 and r.get("coverage") is not None and r["coverage"] < 1]


SUMMARY_HEADER = ["multiplier", "runs", "approx.", "final val acc", "best val acc", "test acc", "s/epoch",
                  "slowdown", "vs float32", "vs exact int"]


def _pm(mean, std, n):
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if n > 1 else "")


def format_summary(summary: dict) -> tuple[list[str], list[list[str]]]:
    cells = []
    for r in summary["rows"]:
        n = r["complete"]
        share = r.get("coverage")
        cells.append([r["multiplier"], f"{n}/{r['runs']}", "-" if share is None else f"{100 * share:.1f} %", _pm(r["final_val_accuracy"], r["final_val_accuracy_std"], n),
                      _pm(r["best_val_accuracy"], r["best_val_accuracy_std"], n),
                      _pm(r["test_accuracy"], r["test_accuracy_std"], n),
                      "-" if r["epoch_time_s"] is None else f"{r['epoch_time_s']:.3g}",
                      "-" if r["slowdown"] is None else f"{r['slowdown']:.2f}x",
                      _points(r.get("test_accuracy_vs_float32")), _points(r.get("test_accuracy_vs_exact"))])
    return SUMMARY_HEADER, cells


def _points(delta) -> str:
    """An accuracy difference in percentage points, signed; "-" when there is no comparison."""
    return "-" if delta is None else f"{100 * delta:+.2f}"


def text_table(head, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown(head, rows) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if isinstance(x, MultiplierSpec):
        return x.to_dict()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(type(x).__name__)


_ENERGY_NOTE = (
    "Relative power: the multiplier's published figure against an exact multiplier of its width (source "
    "in the last column); an 8-bit circuit's against the exact 8-bit integer multiplier of its scheme "
    "(uint8: exact_int, int8: mul8s_exact, each 1 by definition). Exact multiply energies: " + "; ".join(
        f"{fmt} {'unknown (' + src + ')' if pj is None else f'{pj:g} pJ ({src})'}"
        for fmt, pj, src in dict.fromkeys(EXACT_ENERGY_PJ.values()))  # both 8-bit schemes share one figure
    + ". Comparisons across widths need both widths' figures; without them they are unknown, never estimated.")


def _write_summary(out: Path, summary: dict) -> None:
    _write_json(out / "summary.json", summary)
    head, rows = format_summary(summary)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(summary["rows"][0]) if summary["rows"] else []
    writer.writerow(keys)
    writer.writerows([[r[k] for k in keys] for r in summary["rows"]])
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode())
    text = ["# Training study summary", "", "Accuracies in per cent, mean ± sample standard deviation over seeds. "
            "Approx.: the share of the forward pass's matrix-product multiplications the approximate multipliers "
            "perform (amsim.keras.coverage; the rest are exact float32). Vs float32, vs exact int: the test "
            "accuracy's difference in points from the float32 run and, for an 8-bit circuit, from the exact "
            "circuit of its scheme (uint8-exact_int, int8-mul8s_exact) when the study ran it.", "",
            _markdown(head, rows), ""]
    partial = partial_coverage(summary)
    if partial:
        text += ["## Products left exact", "", "These runs are only partly approximate:", "",
                 *(f"- {line}" for line in partial), ""]
    text += ["## Multiplier energy (GEMM multiplications of one training epoch)", "",
             _markdown(ENERGY_HEADER, format_energy(summary["energy"])), "", _ENERGY_NOTE, ""]
    if summary.get("failures"):
        text += ["## Failed runs", "", *(f"- {k}: {v}" for k, v in summary["failures"].items()), ""]
    atomic_write_bytes(out / "summary.md", "\n".join(text).encode())
