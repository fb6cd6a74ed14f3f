"""Operand-aware error statistics: weight the mantissa grid by the operands a network really sees.

The statistics of :mod:`amsim.stats` average over a *uniform* operand
distribution: every pair of M-bit mantissas counts once. Inside a network the
operands are anything but uniform (weights cluster near powers of two,
activations after a ReLU are skewed), and a multiplier's error depends on
where they fall. This module

* turns operand samples into the joint distribution of their M-bit mantissa
  indices (:class:`OperandDistribution`), converting each float32 operand as
  docs/numerics.md section 2.1 says (:func:`amsim.reference.split_float32`,
  ``truncate`` by default, ``rne`` with its carry into the exponent);
* computes the docs/metrics.md statistics weighted by that distribution
  (:func:`weighted_stats`): exactly the keys of :data:`amsim.stats.METRIC_KEYS`,
  and with uniform weights exactly :func:`amsim.stats.mantissa_stats` of the
  table (up to float rounding in the sums);
* predicts the error of a dot product of length K (:func:`dot_product_error`),
  analytically and by seeded Monte Carlo.

Operand samples
---------------
* **Paired** (``a``, ``b`` of equal size): pair k is ``(a[k], b[k])`` and the
  joint histogram is counted from the pairs. ``a`` is operand A, the row of
  the LUT (the left GEMM operand).
* **Independent** (``activations`` and ``weights``, any sizes): every A sample
  meets every B sample, so the joint distribution is the outer product of the
  two marginal histograms. In a layer ``y = x W`` the activations ``x`` are the
  left operand A and the weights ``W`` operand B.

A ``.npz`` file (:func:`load_operands`) holds either ``a`` and ``b``, or
``activations`` and ``weights``; arrays of any shape are flattened and cast
to float32. Zero, subnormal (flushed to zero, DAZ), infinite and NaN operands
have no mantissa; they are left out of the histogram and counted in
:attr:`OperandDistribution.excluded`. A paired sample is dropped when either
of its operands is.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from . import reference, stats, sweep
from .errors import AmsimError

__all__ = ["OperandError", "OperandDistribution", "mantissa_counts", "load_operands", "relative_error_grid",
           "weighted_stats", "dot_product_error", "operand_stats", "NPZ_KEYS"]

#: Accepted ``.npz`` layouts: mode -> (key of operand A, key of operand B).
NPZ_KEYS = {"paired": ("a", "b"), "independent": ("activations", "weights")}


class OperandError(AmsimError, ValueError):
    """Operand samples are missing, malformed or leave nothing to weight by."""


# ----------------------------------------------------------------------------------------------
# Operand samples -> mantissa histograms
# ----------------------------------------------------------------------------------------------


def _classify(x, m: int, rounding: str):
    """Mantissa indices of normal operands and the exclusion mask/counts (docs/numerics.md 2.1)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise OperandError(f"operand samples must be real numbers, not {x.dtype}")
    x = x.astype(np.float32, copy=False).ravel()
    _sign, _exp, index, kind = reference.split_float32(x, m, rounding)
    normal = kind == reference.KIND_NORMAL
    is_zero_kind = kind == reference.KIND_ZERO
    exact_zero = x == 0
    counts = {
        "samples": int(x.size),
        "used": int(np.count_nonzero(normal)),
        "zero": int(np.count_nonzero(is_zero_kind & exact_zero)),
        "subnormal": int(np.count_nonzero(is_zero_kind & ~exact_zero)),
        "inf": int(np.count_nonzero(kind == reference.KIND_INF)),
        "nan": int(np.count_nonzero(kind == reference.KIND_NAN)),
    }
    return index, normal, counts


def mantissa_counts(x, m: int, rounding: str = "truncate") -> tuple[np.ndarray, dict]:
    """Histogram of the M-bit mantissa indices of float32 operands.

    Returns ``(counts, info)``: ``counts[i]`` is the number of normal operands
    with mantissa index i (length 2^M, int64); ``info`` counts the samples, the
    ones used, and the excluded zeros, subnormals, infinities and NaNs.
    """
    index, normal, info = _classify(x, m, rounding)
    return np.bincount(index[normal], minlength=1 << m).astype(np.int64), info


