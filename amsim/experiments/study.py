"""A study: one run per (multiplier, seed), all from the same initial weights, and their summary.

Layout of a study folder::

    study.json                     the study's configuration and the list of its runs
    initial-weights/seed0.npz      the float32 network's initial weights, one file per seed
    float32/seed0/ ...             one run folder per multiplier and seed (see amsim.experiments.runner)
    mbm-M7/seed0/ ...
    summary.json .csv .md          final and best accuracy per multiplier (mean, spread over seeds),
                                   time per epoch, slowdown against float32, energy

The initial weights are drawn once per seed, written to ``initial-weights/``, and every run of that
seed gets a copy; a resumed study reads them back rather than drawing them again. Runs are
independent tasks: in this process one after another, or on a Dask cluster (``workers`` starts a
``LocalCluster`` of single-threaded worker processes; ``scheduler`` submits to an existing
cluster). A task writes only its own run folder and resumes from that folder's checkpoint, so a
lost worker costs one run's progress since its last epoch, and Dask's retry continues it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..lut import atomic_write_bytes
from . import ExperimentError
from .energy import ENERGY_HEADER, EXACT_ENERGY_PJ, energy_table, format_energy
from .multipliers import FLOAT32, MultiplierSpec
from .runner import RunConfig, RunFolderError, read_run, weights_digest

__all__ = ["run_study", "study_runs", "summarize", "format_summary", "SUMMARY_HEADER"]


def study_runs(base: RunConfig, multipliers, seeds) -> list[RunConfig]:
    """The study's runs, seed-major: every multiplier of seed 0, then of seed 1, ..."""
    return [dataclasses.replace(base, multiplier=m, seed=int(s)) for s in seeds for m in multipliers]


def run_folder(out: Path, config: RunConfig) -> Path:
    return Path(out) / config.multiplier.label / f"seed{config.seed}"


def _check_folders(out: Path, runs, *, resume: bool, force: bool) -> None:
    """Refuse occupied run folders before anything trains; with ``force``, empty them."""
    occupied = [run_folder(out, r) for r in runs if run_folder(out, r).is_dir() and any(run_folder(out, r).iterdir())]
    if force:
        for folder in occupied:
            shutil.rmtree(folder)
        shutil.rmtree(out / "initial-weights", ignore_errors=True)
    elif occupied and not resume:
        raise RunFolderError(f"{len(occupied)} run folder(s) of this study exist already (first: {occupied[0]}); "
                             "--resume continues them, --force replaces them")


def _initial_weights(out: Path, config: RunConfig) -> list[np.ndarray]:
    """The seed's initial weights: read from the study folder, else drawn once and written there."""
    from .runner import initial_weights

    path = out / "initial-weights" / f"seed{config.seed}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return [z[f"w{i:04d}"] for i in range(len(z.files))]
    weights = initial_weights(config)
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i:04d}": w for i, w in enumerate(weights)})
    atomic_write_bytes(path, buf.getvalue())
    return weights


def _run_task(config: dict, folder: str, weights, threads, study: dict) -> dict:
    """One run as a Dask task (a fresh worker process imports TensorFlow here)."""
    from .runner import run

    return run(RunConfig.from_dict(config), folder, initial=weights, resume=True, threads=threads, study=study)


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
    _check_folders(out, runs, resume=resume, force=force)
    out.mkdir(parents=True, exist_ok=True)
    if not (workers or scheduler):
        from .runner import _tensorflow

        _tensorflow(threads)  # before drawing the initial weights runs TensorFlow's first op
    weights = {s: _initial_weights(out, dataclasses.replace(base, seed=s).resolved()) for s in seeds}
    shared = {k: v for k, v in base.resolved().to_dict().items() if k not in ("multiplier", "seed")}
    study = {"base": shared, "multipliers": [m.to_dict() for m in multipliers], "seeds": seeds,
             "initial_weights_sha256": {str(s): weights_digest(w) for s, w in weights.items()},
             "runs": [str(run_folder(out, r).relative_to(out)) for r in runs],
             "execution": ("dask " + scheduler) if scheduler else (f"dask LocalCluster({workers})" if workers else
                                                                   "in process")}
    _write_json(out / "study.json", study)
    tag = {"folder": str(out.resolve()), "initial_weights_sha256": study["initial_weights_sha256"]}
    started = time.perf_counter()
    if workers or scheduler:
        failures = _run_on_dask(out, runs, weights, workers, scheduler, threads, tag, log)
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
        except ExperimentError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run is reported; the others still train
            failures[config.label] = f"{type(exc).__name__}: {exc}"
            log(f"[{i}/{len(runs)}] {config.label}: FAILED: {failures[config.label]}")
            continue
        log(f"[{i}/{len(runs)}] {config.label}: {_one_line(result)}")
    return failures


def _run_on_dask(out, runs, weights, workers, scheduler, threads, tag, log) -> dict:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ExperimentError("--workers and --scheduler need Dask's distributed: pip install 'dask[distributed]'") \
            from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        threads = threads or max(1, len(os.sched_getaffinity(0)) // workers)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    failures = {}
    try:
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
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
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
        row = {"multiplier": label, "runs": len(members), "complete": len(results)}
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
    energy_rows = []
    for label, members in groups.items():
        config, record = members[0]
        if record is None:
            continue
        per_example = record["config"]["multiplications"]["per_example"]
        ds = record["config"]["dataset"]
        counts = {"forward": per_example["forward"] * (ds["train"] + ds["validation"]),
                  "input_grad": per_example["input_grad"] * ds["train"],
                  "weight_grad": per_example["weight_grad"] * ds["train"]}
        energy_rows.append({"label": label, "spec": specs[label], "gradient": config.gradient,
                            "epoch_counts": counts, "epochs": config.epochs})
    return {"rows": rows, "energy": energy_table(energy_rows)}


SUMMARY_HEADER = ["multiplier", "runs", "final val acc", "best val acc", "test acc", "s/epoch", "slowdown"]


def _pm(mean, std, n):
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if n > 1 else "")


def format_summary(summary: dict) -> tuple[list[str], list[list[str]]]:
    cells = []
    for r in summary["rows"]:
        n = r["complete"]
        cells.append([r["multiplier"], f"{n}/{r['runs']}", _pm(r["final_val_accuracy"], r["final_val_accuracy_std"], n),
                      _pm(r["best_val_accuracy"], r["best_val_accuracy_std"], n),
                      _pm(r["test_accuracy"], r["test_accuracy_std"], n),
                      "-" if r["epoch_time_s"] is None else f"{r['epoch_time_s']:.3g}",
                      "-" if r["slowdown"] is None else f"{r['slowdown']:.2f}x"])
    return SUMMARY_HEADER, cells


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
    "in the last column). Exact multiply energies: " + "; ".join(
        f"{fmt} {'unknown (' + src + ')' if pj is None else f'{pj:g} pJ ({src})'}"
        for fmt, pj, src in EXACT_ENERGY_PJ.values())
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
    text = ["# Training study summary", "", "Accuracies in per cent, mean ± sample standard deviation over seeds.", "",
            _markdown(head, rows), "", "## Multiplier energy (GEMM multiplications of one training epoch)", "",
            _markdown(ENERGY_HEADER, format_energy(summary["energy"])), "", _ENERGY_NOTE, ""]
    if summary.get("failures"):
        text += ["## Failed runs", "", *(f"- {k}: {v}" for k, v in summary["failures"].items()), ""]
    atomic_write_bytes(out / "summary.md", "\n".join(text).encode())
