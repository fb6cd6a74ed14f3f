"""``amsim study MY_MUL.c``: one command from a C model to a verdict on it.

The steps are the tools a designer would otherwise run one by one, into one folder ``DIR``:

1. **check** (:func:`amsim.check.check`): the properties the model's ``@amsim`` block claims and the
   ones always checked, at the operand width behind the mantissa multiplier (M for a float model,
   M + 1 for an integer model lifted to M fraction bits, docs/numerics.md section 4) ->
   ``DIR/check.json``;
2. **the LUT** at M (:func:`amsim.generate.mantissa_lut`, with both references' statistics) ->
   ``DIR/<label>.npz``;
3. **its neighbours**: the built-in designs supporting M, and the two closest to it in mean |RE|
   (truncated reference), which the training compares it with;
4. **training** (:func:`amsim.experiments.study.run_study`, as ``amsim train``): float32, the design
   and its two neighbours from identical initial weights and data order -> ``DIR/training/``;
5. **the report** (:func:`amsim.analysis.report.build_report`, as ``amsim report``): statistics,
   figures and the Pareto front of the built-ins and the design, the check, the training section, and
   at the top a summary paragraph that states the result in numbers -> ``DIR/report/index.html``; the
   summary also goes to ``DIR/verdict.json``.

With ``resume`` a rerun keeps what an earlier one finished: the check when the model's source and
the options are unchanged, and the study's runs (``amsim train --resume``); the report is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import AmsimError
from ..lut import atomic_write_bytes
from . import ExperimentError

__all__ = ["run_design_study", "closest_builtins", "summary_paragraph"]


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def _fraction(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def closest_builtins(stats: dict[str, float], mine: float, count: int = 2) -> list[str]:
    """The ``count`` labels of ``stats`` (label -> mean |RE|) closest to ``mine``, nearest first (ties by
    label, so the choice is reproducible)."""
    return sorted(stats, key=lambda label: (abs(stats[label] - mine), label))[:count]


def _check_step(model, width, params, models_dirs, out: Path, options: dict, resume: bool, log) -> dict:
    from .. import check

    key = hashlib.sha256(model.path.read_bytes() + json.dumps(
        {"width": width, "params": params, **options}, sort_keys=True).encode()).hexdigest()
    path = out / "check.json"
    if resume and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            log("check: kept from the earlier run (same source and options)")
            return saved
    report = check.check(model, width, params=params, models_dirs=models_dirs, **options)
    log(report.format())
    saved = {"key": key, **report.to_json()}
    for entry, result in zip(saved["results"], report.results, strict=True):
        if result.counterexample is not None:  # as `amsim check` prints it, for the report's table
            entry["counterexample_text"] = result.counterexample.describe()
    _write_json(path, saved)
    return saved


def run_design_study(model_file, *, bits: int = 7, params=None, models_dirs=(), out, dataset: str = "digits",
                     data_dir=None, arch: str = "mlp", epochs: int = 5, seeds=(0,), neighbours: int = 2,
                     examples: int = 200, seed: int = 0, resume: bool = False, force: bool = False, verbose=0,
                     log=print, command: str | None = None) -> dict:
    """Run every step of the module docstring for the C model ``model_file``; returns the verdict.

    Parameters
    ----------
    model_file : str or Path
        The design: a ``.c`` file (or the name of a model in ``models_dirs`` or built in).
    bits : int
        Mantissa fraction bits M of the multiplier trained and characterised.
    params : dict, optional
        The model's parameters (defaults filled in).
    out : str or Path
        The study folder.
    dataset, data_dir, arch, epochs, seeds
        The training study's settings, as ``amsim train`` takes them.
    neighbours : int
        How many built-in designs closest in mean |RE| train beside it.
    examples, seed
        hypothesis examples per sampled property and their seed (a check that fits the exhaustive
        limit, as every M <= 11, uses neither).
    resume, force
        Keep what an earlier run finished / replace it.

    Returns
    -------
    dict
        What ``DIR/verdict.json`` holds: the summary, the check's outcome, statistics, neighbours,
        Pareto status, accuracies and energy.
    """
    from ..analysis import AnalysisError, data, pareto, report
    from ..generate import mantissa_lut, mantissa_width
    from ..lut import save
    from ..models import builtin_models_dir, find_model
    from .multipliers import FLOAT32, parse_multiplier
    from .runner import RunConfig
    from .study import run_study

    if resume and force:
        raise ExperimentError("--resume and --force exclude each other")
    out = Path(out)
    model = find_model(str(model_file), models_dirs)
    params = model.resolve_params(params or {})
    width = mantissa_width(model, bits)
    param_args = [f"{k}={v}" for k, v in sorted(params.items())]
    label = data.config_label(model.name, params) + f"-M{bits}"
    out.mkdir(parents=True, exist_ok=True)

    log(f"[1/5] checking {model.name}'s properties ({width}-bit {'significands' if model.kind == 'float' else 'operands'})")
    checked = _check_step(model, width, params, models_dirs, out, {"examples": examples, "seed": seed}, resume, log)

    log(f"[2/5] its LUT at M = {bits}")
    lut = mantissa_lut(model, bits, params)
    save(lut, out / f"{data.slug(label)}.npz")
    mine = lut.stats["truncated"]

    log(f"[3/5] the built-in designs at M = {bits}, and the {neighbours} closest to it in mean |RE|")
    builtin_dir = builtin_models_dir().resolve()
    source = model.path.resolve()
    configs = [c for c in data.select_configs(None, (), bits) if c.model.path.resolve() != source]
    grids, failed = data.build_grids(configs, bits)
    for name, exc in failed:
        log(f"  {name}: left out ({exc})")
    stats = {g.label: g.stats["truncated"]["mean_abs_re"] for g in grids
             if g.stats["truncated"]["mean_abs_re"] is not None}
    nearest = closest_builtins(stats, mine["mean_abs_re"], neighbours)
    by_label = {g.label: g for g in grids}

    log(f"[4/5] training {dataset} with {arch}: float32, {model.name}, {', '.join(nearest)}")
    own = ":".join([str(model.path if model.path.parent.resolve() != builtin_dir else model.name), str(bits),
                    *param_args])
    specs = [parse_multiplier(FLOAT32), parse_multiplier(own, models_dirs=models_dirs)]
    for name in nearest:
        g = by_label[name]
        specs.append(parse_multiplier(":".join([g.config.model.name, str(bits),
                                                *(f"{k}={v}" for k, v in sorted(g.config.params.items()))])))
    base = RunConfig(dataset=dataset, arch=arch, multiplier=specs[0], epochs=epochs,
                     data_dir=None if data_dir is None else str(Path(data_dir).resolve()))
    summary = run_study(out / "training", base, specs, seeds, resume=resume, force=force, verbose=verbose, log=log)

    log("[5/5] the report")
    mine_grid = data.grid_from_lut(lut, data.config_label(model.name, params), data.Config(model, params))
    front_of = _pareto_status(pareto, grids, mine_grid, model, bits)
    verdict = {"model": model.name, "source": str(model.path), "params": params, "bits": bits, "label": label,
               "check": {"holds": checked["holds"], "exhaustive": checked["exhaustive"], "pairs": checked["pairs"],
                         "failed": [r["property"] for r in checked["results"] if r["status"] != "holds"],
                         "properties": len(checked["results"])},
               "statistics": {"truncated": mine, "full": lut.stats.get("full")},
               "neighbours": {name: stats[name] for name in nearest},
               "pareto": front_of,
               "training": {"dataset": dataset, "arch": arch, "epochs": epochs, "seeds": list(seeds),
                            "rows": summary["rows"], "energy": summary["energy"], "labels": {
                                "float32": specs[0].label, "design": specs[1].label,
                                "neighbours": [s.label for s in specs[2:]]}}}
    verdict["summary"] = summary_paragraph(verdict)
    try:
        index = report.build_report(out / "report", bits, grids=[*grids, mine_grid], runs=[out / "training"],
                                    command=command,
                                    design={"summary": verdict["summary"], "check": checked, "label": label})
    except AnalysisError as exc:
        raise ExperimentError(f"amsim study: the report could not be built: {exc}") from None
    verdict["report"] = str(index)
    _write_json(out / "verdict.json", verdict)
    return verdict


def _pareto_status(pareto, grids, mine, model, bits) -> dict:
    """The design's place (grid ``mine``) on the Pareto front over power and mean |RE| among the built-ins."""
    candidates = [pareto.make_candidate(g.config, bits, g.stats.get("truncated")) for g in [*grids, mine]]
    objectives = pareto.parse_objectives(("power", "mean_abs_re"))
    result = pareto.pareto_front(candidates, objectives)
    entry = pareto.to_json(result)
    for group in ("front", "dominated", "no_cost_data"):
        for c in entry[group]:
            if c["label"] == mine.config.label and c["model"] == model.name:
                return {"status": c["status"], "dominated_by": c.get("dominated_by"),
                        "objectives": list(objectives), "front": [x["label"] for x in entry["front"]]}
    raise AmsimError("the design is missing from its own Pareto front")  # pragma: no cover


