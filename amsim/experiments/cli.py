"""The ``amsim train``, ``amsim study``, ``amsim evaluate`` and ``amsim plot-runs`` commands: their arguments and
main functions.

:mod:`amsim.cli` registers them through :func:`add_parsers` and :data:`COMMANDS`. Importing this
module imports neither TensorFlow nor matplotlib; the commands do when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import DEFAULT_TIMEOUT, model_param, non_negative_int, param_dict, positive_int, positive_number
from . import ExperimentError
from .architectures import ARCHITECTURES, OPTIMIZERS
from .datasets import DATASETS
from .evaluate import DEFAULT_CALIBRATION, RESULTS_FILE

__all__ = ["add_parsers", "cmd_train", "cmd_study", "cmd_evaluate", "cmd_plot_runs", "COMMANDS"]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers separated by commas (0,1,2), not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, not {text!r}")
    return seeds


def add_parsers(sub) -> None:
    """Add ``train``, ``study``, ``evaluate`` and ``plot-runs`` to the subparsers ``sub`` of the amsim command
    line."""
    p = sub.add_parser("train", help="train a network with several multipliers from identical initial weights",
                       description="Train one run per multiplier and seed, from identical initial weights and in "
                                   "identical data order; summarise accuracy, time and multiplier energy.")
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="dataset (default digits)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="folder of the dataset's files (default: Keras's cache ~/.keras/datasets)")
    p.add_argument("--arch", default="mlp", choices=sorted(ARCHITECTURES), help="architecture (default mlp)")
    p.add_argument("--model-file", type=Path, metavar="FILE.keras",
                   help="train this Keras model instead of --arch (its own initial weights)")
    p.add_argument("--multipliers", default="float32", metavar="SPEC[,SPEC...]",
                   help="float32, NAME or NAME:M[:key=value] (a C model at mantissa width M; NAME may be a .c "
                        "file: ./my_mul.c:7), a LUT file, or an 8-bit quantized circuit SCHEME:CIRCUIT[:key=value] "
                        "(uint8:exact_int, int8:mul8s_trunc:k=4, uint8:./mul8u_x.c; docs/quantized.md) "
                        "(default float32)")
    p.add_argument("--assign", action="append", default=[], metavar="PATTERN=SPEC[,...]|FILE",
                   help="one more run with a multiplier per layer: layer-name patterns and multipliers, the first "
                        "pattern a layer matches decides (conv*=drum:7:k=4,dense_2=exact,*=mbm:7), or a .json/.toml "
                        "file of such pairs (repeatable: one run each)")
    p.add_argument("--bits", type=positive_int, default=7, metavar="M",
                   help="mantissa width of multipliers given without :M (default 7)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models named in --multipliers (repeatable)")
    p.add_argument("--timeout", type=positive_number, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="time limit for sweeping each model's LUT (swept once, then cached); a model past it "
                        f"stops the study before training (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--gradient", default="approximate", choices=("approximate", "exact"),
                   help="backward products: with the multiplier (default) or exact float32")
    p.add_argument("--epochs", type=positive_int, default=5, metavar="N", help="epochs (default 5)")
    p.add_argument("--seeds", type=_seeds, default=[0], metavar="S[,S...]",
                   help="one run per seed and multiplier; seeds fix initial weights, data order, dropout (default 0)")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="default: the architecture's")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the architecture's")
    p.add_argument("--learning-rate", type=positive_number, metavar="LR", help="default: the architecture's")
    p.add_argument("--validation", type=non_negative_int, metavar="N",
                   help="hold out the first N training images (default 5000; digits 144)")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--limit-test", type=positive_int, metavar="N", help="test on the first N images only")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="study folder")
    p.add_argument("--resume", action="store_true", help="continue the runs in --out from their checkpoints")
    p.add_argument("--force", action="store_true", help="replace the runs in --out")
    p.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                   help="run in parallel on a Dask LocalCluster of N worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="submit the runs to this Dask scheduler (tcp://host:8786)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="TensorFlow threads per run")
    p.add_argument("--no-plots", action="store_true", help="do not draw the accuracy and loss figures")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("study", help="one C model to a verdict: check, LUT, statistics, Pareto place, training, "
                                     "report",
                       description="Check the model's properties, build its LUT, place it among the built-in "
                                   "designs (statistics, Pareto front), train it against float32 and the two "
                                   "built-ins closest in error from identical initial weights, and write one HTML "
                                   "report with a summary of the result in numbers.")
    p.add_argument("model", metavar="MODEL.c", help="the design: a .c file (or a model name)")
    p.add_argument("--bits", type=positive_int, default=7, metavar="M", help="mantissa width (default 7)")
    p.add_argument("--param", action="append", type=model_param, default=[], metavar="NAME=VALUE",
                   help="model parameter (repeatable)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models (repeatable)")
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="dataset (default digits)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of the dataset's files")
    p.add_argument("--arch", default="mlp", choices=sorted(ARCHITECTURES), help="architecture (default mlp)")
    p.add_argument("--epochs", type=positive_int, default=5, metavar="N", help="epochs (default 5)")
    p.add_argument("--seeds", type=_seeds, default=[0], metavar="S[,S...]", help="training seeds (default 0)")
    p.add_argument("--examples", type=positive_int, default=200, metavar="N",
                   help="hypothesis examples per sampled property, where the check cannot be exhaustive "
                        "(default 200)")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="seed of the sampled checks")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="study folder (report in DIR/report)")
    p.add_argument("--resume", action="store_true", help="keep what an earlier run in --out finished")
    p.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("evaluate", help="quantize a trained model after training with each 8-bit circuit and "
                                        "evaluate it (no training)",
                       description="Post-training quantization: the trained model's copy on each multiplier, its "
                                   "input ranges calibrated on training images, evaluated on the test split; a "
                                   "table of accuracy, error and power, results JSON and a Pareto figure.")
    p.add_argument("--model-file", type=Path, required=True, metavar="FILE.keras",
                   help="the trained model (a Keras file, or the model.keras of an amsim train run)")
    p.add_argument("--multipliers", required=True, metavar="SPEC[,SPEC...]",
                   help="8-bit circuits SCHEME:CIRCUIT[:key=value] (uint8:exact_int, int8:mul8s_trunc:k=4, "
                        "uint8:./mul8u_x.c), float multipliers (mbm:7) or float32")
    p.add_argument("--dataset", choices=DATASETS,
                   help="dataset (default: the one an amsim train run's model was trained on, else digits)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of the dataset's files")
    p.add_argument("--calibration", type=positive_int, default=DEFAULT_CALIBRATION, metavar="N",
                   help=f"training images the input ranges are calibrated on (default {DEFAULT_CALIBRATION})")
    p.add_argument("--bits", type=positive_int, default=7, metavar="M",
                   help="mantissa width of float multipliers given without :M (default 7)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models named in --multipliers (repeatable)")
    p.add_argument("--timeout", type=positive_number, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"time limit for sweeping each model's table (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help=f"folder for {RESULTS_FILE} and the Pareto figures")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("plot-runs", help="accuracy and loss curves and final accuracy of training runs (PNG + SVG)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders, or study folders (all their runs)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the figures")


def cmd_train(args) -> int:
    from .multipliers import parse_multipliers
    from .runner import RunConfig
    from .study import format_summary, partial_coverage, refuse_if_in_use, run_study, text_table

    if args.resume and args.force:
        raise ExperimentError("--resume and --force exclude each other")
    if args.workers and args.scheduler:
        raise ExperimentError("--workers starts a local cluster, --scheduler uses an existing one: give one of them")
    refuse_if_in_use(args.out)  # before sweeping any LUT: a study already training there stops this one at once
    multipliers = parse_multipliers(args.multipliers, default_bits=args.bits, models_dirs=args.models_dir,
                                    timeout=args.timeout, assignments=args.assign)
    base = RunConfig(dataset=args.dataset, arch=args.arch, multiplier=multipliers[0], epochs=args.epochs,
                     batch_size=args.batch_size, optimizer=args.optimizer, learning_rate=args.learning_rate,
                     gradient=args.gradient, validation=args.validation, limit_train=args.limit_train,
                     limit_test=args.limit_test, data_dir=_absolute(args.data_dir),
                     model_file=_absolute(args.model_file))
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    summary = run_study(args.out, base, multipliers, args.seeds, workers=args.workers, scheduler=args.scheduler,
                        resume=args.resume, force=args.force, verbose=verbose, threads=args.threads, log=log)
    head, rows = format_summary(summary)
    print(text_table(head, rows))
    for line in partial_coverage(summary):
        print(f"partly approximate: {line}")
    _print_energy(summary)
    if not args.no_plots:
        _plot_study(args.out)
    print(f"wrote {args.out / 'summary.md'}")
    if summary["failures"]:
        print(f"amsim train: {len(summary['failures'])} run(s) failed: {', '.join(summary['failures'])}",
              file=sys.stderr)
        return 1
    return 0


def cmd_study(args) -> int:
    from .design_study import run_design_study

    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    verdict = run_design_study(args.model, bits=args.bits, params=param_dict(args.param),
                               models_dirs=args.models_dir, out=args.out, dataset=args.dataset,
                               data_dir=args.data_dir, arch=args.arch, epochs=args.epochs, seeds=args.seeds,
                               examples=args.examples, seed=args.seed, resume=args.resume, force=args.force,
                               verbose=verbose, log=log, command=" ".join(["amsim", *sys.argv[1:]]))
    print(verdict["summary"])
    print(f"wrote {verdict['report']}")
    return 0


def cmd_evaluate(args) -> int:
    from .energy import RELATIVE_POWER_NOTE
    from .evaluate import evaluate_multipliers, format_evaluation
    from .multipliers import parse_multipliers
    from .study import text_table

    multipliers = parse_multipliers(args.multipliers, default_bits=args.bits, models_dirs=args.models_dir,
                                    timeout=args.timeout)
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    results = evaluate_multipliers(args.model_file, multipliers, dataset=args.dataset, data_dir=args.data_dir,
                                   calibration=args.calibration, out=args.out, models_dirs=args.models_dir, log=log)
    head, rows = format_evaluation(results)
    print(text_table(head, rows))
    print(f"accuracy in per cent on {results['test_images']} {results['dataset']} test images; drops in points "
          f"(positive: worse); calibration on {results['calibration_images']} training images. MAE, WCE: the "
          "circuit's exhaustive integer statistics.")
    print(RELATIVE_POWER_NOTE)
    for path in results["figures"]:
        print(f"wrote {path}")
    print(f"wrote {args.out / RESULTS_FILE}")
    return 0


def _absolute(path) -> str | None:
    """Paths as Dask workers with another working directory see them too."""
    return None if path is None else str(Path(path).resolve())


def _print_energy(summary) -> None:
    from .energy import ENERGY_HEADER, RELATIVE_POWER_NOTE, format_energy
    from .study import text_table

    rows = format_energy(summary["energy"])
    if rows:
        print("\nmultiplier energy of one training epoch (GEMM multiplications; sources in summary.md):")
        print(text_table(ENERGY_HEADER[:-1], [r[:-1] for r in rows]))
        print(RELATIVE_POWER_NOTE)


def _plot_study(out: Path) -> None:
    try:
        from amsim.analysis import training
    except ImportError as exc:  # the analysis package is optional in a stripped install
        print(f"amsim train: figures not drawn ({exc})", file=sys.stderr)
        return
    written = training.plot_runs([out], out / "figures")
    print(f"wrote {len(written)} figure file(s) into {out / 'figures'}")


def cmd_plot_runs(args) -> int:
    from amsim.analysis import training

    written = training.plot_runs(args.runs, args.out)
    print(f"wrote {len(written)} figure file(s) into {args.out}")
    return 0


COMMANDS = {"train": cmd_train, "study": cmd_study, "evaluate": cmd_evaluate, "plot-runs": cmd_plot_runs}
