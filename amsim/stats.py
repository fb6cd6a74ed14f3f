"""Error statistics of approximate multipliers, as defined in docs/metrics.md.

The sweeps (:mod:`amsim.sweep`) produce raw moments; this module turns them
into the published metrics with exactly the JSON keys of docs/metrics.md:
``pairs, exhaustive, mean_re, mean_abs_re, max_abs_re, min_re, max_re, std_re,
error_rate, mean_error, mae, wce, mse, nmed, nmed_denominator``. All ratios are
fractions, never percentages.

Conventions
-----------
* Zero exact products are excluded from every relative metric (EvoApproxLib's
  convention). ``zeros_as_exact=True`` instead averages the relative metrics
  over all pairs, counting a zero product as zero relative error.
* ``std_re`` is the population standard deviation, from float64 sums of RE and
  RE^2 (RE is O(0.1), so the subtraction loses nothing that matters).
* ``nmed`` = mae / D. Integer models: D = (2^n - 1)^2 unsigned,
  2^(2n-2) signed (the largest exact product magnitude). Mantissa multipliers:
  D = the largest exact significand product, (2 - 2^-M)^2 for the truncated
  reference and (2 - 2^-23)^2 for the full one.
"""

from __future__ import annotations

import math

from . import sweep
from .errors import RangeError
from .sweep import (DEFAULT_SAMPLES, MAX_RE, MIN_RE, N, N_ERR, N_NONZERO, SUM_ABS_E, SUM_ABS_RE, SUM_E, SUM_E2, SUM_RE,
                    SUM_RE2, WCE)

__all__ = ["METRIC_KEYS", "MAX_EXHAUSTIVE_INT_BITS", "metrics_from_moments", "int_stats", "mantissa_stats",
           "DEFAULT_SAMPLES", "HEADER_CHECKED", "header_comparison", "format_header"]

#: Integer statistics cover every operand pair up to this width (2^32 pairs), seeded samples above it.
MAX_EXHAUSTIVE_INT_BITS = 16

#: The keys of docs/metrics.md, in its order.
METRIC_KEYS = ("pairs", "exhaustive", "mean_re", "mean_abs_re", "max_abs_re", "min_re", "max_re", "std_re",
               "error_rate", "mean_error", "mae", "wce", "mse", "nmed", "nmed_denominator")



def metrics_from_moments(acc, *, exhaustive: bool, nmed_denominator: float, zeros_as_exact=False) -> dict:
    """Turn combined sweep moments into the docs/metrics.md dictionary."""
    pairs = int(acc[N])
    rel_n = pairs if zeros_as_exact else int(acc[N_NONZERO])
    min_re, max_re = float(acc[MIN_RE]), float(acc[MAX_RE])
    if zeros_as_exact and acc[N_NONZERO] < pairs:  # the zero products count as RE = 0
        min_re, max_re = min(min_re, 0.0), max(max_re, 0.0)
    if rel_n:
        mean_re = acc[SUM_RE] / rel_n
        std_re = math.sqrt(max(acc[SUM_RE2] / rel_n - mean_re * mean_re, 0.0))
        rel = {"mean_re": float(mean_re), "mean_abs_re": float(acc[SUM_ABS_RE] / rel_n),
               "max_abs_re": max(abs(min_re), abs(max_re)), "min_re": min_re, "max_re": max_re,
               "std_re": std_re}
    else:  # every exact product was zero: no relative error is defined
        rel = dict.fromkeys(("mean_re", "mean_abs_re", "max_abs_re", "min_re", "max_re", "std_re"))
    mae = float(acc[SUM_ABS_E] / pairs) if pairs else None
    return {
        "pairs": pairs,
        "exhaustive": bool(exhaustive),
        **rel,
        "error_rate": float(acc[N_ERR] / pairs) if pairs else None,
        "mean_error": float(acc[SUM_E] / pairs) if pairs else None,
        "mae": mae,
        "wce": float(acc[WCE]),
        "mse": float(acc[SUM_E2] / pairs) if pairs else None,
        "nmed": mae / nmed_denominator if mae is not None else None,
        "nmed_denominator": float(nmed_denominator),
    }


def _sampling(result: dict, samples, seed) -> dict:
    if not result["exhaustive"]:
        result["samples"] = int(samples)
        result["seed"] = int(seed)
    return result


def int_stats(cm, *, samples=None, seed=0, zeros_as_exact=False, threads=None, progress=None) -> dict:
    """Integer error statistics of an integer model at its compiled width.

    Exhaustive (all 2^(2n) pairs) for n <= :data:`MAX_EXHAUSTIVE_INT_BITS` unless ``samples`` is given;
    ``samples`` seeded uniform pairs otherwise (default :data:`DEFAULT_SAMPLES`).
    """
    if cm.kind != "int":
        raise RangeError(f"{cm.model.name} is a float model; use mantissa_stats")
    if samples is None and cm.bits > MAX_EXHAUSTIVE_INT_BITS:
        samples = DEFAULT_SAMPLES
    acc, exhaustive = sweep.int_stats_moments(cm, samples=samples, seed=seed, threads=threads,
                                              progress=progress)
    n = cm.bits
    denom = float(1 << (2 * n - 2)) if cm.signed else float(((1 << n) - 1) ** 2)
    result = metrics_from_moments(acc, exhaustive=exhaustive, nmed_denominator=denom,
                                  zeros_as_exact=zeros_as_exact)
    return _sampling(result, samples, seed)


