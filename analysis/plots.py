"""Figures of approximate multipliers' errors, as matplotlib :class:`~matplotlib.figure.Figure` objects.

Every builder returns a new Figure attached to an Agg canvas; nothing touches
pyplot or its global state (no ``plt.figure``, no ``plt.show``, no rcParams
changes), so figures can be built from several threads and in headless
processes. Font sizes are set per text element. :func:`save_figure` writes a
figure as PNG and SVG, each atomically (temporary file + rename).

Conventions: relative errors are shown in % (the data stay fractions), every
figure has a title (``fig.get_suptitle()``), axis labels with units, and a
legend (a colour bar for heat maps, plus a legend of the markers on them).

Builders
--------
* :func:`distribution_figure`: overlaid histograms of the signed relative
  error (one shared bin grid, mean/bias and peak marked) and the CDF of |RE|.
* :func:`heatmap_figure`: RE over the operand grid, diverging colours centred on 0.
* :func:`operand_figure`: mean and extremes of RE for each operand-A value.
* :func:`width_figure`: mean |RE|, bias and peak |RE| against the mantissa width M.
* :func:`pareto_figure`: candidates, the non-dominated front and its labels.
* :func:`curves_figure`: general x-y curves (training curves, sweeps).

High-level helpers (``plot_distribution``, ``plot_heatmap``, ``plot_operand``,
``plot_width``, ``plot_pareto``) build the data from model names first.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from amsim.lut import atomic_write_bytes

from . import AnalysisError

__all__ = ["new_figure", "save_figure", "distribution_figure", "heatmap_figure", "operand_figure",
           "width_figure", "pareto_figure", "curves_figure", "plot_distribution", "plot_heatmap",
           "plot_operand", "plot_width", "plot_pareto", "FORMATS", "COST_NOTE"]

#: File formats :func:`save_figure` writes by default.
FORMATS = ("png", "svg")
FIGSIZE = (8.0, 5.0)
DPI = 150
TITLE_SIZE, LABEL_SIZE, TICK_SIZE, LEGEND_SIZE, NOTE_SIZE = 13, 11, 10, 9, 9
#: Printed on every Pareto plot.
COST_NOTE = ("Cost figures come from different papers and technology nodes (each relative to an exact "
             "multiplier of its own width); they are not strictly comparable.")
DIVERGING = "RdBu_r"


# ----------------------------------------------------------------------------------------------
# Figure plumbing
# ----------------------------------------------------------------------------------------------


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=FIGSIZE, sharex=False, sharey=False, **subplot_kw):
    """A Figure on an Agg canvas with constrained layout, and its axes array (nrows x ncols)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey, subplot_kw=subplot_kw or None)
    return fig, axes


def _style(ax, title=None, xlabel=None, ylabel=None):
    if title:
        ax.set_title(title, fontsize=LABEL_SIZE + 1)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _title(fig, title):
    fig.suptitle(title, fontsize=TITLE_SIZE)


def _legend(ax, handles=None, **kw):
    kw.setdefault("fontsize", LEGEND_SIZE)
    kw.setdefault("framealpha", 0.85)
    return ax.legend(handles=handles, **kw) if handles is not None else ax.legend(**kw)


def _note(ax, text, y=-0.16):
    """A note under the axes, inside the axes' layout box (constrained layout makes room)."""
    return ax.text(0.0, y, text, transform=ax.transAxes, ha="left", va="top", fontsize=NOTE_SIZE,
                   color="0.25", wrap=True)


def save_figure(fig: Figure, path, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``path.png`` and ``path.svg`` (any suffix of ``path`` is replaced), atomically.

    Returns the written paths. SVG files carry no date, so regenerating an
    unchanged figure gives the same text.
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower().lstrip(".") in (*FORMATS, "pdf") else path
    written = []
    for fmt in formats:
        buf = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buf, format=fmt, metadata=metadata)
        written.append(atomic_write_bytes(stem.parent / f"{stem.name}.{fmt}", buf.getvalue()))
    return written


def _colors(n):
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]


def _pct(x):
    return 100.0 * np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Error distributions
# ----------------------------------------------------------------------------------------------


