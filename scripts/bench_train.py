#!/usr/bin/env python3
"""Benchmark: a training step and an inference batch of AM models against the same Keras models.

For each network the native Keras model and its ``amsim.keras.approximate``
copy (same weights) are timed in the same run, on the same batch, in
alternating blocks (benchenv.best_of_pair): one ``train_on_batch`` (forward,
both gradients of every layer, SGD update) and one ``predict_on_batch``.
It prints their best times and the ratios AM / native (goal: a training
step <= 3x native), with the environment: CPU, threads, numpy's BLAS kernel,
OPENBLAS_CORETYPE, TensorFlow's version and thread pools.

Networks, batch 64, as ``amsim train`` builds them (amsim.experiments.architectures):
``lenet5`` on 28x28x1 inputs, and ``alexnet`` = ``alexnet-cifar``, the reference study's
AlexNet layers on 32x32x3 inputs.

    .venv/bin/python scripts/bench_train.py [--model mbm --bits 7] [--nets lenet5 alexnet] [--budget 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import perfdoc  # noqa: E402
from benchenv import best_of_pair, environment  # noqa: E402

BATCH = 64


#: The networks, as ``amsim train`` builds them (amsim.experiments.architectures), and their inputs.
NETS = {"lenet5": ((28, 28, 1), "lenet5"), "alexnet": ((32, 32, 3), "alexnet-cifar")}


def tf_environment(tf) -> dict:
    return {
        "tensorflow": tf.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "auto",
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "AMSIM_NUM_THREADS": os.environ.get("AMSIM_NUM_THREADS"),
    }


def bench(net, args, keras, ak):
    from amsim.experiments.architectures import build_model

    input_shape, arch = NETS[net]
    native = build_model(arch, input_shape, 10)
    am = ak.approximate(native, args.model, bits=args.bits)
    for model in (native, am):
        model.compile(optimizer=keras.optimizers.SGD(0.001), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *native.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    result = {"net": net, "batch": BATCH, "am_layers": sum(type(l).__name__.startswith("AM") for l in am.layers)}
    for what, run in (("train_step", lambda m: m.train_on_batch(x, y)),
                      ("inference_batch", lambda m: m.predict_on_batch(x))):
        t0 = time.perf_counter()
        run(native), run(am)  # traces both functions
        first = time.perf_counter() - t0
        native_s, am_s = best_of_pair(lambda: run(native), lambda: run(am), budget_s=args.budget, rounds=3)
        result[what] = {"native_ms": round(native_s * 1e3, 3), "am_ms": round(am_s * 1e3, 3),
                        "ratio": round(am_s / native_s, 2), "first_calls_s": round(first, 2)}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mbm", help="multiplier model (or LUT file)")
    parser.add_argument("--bits", type=int, default=7)
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["lenet5", "alexnet"])
    parser.add_argument("--budget", type=float, default=6.0,
                        help="seconds spent timing each of train step and inference per net (both models)")
    parser.add_argument("--doc", metavar="PATH", help="also write the table into this Markdown file "
                        "(docs/performance.md), replacing this CPU's earlier one")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import amsim.keras as ak

    env = {**environment(), **tf_environment(tf), "threads": len(os.sched_getaffinity(0)),
           "multiplier": f"{args.model} M={args.bits}"}
    results = [bench(net, args, keras, ak) for net in args.nets]
    print(json.dumps({"benchmark": "train", "environment": env, "goal": "train_step ratio <= 3",
                      "results": results}, indent=1))
    if args.doc:
        rows = [[r["net"], r["batch"], what.replace("_", " "), f"{r[what]['native_ms']:.1f}", f"{r[what]['am_ms']:.1f}",
                 f"**{r[what]['ratio']:.2f}**"] for r in results for what in ("train_step", "inference_batch")]
        table = perfdoc.markdown_table(["network", "batch", "what", "native Keras (ms)", "amsim layers (ms)",
                                        "ratio"], rows)
        body = (f"Multiplier {env['multiplier']}; TensorFlow {env['tensorflow']}. Goal: a training step at most "
                f"3x the native one.\n\n{table}")
        perfdoc.update(args.doc, "train", env, body, title="Training step (`scripts/bench_train.py`)")


if __name__ == "__main__":
    main()
