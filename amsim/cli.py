"""The ``amsim`` command line: ``models``, ``generate-lut``, ``stats``, ``lut-info``.

Errors a user can cause exit non-zero with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import AmsimError, ModelError, RangeError

FORMATS = ("amsim", "approxtrain", "tfapprox")


def _param(text: str) -> tuple[str, int]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"parameter value must be an integer: {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_model_options(p, *, multiple: bool):
    if multiple:
        p.add_argument("--model", action="append", metavar="NAME",
                       help="model name or .c file (repeatable; default: every model supporting --bits)")
    else:
        p.add_argument("--model", required=True, metavar="NAME", help="model name or .c file")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="model parameter (repeatable)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of C models (repeatable)")


def _add_sampling_options(p):
    p.add_argument("--samples", type=_positive, metavar="N", help="Monte Carlo pairs (default 4194304)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="Monte Carlo seed (default 0)")
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
    p.add_argument("--bits", type=_positive, required=True, metavar="N",
                   help="M for float models (and with --float); operand width for integer models")
    p.add_argument("--reference", choices=("truncated", "full"), default="truncated")
    p.add_argument("--rounding", choices=("truncate", "rne"), default="truncate",
                   help="operand conversion for the full reference")
    p.add_argument("--float", action="store_true", dest="as_float",
                   help="characterise an integer model lifted to an M-bit mantissa multiplier (M = --bits)")
    _add_sampling_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("lut-info", help="verify a LUT file and print its metadata")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=FORMATS, help="default: by extension (.npz amsim, .bin ApproxTrain)")
    p.add_argument("--json", action="store_true")
    return parser


def _add_generate_arguments(p):
    p.add_argument("--bits", type=_positive, default=7, metavar="M",
                   help="mantissa bits M (default 7, bfloat16); for --format tfapprox the integer width")
    _add_model_options(p, multiple=True)
    p.add_argument("--out", type=Path, default=Path("luts"), metavar="DIR", help="output folder (default luts/)")
    p.add_argument("--format", choices=FORMATS, default="amsim")
    p.add_argument("--rounding", choices=("truncate", "rne"), default="truncate",
                   help="operand conversion the LUT is meant for (recorded; used by the full statistics)")
    _add_sampling_options(p)
    p.add_argument("--jobs", type=_positive, metavar="N", help="models swept at once (default: CPUs, max 2)")
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
    if args.json:
        out = [{"name": m.name, "kind": m.kind, "bits": list(m.bits), "signed": m.signed,
                "params": {p.name: {"default": p.default, "range": [p.lo, p.hi], "description": p.description}
                           for p in m.params.values()},
                "description": m.description, "citation": m.citation, "path": str(m.path),
                "costs": [{"power": c.power, "area": c.area, "delay": c.delay, "node": c.node, "source": c.source,
                           "conditions": c.conditions, "absolute": c.absolute} for c in m.costs]}
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
    return 0


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
        if fmt == "tfapprox":
            models = [m for m in available if m.kind == "int" and not m.signed and bits in m.bits]
        else:
            models = [m for m in available
                      if (bits in m.bits if m.kind == "float" else (bits + 1 in m.bits and not m.signed))]
        if not models:
            raise RangeError(f"no model supports {bits} bits")
    params = dict(args.param)
    for name in params:
        if not any(name in m.params for m in models):
            raise RangeError(f"no selected model has a parameter {name!r}")
    return [(m, {k: v for k, v in params.items() if k in m.params}) for m in models]


def cmd_generate(args) -> int:
    from . import generate, lut as lutmod
    from .stats import format_table

    fmt, bits = args.format, args.bits
    if fmt == "approxtrain" and bits > 7:
        raise RangeError(f"ApproxTrain's format holds M <= 7, not M={bits}")
    if fmt == "tfapprox" and bits != 8:
        raise RangeError("TFApprox's table is for 8-bit integer operands: use --bits 8")
    if args.out.exists() and not args.out.is_dir():
        raise AmsimError(f"--out {args.out} exists and is not a folder")
    selected = _select_models(args, fmt=fmt, bits=bits)
    for model, params in selected:  # refuse bad widths/parameters before any work starts
        model.resolve_params(params)
        if fmt == "tfapprox":
            model.check_bits(bits)
        else:
            generate.mantissa_width(model, bits)
    cpus = len(os.sched_getaffinity(0))
    jobs_n = args.jobs or min(2, cpus, len(selected))
    threads = max(1, cpus // jobs_n)
    show_progress = "" if sys.stderr.isatty() else None
    jobs = []
    for model, params in selected:
        if fmt == "tfapprox":
            jobs.append((model.name, generate.integer_lut, (model, bits, params),
                         dict(zeros_as_exact=args.zeros_as_exact, threads=threads, progress=show_progress)))
        else:
            jobs.append((model.name, generate.mantissa_lut, (model, bits, params),
                         dict(rounding=args.rounding, samples=args.samples, seed=args.seed,
                              zeros_as_exact=args.zeros_as_exact, threads=threads, progress=show_progress)))
    outcomes = generate.run_batch(jobs, max_parallel=jobs_n)

    rows, failures, written = [], [], []
    for (model, params), (name, outcome) in zip(selected, outcomes):
        if isinstance(outcome, BaseException):
            failures.append((name, outcome))
            continue
        params = outcome.params  # resolved: defaults included, so names say exactly what was built
        filename = lutmod.lut_filename(model.name, params, bits, fmt, approxtrain_stem=model.approxtrain)
        path = args.out / filename
        try:
            if fmt == "amsim":
                lutmod.save(outcome, path)
            elif fmt == "approxtrain":
                lutmod.save_approxtrain(outcome, path)
            else:
                lutmod.save_tfapprox(outcome, path)
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
            print(format_table(rows, _generate_columns(fmt)))
            print(f"\nwrote {len(written)} file(s) to {args.out}/")
    for name, exc in failures:
        print(f"amsim: error: {name}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _generate_columns(fmt):
    columns = [("model", "model", "{}"), ("M" if fmt != "tfapprox" else "n", "bits", "{}"),
               ("ref", "reference", "{}"), ("mean|RE| %", "mean_abs_re", "{:.4f}"), ("bias %", "mean_re", "{:+.4f}"),
               ("peak|RE| %", "max_abs_re", "{:.4f}"), ("std RE %", "std_re", "{:.4f}"),
               ("err rate %", "error_rate", "{:.2f}"), ("pairs", "pairs", "{}")]
    return columns


def cmd_stats(args) -> int:
    from . import generate
    from .models import find_model
    from .stats import format_table

    model = find_model(args.model, args.models_dir)
    params = model.resolve_params(dict(args.param))
    if model.kind == "float" and args.as_float:
        raise RangeError("--float applies to integer models; float models are mantissa multipliers already")
    if model.kind == "float":
        model.check_bits(args.bits)
    progress = "" if sys.stderr.isatty() and not args.json else None
    result = generate.run_isolated(
        model.name, generate.characterise, model, args.bits, params, as_float=args.as_float,
        reference=args.reference, rounding=args.rounding, samples=args.samples, seed=args.seed,
        zeros_as_exact=args.zeros_as_exact, progress=progress)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    label = result["model"] + "".join(f" {k}={v}" for k, v in params.items())
    print(format_table([{**result, "model": label}]))
    if not result["exhaustive"]:
        print(f"\nMonte Carlo: {result['samples']} pairs, seed {result['seed']}")
    extra = {k: result[k] for k in ("mean_error", "mae", "wce", "mse", "nmed", "nmed_denominator")}
    print("  ".join(f"{k}={v:.6g}" for k, v in extra.items() if v is not None))
    return 0


def cmd_lut_info(args) -> int:
    from . import lut as lutmod

    fmt = args.format or ("approxtrain" if args.path.suffix == ".bin" else "amsim")
    lut = {"amsim": lutmod.load, "approxtrain": lutmod.load_approxtrain, "tfapprox": lutmod.load_tfapprox}[fmt](args.path)
    meta = lut.metadata()
    if args.json:
        print(json.dumps(meta, indent=1))
        return 0
    print(f"{args.path}: verified ({fmt})")
    for key in ("kind", "model", "params", "bits", "rounding", "dtype", "amsim_version", "created",
                "source_sha256", "table_sha256"):
        print(f"  {key:14} {meta[key]}")
    for reference, result in lut.stats.items():
        print(f"  stats[{reference}] mean|RE|={result['mean_abs_re']:.6f} bias={result['mean_re']:+.6f} "
              f"peak={result['max_abs_re']:.6f} pairs={result['pairs']}")
    return 0


COMMANDS = {"models": cmd_models, "generate-lut": cmd_generate, "stats": cmd_stats, "lut-info": cmd_lut_info}


def _run(prog, command, args) -> int:
    try:
        return command(args)
    except AmsimError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ModelError, RangeError)) else 1
    except OSError as exc:  # an unwritable --out, a full disk: one line, not a traceback
        if isinstance(exc, BrokenPipeError):  # `amsim models | head`: the reader left, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return _run("amsim", COMMANDS[args.command], args)


def generate_lut_main(argv=None) -> int:
    """The ``generate-lut`` console script: ``amsim generate-lut`` under its own name."""
    parser = _Parser(prog="generate-lut", description="Sweep models into LUT files.")
    parser.add_argument("--version", action="version", version=f"amsim {__version__}")
    _add_generate_arguments(parser)
    return _run("generate-lut", cmd_generate, parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
