"""The ``amsim`` command line: ``models``, ``generate-lut``, ``stats``, ``check``, ``lut-info``, and the
analysis commands ``plot``, ``pareto`` and ``report`` (implemented in :mod:`amsim.analysis`).

Errors a user can cause exit non-zero with one line on stderr, never a traceback.

One file for every subcommand but ``train``, ``study`` and ``plot-runs``
(:mod:`amsim.experiments.cli`): they share one parser, one set of common flags and one error
handler, and each subcommand's function is a short translation of its flags into calls of the
library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path

from . import __version__, tfquiet
from .cliargs import DEFAULT_TIMEOUT, model_param, non_negative_int, param_dict, positive_int, positive_number
from .errors import AmsimError, Interrupted, ModelError, RangeError
from .experiments import cli as experiments_cli
from .lutformats import FORMATS as INTEGER_FORMATS

FORMATS = ("amsim", "approxtrain", *INTEGER_FORMATS)


_INT_LIST_RE = r"-?\d+(?:\.\.-?\d+)?(?:,-?\d+(?:\.\.-?\d+)?)*"


def _param_spec(text: str) -> str:
    """``k=6``, ``k=3..8`` or ``k=3,5,7``: checked here, expanded by amsim.analysis.data.parse_param_values."""
    name, eq, value = text.partition("=")
    if (not eq or not re.fullmatch(r"[A-Za-z_]\w*", name.strip())
            or not re.fullmatch(_INT_LIST_RE, value.replace(" ", ""))):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, NAME=LO..HI or NAME=V1,V2,..., got {text!r}")
    return text


def _int_list(text: str) -> str:
    if not re.fullmatch(_INT_LIST_RE, text.replace(" ", "")):
        raise argparse.ArgumentTypeError(f"expected LO..HI or a comma list of integers, got {text!r}")
    return text


def _add_model_options(p, *, multiple: bool):
    if multiple:
        p.add_argument("--model", action="append", metavar="NAME",
                       help="model name or .c file (repeatable; default: every model supporting --bits)")
    else:
        p.add_argument("--model", required=True, metavar="NAME", help="model name or .c file")
    p.add_argument("--param", action="append", type=model_param, default=[], metavar="NAME=VALUE",
                   help="model parameter (repeatable)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models (repeatable)")


def _add_sampling_options(p, samples_help="Monte Carlo pairs (default 4194304)"):
    p.add_argument("--samples", type=positive_int, metavar="N", help=samples_help)
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="Monte Carlo seed (default 0)")


def _add_reference_options(p, *, reference_help=None, samples_help="Monte Carlo pairs of the full reference"):
    """--reference, --rounding and the Monte Carlo options of the full reference."""
    p.add_argument("--reference", choices=("truncated", "full"), default="truncated", help=reference_help)
    p.add_argument("--rounding", choices=("truncate", "rne"), default="truncate",
                   help="operand conversion for the full reference")
    _add_sampling_options(p, samples_help)


def _add_zeros_option(p):
    p.add_argument("--zeros-as-exact", action="store_true",
                   help="average relative metrics over all pairs, zero products counting as zero error")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="amsim", description="Approximate multipliers: C models, LUTs, statistics.")
    parser.add_argument("--version", action="version", version=f"amsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("models", help="list every model with kind, widths, parameters and cost")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("generate-lut", help="sweep models into LUT files and print their statistics")
    _add_generate_arguments(p)

    p = sub.add_parser("stats", help="error statistics of one model configuration")
    _add_model_options(p, multiple=False)
    p.add_argument("--bits", type=positive_int, required=True, metavar="N",
                   help="M for float models (and with --float); operand width for integer models")
    _add_reference_options(p, samples_help="Monte Carlo pairs where statistics are sampled: the full reference, "
                                           "the truncated one beyond M = 12, integer widths beyond 16 (default "
                                           "4194304); exhaustive statistics stay exhaustive")
    p.add_argument("--float", action="store_true", dest="as_float",
                   help="characterise an integer model lifted to an M-bit mantissa multiplier (M = --bits)")
    _add_zeros_option(p)
    p.add_argument("--operands", type=Path, metavar="FILE",
                   help="weight the statistics by the joint mantissa distribution of operand samples in a .npz "
                        "(arrays a and b: paired; activations and weights: independent)")
    p.add_argument("--independent", action="store_true",
                   help="with --operands: treat a and b as independent samples (outer product of the marginals)")
    p.add_argument("--dot-length", type=positive_int, metavar="K",
                   help="also predict the accumulated error of a length-K dot product (analytic and Monte Carlo)")
    p.add_argument("--dot-trials", type=positive_int, default=2000, metavar="N",
                   help="Monte Carlo dot products for --dot-length (default 2000; seeded by --seed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("check", help="check a model's properties against exact products; exit 1 when one fails")
    _add_check_arguments(p)

    p = sub.add_parser("lut-info", help="verify a LUT file and print its metadata")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=FORMATS,
                   help="default: by extension (.npz amsim; .bin ApproxTrain, or TFApprox when 131072 bytes; "
                        ".npy TorchApprox; .h AdaPT/TransAxx; .txt ApproxTorch)")
    signedness = p.add_mutually_exclusive_group()
    signedness.add_argument("--signed", action="store_const", const=True, dest="signed",
                            help="integer formats: the table is a signed multiplier's (default: what the file "
                                 "says, else the reading closest to a multiplier)")
    signedness.add_argument("--unsigned", action="store_const", const=False, dest="signed",
                            help="integer formats: the table is an unsigned multiplier's")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("plot", help="figures of relative errors (PNG + SVG)")
    p.add_argument("kind", choices=PLOT_KINDS, metavar="KIND",
                   help="distribution (RE histograms + |RE| CDF), heatmap (RE over the operand grid, one per "
                        "model), operand (RE against operand A), width (statistics against M)")
    _add_analysis_model_options(p)
    p.add_argument("--lut", action="append", default=[], type=Path, metavar="FILE",
                   help="also plot a LUT file (.npz or ApproxTrain .bin; repeatable)")
    p.add_argument("--bits", type=positive_int, metavar="M",
                   help="mantissa width M (integer models are lifted from M + 1 bits); with --integer the operand width")
    p.add_argument("--integer", action="store_true",
                   help="integer models on their own n-bit operand grid (n = --bits <= 8) instead of lifted")
    p.add_argument("--widths", type=_int_list, default="1..12", metavar="LO..HI",
                   help="mantissa widths of the width plot (default 1..12)")
    _add_reference_options(p, reference_help="distribution and width plots: statistics reference (full: seeded "
                                             "float32 operands)",
                           samples_help="Monte Carlo pairs for the full reference (default 262144 per model in "
                                        "plots)")
    p.add_argument("--operands", type=Path, metavar="FILE",
                   help="distribution plot: weight each mantissa pair by operand samples (.npz, see stats)")
    p.add_argument("--out", type=Path, default=Path("plots"), metavar="DIR", help="output folder (default plots/)")
    p.add_argument("--name", metavar="STEM", help="file name stem (default: from the kind, models and M)")

    p = sub.add_parser("pareto", help="non-dominated models over cost and error objectives (all minimised)")
    _add_analysis_model_options(p)
    p.add_argument("--bits", type=positive_int, required=True, metavar="M",
                   help="mantissa width M (integer models are lifted from M + 1 bits); with --integer the operand width")
    p.add_argument("--integer", action="store_true", help="integer models at operand width --bits (<= 12)")
    p.add_argument("--objectives", default="power,mean_abs_re", metavar="A,B[,...]",
                   help="objectives, all minimised (default power,mean_abs_re): power, area, delay, power_mw, "
                        "area_um2, delay_ns, any metrics.md key, abs_mean_re")
    _add_reference_options(p, reference_help="reference of the statistics (default truncated)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--plot", type=Path, metavar="DIR", help="also write the scatter plot (PNG + SVG) into DIR")

    p = sub.add_parser("report", help="self-contained HTML report with statistics, figures and the Pareto front")
    _add_analysis_model_options(p)
    p.add_argument("--bits", type=positive_int, default=7, metavar="M", help="mantissa width M (default 7)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="report folder (an earlier report there is replaced atomically)")
    p.add_argument("--objectives", default="power,mean_abs_re", metavar="A,B[,...]",
                   help="objectives of the Pareto front (default power,mean_abs_re)")
    _add_reference_options(p, reference_help="reference of the Pareto front's statistics (the table shows both)")
    p.add_argument("--runs", nargs="+", type=Path, default=(), metavar="RUN",
                   help="training run or study folders (amsim train): adds a training section")
    experiments_cli.add_parsers(sub)  # train, study, evaluate, plot-runs
    for p in sub.choices.values():  # every command
        _add_verbose_option(p)
    return parser


def _add_verbose_option(p):
    p.add_argument("--verbose", action="store_true",
                   help="let TensorFlow's start-up messages and logs through (default: amsim says what matters)")


PLOT_KINDS = ("distribution", "heatmap", "operand", "width")


def _bound(key: str):
    """The argument type of ``check``'s bound ``key``: a number >= 0, ``0.05`` or ``1/9`` (exact), at
    most its ceiling (1 for a probability)."""
    from .models import BOUND_CEILINGS, parse_bound

    def bound(text: str):
        try:
            return parse_bound(text, "the bound", BOUND_CEILINGS.get(key))
        except RangeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return bound


def _add_check_arguments(p):
    p.add_argument("model", metavar="MODEL",
                   help="a model name, a .c file, or a mantissa LUT file (.npz, ApproxTrain's NAME_M.bin)")
    p.add_argument("--bits", type=positive_int, metavar="N",
                   help="operand width n (integer models) or mantissa width M (float models); a LUT's own M")
    p.add_argument("--param", action="append", type=model_param, default=[], metavar="NAME=VALUE",
                   help="model parameter (repeatable)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models (repeatable)")
    p.add_argument("--property", action="append", default=[], metavar="NAME",
                   help="also check this property (repeatable): commutative, zero, one, monotone, sign-symmetric, "
                        "no-overestimate, ... (docs/designs.md)")
    for flag, what in (("--max-rel-error", "largest |relative error|"), ("--max-abs-error", "largest |error|"),
                       ("--mean-rel-error", "mean |relative error|"), ("--bias-within", "|mean relative error|"),
                       ("--mean-abs-error", "mean |error| (MAE)"),
                       ("--error-probability", "fraction of pairs whose product is not exact")):
        p.add_argument(flag, type=_bound(flag[2:].replace("-", "_")), metavar="B",
                       help=f"also check: {what} <= B (0.05, or exactly 1/9)")
    p.add_argument("--examples", type=positive_int, metavar="N",
                   help="hypothesis examples per sampled property (default 1000); sampled above 2^24 pairs")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                   help="seed of the sampled checks (default 0)")
    p.add_argument("--samples", type=positive_int, metavar="N",
                   help="seeded pairs behind a sampled statistic (default 1048576)")
    p.add_argument("--timeout", type=positive_number, metavar="SECONDS",
                   help="a model computing this long without progress counts as hanging (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_analysis_model_options(p):
    p.add_argument("--model", action="append", metavar="NAME",
                   help="model name or .c file (repeatable)")
    p.add_argument("--param", action="append", type=_param_spec, default=[], metavar="NAME=SPEC",
                   help="model parameter: a value, a range LO..HI or a list V1,V2 (repeatable; sweeps make "
                        "one configuration per value)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models (repeatable)")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="models swept at once, each in its own process (default: CPUs, max 2)")


def _add_generate_arguments(p):
    p.add_argument("--bits", type=positive_int, default=7, metavar="M",
                   help="mantissa bits M (default 7, bfloat16); for the integer formats (tfapprox, torchapprox, "
                        "adapt, approxtorch) the operand width, 8")
    _add_model_options(p, multiple=True)
    p.add_argument("--out", type=Path, default=Path("luts"), metavar="DIR", help="output folder (default luts/)")
    p.add_argument("--format", choices=FORMATS, default="amsim")
    p.add_argument("--rounding", choices=("truncate", "rne"), default="truncate",
                   help="operand conversion the LUT is meant for (recorded; used by the full statistics)")
    _add_sampling_options(p)
    _add_zeros_option(p)
    p.add_argument("--jobs", type=positive_int, metavar="N", help="models swept at once (default: CPUs, max 2)")
    p.add_argument("--timeout", type=positive_number, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"time limit per model; one past it is stopped and reported (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


# ----------------------------------------------------------------------------------------------


def _cost_text(cost) -> str:
    """Compact cost for tables: ``power 0.61 area 0.65 @bits=8`` (node and source are in --json)."""
    if cost is None:
        return "-"
    parts = [f"{k} {getattr(cost, k):g}" for k in ("power", "area", "delay") if getattr(cost, k) is not None]
    units = {"power_mw": "mW", "area_um2": "um2", "delay_ns": "ns"}
    parts += [f"{v:g} {units.get(k, k)}" for k, v in cost.absolute.items()]
    cond = ",".join(f"{k}={v}" for k, v in cost.conditions.items())
    return " ".join(parts) + (f" @{cond}" if cond else "")


def cmd_models(args) -> int:
    from .models import format_widths, list_models

    models = list_models(args.models_dir)
    _warn_shadowing(models.values())
    if args.json:
        out = [{"name": m.name, "kind": m.kind, "bits": list(m.bits), "signed": m.signed,
                "shadows": [str(p) for p in m.shadows],
                "params": {p.name: {"default": p.default, "range": [p.lo, p.hi], "description": p.description}
                           for p in m.params.values()},
                "description": m.description, "citation": m.citation, "path": str(m.path),
                "costs": [{"power": c.power, "area": c.area, "delay": c.delay, "node": c.node, "source": c.source,
                           "conditions": c.conditions, "absolute": c.absolute} for c in m.costs],
                "header": m.evoapprox}
               for m in models.values()]
        print(json.dumps(out, indent=1))
        return 0
    rows = []
    for m in models.values():
        params = " ".join(f"{p.name}={p.default}[{p.lo}..{p.hi}]" for p in m.params.values()) or "-"
        costs = "; ".join(_cost_text(c) for c in m.costs) or "-"
        kind = m.kind + (" signed" if m.signed else "")
        rows.append([m.name, kind, format_widths(m.bits), params, costs, m.description])
    print(_table(["model", "kind", "bits", "parameters", "cost (vs exact)", "description"], rows))
    for m in models.values():
        errors = {k: v for k, v in m.evoapprox.items() if not k.startswith("PDK45_")}  # PDK45_*: the costs
        if errors:  # `amsim stats` compares MAE and WCE with its own exhaustive figures
            print(f"header of {m.name} (EvoApproxLib): " + "  ".join(f"{k}={v:g}" for k, v in errors.items()))
        if m.shadows:
            print(f"note: {m.name} is {m.path}; it hides the model of the same name in "
                  f"{', '.join(map(str, m.shadows))}")
    return 0


def _warn_shadowing(models) -> None:
    """A user model named like another (a built-in, say) wins; say so, since the other is then unreachable."""
    for m in models:
        for hidden in m.shadows:
            print(f"amsim: warning: model {m.name!r} from {m.path} hides the one in {hidden}", file=sys.stderr)


def _prepare_output_folder(out: Path) -> None:
    """Create --out and try a write there before any model is swept, so that a bad --out costs no sweep."""
    if out.exists() and not out.is_dir():
        raise AmsimError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()  # what a write meets: permissions, a read-only file system
    except OSError as exc:
        raise AmsimError(f"--out {out} cannot be written: {exc.strerror or exc}") from None


def _table(head, rows) -> str:
    widths = [max([len(h)] + [len(str(r[k])) for r in rows]) for k, h in enumerate(head)]
    widths[-1] = len(head[-1])  # the last column runs free
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _select_models(args, *, fmt: str, bits: int):
    from .models import find_model, list_models

    if args.model:
        models = [find_model(name, args.models_dir) for name in args.model]
    else:
        available = list_models(args.models_dir).values()
        if fmt in INTEGER_FORMATS:
            models = [m for m in available if m.kind == "int" and bits in m.bits]
        else:
            models = [m for m in available
                      if (bits in m.bits if m.kind == "float" else (bits + 1 in m.bits and not m.signed))]
        if not models:
            raise RangeError(f"no model supports {bits} bits")
    _warn_shadowing(models)
    params = param_dict(args.param)
    for name in params:
        if not any(name in m.params for m in models):
            raise RangeError(f"no selected model has a parameter {name!r}")
    return [(m, {k: v for k, v in params.items() if k in m.params}) for m in models]


def cmd_generate(args) -> int:
    from . import generate, lut as lutmod, lutformats
    from .stats import format_table

    fmt, bits = args.format, args.bits
    if fmt == "approxtrain" and bits > 7:
        raise RangeError(f"ApproxTrain's format holds M <= 7, not M={bits}")
    if fmt in INTEGER_FORMATS and bits != 8:
        raise RangeError(f"{fmt}'s table is for 8-bit integer operands: use --bits 8")
    if bits > generate.MAX_LUT_BITS:
        raise RangeError(f"LUTs are generated for M = 1..{generate.MAX_LUT_BITS} (2^(2M) entries), not M={bits}; "
                         "use `amsim stats` for wider mantissas")
    selected = _select_models(args, fmt=fmt, bits=bits)
    filenames, owners = [], {}
    for model, params in selected:  # refuse bad widths/parameters and clashing outputs before any work starts
        resolved = model.resolve_params(params)
        if fmt in INTEGER_FORMATS:
            model.check_bits(bits)
        else:
            generate.mantissa_width(model, bits)
        filename = lutmod.lut_filename(model.name, resolved, bits, fmt, approxtrain_stem=model.approxtrain)
        key = filename.lower()  # case-insensitive file systems would overwrite too
        if key in owners:
            other = owners[key]
            if other.path == model.path:
                raise AmsimError(f"model {model.name!r} is selected twice; both would write {args.out / filename}")
            raise AmsimError(f"models {other.name!r} ({other.path}) and {model.name!r} ({model.path}) would both "
                             f"write {args.out / filename}; rename one (the name: line of its @amsim block)")
        owners[key] = model
        filenames.append(filename)
    _prepare_output_folder(args.out)
    jobs_n = _jobs(args, len(selected))
    threads = max(1, len(os.sched_getaffinity(0)) // jobs_n)
    show_progress = "" if sys.stderr.isatty() else None
    jobs = []
    for model, params in selected:
        if fmt in INTEGER_FORMATS:
            jobs.append((model.name, generate.integer_lut, (model, bits, params),
                         dict(zeros_as_exact=args.zeros_as_exact, threads=threads, progress=show_progress)))
        else:
            jobs.append((model.name, generate.mantissa_lut, (model, bits, params),
                         dict(rounding=args.rounding, samples=args.samples, seed=args.seed,
                              zeros_as_exact=args.zeros_as_exact, threads=threads, progress=show_progress)))
    outcomes = generate.run_batch(jobs, max_parallel=jobs_n, timeout=args.timeout)

    rows, failures, written = [], [], []
    for (model, params), filename, (name, outcome) in zip(selected, filenames, outcomes):
        if isinstance(outcome, BaseException):
            failures.append((name, outcome))
            continue
        params = outcome.params  # resolved: defaults included, so names say exactly what was built
        path = args.out / filename
        try:
            if fmt == "amsim":
                lutmod.save(outcome, path)
            elif fmt == "approxtrain":
                lutmod.save_approxtrain(outcome, path)
            else:
                lutformats.save(outcome, path, fmt)
        except (AmsimError, OSError) as exc:
            failures.append((name, exc))
            continue
        written.append(str(path))
        for reference, result in outcome.stats.items():
            rows.append({"model": model.name + "".join(f" {k}={v}" for k, v in params.items()), "bits": bits,
                         "reference": reference, **result, "file": str(path)})
    if args.json:
        print(json.dumps({"luts": rows, "failed": {n: str(e) for n, e in failures}}, indent=1))
    else:
        if rows:
            print(format_table(rows, width_label="n" if fmt in INTEGER_FORMATS else "M"))
            print(f"\nwrote {len(written)} file(s) to {args.out}/")
    return _report_failures(failures)


def cmd_stats(args) -> int:
    from . import generate
    from .models import find_model
    from .stats import format_header, format_table, header_comparison

    model = find_model(args.model, args.models_dir)
    _warn_shadowing([model])
    params = model.resolve_params(param_dict(args.param))
    if model.kind == "float" and args.as_float:
        raise RangeError("--float applies to integer models; float models are mantissa multipliers already")
    if args.operands is not None or args.dot_length is not None:
        return _stats_operands(args, model, params)
    if args.independent:
        raise AmsimError("--independent applies to --operands")
    if model.kind == "float":
        model.check_bits(args.bits)
    progress = "" if sys.stderr.isatty() and not args.json else None
    result = generate.run_isolated(
        model.name, generate.characterise, model, args.bits, params, as_float=args.as_float,
        reference=args.reference, rounding=args.rounding, samples=args.samples, seed=args.seed,
        zeros_as_exact=args.zeros_as_exact, progress=progress)
    if args.samples is not None and result["exhaustive"]:
        print(f"amsim: note: statistics over all {result['pairs']} pairs; --samples applies where they are "
              "sampled: the full reference, the truncated one beyond M = 12, integers beyond 16 bits",
              file=sys.stderr)
    header = header_comparison(model, result)
    for message in header["mismatches"] if header else ():
        print(f"amsim: warning: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({**result, "header": header} if header else result, indent=1))
        return 0
    label = result["model"] + "".join(f" {k}={v}" for k, v in params.items())
    print(format_table([{**result, "model": label}], width_label="n" if result["reference"] == "integer" else "M"))
    if not result["exhaustive"]:
        print(f"\nMonte Carlo: {result['samples']} pairs, seed {result['seed']}")
    extra = {k: result[k] for k in ("mean_error", "mae", "wce", "mse", "nmed", "nmed_denominator")}
    print("  ".join(f"{k}={v:.6g}" for k, v in extra.items() if v is not None))
    if header:
        print(format_header(header))
    return 0


def _stats_operands(args, model, params) -> int:
    """``stats --operands FILE`` / ``--dot-length K``: operand-aware statistics of a mantissa multiplier."""
    from . import generate, operands
    from .stats import format_table

    if args.reference != "truncated":
        raise operands.OperandError("operand-aware statistics weight the truncated reference (the joint "
                                    "distribution of the M-bit mantissas); drop --reference full")
    if args.zeros_as_exact:
        raise operands.OperandError("--zeros-as-exact does not apply to operand samples: zero and subnormal "
                                    "operands are excluded from the weights and counted")
    generate.mantissa_width(model, args.bits)  # float models at M, integer models lifted from M + 1
    if args.bits > generate.MAX_LUT_BITS:
        raise RangeError(f"operand-aware statistics need the LUT: M = 1..{generate.MAX_LUT_BITS}, not {args.bits}")
    if args.operands is not None:
        dist = operands.load_operands(args.operands, args.bits, args.rounding,
                                      independent=True if args.independent else None)
    else:
        if args.independent:
            raise AmsimError("--independent applies to --operands")
        dist = operands.OperandDistribution.uniform(args.bits)
    lut = generate.run_isolated(model.name, generate.mantissa_lut, model, args.bits, params,
                                rounding=args.rounding, samples=args.samples, seed=args.seed)
    result = operands.operand_stats(args.bits, lut.table, dist, dot_length=args.dot_length,
                                    trials=args.dot_trials, seed=args.seed)
    head = {"model": model.name, "parameters": params, "bits": args.bits, "reference": "truncated"}
    if model.kind == "int":
        head["lifted_from_bits"] = args.bits + 1
    uniform = lut.stats["truncated"]
    out = {**head, **result, "uniform": uniform}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    label = model.name + "".join(f" {k}={v}" for k, v in params.items())
    rows = [{**uniform, "model": label, "bits": args.bits, "reference": "uniform"}]
    if dist.mode != "uniform":
        rows.append({**result, "model": label, "bits": args.bits, "reference": "operands"})
    print(format_table(rows))
    if dist.mode != "uniform":
        a, b = dist.a, dist.b

        def dropped(info):
            return ", ".join(f"{info[k]} {k}" for k in ("zero", "subnormal", "inf", "nan") if info[k]) or "none"

        kind = "paired a/b" if dist.mode == "paired" else "independent: A x B"
        print(f"\noperands: {dist.source} ({kind}, rounding {dist.rounding}): A {a['used']}/{a['samples']} used "
              f"(excluded: {dropped(a)}), B {b['used']}/{b['samples']} used (excluded: {dropped(b)}); "
              f"{dist.pairs} operand pairs weighted")
    dot = result.get("dot_product")
    if dot:
        an, mc = dot["analytic"], dot["monte_carlo"]
        print(f"\ndot product, K = {dot['length']} (products drawn independently from the "
              f"{'operand' if dist.mode != 'uniform' else 'uniform'} distribution; {dot['units']}):")
        print(f"  absolute error: mean {an['abs_mean']:+.6g}  std {an['abs_std']:.6g}  (analytic)   "
              f"mean {mc['abs_mean']:+.6g}  std {mc['abs_std']:.6g}  (Monte Carlo)")
        print(f"  relative error: mean {100 * an['rel_mean']:+.4f} %  std {100 * an['rel_std']:.4f} %  (analytic)   "
              f"mean {100 * mc['rel_mean']:+.4f} %  std {100 * mc['rel_std']:.4f} %  (Monte Carlo)")
        print(f"  Monte Carlo: {mc['trials']} dot products, seed {mc['seed']}")
    return 0


# ----------------------------------------------------------------------------------------------
# Analysis: plot, pareto, report (amsim.analysis)
# ----------------------------------------------------------------------------------------------


def _jobs(args, n) -> int:
    return args.jobs or max(1, min(2, len(os.sched_getaffinity(0)), n))


def _report_failures(failures) -> int:
    for name, exc in failures:
        print(f"amsim: error: {name}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def cmd_plot(args) -> int:
    from .analysis import AnalysisError, data, plots

    kind = args.kind
    if not args.model and not args.lut:
        raise AnalysisError("name at least one --model or --lut to plot")
    if args.integer and kind == "width":
        raise AnalysisError("the width plot is for mantissa widths; drop --integer")
    if args.out.exists() and not args.out.is_dir():
        raise AmsimError(f"--out {args.out} exists and is not a folder")
    failures, written = [], []
    if kind == "width":
        if args.lut:
            raise AnalysisError("the width plot sweeps M, so it needs --model, not --lut")
        if args.reference == "full" and args.samples is None:
            args.samples = 1 << 18
        widths = data.parse_int_list(args.widths)
        configs = data.select_configs(args.model, args.param, widths[0], models_dirs=args.models_dir, check=False)
        results, failures, skipped = data.width_stats(configs, widths, reference=args.reference,
                                                      rounding=args.rounding, samples=args.samples, seed=args.seed)
        for label, ms in skipped.items():
            print(f"amsim: note: {label} does not support M = {', '.join(map(str, ms))}; skipped", file=sys.stderr)
        if results:
            fig = plots.width_figure(results, reference=args.reference)
            stem = args.name or _plot_stem("width", list(results), f"m{widths[0]}-{widths[-1]}")
            written += plots.save_figure(fig, args.out / stem)
    else:
        if args.bits is None:
            raise AnalysisError(f"the {kind} plot needs --bits")
        if args.integer and (args.bits > 8 if kind == "heatmap" else args.bits > 12):
            raise RangeError(f"integer {kind} plots take operand widths up to {8 if kind == 'heatmap' else 12}, "
                             f"not {args.bits}")
        if args.reference == "full" and kind != "distribution":
            raise AnalysisError(f"the {kind} plot shows the LUT grid (truncated reference); --reference full "
                                "applies to the distribution and width plots")
        if args.operands is not None and kind != "distribution":
            raise AnalysisError("--operands applies to the distribution plot")
        grids = []
        if args.model:
            configs = data.select_configs(args.model, args.param, args.bits, integer=args.integer,
                                          models_dirs=args.models_dir)
            built, failures = data.build_grids(configs, args.bits, integer=args.integer, rounding=args.rounding,
                                               samples=args.samples or (1 << 14), seed=args.seed,
                                               max_parallel=_jobs(args, len(configs)))
            grids += built
        elif args.param:
            raise AnalysisError("--param applies to --model")
        for path in args.lut:
            grid = data.load_lut_grid(path)
            if grid.bits != args.bits or (grid.kind == "integer") != args.integer:
                want = f"{args.bits}-bit integer" if args.integer else f"M = {args.bits} mantissa"
                raise AnalysisError(f"{path}: a {grid.kind} LUT at {grid.bits} bits, not a {want} LUT")
            grids.append(grid)
        if grids:
            written += _plot_grids(args, kind, grids)
    for path in written:
        print(path)
    return _report_failures(failures)


def _plot_stem(kind, labels, suffix) -> str:
    from .analysis.data import slug

    slugs = [slug(label) for label in labels]
    middle = "_".join(slugs) if len(slugs) <= 4 else f"{len(slugs)}models"
    return f"{kind}_{middle}_{suffix}"


def _plot_grids(args, kind, grids) -> list:
    from .analysis import AnalysisError, data, plots

    m = args.bits
    what = f"{m}-bit integer operands" if args.integer else f"M = {m}"
    suffix = f"n{m}" if args.integer else f"m{m}"
    labels = [g.label for g in grids]
    if kind == "heatmap":
        out = []
        for g in grids:
            stem = (args.name + ("" if len(grids) == 1 else f"_{data.slug(g.label)}")
                    if args.name else _plot_stem("heatmap", [g.label], suffix))
            out += plots.save_figure(plots.heatmap_figure(g), args.out / stem)
        return out
    stem = args.name or _plot_stem(kind, labels, suffix)
    if kind == "operand":
        return plots.save_figure(plots.operand_figure(grids), args.out / stem)
    # distribution
    if args.reference == "full":
        if args.integer:
            raise AnalysisError("the full reference applies to mantissa multipliers, not integer grids")
        samples = args.samples or (1 << 18)
        items = [(g.label, data.full_reference_re(g.lut, samples=samples, seed=args.seed, rounding=args.rounding))
                 for g in grids]
        fig = plots.distribution_figure(
            items, weighting="samples", title=f"Relative error distribution, {what}, full reference",
            subtitle=f"Monte Carlo: {samples} float32 operand pairs per model, seed {args.seed}, "
                     f"operand rounding {args.rounding}")
        return plots.save_figure(fig, args.out / (stem if args.name else stem + "_full"))
    if args.operands is not None:
        from . import operands

        if args.integer:
            raise AnalysisError("--operands weights mantissa pairs; drop --integer")
        dist = operands.load_operands(args.operands, m, args.rounding)
        for g in grids:
            g.weights = dist.weights
        fig = plots.distribution_figure(
            grids, weighting="operands", title=f"Relative error distribution, {what}, weighted by operand samples",
            subtitle=f"Operands: {dist.source} ({dist.mode}), {dist.pairs} pairs weighted")
        return plots.save_figure(fig, args.out / (stem if args.name else stem + "_operands"))
    ref = "" if args.integer else ", truncated reference"
    return plots.save_figure(plots.distribution_figure(grids, title=f"Relative error distribution, {what}{ref}"),
                             args.out / stem)


def cmd_pareto(args) -> int:
    from .analysis import data, pareto, plots

    objectives = pareto.parse_objectives(args.objectives)
    if args.integer and args.bits > 12:
        raise RangeError(f"integer candidates are swept exhaustively up to 12-bit operands, not {args.bits}")
    if args.plot is not None and args.plot.exists() and not args.plot.is_dir():
        raise AmsimError(f"--plot {args.plot} exists and is not a folder")
    configs = data.select_configs(args.model, args.param, args.bits, integer=args.integer,
                                  models_dirs=args.models_dir)
    candidates, failures = pareto.build_candidates(
        configs, args.bits, reference=args.reference, integer=args.integer, samples=args.samples, seed=args.seed,
        rounding=args.rounding, max_parallel=_jobs(args, len(configs)))
    result = pareto.pareto_front(candidates, objectives)
    reference = "integer" if args.integer else args.reference
    written = []
    if args.plot is not None:
        fig = plots.pareto_figure(result, title=f"Pareto front at {'n' if args.integer else 'M'} = {args.bits}: "
                                                f"{objectives[0]} vs {objectives[1]} ({reference} reference)")
        written = plots.save_figure(fig, args.plot / f"pareto_{'n' if args.integer else 'm'}{args.bits}_"
                                                     f"{'_'.join(objectives)}")
    if args.json:
        print(json.dumps(pareto.to_json(result, bits=args.bits, reference=reference, note=_COST_NOTE,
                                        failed={n: str(e) for n, e in failures},
                                        plots=[str(p) for p in written]), indent=1, default=str))
    elif args.csv:
        sys.stdout.write(pareto.to_csv(result))
    else:
        print(pareto.format_table(result))
        print(f"\n{len(result.front)} on the front, {len(result.dominated)} dominated, "
              f"{len(result.missing)} without data; all objectives minimised; statistics: {reference} reference.")
        print(f"Note: {_COST_NOTE}")
        for path in written:
            print(f"wrote {path}")
    return _report_failures(failures)


_COST_NOTE = ("cost figures come from different papers and technology nodes (each relative to an exact "
              "multiplier of its own width) and are not strictly comparable; a lifted integer model at "
              "mantissa width M uses its (M+1)-bit figure")


def cmd_report(args) -> int:
    import shlex

    from .analysis import report

    command = "amsim " + shlex.join(getattr(args, "argv", None) or ["report"])
    index = report.build_report(args.out, args.bits, args.model, args.param, objectives=args.objectives,
                                pareto_reference=args.reference, rounding=args.rounding, samples=args.samples,
                                seed=args.seed, models_dirs=args.models_dir, command=command,
                                max_parallel=_jobs(args, 2), runs=args.runs)
    info = json.loads((index.parent / "report.json").read_text(encoding="utf-8"))
    for entry in info["models"]:
        for message in (entry.get("header") or {}).get("mismatches", ()):
            print(f"amsim: warning: {message}", file=sys.stderr)
    print(f"wrote {index} ({len(info['models'])} model configuration(s), {len(info['figures'])} figures)")
    return _report_failures([(f["label"], f["error"]) for f in info["failed"]])


def _lut_file_format(path: Path) -> str:
    """A LUT file's format by its suffix; a ``.bin`` is TFApprox's when it has the size of one (no
    ApproxTrain table, 4^M bytes with M <= 7, has it)."""
    from .lutformats import SUFFIXES, TFAPPROX_BYTES

    if path.suffix == ".bin":
        return "tfapprox" if path.is_file() and path.stat().st_size == TFAPPROX_BYTES else "approxtrain"
    return next((fmt for fmt, suffix in SUFFIXES.items() if suffix == path.suffix), "amsim")


def cmd_lut_info(args) -> int:
    from . import lut as lutmod, lutformats

    fmt = args.format or _lut_file_format(args.path)
    if args.signed is not None and fmt not in INTEGER_FORMATS:
        raise AmsimError(f"--signed/--unsigned are for the integer formats ({', '.join(INTEGER_FORMATS)}); "
                         f"a {fmt} file says what it holds")
    if fmt in INTEGER_FORMATS:
        lut = lutformats.load(args.path, fmt, signed=args.signed)
    else:
        lut = {"amsim": lutmod.load, "approxtrain": lutmod.load_approxtrain}[fmt](args.path)
    meta = lut.metadata()
    if args.json:
        print(json.dumps(meta, indent=1))
        return 0
    print(f"{args.path}: verified ({fmt})")
    for key in ("kind", "model", "params", "bits", "rounding", "dtype", "amsim_version", "created",
                "source_sha256", "table_sha256"):
        print(f"  {key:14} {meta[key]}")
    if lut.kind == "integer":
        print(f"  {'signed':14} {bool(lut.meta.get('signed'))}")
    for reference, result in lut.stats.items():
        print(f"  stats[{reference}] mean|RE|={result['mean_abs_re']:.6f} bias={result['mean_re']:+.6f} "
              f"peak={result['max_abs_re']:.6f} pairs={result['pairs']}")
    return 0


def cmd_check(args) -> int:
    from . import check
    from .lut import names_lut_file
    from .models import cache_dir, find_model

    # hypothesis keeps files (no examples: check runs without a database, but a cache of constants)
    # under ./.hypothesis; a command must not write into the folder it is run from.
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(cache_dir() / "hypothesis"))
    options = {k: getattr(args, k) for k in ("examples", "samples", "timeout") if getattr(args, k) is not None}
    try:
        target = args.model
        if not names_lut_file(target):  # a model: say which one it is, if a user's hides another
            target = find_model(target, args.models_dir)
            _warn_shadowing([target])
        report = check.check(target, args.bits, params=param_dict(args.param), models_dirs=args.models_dir,
                             properties=args.property, max_rel_error=args.max_rel_error,
                             max_abs_error=args.max_abs_error, mean_rel_error=args.mean_rel_error,
                             bias_within=args.bias_within, mean_abs_error=args.mean_abs_error,
                             error_probability=args.error_probability, seed=args.seed, **options)
    except AmsimError as exc:
        # Exit 1 says that a property fails, so that CI can tell it from bad input: here every error
        # (an unknown model, an unreadable LUT, a compile error) is a usage error, exit 2.
        print(f"amsim: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=1) if args.json else report.format())
    return 0 if report.holds else 1


COMMANDS = {"models": cmd_models, "generate-lut": cmd_generate, "stats": cmd_stats, "check": cmd_check,
            "lut-info": cmd_lut_info,
            "plot": cmd_plot, "pareto": cmd_pareto, "report": cmd_report, **experiments_cli.COMMANDS}


def _raise_interrupted(signum, _frame):
    for sig in _ENDING_SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_end_the_run():
    """SIGTERM and SIGHUP end a command as SIGINT does: by an exception in the main thread, so that
    forked workers are stopped and temporary files removed on the way out (Python's default for
    these signals is to die on the spot and leave both behind)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(prog, command, args) -> int:
    if getattr(args, "verbose", False):
        os.environ[tfquiet.VERBOSE_ENV] = "1"  # for this process and those it starts (a study's workers)
    tfquiet.quiet_tensorflow(announce=True)  # before any command imports TensorFlow
    try:
        with _signals_end_the_run():
            return command(args)
    except Interrupted as exc:
        print(f"{prog}: {exc}; stopped", file=sys.stderr)
        return 128 + exc.signum
    except AmsimError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ModelError, RangeError)) else 1
    except OSError as exc:  # an unwritable --out, a full disk: one line, not a traceback
        if isinstance(exc, BrokenPipeError):  # `amsim models | head`: the reader left, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # SIGINT (Ctrl-C): Python's own handler raised it
        print(f"{prog}: {Interrupted(signal.SIGINT)}; stopped", file=sys.stderr)
        return 128 + signal.SIGINT


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the report records the exact command
    return _run("amsim", COMMANDS[args.command], args)


def generate_lut_main(argv=None) -> int:
    """The ``generate-lut`` console script: ``amsim generate-lut`` under its own name."""
    parser = _Parser(prog="generate-lut", description="Sweep models into LUT files.")
    parser.add_argument("--version", action="version", version=f"amsim {__version__}")
    _add_generate_arguments(parser)
    _add_verbose_option(parser)
    return _run("generate-lut", cmd_generate, parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