def _series(items):
    """Normalise plot input to [(label, values, weights or None)]: ErrorGrids or tuples."""
    out = []
    for item in items:
        if hasattr(item, "re") and hasattr(item, "label"):  # ErrorGrid
            weights = getattr(item, "weights", None)
            re_ = np.asarray(item.re, dtype=np.float64)
            if weights is not None:
                w = np.asarray(weights, dtype=np.float64)
                ok = np.isfinite(re_) & (w > 0)
                out.append((item.label, re_[ok], w[ok]))
            else:
                out.append((item.label, re_[np.isfinite(re_)], None))
        else:
            label, values, *rest = item
            values = np.asarray(values, dtype=np.float64).ravel()
            w = np.asarray(rest[0], dtype=np.float64).ravel() if rest and rest[0] is not None else None
            ok = np.isfinite(values) if w is None else np.isfinite(values) & (w > 0)
            out.append((str(label), values[ok], None if w is None else w[ok]))
    if not out:
        raise AnalysisError("nothing to plot: no error data given")
    for label, values, _w in out:
        if values.size == 0:
            raise AnalysisError(f"{label}: no defined relative error to plot")
    return out


def _weighted_mean(values, w):
    return float(np.average(values, weights=w)) if w is not None else float(values.mean())


def distribution_figure(items, *, bins: int = 120, title: str | None = None, subtitle: str | None = None,
                        weighting: str = "uniform") -> Figure:
    """Overlaid distributions of the signed relative error, and the CDF of |RE|.

    Parameters
    ----------
    items : list
        :class:`amsim.analysis.data.ErrorGrid` objects, or ``(label, re_values)`` /
        ``(label, re_values, weights)`` tuples (fractions; shown in %).
    bins : int
        Number of bins of the grid shared by every series.
    weighting : str
        Says in the y label what a share is of ("operand pairs" or "operand
        samples", say).

    Left: histogram (share of pairs per bin, each series summing to 100 %),
    the mean (bias) as a dashed line and the peak (the RE of largest
    magnitude) as a dotted line in the series' colour. Right: the share of
    pairs whose |RE| is at most x.
    """
    series = _series(items)
    n_handles = len(series) + 2
    ncols = 1 if n_handles <= 3 else 2 if n_handles <= 8 else 3
    rows = math.ceil(n_handles / ncols)
    fig, axes = new_figure(1, 2, figsize=(13.0, 4.9 + 0.24 * rows))
    ax_h, ax_c = axes[0]
    lo = min(float(v.min()) for _, v, _ in series)
    hi = max(float(v.max()) for _, v, _ in series)
    lo, hi = 100 * lo, 100 * hi
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    edges = np.linspace(lo, hi, bins + 1)
    handles, peaks = [], []
    for (label, values, w), color in zip(series, _colors(len(series))):
        pct = _pct(values)
        share = np.full(pct.shape, 100.0 / pct.size) if w is None else 100.0 * w / w.sum()
        counts, _ = np.histogram(pct, bins=edges, weights=share)
        ax_h.stairs(counts, edges, color=color, linewidth=1.6, fill=False)
        ax_h.stairs(counts, edges, color=color, alpha=0.12, fill=True)
        top = int(np.argmax(counts))
        peaks.append((float(counts[top]), 0.5 * (edges[top] + edges[top + 1]), label, color))
        mean = 100 * _weighted_mean(values, w)
        peak = float(pct[np.argmax(np.abs(pct))])
        ax_h.axvline(mean, color=color, linestyle="--", linewidth=1.3)
        ax_h.axvline(peak, color=color, linestyle=":", linewidth=1.6)
        handles.append(Line2D([], [], color=color, linewidth=2,
                              label=f"{label}: bias {mean:+.3g} %, peak {peak:+.3g} %"))
        # CDF of |RE|
        mag = np.abs(pct)
        order = np.argsort(mag, kind="stable")
        cum = np.cumsum(share[order])
        ax_c.step(np.r_[0.0, mag[order]], np.r_[0.0, cum], where="post", color=color, linewidth=1.6,
                  label=label)
    handles += [Line2D([], [], color="0.3", linestyle="--", label="mean (bias)"),
                Line2D([], [], color="0.3", linestyle=":", label="peak (largest |RE|)")]
    _clip_spikes(ax_h, peaks)
    _style(ax_h, "Signed relative error", "relative error (%)", f"share of {_what(weighting)} per bin (%)")
    _style(ax_c, "Cumulative distribution of |RE|", "|relative error| (%)",
           f"share of {_what(weighting)} with |RE| <= x (%)")
    ax_c.set_ylim(0, 101)
    ax_c.set_xlim(left=0)
    # One legend for both panels (a model has one colour in both), under them.
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=LEGEND_SIZE, framealpha=0.85)
    _title(fig, title or "Relative error distribution")
    if subtitle:
        _note(ax_c, subtitle, y=-0.13)
    return fig