@dataclasses.dataclass(eq=False)
class OperandDistribution:
    """The joint distribution of the M-bit mantissas of operand A (rows) and operand B (columns).

    Attributes
    ----------
    m : int
        Mantissa bits.
    weights : ndarray
        (2^M, 2^M) float64 non-negative weights (pair counts; they need not
        sum to 1): entry [i, j] weighs the LUT entry [i, j].
    pairs : int
        How many operand pairs the weights stand for: the paired samples used,
        the product of the used sample counts (independent), or 2^(2M) (uniform).
    mode : {"uniform", "paired", "independent"}
    rounding : {"truncate", "rne"}
    a, b : dict
        Per-operand counts: samples, used, zero, subnormal, inf, nan.
    pairs_excluded : int
        Paired mode: pairs dropped because an operand had no mantissa.
    source : str
        Where the samples came from (a file name, or "arrays").
    """

    m: int
    weights: np.ndarray
    pairs: int
    mode: str
    rounding: str = "truncate"
    a: dict = dataclasses.field(default_factory=dict)
    b: dict = dataclasses.field(default_factory=dict)
    pairs_excluded: int = 0
    source: str = "arrays"

    @classmethod
    def uniform(cls, m: int) -> OperandDistribution:
        """Every mantissa pair once: the distribution the plain statistics assume."""
        n = 1 << m
        return cls(m=m, weights=np.ones((n, n)), pairs=n * n, mode="uniform")

    @classmethod
    def from_pairs(cls, a, b, m: int, rounding: str = "truncate", *, source: str = "arrays") -> OperandDistribution:
        """Joint histogram of paired samples: pair k is ``(a[k], b[k])``."""
        a, b = np.asarray(a), np.asarray(b)
        if a.size != b.size:
            raise OperandError(f"paired operands need as many A samples as B samples, got {a.size} and {b.size}; "
                               "for independent samples use 'activations' and 'weights'")
        ia, na, info_a = _classify(a, m, rounding)
        ib, nb, info_b = _classify(b, m, rounding)
        both = na & nb
        n = 1 << m
        flat = np.bincount(ia[both] * n + ib[both], minlength=n * n)
        used = int(np.count_nonzero(both))
        if used == 0:
            raise OperandError(f"{source}: no pair of normal (nonzero, finite) operands to weight by")
        return cls(m=m, weights=flat.reshape(n, n).astype(np.float64), pairs=used, mode="paired",
                   rounding=rounding, a=info_a, b=info_b, pairs_excluded=int(a.size - used), source=source)

    @classmethod
    def from_independent(cls, a, b, m: int, rounding: str = "truncate", *,
                         source: str = "arrays") -> OperandDistribution:
        """Independent samples: joint = outer product of the marginal histograms of A and B."""
        ca, info_a = mantissa_counts(a, m, rounding)
        cb, info_b = mantissa_counts(b, m, rounding)
        if info_a["used"] == 0 or info_b["used"] == 0:
            which = "A (activations)" if info_a["used"] == 0 else "B (weights)"
            raise OperandError(f"{source}: operand {which} has no normal (nonzero, finite) sample to weight by")
        return cls(m=m, weights=np.outer(ca, cb).astype(np.float64), pairs=info_a["used"] * info_b["used"],
                   mode="independent", rounding=rounding, a=info_a, b=info_b, source=source)

    @property
    def probabilities(self) -> np.ndarray:
        """The weights normalised to sum to 1."""
        return self.weights / self.weights.sum()

    def summary(self) -> dict:
        """JSON-ready description (no weights)."""
        out = {"source": self.source, "mode": self.mode, "bits": self.m, "rounding": self.rounding,
               "pairs": int(self.pairs)}
        if self.mode != "uniform":
            out.update(a=dict(self.a), b=dict(self.b))
        if self.mode == "paired":
            out["pairs_excluded"] = int(self.pairs_excluded)
        return out


