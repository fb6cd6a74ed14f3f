#!/usr/bin/env python3
"""Benchmark: training steps and inference batches of AM models and layers against their baselines.

Networks: for each network the native Keras model and its ``amsim.keras.approximate``
copy (same weights) are timed in the same run, on the same batch, in
alternating blocks (benchenv.best_of_pair): one ``train_on_batch`` (forward,
both gradients of every layer, SGD update) and one ``predict_on_batch``.
Goal: AM at most 3x native, training step and inference batch.

Networks, batch 64, as ``amsim train`` builds them (amsim.experiments.architectures):
``lenet5`` on 28x28x1 inputs, ``alexnet`` = ``alexnet-cifar``, the reference study's
AlexNet layers on 32x32x3 inputs, and ``lstm``, the rows of a 28x28 image as a
sequence (LSTM 64, Dense softmax), of which only the LSTM is approximated: the
AM LSTM against Keras' LSTM.

Quantized networks (``--quantize uint8`` or ``int8``): the same networks with every layer 8-bit
quantized on an integer circuit (``--model``, default the scheme's exact circuit: ``exact_int``,
``mul8s_exact``): its forward products through the integer LUT GEMM, its gradients the
straight-through float32 ones (docs/quantized.md). Same goal, against the same native model.

Layers: an AM layer whose products the engine computes in a less direct way
than a convolution's (Conv2DTranspose: a GEMM and col2im; SeparableConv2D: a
depthwise and a pointwise convolution) against the AM Conv2D of the same
multiplication count, on the same input. A step is the layer inside a network:
forward, the input's and the weights' gradients (all three GEMMs, none pruned)
and an SGD update. Goal: at most 1.5x the AM Conv2D.

An AM layer that amsim.keras does not have (yet) is reported as "missing". The
JSON holds the environment (CPU, threads, numpy's BLAS kernel,
OPENBLAS_CORETYPE, TensorFlow's version and thread pools), the times, the
ratios and whether each meets its goal; with ``--runs N`` everything is timed
N times, round after round, and each step reports the run of median ratio
and all N ratios.

    .venv/bin/python scripts/bench_train.py [--model mbm --bits 7] [--nets lenet5 alexnet lstm]
                                            [--layers conv2d_transpose separable_conv2d] [--budget 6] [--runs 3]
    .venv/bin/python scripts/bench_train.py --quantize uint8 [--model exact_int] [--nets lenet5 alexnet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import perfdoc  # noqa: E402
from benchenv import best_of_pair, environment  # noqa: E402

from amsim.cliargs import positive_int, positive_number  # noqa: E402

BATCH = 64

#: Largest ratio AM / native of a network's training step and inference batch.
NET_GOAL = 3.0
#: Largest ratio of an AM layer's training step to the AM Conv2D's of the same multiplication count.
LAYER_GOAL = 1.5


@dataclass(frozen=True)
class Net:
    """A network as ``amsim train`` builds it, and which of its layers become AM layers."""

    input_shape: tuple
    architecture: str
    am_class: str                  # the AM layer the comparison is about ("missing" without it)
    only: str | None = None        # the Keras layer class converted, when not every one


NETS = {
    "lenet5": Net((28, 28, 1), "lenet5", "AMConv2D"),
    "alexnet": Net((32, 32, 3), "alexnet-cifar", "AMConv2D"),
    "lstm": Net((28, 28, 1), "lstm", "AMLSTM", only="LSTM"),
}


@dataclass(frozen=True)
class LayerCase:
    """An AM layer against the AM Conv2D of the same multiplication count, on the same input.

    Each pass (forward, input gradient, filter gradient) of either layer takes
    ``per_element`` products per element of the input (n, h, w, c).
    """

    keras_class: str
    kwargs: dict
    baseline_kwargs: dict
    input_shape: tuple             # (H, W, C); the batch is BATCH
    per_element: int


# Conv2DTranspose: each input element times each of the 3x3 taps of the 16 filters, as the 'same'
# stride-1 Conv2D with the same kernel on the same input (each output position: 3*3*C*16).
# SeparableConv2D: depthwise 3*3 plus pointwise 64 per input element, as a 1x1 Conv2D of 73 filters.
LAYERS = {
    "conv2d_transpose": LayerCase("Conv2DTranspose", {"filters": 16, "kernel_size": 3, "strides": 2, "padding": "same"},
                                  {"filters": 16, "kernel_size": 3, "padding": "same"}, (16, 16, 16), 3 * 3 * 16),
    "separable_conv2d": LayerCase("SeparableConv2D", {"filters": 64, "kernel_size": 3, "padding": "same"},
                                  {"filters": 73, "kernel_size": 1}, (16, 16, 32), 3 * 3 + 64),
}


def tf_environment(tf) -> dict:
    return {
        "tensorflow": tf.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "auto",
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "AMSIM_NUM_THREADS": os.environ.get("AMSIM_NUM_THREADS"),
    }


def timed(baseline, candidate, args, goal: float) -> dict:
    """Best times of two steps in alternating blocks, their ratio and whether it meets ``goal``."""
    t0 = time.perf_counter()
    baseline(), candidate()  # traces both functions
    first = time.perf_counter() - t0
    base_s, cand_s = best_of_pair(baseline, candidate, budget_s=args.budget, rounds=3)
    ratio = cand_s / base_s
    return {"baseline_ms": round(base_s * 1e3, 3), "am_ms": round(cand_s * 1e3, 3), "ratio": round(ratio, 2),
            "meets_goal": ratio <= goal, "first_calls_s": round(first, 2)}


def median_run(results: list[dict]) -> dict:
    """The runs of one benchmark as one result: the run whose ratio is the median (the lower of the
    two middle ones for an even count) for each timed step, with the ratios of all the runs."""
    merged = dict(results[0])
    for what in ("train_step", "inference_batch"):
        if what in merged:
            timings = [r[what] for r in results]
            median = sorted(timings, key=lambda t: t["ratio"])[(len(timings) - 1) // 2]
            merged[what] = {**median, "ratios": [t["ratio"] for t in timings]}
    return merged


def missing(ak, am_class: str, model) -> bool:
    """True when amsim.keras has no ``am_class``, or ``approximate`` made none in ``model``."""
    return not hasattr(ak, am_class) or not any(type(layer).__name__ == am_class for layer in model.layers)


def bench_net(name, args, keras, ak) -> dict:
    from amsim.experiments.architectures import build_model

    net = NETS[name]
    native = build_model(net.architecture, net.input_shape, 10)
    only = {"layers": [getattr(keras.layers, net.only)]} if net.only else {}
    if args.quantize:
        am = ak.approximate(native, args.model, quantize=args.quantize, **only)
    else:
        am = ak.approximate(native, args.model, bits=args.bits, **only)
    result = {"net": name, "batch": BATCH, "baseline": "native Keras", "goal": NET_GOAL,
              "am_layers": sum(type(layer).__name__.startswith("AM") for layer in am.layers)}
    if missing(ak, net.am_class, am):
        return {**result, "status": "missing", "detail": f"amsim.keras has no {net.am_class}"}
    for model in (native, am):
        model.compile(optimizer=keras.optimizers.SGD(0.001), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    result["train_step"] = timed(lambda: native.train_on_batch(x, y), lambda: am.train_on_batch(x, y), args, NET_GOAL)
    result["inference_batch"] = timed(lambda: native.predict_on_batch(x), lambda: am.predict_on_batch(x), args,
                                      NET_GOAL)
    return result


def layer_step(layer, x, target, keras, tf):
    """One training step of ``layer`` as a network's inner layer: forward, the input's and the
    weights' gradients (the input's returned, so that it is computed), an SGD update."""
    optimizer = keras.optimizers.SGD(0.001)
    optimizer.build(layer.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(layer(x) - target))
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        optimizer.apply_gradients(zip(grads[1:], layer.trainable_variables))
        return grads[0]

    return step


def bench_layer(name, args, keras, tf, ak) -> dict:
    case = LAYERS[name]
    am_class = "AM" + case.keras_class
    result = {"layer": case.keras_class, "baseline": "AMConv2D", "batch": BATCH, "input_shape": list(case.input_shape),
              "layer_args": case.kwargs, "baseline_args": case.baseline_kwargs,
              "products_per_pass": BATCH * int(np.prod(case.input_shape)) * case.per_element, "goal": LAYER_GOAL}
    if not hasattr(ak, am_class):
        return {**result, "status": "missing", "detail": f"amsim.keras has no {am_class}"}
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((BATCH, *case.input_shape)).astype(np.float32))
    steps = []
    for cls, kwargs in ((ak.AMConv2D, case.baseline_kwargs), (getattr(ak, am_class), case.kwargs)):
        layer = cls(**kwargs, lut=args.model, bits=args.bits)
        y = layer(x)
        target = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        steps.append(layer_step(layer, x, target, keras, tf))
    result["train_step"] = timed(steps[0], steps[1], args, LAYER_GOAL)
    return result


def doc_body(env, nets, layers, runs: int) -> str:
    def timing(t, digits):
        return [f"{t['baseline_ms']:.{digits}f}", f"{t['am_ms']:.{digits}f}", f"**{t['ratio']:.2f}**",
                ", ".join(f"{r:.2f}" for r in t["ratios"])]

    runs_column = f"ratios of the {runs} runs" if runs > 1 else "ratio of the run"
    rows = [[r["net"], r["batch"], what.replace("_", " "), *timing(r[what], 1)]
            for r in nets if "status" not in r for what in ("train_step", "inference_batch")]
    rows += [[r["net"], r["batch"], "-", "-", "-", r["status"], "-"] for r in nets if "status" in r]
    table = perfdoc.markdown_table(["network", "batch", "what", "native Keras (ms)", "amsim layers (ms)",
                                    "ratio (median)", runs_column], rows)
    # TensorFlow's own kernels (the baseline) are oneDNN's or Eigen's by this setting, and its default by CPU
    tf_text = f"TensorFlow {env['tensorflow']} (TF_ENABLE_ONEDNN_OPTS={env.get('TF_ENABLE_ONEDNN_OPTS') or 'unset'})"
    if env.get("quantize"):
        body = (f"Quantized on the circuit {env['multiplier']}; {tf_text}. Goal: the training "
                f"step at most {NET_GOAL:g}x native (its gradients are float32, straight-through); the inference "
                f"batch, all of whose products go through the integer GEMM, is reported.\n\n{table}")
    else:
        body = (f"Multiplier {env['multiplier']}; {tf_text}. Goal: AM at most {NET_GOAL:g}x "
                f"native, training step and inference batch (`lstm`: only its LSTM approximated).\n\n{table}")
    if layers:
        rows = [[r["layer"], ", ".join(f"{k}={v}" for k, v in r["layer_args"].items()),
                 ", ".join(f"{k}={v}" for k, v in r["baseline_args"].items()),
                 f"{BATCH}x" + "x".join(map(str, r["input_shape"])), f"{r['products_per_pass'] / 1e6:.1f} M",
                 *(timing(r["train_step"], 2) if "status" not in r else ["-", "-", r["status"], "-"])]
                for r in layers]
        table = perfdoc.markdown_table(["AM layer", "its arguments", "AM Conv2D of as many products", "input",
                                        "products per pass", "AMConv2D step (ms)", "AM layer step (ms)",
                                        "ratio (median)", runs_column], rows)
        body += (f"\n\nLayers against the AM Conv2D of the same multiplication count, on the same input: one "
                 f"training step (forward, input and weight gradients, SGD update). Goal: at most "
                 f"{LAYER_GOAL:g}x.\n\n{table}")
    return body


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="multiplier model (or LUT file); default mbm, or with --quantize the "
                        "scheme's exact circuit")
    parser.add_argument("--bits", type=positive_int, default=7)
    parser.add_argument("--quantize", choices=["uint8", "int8"], help="time the 8-bit quantized networks")
    parser.add_argument("--nets", nargs="*", choices=list(NETS), help="default: every network; lenet5 and alexnet "
                        "with --quantize")
    parser.add_argument("--layers", nargs="*", choices=list(LAYERS), help="default: every layer; none with "
                        "--quantize")
    parser.add_argument("--budget", type=positive_number, default=6.0,
                        help="seconds spent timing each pair (baseline and AM) of steps")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="time everything this many times and report each ratio's median")
    parser.add_argument("--doc", metavar="PATH", help="also write the tables into this Markdown file "
                        "(docs/performance.md), replacing this CPU's earlier ones")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = {None: "mbm", "uint8": "exact_int", "int8": "mul8s_exact"}[args.quantize]
    if args.nets is None:
        args.nets = ["lenet5", "alexnet"] if args.quantize else list(NETS)
    if args.layers is None:
        args.layers = [] if args.quantize else list(LAYERS)

    import keras
    import tensorflow as tf

    import amsim.keras as ak

    env = {**environment(), **tf_environment(tf), "threads": len(os.sched_getaffinity(0)),
           "multiplier": f"{args.quantize}:{args.model}" if args.quantize else f"{args.model} M={args.bits}",
           "quantize": args.quantize}
    # whole rounds, so that a drift of the machine's load reaches every benchmark alike
    rounds = [([bench_net(name, args, keras, ak) for name in args.nets],
               [bench_layer(name, args, keras, tf, ak) for name in args.layers]) for _ in range(args.runs)]
    nets = [median_run([r[0][i] for r in rounds]) for i in range(len(args.nets))]
    layers = [median_run([r[1][i] for r in rounds]) for i in range(len(args.layers))]
    goals = {"networks": f"train_step and inference_batch ratio <= {NET_GOAL:g} (AM / native Keras)",
             "layers": f"train_step ratio <= {LAYER_GOAL:g} (AM layer / AMConv2D of as many products)"}
    print(json.dumps({"benchmark": "train", "environment": env, "goals": goals, "results": nets, "layers": layers},
                     indent=1))
    if args.doc:
        key, title = (f"train-{args.quantize}", f"{args.quantize} quantized training step "
                      f"(`scripts/bench_train.py --quantize {args.quantize}`)") \
            if args.quantize else ("train", "Training step (`scripts/bench_train.py`)")
        perfdoc.update(args.doc, key, env, doc_body(env, nets, layers, args.runs), title=title)


if __name__ == "__main__":
    main()
