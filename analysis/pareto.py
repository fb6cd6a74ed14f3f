"""Pareto fronts of approximate multipliers over any two or more objectives, all minimised.

:func:`pareto_front` is a pure function over a list of candidates (dicts with
one numeric entry per objective). Conventions, pinned by property tests:

* p *dominates* q when p is no worse in every objective and strictly better
  in at least one. The front is every candidate no other candidate dominates.
* **Ties and duplicates**: candidates with identical objective vectors do not
  dominate one another, so they are all kept: all on the front, or all
  dominated (each by the same front point). Nothing is deduplicated.
* A candidate missing an objective (absent, ``None`` or NaN) is neither on the
  front nor dominated: it is reported separately (``missing``), with the
  objectives it lacks: "no cost data" when a cost figure is missing. It is
  never dropped silently or given a default. ``inf`` is a value like any other.
* Every dominated candidate records a front candidate that dominates it.

Objectives
----------
* cost, relative to an exact multiplier of the same width (exact = 1):
  ``power``, ``area``, ``delay``; absolute figures (EvoApproxLib headers):
  ``power_mw``, ``area_um2``, ``delay_ns``;
* any numeric docs/metrics.md key: ``mean_abs_re``, ``max_abs_re``, ``std_re``,
  ``error_rate``, ``mae``, ``wce``, ``mse``, ``nmed``, ... (minimised as they
  are, so ``mean_re`` prefers the most negative bias);
* ``abs_mean_re`` = |mean_re| (alias ``abs(mean_re)``), ``abs_mean_error`` = |mean_error|.

Costs come from :meth:`amsim.models.Model.cost_for` with the width of
:func:`amsim.analysis.data.cost_bits`: a lifted integer model at mantissa width M is
an (M + 1)-bit integer multiplier, so its ``bits=M+1`` figure applies.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

from amsim.stats import METRIC_KEYS

from . import AnalysisError

__all__ = ["ParetoResult", "pareto_front", "dominates", "parse_objectives", "OBJECTIVES", "COST_OBJECTIVES",
           "objective_label", "objective_scale", "make_candidate", "build_candidates", "format_table",
           "format_value", "to_json", "to_csv"]

COST_OBJECTIVES = ("power", "area", "delay")
ABSOLUTE_COST_OBJECTIVES = {"power_mw": "power (mW)", "area_um2": "area (um^2)", "delay_ns": "delay (ns)"}
_STAT_OBJECTIVES = tuple(k for k in METRIC_KEYS if k != "exhaustive")
DERIVED = {"abs_mean_re": "mean_re", "abs_mean_error": "mean_error"}
ALIASES = {"abs(mean_re)": "abs_mean_re", "abs(mean_error)": "abs_mean_error"}
#: Every accepted objective name.
OBJECTIVES = (*COST_OBJECTIVES, *ABSOLUTE_COST_OBJECTIVES, *_STAT_OBJECTIVES, *DERIVED)
#: Ratios (fractions in the data) shown in % in tables and on axes.
RATIO_OBJECTIVES = {"mean_re", "mean_abs_re", "max_abs_re", "min_re", "max_re", "std_re", "error_rate", "nmed",
                    "abs_mean_re"}
_LABELS = {
    "power": "power (relative to exact = 1)", "area": "area (relative to exact = 1)",
    "delay": "delay (relative to exact = 1)", **ABSOLUTE_COST_OBJECTIVES,
    "mean_re": "bias, mean RE (%)", "mean_abs_re": "mean |RE| (%)", "max_abs_re": "peak |RE| (%)",
    "min_re": "min RE (%)", "max_re": "max RE (%)", "std_re": "std of RE (%)", "error_rate": "error rate (%)",
    "mean_error": "mean error (product units)", "mae": "mean |error| (product units)",
    "wce": "worst-case |error| (product units)", "mse": "mean squared error (product units^2)",
    "nmed": "NMED (%)", "nmed_denominator": "NMED denominator (product units)", "pairs": "operand pairs (count)",
    "abs_mean_re": "|bias| = |mean RE| (%)", "abs_mean_error": "|mean error| (product units)",
}


def objective_label(name: str) -> str:
    """Axis label with units for an objective."""
    return _LABELS.get(name, name)


def objective_scale(name: str) -> float:
    """Factor from the stored value to the displayed one (100 for ratios shown in %)."""
    return 100.0 if name in RATIO_OBJECTIVES else 1.0


def parse_objectives(objectives) -> list[str]:
    """``"power,mean_abs_re"`` or a list -> canonical names; at least two, no repeats, all known."""
    names = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    out = []
    for raw in names:
        name = ALIASES.get(raw.strip().replace(" ", ""), raw.strip())
        if not name:
            continue
        if name not in OBJECTIVES:
            raise AnalysisError(f"unknown objective {raw.strip()!r}; choose from {', '.join(OBJECTIVES)}")
        if name in out:
            raise AnalysisError(f"objective {name!r} given twice")
        out.append(name)
    if len(out) < 2:
        raise AnalysisError(f"a Pareto front needs at least two objectives, got {', '.join(out) or 'none'}")
    return out


# ----------------------------------------------------------------------------------------------
# The front
# ----------------------------------------------------------------------------------------------


def dominates(p, q) -> bool:
    """True when vector p is <= q everywhere and < somewhere (all objectives minimised)."""
    return all(a <= b for a, b in zip(p, q)) and any(a < b for a, b in zip(p, q))


def _value(candidate, name):
    value = candidate.get(name) if hasattr(candidate, "get") else None
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


@dataclasses.dataclass
class ParetoResult:
    """The outcome of :func:`pareto_front`.

    ``front``, ``dominated`` and ``missing`` hold the input candidates
    themselves (not copies); the ``*_indices`` give their positions in the input.
    The front is sorted by objective vector (lexicographically, ties in input
    order); the others keep input order.
    """

    objectives: list
    candidates: list
    front_indices: list
    dominated_indices: list
    missing_indices: list
    dominated_by: dict  # dominated index -> index of a front candidate that dominates it
    missing_objectives: dict  # missing index -> the objectives it lacks

    @property
    def front(self):
        return [self.candidates[i] for i in self.front_indices]

    @property
    def dominated(self):
        return [self.candidates[i] for i in self.dominated_indices]

    @property
    def missing(self):
        return [self.candidates[i] for i in self.missing_indices]

    def vector(self, index) -> tuple:
        return tuple(_value(self.candidates[index], o) for o in self.objectives)

    def status(self, index) -> str:
        if index in self.missing_objectives:
            return "no cost data" if any(o in COST_OBJECTIVES or o in ABSOLUTE_COST_OBJECTIVES
                                         for o in self.missing_objectives[index]) else "no data"
        return "dominated" if index in self.dominated_by else "front"


def pareto_front(candidates, objectives) -> ParetoResult:
    """The non-dominated candidates over ``objectives`` (all minimised).

    Parameters
    ----------
    candidates : sequence of mappings
        Each maps objective names to numbers; other keys are ignored.
    objectives : sequence of str
        At least one key (two or more for a meaningful front).
    """
    objectives = list(objectives)
    if not objectives:
        raise AnalysisError("a Pareto front needs at least one objective")
    candidates = list(candidates)
    vectors, missing = {}, {}
    for index, c in enumerate(candidates):
        values = [_value(c, o) for o in objectives]
        lacking = [o for o, v in zip(objectives, values) if v is None]
        if lacking:
            missing[index] = lacking
        else:
            vectors[index] = tuple(values)
    # Whatever dominates p precedes p in lexicographic order, and some front point dominates every
    # dominated p (dominance is transitive), so one pass against the front found so far suffices.
    order = sorted(vectors, key=lambda i: (vectors[i], i))
    front, dominated_by = [], {}
    for i in order:
        for f in front:
            if dominates(vectors[f], vectors[i]):
                dominated_by[i] = f
                break
        else:
            front.append(i)
    return ParetoResult(objectives, candidates, front, sorted(dominated_by), sorted(missing), dominated_by,
                        missing)


# ----------------------------------------------------------------------------------------------
# Candidates from models
# ----------------------------------------------------------------------------------------------


def make_candidate(config, bits: int, stats: dict | None, *, integer: bool = False,
                   reference: str = "truncated") -> dict:
    """One candidate dict: label, model, params, cost figures (None where unpublished) and statistics."""
    from .data import cost_bits

    model, params = config.model, config.params
    width = cost_bits(model, bits, integer=integer)
    cost = model.cost_for(width, params)
    c = {"label": config.label, "model": model.name, "params": dict(params), "bits": bits,
         "kind": "integer" if integer else ("lifted" if model.kind == "int" else "float"),
         "reference": reference, "cost_bits": width}
    for name in COST_OBJECTIVES:
        c[name] = getattr(cost, name) if cost is not None else None
    for name in ABSOLUTE_COST_OBJECTIVES:
        c[name] = cost.absolute.get(name) if cost is not None else None
    c["cost_node"] = cost.node if cost is not None else ""
    c["cost_source"] = cost.source if cost is not None else ""
    c["cost_conditions"] = dict(cost.conditions) if cost is not None else {}
    for key in _STAT_OBJECTIVES:
        c[key] = (stats or {}).get(key)
    for name, base in DERIVED.items():
        c[name] = abs(c[base]) if c.get(base) is not None else None
    return c


def build_candidates(configs, bits: int, *, reference: str = "truncated", integer: bool = False,
                     samples=None, seed: int = 0, rounding: str = "truncate", isolate: bool = True,
                     max_parallel: int = 1) -> tuple[list[dict], list]:
    """Candidates of model configurations (LUTs built crash-isolated): ``(candidates, failures)``."""
    from .data import build_luts

    if integer:
        reference = "integer"
    candidates, failures = [], []
    for config, outcome in build_luts(configs, bits, integer=integer, rounding=rounding, samples=samples,
                                      seed=seed, isolate=isolate, max_parallel=max_parallel):
        if isinstance(outcome, BaseException):
            failures.append((config.label, outcome))
            continue
        candidates.append(make_candidate(config, bits, outcome.stats.get(reference), integer=integer,
                                         reference=reference))
    return candidates, failures


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def format_value(name, value):
    """An objective value as shown to people: ratios in %, 4 significant digits, "-" when missing."""
    if value is None:
        return "-"
    v = value * objective_scale(name)
    return f"{v:.4g}"


def _rows(result: ParetoResult):
    for group in (result.front_indices, result.dominated_indices, result.missing_indices):
        for i in group:
            yield i, result.candidates[i]


def format_table(result: ParetoResult) -> str:
    """Plain-text table: the front (``*``), then dominated candidates, then those without data."""
    def label(i):
        return str(result.candidates[i].get("label", f"#{i}"))

    head = ["", "candidate"] + [objective_label(o) for o in result.objectives] + ["status"]
    body = []
    for i, c in _rows(result):
        status = result.status(i)
        if status == "dominated":
            status = f"dominated by {label(result.dominated_by[i])}"
        elif status != "front":
            status = f"{status} ({', '.join(result.missing_objectives[i])})"
        body.append(["*" if status == "front" else "", label(i)]
                    + [format_value(o, _value(c, o)) for o in result.objectives] + [status])
    widths = [max([len(h)] + [len(r[k]) for r in body]) for k, h in enumerate(head)]
    widths[-1] = len(head[-1])

    def line(cells):
        return "  ".join(c.rjust(w) if 1 < k < len(cells) - 1 else c.ljust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def to_json(result: ParetoResult, **meta) -> dict:
    """JSON-ready dict: objectives, front, dominated (with ``dominated_by``), no_cost_data, and ``meta``."""
    def entry(i):
        c = dict(result.candidates[i])
        c["status"] = result.status(i)
        if i in result.dominated_by:
            c["dominated_by"] = result.candidates[result.dominated_by[i]].get("label", result.dominated_by[i])
        if i in result.missing_objectives:
            c["missing"] = list(result.missing_objectives[i])
        return c

    return {**meta, "objectives": list(result.objectives),
            "front": [entry(i) for i in result.front_indices],
            "dominated": [entry(i) for i in result.dominated_indices],
            "no_cost_data": [entry(i) for i in result.missing_indices],
            "ties": "candidates with identical objective vectors are all kept"}


def to_csv(result: ParetoResult) -> str:
    """CSV, one row per candidate (front, dominated, no data), fractions as in JSON."""
    buf = io.StringIO()
    extra = ["cost_node", "cost_source", "cost_bits", "reference"]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["status", "label", "model", "params", "bits", *result.objectives, "dominated_by", "missing",
                     *extra])
    for i, c in _rows(result):
        dom = result.candidates[result.dominated_by[i]].get("label", "") if i in result.dominated_by else ""
        values = [_value(c, o) for o in result.objectives]
        writer.writerow([result.status(i), c.get("label", ""), c.get("model", ""),
                         json.dumps(c.get("params", {}), sort_keys=True), c.get("bits", ""),
                         *("" if v is None else repr(v) for v in values), dom,
                         ";".join(result.missing_objectives.get(i, [])), *(c.get(k, "") for k in extra)])
    return buf.getvalue()
