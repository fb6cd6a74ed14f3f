"""Figures of training studies: accuracy and loss curves per multiplier, and final accuracy.

Like the reference study's Figures 5.2-5.5 (Knauth 2023), training and validation curves of each
multiplier are overlaid on one axes (training solid, validation dashed), here with a band from
the lowest to the highest value over the seeds around their mean. The bar chart shows each
multiplier's final validation (or test) accuracy, with the spread over seeds as error bars.

The input is run folders (see :mod:`amsim.experiments.runner`) or study folders, which stand for
all their runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from amsim.experiments.runner import read_run

from . import AnalysisError
from .plots import _colors, _legend, _style, _title, new_figure, save_figure

__all__ = ["collect_runs", "group_runs", "curves_figure", "final_accuracy_figure", "plot_runs", "report_section",
           "report_html"]


def collect_runs(paths) -> list[dict]:
    """The runs in ``paths``: run folders as they are, study folders as the runs they list."""
    runs = []
    for path in map(Path, paths):
        if (path / "study.json").is_file():
            listed = json.loads((path / "study.json").read_text())["runs"]
            runs += [read_run(path / r) for r in listed if (path / r / "config.json").is_file()]
        elif (path / "config.json").is_file():
            runs.append(read_run(path))
        else:
            raise AnalysisError(f"{path} is neither a run folder (config.json) nor a study folder (study.json)")
    if not runs:
        raise AnalysisError("no runs with any recorded epoch to plot")
    return runs


def group_runs(runs) -> dict[str, list[dict]]:
    """Runs by multiplier label, float32 first, then in the order met."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["config"]["run"]["multiplier"]["label"], []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: kv[0] != "float32"))


def _stack(members, key):
    """(epochs, mean, low, high) of ``key`` over the runs, up to the epoch all of them reached."""
    curves = [[row.get(key) for row in r["history"]] for r in members]
    n = min(len(c) for c in curves)
    if n == 0 or any(v is None for c in curves for v in c[:n]):
        return None
    values = np.array([c[:n] for c in curves], dtype=float)
    return np.arange(1, n + 1), values.mean(0), values.min(0), values.max(0)