def _clip_spikes(ax, peaks):
    """Keep a near-exact model's single tall bin from flattening the others: clip it and say so."""
    heights = sorted((h for h, *_ in peaks), reverse=True)
    if len(heights) < 2:
        return
    typical = heights[len(heights) // 2]  # the lower median
    limit = 1.3 * max(h for h in heights if h <= 3 * typical)
    if heights[0] <= 1.5 * limit:
        return
    ax.set_ylim(0, limit)
    clipped = [f"{label}: {height:.3g} % at {x:+.3g} %" for height, x, label, _c in peaks if height > limit]
    if len(clipped) > 4:
        clipped = clipped[:3] + [f"... and {len(clipped) - 3} more"]
    ax.text(0.02, 0.97, "bins clipped:\n" + "\n".join(clipped), transform=ax.transAxes, ha="left", va="top",
            fontsize=NOTE_SIZE - 1, color="0.25", bbox=dict(facecolor="white", edgecolor="0.7", alpha=0.9))


def _what(weighting):
    return {"uniform": "operand pairs", "operands": "operand pairs (weighted by the operand samples)",
            "samples": "sampled operand pairs"}.get(weighting, weighting)


# ----------------------------------------------------------------------------------------------
# Heat maps and error against operand value
# ----------------------------------------------------------------------------------------------


def _axis_label(grid, which):
    if grid.kind == "mantissa":
        idx = "i" if which == "A" else "j"
        return f"operand {which} significand 1 + {idx}/2^{grid.bits} (unitless)"
    return f"operand {which} (integer, {grid.bits}-bit)"


def heatmap_figure(grid, *, title: str | None = None) -> Figure:
    """Relative error over the operand grid of one multiplier (rows: operand A, columns: operand B).

    A diverging colour map centred on 0 (symmetric limits +-max|RE|, in %).
    Undefined cells (exact product 0 in integer grids) are grey. The worst pair
    is marked and named in the legend.
    """
    re_ = np.asarray(grid.re, dtype=np.float64)
    finite = np.isfinite(re_)
    if not finite.any():
        raise AnalysisError(f"{grid.label}: no defined relative error to plot")
    pct = _pct(re_)
    vmax = float(np.nanmax(np.abs(pct)))
    vmax = vmax if vmax > 0 else 1e-9
    a, b = np.asarray(grid.a_values), np.asarray(grid.b_values)
    if grid.kind == "mantissa":
        n = 1 << grid.bits
        extent = (1.0, 1.0 + len(b) / n, 1.0, 1.0 + len(a) / n)
        offset = 0.5 / n
    else:
        extent = (b[0] - 0.5, b[-1] + 0.5, a[0] - 0.5, a[-1] + 0.5)
        offset = 0.0
    fig, axes = new_figure(figsize=(8.0, 6.6))
    ax = axes[0, 0]
    cmap = colormaps[DIVERGING].with_extremes(bad="0.75")
    image = ax.imshow(np.ma.masked_invalid(pct), origin="lower", extent=extent, cmap=cmap,
                      norm=Normalize(-vmax, vmax), interpolation="nearest", aspect="auto")
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label("relative error (%)", fontsize=LABEL_SIZE)
    bar.ax.tick_params(labelsize=TICK_SIZE)
    i, j = np.unravel_index(np.nanargmax(np.where(finite, np.abs(pct), -np.inf)), pct.shape)
    fmt = (lambda v: f"{v:.4g}") if grid.kind == "mantissa" else (lambda v: f"{int(v)}")
    handles = [ax.plot(b[j] + offset, a[i] + offset, marker="x", markersize=11, markeredgewidth=2.2,
                       color="black", linestyle="none",
                       label=f"peak {pct[i, j]:+.3g} % at A={fmt(a[i])}, B={fmt(b[j])}")[0]]
    mean = float(np.nanmean(pct))
    handles.append(Line2D([], [], linestyle="none", label=f"mean (bias) {mean:+.3g} %"))
    if not finite.all():
        handles.append(Patch(facecolor="0.75", label="exact product 0 (RE undefined)"))
    _style(ax, None, _axis_label(grid, "B"), _axis_label(grid, "A"))
    ax.grid(False)
    _legend(ax, handles, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncols=2, framealpha=1.0)
    what = f"M = {grid.bits} mantissa LUT" if grid.kind == "mantissa" else f"{grid.bits}-bit integer grid"
    _title(fig, title or f"Relative error of {grid.label} ({what})")
    return fig


def operand_figure(items, *, title: str | None = None, overlay: bool | None = None) -> Figure:
    """Mean (line) and extremes (min..max band) of the relative error for each value of operand A.

    Up to four models are overlaid on one axes; more get one panel each
    (shared axes), which stays readable (``overlay`` forces either layout).
    """
    grids = list(items)
    if not grids:
        raise AnalysisError("nothing to plot: no error data given")
    overlay = len(grids) <= 4 if overlay is None else overlay
    g0 = grids[0]
    xlabel = (f"operand A significand 1 + i/2^{g0.bits} (unitless)" if g0.kind == "mantissa"
              else f"operand A (integer, {g0.bits}-bit)")
    ylabel = "relative error over all operands B (%)"
    colors = _colors(len(grids)) if overlay else [colormaps["tab10"](k % 10) for k in range(len(grids))]
    if overlay:
        fig, axes = new_figure(figsize=(9.0, 5.4))
        panels = [axes[0, 0]] * len(grids)
    else:
        ncols = math.ceil(math.sqrt(len(grids)))
        nrows = math.ceil(len(grids) / ncols)
        fig, axes = new_figure(nrows, ncols, figsize=(3.4 * ncols + 1.0, 2.7 * nrows + 1.2), sharex=True,
                               sharey=True)
        panels = list(axes.ravel())
        for ax in panels[len(grids):]:
            ax.set_visible(False)
    handles = []
    for grid, color, ax in zip(grids, colors, panels):
        pct = _pct(grid.re)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows without a defined RE (A = 0)
            mean, lo, hi = np.nanmean(pct, axis=1), np.nanmin(pct, axis=1), np.nanmax(pct, axis=1)
        x = np.asarray(grid.a_values, dtype=np.float64)
        if grid.kind == "mantissa" and len(x) <= 64:
            # each mantissa covers [1 + i/2^M, 1 + (i+1)/2^M): steps, the last one drawn to 2
            x = np.r_[x, 2.0 * x[-1] - x[-2] if len(x) > 1 else x[-1] + 1.0]
            mean, lo, hi = np.r_[mean, mean[-1]], np.r_[lo, lo[-1]], np.r_[hi, hi[-1]]
            line = ax.step(x, mean, where="post", color=color, linewidth=1.8, label=grid.label)[0]
            ax.fill_between(x, lo, hi, step="post", color=color, alpha=0.18)
        else:
            line = ax.plot(x, mean, color=color, linewidth=1.8, label=grid.label)[0]
            ax.fill_between(x, lo, hi, color=color, alpha=0.18)
        handles.append(line)
        ax.axhline(0.0, color="0.2", linewidth=0.8)
        if overlay:
            _style(ax, None, xlabel, ylabel)
        else:
            _style(ax, grid.label)
            ax.title.set_fontsize(LABEL_SIZE)
    legend_title = "line: mean, band: min..max over operand B"
    if overlay:
        _legend(panels[0], handles, loc="best", title=legend_title, title_fontsize=LEGEND_SIZE)
    else:
        fig.supxlabel(xlabel, fontsize=LABEL_SIZE)
        fig.supylabel(ylabel, fontsize=LABEL_SIZE)
        # The panels are titled by model; the legend says what line and band mean.
        proxies = [Line2D([], [], color="0.3", linewidth=1.8, label="mean over operand B"),
                   Patch(facecolor="0.3", alpha=0.25, label="min..max over operand B")]
        fig.legend(handles=proxies, loc="outside right upper", fontsize=LEGEND_SIZE)
    _title(fig, title or "Relative error against operand A (mean and extremes over operand B)")
    return fig


# ----------------------------------------------------------------------------------------------
# Statistics against the mantissa width
# ----------------------------------------------------------------------------------------------


def width_figure(results: dict, *, reference: str = "truncated", title: str | None = None) -> Figure:
    """Mean |RE|, bias (mean RE) and peak |RE| against the mantissa width M.

    ``results`` maps a label to ``[(M, stats), ...]`` (docs/metrics.md keys). Mean and
    peak use a log scale when every value is positive.
    """
    if not results:
        raise AnalysisError("nothing to plot: no statistics given")
    fig, axes = new_figure(1, 3, figsize=(14.0, 4.8))
    panels = (("mean_abs_re", "Mean |RE|", "mean |relative error| (%)"),
              ("mean_re", "Bias (mean RE)", "mean relative error (%)"),
              ("max_abs_re", "Peak |RE|", "max |relative error| (%)"))
    all_m = sorted({m for rows in results.values() for m, _ in rows})
    for ax, (key, name, ylabel) in zip(axes[0], panels):
        positive = True
        for (label, rows), color in zip(results.items(), _colors(len(results))):
            ms = [m for m, s in rows if s.get(key) is not None]
            vals = [100 * s[key] for m, s in rows if s.get(key) is not None]
            positive &= all(v > 0 for v in vals)
            ax.plot(ms, vals, marker="o", markersize=4, color=color, linewidth=1.6, label=label)
        if positive and key != "mean_re":
            ax.set_yscale("log")
        if key == "mean_re":
            ax.axhline(0.0, color="0.2", linewidth=0.8)
        ax.set_xticks(all_m)
        _style(ax, name, "mantissa width M (bits)", ylabel)
    _legend(axes[0, 0], loc="best")
    _title(fig, title or f"Error statistics against mantissa width ({reference} reference)")
    return fig


# ----------------------------------------------------------------------------------------------
# Pareto fronts
# ----------------------------------------------------------------------------------------------


def _grouped_labels(candidates, x, y, sx, sy):
    groups: dict = {}
    for c in candidates:
        groups.setdefault((sx * c[x], sy * c[y]), []).append(str(c.get("label", "?")))
    return [(point, " = ".join(labels)) for point, labels in groups.items()]


def pareto_figure(result, objectives=None, *, title: str | None = None, note: str = COST_NOTE,
                  label_all: bool | None = None) -> Figure:
    """Scatter of every candidate with data, the non-dominated front drawn through it, and labels.

    ``result`` is a :class:`amsim.analysis.pareto.ParetoResult`; the plot uses its
    first two objectives (or ``objectives``). With more objectives the front
    is the one over all of them, shown projected (said on the plot). The
    candidates without data are listed under the plot, with ``note``.
    """
    from .pareto import objective_label, objective_scale

    objectives = list(objectives or result.objectives)
    if len(objectives) < 2:
        raise AnalysisError("a Pareto plot needs two objectives")
    x, y = objectives[:2]
    sx, sy = objective_scale(x), objective_scale(y)
    fig, axes = new_figure(figsize=(9.0, 6.4))
    ax = axes[0, 0]
    front, dominated = result.front, result.dominated
    label_all = len(front) + len(dominated) <= 30 if label_all is None else label_all
    if dominated:
        ax.scatter([sx * c[x] for c in dominated], [sy * c[y] for c in dominated], s=30, color="0.6",
                   zorder=2, label=f"dominated ({len(dominated)})")
        if label_all:
            for (px, py), lab in _grouped_labels(dominated, x, y, sx, sy):
                ax.annotate(lab, (px, py), textcoords="offset points", xytext=(4, -10), fontsize=NOTE_SIZE - 1,
                            color="0.4")
    if front:
        pts = sorted((sx * c[x], sy * c[y]) for c in front)
        if len(result.objectives) == 2:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="tab:red", linewidth=1.4,
                    alpha=0.8, zorder=3)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=60, color="tab:red", edgecolor="black",
                   zorder=4, label=f"Pareto front ({len(front)})")
        for (px, py), lab in _grouped_labels(front, x, y, sx, sy):  # ties share one point: "a = b"
            ax.annotate(lab, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=NOTE_SIZE,
                        fontweight="bold", zorder=5)
    if not front and not dominated:
        ax.text(0.5, 0.5, "no candidate has data for every objective", transform=ax.transAxes,
                ha="center", va="center", fontsize=LABEL_SIZE)
    _style(ax, None, objective_label(x), objective_label(y))
    if front or dominated:
        _legend(ax, loc="best")
    else:
        _legend(ax, [Line2D([], [], color="tab:red", marker="o", linestyle="none", label="Pareto front (0)")])
    lines = [note] if note else []
    if len(result.objectives) > 2:
        lines.append(f"Front computed over {', '.join(result.objectives)}; shown projected on {x} and {y}.")
    if result.missing:
        names = [c["label"] for c in result.missing]
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        lines.append(f"No cost data (not plotted): {shown}.")
    if lines:
        _note(ax, "\n".join(lines), y=-0.13)
    _title(fig, title or f"Pareto front: {x} vs {y} (all minimised)")
    return fig


