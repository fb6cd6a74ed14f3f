#!/usr/bin/env python3
"""Benchmark: the study runner's cost per training step over a bare ``model.fit``.

The same float32 network, data, batch size and validation set are trained twice in one process,
in alternating rounds: by ``model.fit`` on numpy arrays (Keras's own shuffling, nothing else), and
by :func:`amsim.experiments.runner.run` (its data order, per-epoch history and checkpoint, and
TensorBoard logs). The steady-state epoch time of each is the shortest interval between the starts
of successive epochs after the first (so everything done between epochs is included), best of the
rounds; the overhead is their difference over the bare epoch. Goal: under 5 %. Prints one JSON object (with the
environment); ``--doc docs/performance.md`` also updates that document's table.

    .venv/bin/python scripts/bench_study.py [--arch mlp,lenet5] [--epochs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import perfdoc  # noqa: E402
from benchenv import environment  # noqa: E402

from amsim.experiments import runner  # noqa: E402
from amsim.experiments.architectures import make_optimizer  # noqa: E402

GOAL_PCT = 5.0
NOTE = ("A negative overhead means the runner's input pipeline (batches gathered by tf.data from the "
        "precomputed epoch orders) costs less than Keras's adapter for numpy arrays, more than the "
        "runner's per-epoch records (written in the background) cost.")


class Clock(keras.callbacks.Callback):
    """Start times of the epochs, and the end of training."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.starts.append(time.perf_counter())

    def steady_epoch(self) -> float:
        intervals = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        # The first epoch builds the training function; of the others the fastest is the least disturbed
        # by whatever else the machine runs.
        return min(intervals[1:])


def bare(config: runner.RunConfig) -> float:
    cfg = config.resolved()
    data, (x_train, x_val, _x_test) = runner._data(cfg)
    keras.backend.clear_session()
    model = runner._base_model(cfg, data)
    model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = Clock()
    model.fit(x_train, data.y_train, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True,
              validation_data=(x_val, data.y_val), verbose=0, callbacks=[clock])
    return clock.steady_epoch()


def studied(config: runner.RunConfig) -> float:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        runner.run(config, Path(tmp) / "run", callbacks=[clock], save_model=False)
    return clock.steady_epoch()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp,lenet5", help="architectures on digits (default mlp,lenet5)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--doc", type=Path, help="update this Markdown file's table (docs/performance.md)")
    args = parser.parse_args(argv)
    runner._tensorflow()  # op determinism on, as in every run
    rows = []
    for arch in args.arch.split(","):
        config = runner.RunConfig(arch=arch, epochs=args.epochs)
        data, _ = runner._data(config.resolved())
        steps = -(-len(data.x_train) // config.resolved().batch_size)
        times = {"bare": [], "runner": []}
        for _ in range(args.rounds):
            times["bare"].append(bare(config))
            times["runner"].append(studied(config))
        b, r = min(times["bare"]), min(times["runner"])
        rows.append({"arch": arch, "dataset": "digits", "steps_per_epoch": steps,
                     "batch_size": config.resolved().batch_size, "bare_epoch_s": b, "runner_epoch_s": r,
                     "overhead_per_step_ms": (r - b) / steps * 1e3, "overhead_pct": 100 * (r - b) / b,
                     "all_bare_epoch_s": times["bare"], "all_runner_epoch_s": times["runner"]})
    env = environment()
    env["tensorflow"] = __import__("tensorflow").__version__
    env["threads"] = os.cpu_count()
    out = {"benchmark": "study-runner-overhead", "goal_pct": GOAL_PCT, "environment": env, "results": rows,
           "met": all(r["overhead_pct"] < GOAL_PCT for r in rows)}
    print(json.dumps(out, indent=1))
    if args.doc:
        table = perfdoc.markdown_table(
            ["architecture (digits)", "steps/epoch", "bare fit s/epoch", "runner s/epoch", "overhead ms/step",
             "overhead %"],
            [[r["arch"], r["steps_per_epoch"], r["bare_epoch_s"], r["runner_epoch_s"], r["overhead_per_step_ms"],
              r["overhead_pct"]] for r in rows])
        body = f"Goal: runner overhead < {GOAL_PCT:g} % per step. {NOTE}\n\n{table}"
        perfdoc.update(args.doc, "study-runner", env, body, title="Study runner against a bare model.fit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