def _row(rows, label):
    return next((r for r in rows if r["multiplier"] == label), None)


def _accuracy(row) -> str:
    if row is None or row.get("test_accuracy") is None:
        return "no result"
    std = row.get("test_accuracy_std")
    return f"{100 * row['test_accuracy']:.2f} %" + (f" ± {100 * std:.2f}" if row["complete"] > 1 and std else "")


def summary_paragraph(v: dict) -> str:
    """The verdict in numbers, one paragraph: check, error, neighbours, Pareto status, accuracy, energy."""
    c, t, s = v["check"], v["training"], v["statistics"]["truncated"]
    how = f"exhaustively over {c['pairs']} operand pairs" if c["exhaustive"] else "on hypothesis samples"
    checked = (f"all {c['properties']} checked properties hold ({how})" if c["holds"] else
               f"{len(c['failed'])} of {c['properties']} checked properties fail ({', '.join(c['failed'])}; "
               f"checked {how})")
    near = ", ".join(f"{name} {_fraction(value)}" for name, value in v["neighbours"].items())
    p = v["pareto"]
    place = {"front": "on the Pareto front of power and mean |RE| among the built-in designs",
             "dominated": f"dominated on power and mean |RE| by {p.get('dominated_by')}",
             "no cost data": "not placed on the power/error Pareto front (it declares no power figure)"}
    rows, labels = t["rows"], t["labels"]
    ref, mine = _row(rows, labels["float32"]), _row(rows, labels["design"])
    delta = ""
    if ref and mine and ref.get("test_accuracy") is not None and mine.get("test_accuracy") is not None:
        delta = f" ({100 * (mine['test_accuracy'] - ref['test_accuracy']):+.2f} points)"
    others = "; ".join(f"{label} {_accuracy(_row(rows, label))}" for label in labels["neighbours"])
    energy = next((e for e in t["energy"] if e["label"] == labels["design"]), None)
    power = ""
    if energy and energy.get("relative_power") is not None:
        power = (f" Its declared power is {energy['relative_power']:.3g} of an exact multiplier's"
                 + (f", {energy['vs_float32']:.3f} of float32's multiplier energy per epoch"
                    if energy.get("vs_float32") is not None else "") + ".")
    seeds = t["seeds"]
    share = (mine or {}).get("coverage")
    partial = "" if share is None or share >= 1 else (
        f" Only {100 * share:.1f} % of the network's products were approximate: "
        f"{', '.join(mine['exact_layers'])} stayed exact float32, which flatters the design's accuracy.")
    return (f"{v['model']} at M = {v['bits']}: {checked}. Mean |RE| {_fraction(s['mean_abs_re'])} "
            f"(bias {100 * s['mean_re']:+.3f} %, peak {_fraction(s['max_abs_re'])}; truncated reference), "
            f"beside the closest built-ins {near}; {place.get(p['status'], p['status'])}. "
            f"Trained on {t['dataset']} with {t['arch']} for {t['epochs']} epoch(s), "
            f"{len(seeds)} seed(s) from identical initial weights: test accuracy {_accuracy(mine)} against "
            f"{_accuracy(ref)} in float32{delta}; {others}.{power}{partial}")
