#!/usr/bin/env python3
"""Benchmark: a training step and an inference batch of AM models against the same Keras models.

For each network the native Keras model and its ``amsim.keras.approximate``
copy (same weights) are timed in the same run, on the same batch, in
alternating blocks (benchenv.best_of_pair): one ``train_on_batch`` (forward,
both gradients of every layer, SGD update) and one ``predict_on_batch``.
It prints their best times and the ratios AM / native (goal: a training
step <= 3x native), with the environment: CPU, threads, numpy's BLAS kernel,
OPENBLAS_CORETYPE, TensorFlow's version and thread pools.

Networks, batch 64:

``lenet5``
    LeNet-5 on 28x28x1 inputs: conv 6@5x5 same, pool, conv 16@5x5 valid,
    pool, dense 120, 84, 10.
``alexnet``
    The reference study's CIFAR AlexNet (its layers: filters, kernel sizes,
    batch norms, pools, dropouts, dense widths) on 32x32x3 inputs, with the
    strides and pool padding adapted so the spatial size stays positive:
    conv1 stride 2 "same" (16x16), pools "same" (8x8, 4x4, 2x2).

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

from benchenv import best_of_pair, environment  # noqa: E402

BATCH = 64


def lenet5(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 5, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10, activation="softmax"),
    ], name="lenet5")


def alexnet(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(96, 11, strides=2, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.Conv2D(256, 5, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.Conv2D(384, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.Conv2D(384, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.Conv2D(256, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.Flatten(),
        L.Dense(4096, activation="relu"), L.Dropout(0.5),
        L.Dense(4096, activation="relu"), L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ], name="alexnet")


NETS = {"lenet5": lenet5, "alexnet": alexnet}


def tf_environment(tf) -> dict:
    return {
        "tensorflow": tf.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "auto",
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "AMSIM_NUM_THREADS": os.environ.get("AMSIM_NUM_THREADS"),
    }


def bench(net, args, keras, ak):
    native = NETS[net](keras)
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
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import amsim.keras as ak

    env = {**environment(), **tf_environment(tf), "multiplier": f"{args.model} M={args.bits}"}
    results = [bench(net, args, keras, ak) for net in args.nets]
    print(json.dumps({"benchmark": "train", "environment": env, "goal": "train_step ratio <= 3",
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