# ----------------------------------------------------------------------------------------------
# General curves (training curves, sweeps)
# ----------------------------------------------------------------------------------------------


def curves_figure(series: dict, *, title: str, xlabel: str, ylabel: str, logy: bool = False,
                  markers: bool = False, hlines: dict | None = None, note: str | None = None) -> Figure:
    """Overlaid curves: ``series`` maps a label to ``(x, y)``; ``hlines`` maps a label to a y value.

    General enough for training curves (epoch vs accuracy per multiplier,
    with the exact baseline as a horizontal line) and parameter sweeps.
    """
    if not series:
        raise AnalysisError("nothing to plot: no curves given")
    fig, axes = new_figure()
    ax = axes[0, 0]
    colors = _colors(len(series) + len(hlines or {}))
    for (label, (xs, ys)), color in zip(series.items(), colors):
        ax.plot(np.asarray(xs), np.asarray(ys), color=color, linewidth=1.6, label=label,
                marker="o" if markers else None, markersize=4)
    for (label, value), color in zip((hlines or {}).items(), colors[len(series):]):
        ax.axhline(value, color=color, linestyle="--", linewidth=1.3, label=label)
    if logy:
        ax.set_yscale("log")
    _style(ax, None, xlabel, ylabel)
    _legend(ax, loc="best")
    if note:
        _note(ax, note, y=-0.14)
    _title(fig, title)
    return fig


