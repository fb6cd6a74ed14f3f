#!/usr/bin/env python3
"""Reproduce the reference study: AlexNet on CIFAR-10, float32 against MBM at M = 7.

The reference study (Knauth 2023, ../shared/reference-study/) trained its AlexNet (227x227 inputs,
SGD with learning rate 0.001, batch 32, the first 5000 training images for validation) for 50
epochs with exact float32 multipliers and with ApproxTrain's MBM table at M = 7, on an RTX 3060:
81.8 % against 81.7 % accuracy, 55 s against 24 min 48 s per epoch. Here both runs start from the
same initial weights and see the same batches; ``at_mbm`` is the model that reproduces ApproxTrain's
``MBM_7.bin`` bit for bit.

    scripts/reproduce_reference_study.py --data-dir DIR [--out runs/reference] [--workers N]
    scripts/reproduce_reference_study.py --quick --data-dir DIR

``--quick`` trains ``alexnet-cifar`` (the same layers on the 32x32 images) on the first 1000
training images for 3 epochs, which a CPU does in minutes; it shows the pipeline working, not the
reference's accuracy. CIFAR-10's python batches (cifar-10-batches-py/) must be in --data-dir or
in Keras's cache folder. The study folder gets ``comparison.md``: the reference's figures next to
these runs', with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amsim.errors import AmsimError
from amsim.experiments.multipliers import parse_multipliers
from amsim.experiments.runner import RunConfig, read_run
from amsim.experiments.study import format_summary, run_study, text_table

#: The reference study's results (Knauth 2023, section 5.2; RTX 3060 laptop GPU, ApproxTrain).
REFERENCE = {
    "float32": {"final_val_accuracy": 0.818, "final_train_accuracy": 0.985, "epoch_time_s": 55.0,
                "total": "46 min for 50 epochs"},
    "MBM M=7": {"test_accuracy": 0.817, "final_train_accuracy": 0.934, "epoch_time_s": 24 * 60 + 48.0,
                "total": "20 h 4 min for 50 epochs"},
}

#: The reference's TensorFlow seed; here it draws the initial weights and fixes the data order.
SEED = 20230414
FULL = dict(arch="alexnet", epochs=50, limit_train=None, limit_test=None, validation=5000)
QUICK = dict(arch="alexnet-cifar", epochs=3, limit_train=1000, limit_test=500, validation=500)


def comparison(out: Path, summary: dict, quick: bool, settings: dict) -> str:
    rows = {r["multiplier"]: r for r in summary["rows"]}
    first = out / "float32" / f"seed{SEED}"
    env = read_run(first)["config"]["environment"] if (first / "config.json").is_file() else {}

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    def secs(x):
        if x is None:
            return "-"
        return f"{x:.3g} s" if x < 60 else f"{int(x // 60)} min {x % 60:.0f} s"

    lines = ["# AlexNet on CIFAR-10: the reference study and this reproduction", "",
             f"This run: {'--quick' if quick else 'full'}: {settings['arch']}, "
             f"{settings['limit_train'] or 'all'} training images, {settings['epochs']} epochs;"
             f" {env.get('cpu', '?')}, {env.get('cpus_available', '?')} CPUs, GPUs: {env.get('gpus') or 'none'};"
             f" TensorFlow {env.get('tensorflow', '?')}, amsim {env.get('amsim', '?')}.", "",
             "| | reference float32 | this float32 | reference MBM M=7 | this at_mbm M=7 |", "|---|---|---|---|---|"]
    f32, mbm = rows.get("float32", {}), rows.get("at_mbm-M7", {})
    ref32, refam = REFERENCE["float32"], REFERENCE["MBM M=7"]
    slowdown = mbm.get("slowdown")
    lines += [
        f"| final validation accuracy | {pct(ref32['final_val_accuracy'])} | {pct(f32.get('final_val_accuracy'))} "
        f"| - | {pct(mbm.get('final_val_accuracy'))} |",
        f"| test accuracy | - | {pct(f32.get('test_accuracy'))} | {pct(refam['test_accuracy'])} "
        f"| {pct(mbm.get('test_accuracy'))} |",
        f"| final training accuracy | {pct(ref32['final_train_accuracy'])} | {pct(f32.get('final_train_accuracy'))} "
        f"| {pct(refam['final_train_accuracy'])} | {pct(mbm.get('final_train_accuracy'))} |",
        f"| time per epoch | {secs(ref32['epoch_time_s'])} (RTX 3060) | {secs(f32.get('epoch_time_s'))} "
        f"| {secs(refam['epoch_time_s'])} (RTX 3060) | {secs(mbm.get('epoch_time_s'))} |",
        f"| slowdown | 1 | 1 | {refam['epoch_time_s'] / ref32['epoch_time_s']:.0f}x "
        f"| {'-' if slowdown is None else f'{slowdown:.1f}x'} |",
    ]
    lines += ["", "The reference's runs did not start from the same weights; these do (study.json records the "
              "initial weights' digest)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="alexnet-cifar on 1000 images for 3 epochs (CPU, minutes)")
    parser.add_argument("--data-dir", type=Path, help="folder holding cifar-10-batches-py/ (default: Keras's cache)")
    parser.add_argument("--out", type=Path, help="study folder (default runs/reference or runs/reference-quick)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--workers", type=int, default=0, help="Dask LocalCluster workers (default: in process)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted reproduction")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.epochs:
        settings["epochs"] = args.epochs
    out = args.out or Path("runs/reference-quick" if args.quick else "runs/reference")
    try:
        multipliers = parse_multipliers("float32,at_mbm:7")
        base = RunConfig(dataset="cifar10", multiplier=multipliers[0], data_dir=None if args.data_dir is None else
                         str(args.data_dir), batch_size=32, optimizer="sgd", learning_rate=0.001, **settings)
        summary = run_study(out, base, multipliers, [SEED], workers=args.workers, resume=args.resume,
                            verbose=2)
    except AmsimError as exc:
        print(f"reproduce_reference_study: error: {exc}", file=sys.stderr)
        return 1
    print(text_table(*format_summary(summary)))
    text = comparison(out, summary, args.quick, settings)
    (out / "comparison.md").write_text(text)
    print(text)
    print(json.dumps({"study": str(out), "failures": summary["failures"]}))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
