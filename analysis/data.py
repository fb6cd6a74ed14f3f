"""What the plots, fronts and reports are made of: model configurations, error grids, statistics.

Nothing here re-derives a LUT or a statistic: tables come from
:func:`amsim.generate.mantissa_lut` / :func:`amsim.generate.integer_lut` (or
LUT files via :func:`amsim.lut.load_any`), statistics from :mod:`amsim.stats`
through :func:`amsim.generate.characterise`, and the relative-error grid of a
mantissa LUT from :func:`amsim.operands.relative_error_grid`.

Parameter sweeps
----------------
``k=6`` is one value, ``k=3..8`` an inclusive integer range and ``k=3,5,7``
a list (``k=2..4,8`` mixes them). Several swept parameters of one model give
the cartesian product. A parameter applies to the selected models that have
it; naming one that no selected model has is an error.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import numpy as np

from amsim import generate, lut as lutmod, reference
from amsim.errors import RangeError
from amsim.models import Model, find_model, list_models
from amsim.operands import relative_error_grid

from . import AnalysisError

__all__ = ["Config", "ErrorGrid", "parse_int_list", "parse_param_values", "load_lut_grid", "slug", "select_configs",
           "cost_bits", "config_label", "build_luts", "grid_from_lut", "build_grids", "full_reference_re",
           "width_stats"]


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------


def parse_int_list(spec: str, what: str = "values") -> list[int]:
    """``"3..8"`` -> [3, ..., 8]; ``"3,5,7"``; ``"2..4,8"``. Repeats dropped, order kept."""
    values: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        try:
            if ".." in part:
                lo, hi = (int(x) for x in part.split(".."))
                if hi < lo:
                    raise AnalysisError(f"empty range {part!r} in {spec!r}: write LO..HI with LO <= HI")
                values.extend(range(lo, hi + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise AnalysisError(f"{what} must be integers, LO..HI ranges or comma lists: {spec!r}") from None
    return list(dict.fromkeys(values))


def parse_param_values(text: str) -> tuple[str, list[int]]:
    """``"k=3..8"`` -> ``("k", [3, 4, 5, 6, 7, 8])``; also ``k=6`` and ``k=3,5,7``."""
    name, eq, spec = text.partition("=")
    name = name.strip()
    if not eq or not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise AnalysisError(f"expected NAME=VALUE, NAME=LO..HI or NAME=V1,V2,..., got {text!r}")
    return name, parse_int_list(spec, f"values of parameter {name!r}")


def config_label(name: str, params: dict) -> str:
    """``drum k=6``: the model name and its parameters."""
    return name + "".join(f" {k}={v}" for k, v in params.items())


@dataclasses.dataclass(frozen=True, eq=False)
class Config:
    """One model configuration: a model and its resolved parameters."""

    model: Model
    params: dict

    @property
    def label(self) -> str:
        return config_label(self.model.name, self.params)

    @property
    def slug(self) -> str:
        return slug(self.label)


def slug(label: str) -> str:
    """File-name-safe form of a label: ``drum k=6`` -> ``drum_k6``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label.replace("=", "")).strip("_") or "model"


def _supports(model: Model, bits: int, integer: bool) -> bool:
    if integer:
        return model.kind == "int" and bits in model.bits
    if model.kind == "float":
        return bits in model.bits
    return bits + 1 in model.bits and not model.signed


def select_configs(models=None, param_specs=(), bits: int = 7, *, integer: bool = False, models_dirs=(),
                   check: bool = True) -> list[Config]:
    """Model configurations for ``bits``, with parameter sweeps expanded.

    Parameters
    ----------
    models : list of str, Path or Model, optional
        Names, ``.c`` paths or models. Default: every model that supports
        ``bits`` (float models at M, unsigned integer models lifted from M + 1;
        with ``integer``, integer models at operand width ``bits``).
    param_specs : iterable of (name, [values]) or "name=spec" strings
    bits : int
        Mantissa width M, or the integer width with ``integer``.
    check : bool
        Refuse a model that does not support ``bits`` (RangeError naming its widths).
    """
    if models:
        chosen = [m if isinstance(m, Model) else find_model(str(m), models_dirs) for m in models]
    else:
        chosen = [m for m in list_models(models_dirs).values() if _supports(m, bits, integer)]
        if not chosen:
            raise RangeError(f"no model supports {'integer width' if integer else 'M ='} {bits}")
    specs: dict[str, list[int]] = {}
    for spec in param_specs:
        name, values = parse_param_values(spec) if isinstance(spec, str) else (spec[0], list(spec[1]))
        specs.setdefault(name, [])
        specs[name] += [v for v in values if v not in specs[name]]
    for name in specs:
        if not any(name in m.params for m in chosen):
            raise RangeError(f"no selected model has a parameter {name!r}")
    configs, seen = [], set()
    for model in chosen:
        if check:
            if integer:
                if model.kind != "int":
                    raise RangeError(f"model {model.name!r} is a float model; integer plots need an integer model")
                model.check_bits(bits)
            else:
                generate.mantissa_width(model, bits)
        own = [(n, v) for n, v in specs.items() if n in model.params]
        for combo in itertools.product(*(v for _, v in own)):
            params = model.resolve_params(dict(zip((n for n, _ in own), combo)))
            key = (model.name, str(model.path), tuple(sorted(params.items())))
            if key not in seen:
                seen.add(key)
                configs.append(Config(model, params))
    return configs