def load_operands(path, m: int, rounding: str = "truncate", *, independent: bool | None = None) -> OperandDistribution:
    """Read operand samples from a ``.npz`` file (see the module docstring for its keys).

    ``independent=True`` treats ``a`` and ``b`` as independent samples (outer
    product of the marginals) instead of pairs.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise OperandError(f"{path}: no such operand file") from None
    except (OSError, ValueError) as exc:
        raise OperandError(f"{path}: cannot read operand samples as .npz: {exc}") from None
    keys = set(arrays)
    wanted = " or ".join(f"'{a}' and '{b}' ({mode})" for mode, (a, b) in NPZ_KEYS.items())
    if {"a", "b"} <= keys and {"activations", "weights"} <= keys:
        raise OperandError(f"{path}: holds both a/b and activations/weights; keep one layout ({wanted})")
    if {"a", "b"} <= keys:
        a, b, mode = arrays["a"], arrays["b"], "paired"
    elif {"activations", "weights"} <= keys:
        a, b, mode = arrays["activations"], arrays["weights"], "independent"
    else:
        found = ", ".join(sorted(keys)) or "nothing"
        raise OperandError(f"{path}: expected arrays {wanted}; found {found}")
    if independent is not None:
        mode = "independent" if independent else "paired"
    make = OperandDistribution.from_independent if mode == "independent" else OperandDistribution.from_pairs
    return make(a, b, m, rounding, source=str(path))


# ----------------------------------------------------------------------------------------------
# Weighted statistics
# ----------------------------------------------------------------------------------------------


def _exact_products(m: int) -> np.ndarray:
    n = 1 << m
    s = np.arange(n, 2 * n, dtype=np.float64)
    return np.multiply.outer(s, s) * 2.0 ** (-2 * m)  # exact: < 2^48 before an exact scaling


def relative_error_grid(table, m: int) -> np.ndarray:
    """RE[i, j] = LUT[i, j] / ((1 + i/2^M)(1 + j/2^M)) - 1, float64 (row = operand A).

    Computed as (LUT - P) / P, like the sweeps of :mod:`amsim.sweep`, so that
    its extremes equal the ``min_re``/``max_re`` of the statistics bit for bit.
    """
    table = _check_table(table, m)
    exact = _exact_products(m)
    return (table - exact) / exact


def _check_table(table, m: int) -> np.ndarray:
    table = np.asarray(table, dtype=np.float64)
    n = 1 << int(m)
    if table.shape != (n, n):
        raise OperandError(f"LUT shape {table.shape} does not match M={m} (expected {n}x{n})")
    return table


def _check_weights(weights, m: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    n = 1 << m
    if w.shape != (n, n):
        raise OperandError(f"weights shape {w.shape} does not match M={m} (expected {n}x{n})")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise OperandError("weights must be finite and non-negative")
    if not w.sum() > 0:
        raise OperandError("weights are all zero: nothing to average over")
    return w


def weighted_stats(m: int, table, weights, *, pairs: int | None = None) -> dict:
    """The docs/metrics.md statistics of an M-bit mantissa LUT, weighted by an operand distribution.

    Parameters
    ----------
    m : int
        Mantissa bits.
    table : ndarray
        The (2^M, 2^M) significand LUT (row = operand A).
    weights : ndarray or OperandDistribution
        (2^M, 2^M) non-negative weights: entry [i, j] is how often the mantissa
        pair (i, j) occurs (counts or probabilities; only ratios matter).
    pairs : int, optional
        Size of the operand set the weights describe (reported as ``pairs``;
        it scales nothing else). Default: the pairs with nonzero weight, or
        ``weights.pairs`` for a distribution.

    Returns
    -------
    dict
        Exactly the keys of :data:`amsim.stats.METRIC_KEYS`, against the
        ``truncated`` reference (the exact product of the M-bit operands).
        Means are weighted means; ``min_re``, ``max_re``, ``max_abs_re`` and
        ``wce`` are taken over the pairs with nonzero weight. ``exhaustive`` is
        true only for uniform weights over the whole grid (then the result is
        :func:`amsim.stats.mantissa_stats` of the table). ``nmed_denominator``
        is the truncated reference's, (2 - 2^-M)^2, whatever the weights.
    """
    if isinstance(weights, OperandDistribution):
        if weights.m != m:
            raise OperandError(f"operand distribution is for M={weights.m}, the LUT for M={m}")
        pairs = weights.pairs if pairs is None else pairs
        weights = weights.weights
    table = _check_table(table, m)
    w = _check_weights(weights, m)
    support = w > 0
    total = int(pairs) if pairs is not None else int(np.count_nonzero(support))
    exact = _exact_products(m)
    err = table - exact
    re = err / exact
    # Scale the weights to sum to `total`, so that the accumulators hold the same sums as an
    # exhaustive sweep over `total` pairs (uniform weights become exactly 1 each).
    ws = w * (total / w.sum())
    acc = sweep.new_moments(1)[0]
    acc[sweep.N] = total
    acc[sweep.N_NONZERO] = total  # significand products are never zero
    acc[sweep.SUM_RE] = np.sum(ws * re)
    acc[sweep.SUM_ABS_RE] = np.sum(ws * np.abs(re))
    acc[sweep.SUM_RE2] = np.sum(ws * re * re)
    acc[sweep.MIN_RE] = re[support].min()
    acc[sweep.MAX_RE] = re[support].max()
    wrong = support & (err != 0)
    acc[sweep.N_ERR] = np.sum(ws[wrong])
    acc[sweep.SUM_E] = np.sum(ws * err)
    acc[sweep.SUM_ABS_E] = np.sum(ws * np.abs(err))
    acc[sweep.SUM_E2] = np.sum(ws * err * err)
    acc[sweep.WCE] = np.abs(err[wrong]).max() if wrong.any() else 0.0
    acc[sweep.MAX_P] = exact[support].max()
    uniform = bool(support.all() and np.all(w == w.flat[0]))
    result = stats.metrics_from_moments(acc, exhaustive=uniform, nmed_denominator=(2.0 - 2.0 ** -m) ** 2)
    return {key: result[key] for key in stats.METRIC_KEYS}


# ----------------------------------------------------------------------------------------------
# Dot products
# ----------------------------------------------------------------------------------------------


def dot_product_error(m: int, table, weights, k: int, *, trials: int = 2000, seed: int = 0) -> dict:
    """Accumulated error of a length-K dot product whose products are drawn from the operand distribution.

    The model: the K products are independent draws of a mantissa pair (i, j)
    from ``weights``, all positive and in the same binade (exponent 0), so
    product k is the significand product P_k = (1 + i/2^M)(1 + j/2^M) and the
    multiplier returns LUT[i, j] = P_k + e_k. This is the worst case for
    accumulation: no sign or scale differences make the errors cancel.

    * absolute: E_K = sum_k e_k, in significand units (multiply by
      2^(ea + eb) for a real layer). Mean K mu_e, standard deviation
      sqrt(K) sigma_e, exactly.
    * relative: R_K = E_K / sum_k P_k, the relative error of the dot product.
      Mean and standard deviation by the delta method (second order for the
      mean, first order for the spread), accurate when K is not tiny.

    Both are also estimated by seeded Monte Carlo (``trials`` dot products,
    chunk c drawn from ``numpy.random.default_rng([seed, c])``), so the two
    can be compared; the standard error of each Monte Carlo mean is included.
    """
    if isinstance(weights, OperandDistribution):
        weights = weights.weights
    table = _check_table(table, m)
    w = _check_weights(weights, m)
    k, trials = int(k), int(trials)
    if k < 1:
        raise OperandError(f"the dot-product length K must be at least 1, not {k}")
    if trials < 2:
        raise OperandError(f"Monte Carlo needs at least 2 trials, not {trials}")
    p = (w / w.sum()).ravel()
    exact = _exact_products(m).ravel()
    err = table.ravel() - exact

    mu_e, mu_p = float(p @ err), float(p @ exact)
    var_e = float(p @ (err - mu_e) ** 2)
    var_p = float(p @ (exact - mu_p) ** 2)
    cov = float(p @ ((err - mu_e) * (exact - mu_p)))
    r = mu_e / mu_p
    analytic = {
        "abs_mean": k * mu_e,
        "abs_std": math.sqrt(k * var_e),
        "rel_mean": r + (r * var_p - cov) / (k * mu_p * mu_p),
        "rel_std": math.sqrt(max(var_e - 2 * r * cov + r * r * var_p, 0.0) / k) / mu_p,
    }

    # Monte Carlo, in chunks of about 2^20 draws.
    per_chunk = max(1, (1 << 20) // k)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    abs_err, rel_err = np.empty(trials), np.empty(trials)
    for c, start in enumerate(range(0, trials, per_chunk)):
        stop = min(start + per_chunk, trials)
        rng = np.random.default_rng([seed, c])
        idx = np.searchsorted(cdf, rng.random((stop - start, k)), side="right")
        np.minimum(idx, p.size - 1, out=idx)
        e_sum = err[idx].sum(axis=1)
        abs_err[start:stop] = e_sum
        rel_err[start:stop] = e_sum / exact[idx].sum(axis=1)
    monte_carlo = {
        "abs_mean": float(abs_err.mean()), "abs_std": float(abs_err.std(ddof=1)),
        "rel_mean": float(rel_err.mean()), "rel_std": float(rel_err.std(ddof=1)),
        "abs_mean_stderr": float(abs_err.std(ddof=1) / math.sqrt(trials)),
        "rel_mean_stderr": float(rel_err.std(ddof=1) / math.sqrt(trials)),
        "trials": trials, "seed": int(seed),
    }
    return {
        "length": k,
        "units": "significand products (exponent 0, all products positive)",
        "per_product": {"mean_error": mu_e, "std_error": math.sqrt(var_e), "mean_product": mu_p,
                        "std_product": math.sqrt(var_p), "cov_error_product": cov},
        "analytic": analytic,
        "monte_carlo": monte_carlo,
    }


def operand_stats(m: int, table, dist: OperandDistribution, *, dot_length: int | None = None,
                  trials: int = 2000, seed: int = 0) -> dict:
    """Weighted statistics of a LUT under ``dist``, with the operand summary and, optionally, a dot product.

    Returns ``{**weighted_stats(...), "weighting": "operands", "operands": dist.summary(),
    "dot_product": dot_product_error(...) or absent}``.
    """
    result = weighted_stats(m, table, dist)
    result["weighting"] = "operands" if dist.mode != "uniform" else "uniform"
    result["operands"] = dist.summary()
    if dot_length is not None:
        result["dot_product"] = dot_product_error(m, table, dist, dot_length, trials=trials, seed=seed)
    return result