# ----------------------------------------------------------------------------------------------
# High-level helpers: from model names to figures
# ----------------------------------------------------------------------------------------------


def _grids(models, bits, params, integer, samples, seed, isolate):
    from . import data

    configs = data.select_configs(models, _specs(params), bits, integer=integer)
    grids, failures = data.build_grids(configs, bits, integer=integer, samples=samples, seed=seed, isolate=isolate)
    if failures:
        raise failures[0][1]
    return grids


def _specs(params):
    if not params:
        return ()
    if isinstance(params, dict):
        return [(k, v if isinstance(v, (list, tuple, range)) else [v]) for k, v in params.items()]
    return list(params)


def plot_distribution(models, bits: int, params=None, *, reference: str = "truncated", integer: bool = False,
                      samples: int = 1 << 18, seed: int = 0, isolate: bool = False) -> Figure:
    """Distribution figure of the named models at width ``bits`` (params may sweep: ``{"k": range(4, 7)}``).

    ``reference="full"`` histograms ``samples`` seeded float32 operand pairs
    (:func:`amsim.analysis.data.full_reference_re`) instead of the LUT grid.
    """
    from . import data

    grids = _grids(models, bits, params, integer, samples, seed, isolate)
    if reference == "full":
        if integer:
            raise AnalysisError("the full reference applies to mantissa multipliers, not integer grids")
        items = [(g.label, data.full_reference_re(g.lut, samples=samples, seed=seed)) for g in grids]
        return distribution_figure(items, weighting="samples",
                                   title=f"Relative error distribution, M = {bits}, full reference",
                                   subtitle=f"Monte Carlo: {samples} float32 operand pairs per model, seed {seed}")
    what = f"{bits}-bit integer operands" if integer else f"M = {bits}, truncated reference"
    return distribution_figure(grids, title=f"Relative error distribution, {what}")