def cost_bits(model: Model, bits: int, *, integer: bool = False) -> int:
    """The width a cost figure's ``bits=`` condition is matched against.

    Float models at mantissa width M: M. An unsigned integer model *lifted* to
    M is an (M + 1)-bit integer multiplier (docs/numerics.md section 4), so its
    figure for ``bits=M+1`` applies (MBM at M = 7 takes Saadat's 8-bit figure).
    Integer models at operand width n: n.
    """
    return bits if integer or model.kind == "float" else bits + 1


# ----------------------------------------------------------------------------------------------
# LUTs, built in crash-isolated processes
# ----------------------------------------------------------------------------------------------


def build_luts(configs, bits: int, *, integer: bool = False, rounding: str = "truncate", samples=None, seed=0,
               isolate: bool = True, max_parallel: int = 1, threads=None) -> list:
    """The LUT of every configuration: ``[(config, LUT or AmsimError), ...]`` in order.

    Mantissa LUTs come from :func:`amsim.generate.mantissa_lut` (statistics for
    both references, ``samples``/``seed`` for the ``full`` one), integer LUTs
    from :func:`amsim.generate.integer_lut`. With ``isolate`` each model runs
    in a forked process (:func:`amsim.generate.run_batch`), so a crashing
    model is reported by name and the others still come back.
    """
    jobs = []
    for c in configs:
        if integer:
            jobs.append((c.label, generate.integer_lut, (c.model, bits, c.params), dict(threads=threads)))
        else:
            jobs.append((c.label, generate.mantissa_lut, (c.model, bits, c.params),
                         dict(rounding=rounding, samples=samples, seed=seed, threads=threads)))
    outcomes = generate.run_batch(jobs, max_parallel=max_parallel, isolate=isolate)
    return [(c, outcome) for c, (_name, outcome) in zip(configs, outcomes)]


# ----------------------------------------------------------------------------------------------
# Error grids
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class ErrorGrid:
    """The signed relative error of one multiplier over its whole operand grid.

    Attributes
    ----------
    label : str
        Legend text, e.g. ``drum k=6``.
    re : ndarray
        2-D float64; ``re[i, j]`` for operand A = ``a_values[i]`` (row) and
        operand B = ``b_values[j]`` (column); NaN where the exact product is 0.
    a_values, b_values : ndarray
        Operand values along the axes: significands 1 + i/2^M (mantissa LUTs)
        or integer operands.
    kind : {"mantissa", "integer"}
    bits : int
        M, or the integer operand width.
    stats : dict
        Statistics by reference (``truncated``/``full``, or ``integer``).
    lut : amsim.lut.LUT or None
    config : Config or None
    weights : ndarray or None
        Optional weights of the cells (operand-aware distributions), same shape as ``re``.
    """

    label: str
    re: np.ndarray
    a_values: np.ndarray
    b_values: np.ndarray
    kind: str
    bits: int
    stats: dict = dataclasses.field(default_factory=dict)
    lut: object = None
    config: Config | None = None
    weights: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        """The defined relative errors, flattened (row-major)."""
        v = self.re.ravel()
        return v[np.isfinite(v)]