def curves_figure(groups: dict, metric: str = "accuracy", *, title: str | None = None):
    """Training (solid) and validation (dashed) ``metric`` per epoch for each multiplier, bands over seeds."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    drawn = 0
    for (label, members), color in zip(groups.items(), _colors(len(groups)), strict=True):
        seeds = len(members)
        for key, style, what in ((metric, "-", "training"), ("val_" + metric, "--", "validation")):
            stacked = _stack(members, key)
            if stacked is None:
                continue
            x, mean, low, high = stacked
            scale = 100.0 if metric == "accuracy" else 1.0
            name = f"{label} {what}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
            ax.plot(x, mean * scale, style, color=color, linewidth=1.6, label=name)
            if seeds > 1:
                ax.fill_between(x, low * scale, high * scale, color=color, alpha=0.18, linewidth=0)
            drawn += 1
    if not drawn:
        raise AnalysisError(f"no run recorded {metric} for any epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, None, "epoch", "accuracy (%)" if metric == "accuracy" else metric)
    _legend(ax, loc="best")
    _title(fig, title or f"{'Accuracy' if metric == 'accuracy' else 'Loss'}: training (solid) and validation (dashed)")
    return fig


def final_accuracy_figure(groups: dict, *, title: str | None = None):
    """Bar per multiplier: final validation accuracy (test accuracy when there is no validation set),
    mean over seeds with the lowest-to-highest range as error bar."""
    labels, means, lows, highs, what = [], [], [], [], "validation"
    for label, members in groups.items():
        results = [r["result"] for r in members if r["result"]]
        values = [res["final"].get("val_accuracy") for res in results]
        if not values or None in values:
            values, what = [res["test"].get("accuracy") for res in results], "test"
        values = [v for v in values if v is not None]
        if not values:
            continue
        labels.append(label)
        means.append(100 * np.mean(values))
        lows.append(100 * (np.mean(values) - min(values)))
        highs.append(100 * (max(values) - np.mean(values)))
    if not labels:
        raise AnalysisError("no complete run to chart")
    fig, axes = new_figure(figsize=(max(4.0, 1.2 * len(labels) + 2), 4.5))
    ax = axes[0, 0]
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=[lows, highs], color=_colors(len(labels)), capsize=4)
    for xi, m, h in zip(x, means, highs, strict=True):  # above the error bar
        ax.annotate(f"{m:.2f}", (xi, m + h), ha="center", va="bottom", fontsize=9, xytext=(0, 4),
                    textcoords="offset points")
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 4 else 0)
    low = min(means) - max(lows + [0])
    ax.set_ylim(max(0.0, low - 10), 100)
    _style(ax, None, None, f"final {what} accuracy (%)")
    _title(fig, title or f"Final {what} accuracy per multiplier")
    return fig


def plot_runs(paths, out) -> list[Path]:
    """Write accuracy curves, loss curves and the final-accuracy chart of the runs in ``paths`` into
    ``out`` (PNG and SVG), and with more than one approximate multiplier also float32 against each of
    them alone; returns the files written."""
    groups = group_runs(collect_runs(paths))
    out = Path(out)
    written = []
    written += save_figure(curves_figure(groups, "accuracy"), out / "accuracy")
    written += save_figure(curves_figure(groups, "loss"), out / "loss")
    if "float32" in groups and len(groups) > 2:  # one precise-against-approximate pair per figure as well
        for label in groups:
            if label != "float32":
                pair = {"float32": groups["float32"], label: groups[label]}
                for metric in ("accuracy", "loss"):
                    title = f"{metric.capitalize()}: float32 against {label}, training (solid) and validation (dashed)"
                    written += save_figure(curves_figure(pair, metric, title=title),
                                           out / f"{metric}-float32-vs-{label}")
    try:
        written += save_figure(final_accuracy_figure(groups), out / "final-accuracy")
    except AnalysisError:  # no run is complete yet: the curves are still worth having
        pass
    return written


# ----------------------------------------------------------------------------------------------
# The training section of `amsim report`
# ----------------------------------------------------------------------------------------------


def report_section(paths, folder) -> dict:
    """Draw the training figures of the runs in ``paths`` into ``folder/figures`` and return the
    section's data for report.json: per multiplier its runs, accuracies and time per epoch, and the
    figures (paths relative to ``folder``)."""
    groups = group_runs(collect_runs(paths))
    figures = {}
    for key, fig, caption in (
            ("accuracy", curves_figure(groups, "accuracy"),
             "Training (solid) and validation (dashed) accuracy per epoch; bands: lowest to highest over seeds."),
            ("loss", curves_figure(groups, "loss"), "Training (solid) and validation (dashed) loss per epoch."),
            ("final-accuracy", final_accuracy_figure(groups), "Final accuracy per multiplier, range over seeds.")):
        save_figure(fig, Path(folder) / "figures" / f"training-{key}")
        figures[key] = {"png": f"figures/training-{key}.png", "svg": f"figures/training-{key}.svg",
                        "caption": caption}
    rows = []
    for label, members in groups.items():
        results = [r["result"] for r in members if r["result"]]

        def mean(values):
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        rows.append({"multiplier": label, "runs": len(members), "complete": len(results),
                     "final_val_accuracy": mean([r["final"].get("val_accuracy") for r in results]),
                     "best_val_accuracy": mean([r["best_val_accuracy"] for r in results]),
                     "test_accuracy": mean([r["test"].get("accuracy") for r in results]),
                     "epoch_time_s": mean([r["mean_epoch_time_after_first_s"] or r["mean_epoch_time_s"]
                                           for r in results]),
                     "folders": [r["folder"] for r in members]})
    return {"rows": rows, "figures": figures}


def report_html(section: dict) -> str:
    """The training section as HTML (figures linked as in the rest of the report)."""
    from html import escape as e

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    out = ["<h2>Training</h2>", "<p>Runs of <code>amsim train</code>: every multiplier trained from the same initial "
           "weights in the same data order (accuracies in %, means over seeds).</p>",
           "<table><tr><th>multiplier</th><th>runs</th><th>final val acc</th><th>best val acc</th><th>test acc</th>"
           "<th>s/epoch</th></tr>"]
    for r in section["rows"]:
        t = "-" if r["epoch_time_s"] is None else f"{r['epoch_time_s']:.3g}"
        out.append(f"<tr><td>{e(r['multiplier'])}</td><td class='num'>{r['complete']}/{r['runs']}</td>"
                   f"<td class='num'>{pct(r['final_val_accuracy'])}</td><td class='num'>{pct(r['best_val_accuracy'])}"
                   f"</td><td class='num'>{pct(r['test_accuracy'])}</td><td class='num'>{t}</td></tr>")
    out.append("</table>")
    for key, fig in section["figures"].items():
        out.append(f'<figure><a href="{e(fig["svg"])}"><img src="{e(fig["png"])}" alt="{e(key)}"></a>'
                   f'<figcaption>{e(fig["caption"])} <a href="{e(fig["svg"])}">SVG</a></figcaption></figure>')
    return "\n".join(out)