def mantissa_stats(m: int, *, table=None, cm=None, reference="truncated", rounding="truncate", samples=None,
                   seed=0, zeros_as_exact=False, threads=None, progress=None) -> dict:
    """Statistics of an M-bit mantissa multiplier against the ``truncated`` or ``full`` reference.

    Parameters
    ----------
    m : int
        Mantissa fraction bits (1..23).
    table : ndarray, optional
        The significand LUT (M <= 12); when given, the model is not called.
    cm : CompiledModel, optional
        Float model compiled at M, or integer model compiled at M + 1 (lifted).
    reference : {"truncated", "full"}
        See docs/metrics.md: ``truncated`` is exhaustive over the 2^(2M) mantissa
        pairs when a table is available and ``samples`` is None; ``full`` is
        always Monte Carlo over float32 fractions (default
        :data:`DEFAULT_SAMPLES` pairs).
    rounding : {"truncate", "rne"}
        Operand conversion to M bits for the ``full`` reference.
    """
    if reference not in ("truncated", "full"):
        raise RangeError(f"reference must be 'truncated' or 'full', not {reference!r}")
    if (reference == "full" or table is None) and samples is None:
        samples = DEFAULT_SAMPLES
    acc, exhaustive = sweep.mantissa_stats_moments(
        m, table=table, cm=cm, reference=reference, rounding=rounding, samples=samples, seed=seed,
        threads=threads, progress=progress)
    top = 23 if reference == "full" else m
    denom = (2.0 - 2.0 ** -top) ** 2
    result = metrics_from_moments(acc, exhaustive=exhaustive, nmed_denominator=denom,
                                  zeros_as_exact=zeros_as_exact)
    return _sampling(result, samples, seed)


#: The header figures of an EvoApproxLib circuit that amsim recomputes and compares: (header key, metric
#: key). Both are absolute over every operand pair, so they mean the same on both sides; the header's
#: percentages (MAE%, MRE%, ...) depend on the library's normalisation and are shown, not compared.
HEADER_CHECKED = (("MAE", "mae"), ("WCE", "wce"))


def header_comparison(model, result: dict) -> dict | None:
    """An EvoApproxLib circuit's header figures beside amsim's statistics ``result`` of that circuit.

    Returns None when the model's file has no header figures, else ``{"figures": {key: value},
    "compared": {key: {"header", "amsim", "agrees"}}, "mismatches": [message, ...]}``. A figure is
    compared only where the statistics are exhaustive integer ones at the circuit's own width (what
    the header describes), and agrees when the two differ by no more than the header's rounding
    (half a unit of its last printed digit). A mismatch means the file is not the circuit its
    header describes.
    """
    figures = dict(model.evoapprox)
    if not figures:
        return None
    comparable = (result.get("reference") == "integer" and result.get("exhaustive")
                  and tuple(model.bits) == (result.get("bits"),))
    compared, mismatches = {}, []
    for key, metric in HEADER_CHECKED if comparable else ():
        if key not in figures or result.get(metric) is None:
            continue
        declared, measured = figures[key], float(result[metric])
        # The relative slack absorbs the float64 rounding of amsim's own mean, nothing more.
        agrees = abs(measured - declared) <= model.evoapprox_rounding.get(key, 0.0) + 1e-9 * max(1.0, declared)
        compared[key] = {"header": declared, "amsim": measured, "agrees": agrees}
        if not agrees:
            mismatches.append(f"{model.path} is not what it says: its header gives {key} = {declared:g}, "
                              f"amsim measures {measured:.6g} over all {result['pairs']} pairs")
    return {"figures": figures, "compared": compared, "mismatches": mismatches}


def format_header(comparison: dict) -> str:
    """One line for people: the header's figures, each compared one with amsim's value beside it."""
    parts = []
    for key, value in comparison["figures"].items():
        seen = comparison["compared"].get(key)
        note = "" if seen is None else f" (amsim {seen['amsim']:.6g}{'' if seen['agrees'] else ', MISMATCH'})"
        parts.append(f"{key}={value:g}{note}")
    return "header (EvoApproxLib): " + "  ".join(parts)


def format_table(rows: list[dict], columns=None, *, width_label="M") -> str:
    """A plain-text table for people: ratios shown in %, one row per model configuration.

    ``width_label`` heads the width column: ``M`` for mantissa multipliers, ``n`` for integer ones.
    """
    columns = columns or [("model", "model", "{}"), (width_label, "bits", "{}"), ("ref", "reference", "{}"),
                          ("mean|RE| %", "mean_abs_re", "{:.4f}"), ("bias %", "mean_re", "{:+.4f}"),
                          ("peak|RE| %", "max_abs_re", "{:.4f}"), ("std RE %", "std_re", "{:.4f}"),
                          ("err rate %", "error_rate", "{:.2f}"), ("pairs", "pairs", "{}")]
    percent = {"mean_abs_re", "mean_re", "max_abs_re", "std_re", "error_rate"}

    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        if key in percent:
            value = 100.0 * value
        return fmt.format(value)

    body = [[cell(r, key, fmt) for _, key, fmt in columns] for r in rows]
    head = [title for title, _, _ in columns]
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])