def plot_heatmap(model, bits: int, params=None, *, integer: bool = False, isolate: bool = False) -> Figure:
    """Heat map of one model configuration (the first if ``params`` sweeps)."""
    grid = _grids([model], bits, params, integer, None, 0, isolate)[0]
    return heatmap_figure(grid)


def plot_operand(models, bits: int, params=None, *, integer: bool = False, isolate: bool = False) -> Figure:
    """Error against operand A of the named models."""
    return operand_figure(_grids(models, bits, params, integer, None, 0, isolate))


def plot_width(models, widths=range(1, 13), params=None, *, reference: str = "truncated",
               rounding: str = "truncate", samples=None, seed: int = 0, isolate: bool = False) -> Figure:
    """Statistics against M (default 1..12) of the named models; widths a model lacks are skipped."""
    from . import data

    widths = list(widths)
    configs = data.select_configs(models, _specs(params), widths[0], check=False)
    results, failures, _skipped = data.width_stats(configs, widths, reference=reference, rounding=rounding,
                                                   samples=samples, seed=seed, isolate=isolate)
    if failures:
        raise failures[0][1]
    return width_figure(results, reference=reference)


def plot_pareto(result, objectives=None, **kwargs) -> Figure:
    """Same as :func:`pareto_figure`."""
    return pareto_figure(result, objectives, **kwargs)