def grid_from_lut(lut, label: str | None = None, config: Config | None = None) -> ErrorGrid:
    """Relative-error grid of a mantissa or integer :class:`amsim.lut.LUT`."""
    if label is None:
        label = config_label(lut.model or "LUT", lut.params)
    if lut.kind == "mantissa":
        m = lut.bits
        sig = 1.0 + np.arange(1 << m) / (1 << m)
        return ErrorGrid(label, relative_error_grid(lut.table, m), sig, sig.copy(), "mantissa", m,
                         dict(lut.stats), lut, config)
    n = lut.bits
    patterns = np.arange(1 << n)
    table = lut.table
    if lut.meta.get("signed"):
        values = np.where(patterns < (1 << (n - 1)), patterns, patterns - (1 << n))
        order = np.argsort(values)
        values, table = values[order], table[order][:, order]
    else:
        values = patterns
    exact = np.multiply.outer(values, values).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        re_ = np.where(exact != 0, (table - exact) / exact, np.nan)
    return ErrorGrid(label, re_, values.astype(np.float64), values.astype(np.float64), "integer", n,
                     dict(lut.stats), lut, config)


def build_grids(configs, bits: int, *, integer: bool = False, **kwargs) -> tuple[list[ErrorGrid], list]:
    """Error grids of configurations: ``(grids, failures)``, failures as ``[(label, error), ...]``."""
    grids, failures = [], []
    for config, outcome in build_luts(configs, bits, integer=integer, **kwargs):
        if isinstance(outcome, BaseException):
            failures.append((config.label, outcome))
        else:
            grids.append(grid_from_lut(outcome, config.label, config))
    return grids, failures


def full_reference_re(lut, *, samples: int = 1 << 20, seed: int = 0, rounding: str | None = None) -> np.ndarray:
    """Relative errors against the ``full`` reference (docs/metrics.md), one per seeded random operand pair.

    The 23-bit fractions of two float32 operands in [1, 2) are drawn
    uniformly, converted to M bits with ``rounding`` (the LUT's own by
    default) by :func:`amsim.reference.split_float32` (an ``rne`` carry
    doubles the significand), and the LUT's product is compared with their
    exact product.
    """
    if lut.kind != "mantissa":
        raise AnalysisError("the full reference applies to mantissa LUTs")
    m, rounding = lut.bits, rounding or lut.rounding
    rng = np.random.default_rng(seed)
    frac = rng.integers(0, 1 << 23, (2, int(samples)), dtype=np.int64)
    x = (np.uint32(0x3F800000) | frac.astype(np.uint32)).view(np.float32)
    _s, ea, ia, _k = reference.split_float32(x[0], m, rounding)
    _s, eb, ib, _k = reference.split_float32(x[1], m, rounding)
    approx = np.ldexp(lut.table[ia, ib].astype(np.float64), (ea - 127 + eb - 127).astype(np.int32))
    exact = (1.0 + frac[0] * 2.0 ** -23) * (1.0 + frac[1] * 2.0 ** -23)
    return approx / exact - 1.0


# ----------------------------------------------------------------------------------------------
# Statistics against the mantissa width
# ----------------------------------------------------------------------------------------------


def _width_job(model, params, widths, reference_, rounding, samples, seed):
    rows = []
    for m in widths:
        rows.append((m, generate.characterise(model, m, params, as_float=True, reference=reference_,
                                              rounding=rounding, samples=samples, seed=seed)))
    return rows


def width_stats(configs, widths, *, reference: str = "truncated", rounding: str = "truncate", samples=None,
                seed=0, isolate: bool = True) -> tuple[dict, list, dict]:
    """Statistics of each configuration at each mantissa width it supports.

    Returns ``(results, failures, skipped)``: ``results[label]`` is a list of
    ``(M, stats)``; ``skipped[label]`` lists the widths the model does not support.
    """
    widths = sorted(set(int(m) for m in widths))
    jobs, skipped = [], {}
    for c in configs:
        ok = [m for m in widths if _supports(c.model, m, False)]
        skipped[c.label] = [m for m in widths if m not in ok]
        if not ok:
            raise RangeError(f"model {c.model.name!r} supports none of the widths {widths[0]}..{widths[-1]}")
        jobs.append((c.label, _width_job, (c.model, c.params, ok, reference, rounding, samples, seed), {}))
    outcomes = generate.run_batch(jobs, isolate=isolate)
    results, failures = {}, []
    for name, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failures.append((name, outcome))
        else:
            results[name] = outcome
    return results, failures, {k: v for k, v in skipped.items() if v}


def load_lut_grid(path, bits: int | None = None) -> ErrorGrid:
    """Error grid of a LUT file (native ``.npz`` or ApproxTrain ``.bin``), labelled by its model."""
    lut = lutmod.load_any(Path(path), bits=bits)
    label = config_label(lut.model, lut.params) if lut.model else Path(path).stem
    return grid_from_lut(lut, label)
