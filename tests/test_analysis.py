"""Plots and reports (amsim.analysis: plots, data, report) and ``amsim plot`` / ``amsim report``.

Figures are checked through their matplotlib objects (titles, labels, legends, colour limits), never
pixels; saved files must be non-empty PNG and SVG.
"""

import functools
import json
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import amsim
from amsim import cli, generate, lut as lutmod
from amsim.analysis import AnalysisError, data, pareto, plots, report

SAMPLES = 20000


@functools.lru_cache(maxsize=None)
def built(name, m, **params):
    return generate.mantissa_lut(amsim.find_model(name), m, params or None, samples=SAMPLES, seed=1)


def grid(name, m=5, **params):
    config = data.Config(amsim.find_model(name), amsim.find_model(name).resolve_params(params))
    return data.grid_from_lut(built(name, m, **params), config.label, config)


def run_cli(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def assert_saved(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    text = svg.read_text()
    assert "<svg" in text and svg.stat().st_size > 2000
    assert not list(png.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def test_grid_from_mantissa_lut():
    g = grid("mitchell")
    assert g.kind == "mantissa" and g.re.shape == (32, 32) and g.label == "mitchell"
    assert g.a_values[0] == 1.0 and g.a_values[-1] == 1 + 31 / 32
    assert g.re.min() == g.stats["truncated"]["min_re"]  # same formula as the statistics, to the bit
    assert np.nanmax(np.abs(g.re)) == g.stats["truncated"]["max_abs_re"]


def test_grid_from_integer_luts_unsigned_and_signed():
    mbm = data.grid_from_lut(generate.integer_lut(amsim.find_model("mbm"), 6))
    assert mbm.kind == "integer" and mbm.re.shape == (64, 64)
    assert np.isnan(mbm.re[0]).all() and np.isnan(mbm.re[:, 0]).all()  # zero products: undefined
    assert np.nanmax(np.abs(mbm.re)) == pytest.approx(mbm.stats["integer"]["max_abs_re"])
    table = np.multiply.outer(np.r_[0:8, -8:0], np.r_[0:8, -8:0]).astype(np.int64)  # exact signed, by pattern
    signed = data.grid_from_lut(lutmod.LUT(table=table, bits=4, kind="integer", model="s", meta={"signed": True}))
    assert list(signed.a_values) == list(range(-8, 8))
    assert np.nanmax(np.abs(signed.re)) == 0


def test_full_reference_samples_agree_with_the_lut_statistics():
    lut = built("mitchell", 5)
    re_ = data.full_reference_re(lut, samples=200000, seed=3)
    full = lut.stats["full"]
    assert re_.mean() == pytest.approx(full["mean_re"], abs=3e-4)
    assert np.abs(re_).mean() == pytest.approx(full["mean_abs_re"], abs=3e-4)
    assert re_.min() >= full["min_re"] - 0.01


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def test_distribution_figure(tmp_path):
    grids = [grid("mitchell"), grid("mbm"), grid("exact")]
    fig = plots.distribution_figure(grids, title="RE at M = 5")
    assert isinstance(fig, Figure) and fig.get_suptitle() == "RE at M = 5"
    ax_h, ax_c = fig.axes
    assert ax_h.get_xlabel() == "relative error (%)" and "(%)" in ax_h.get_ylabel()
    assert ax_c.get_xlabel() == "|relative error| (%)" and "(%)" in ax_c.get_ylabel()
    assert ax_h.get_title() and ax_c.get_title()
    (legend,) = fig.legends  # one legend for both panels: a model has one colour in both
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split(":")[0] for t in texts[:3]] == ["mitchell", "mbm t=0", "exact"]
    assert texts[0].startswith("mitchell: bias -3.8")
    assert texts[3:] == ["mean (bias)", "peak (largest |RE|)"]
    assert [line.get_label() for line in ax_c.get_lines()] == ["mitchell", "mbm t=0", "exact"]
    # mean and peak are marked in % at the statistics' values
    xs = {round(line.get_xdata()[0], 9) for line in ax_h.get_lines()}
    assert round(100 * grids[0].stats["truncated"]["mean_re"], 9) in xs
    assert round(100 * grids[0].stats["truncated"]["min_re"], 9) in xs  # Mitchell's peak is its minimum
    # the exact model's single bin is clipped and named, not allowed to flatten the others
    assert any("clipped" in t.get_text() and "exact" in t.get_text() for t in ax_h.texts)
    assert_saved(plots.save_figure(fig, tmp_path / "dist"))


def test_distribution_from_plain_samples_with_weights():
    rng = np.random.default_rng(0)
    fig = plots.distribution_figure([("a", rng.normal(0, 0.01, 500)), ("b", rng.normal(0, 0.02, 500), np.ones(500))],
                                    weighting="samples")
    assert "sampled operand pairs" in fig.axes[0].get_ylabel()
    with pytest.raises(AnalysisError):
        plots.distribution_figure([])
    with pytest.raises(AnalysisError, match="no defined"):
        plots.distribution_figure([("x", [np.nan])])


def test_heatmap_figure_is_diverging_and_centred(tmp_path):
    g = grid("mbm")
    fig = plots.heatmap_figure(g)
    assert fig.get_suptitle() == "Relative error of mbm t=0 (M = 5 mantissa LUT)"
    ax, bar = fig.axes
    assert ax.get_xlabel() == "operand B significand 1 + j/2^5 (unitless)"
    assert ax.get_ylabel() == "operand A significand 1 + i/2^5 (unitless)"
    assert bar.get_ylabel() == "relative error (%)"
    (image,) = ax.get_images()
    vmin, vmax = image.get_clim()
    assert vmin == -vmax and vmax == pytest.approx(100 * g.stats["truncated"]["max_abs_re"])
    assert image.get_cmap().name.startswith("RdBu")
    assert image.get_array().shape == (32, 32)
    assert any(t.startswith("peak -8.33 %") for t in legend_texts(ax))
    assert_saved(plots.save_figure(fig, tmp_path / "heat.png"))  # the suffix is replaced by each format


def test_heatmap_of_an_integer_grid_marks_undefined_cells():
    g = data.grid_from_lut(generate.integer_lut(amsim.find_model("mitchell"), 8))
    fig = plots.heatmap_figure(g)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "operand B (integer, 8-bit)" and "8-bit integer grid" in fig.get_suptitle()
    assert "exact product 0 (RE undefined)" in legend_texts(ax)
    assert ax.get_images()[0].get_array().shape == (256, 256)


def test_operand_figure():
    fig = plots.operand_figure([grid("mitchell"), grid("drum", k=3)])
    ax = fig.axes[0]
    assert "operand A" in fig.get_suptitle()
    assert ax.get_xlabel() == "operand A significand 1 + i/2^5 (unitless)" and "(%)" in ax.get_ylabel()
    assert legend_texts(ax) == ["mitchell", "drum k=3"]
    assert ax.get_legend().get_title().get_text() == "line: mean, band: min..max over operand B"
    mean_line = ax.get_lines()[0]
    assert np.nanmin(mean_line.get_ydata()) == pytest.approx(100 * np.nanmean(grid("mitchell").re, axis=1).min())


def test_operand_figure_small_multiples_beyond_four_models():
    names = ["mitchell", "mbm", "exact", "bf16_trunc", "at_mitchell"]
    fig = plots.operand_figure([grid(n) for n in names])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["mitchell", "mbm t=0", "exact", "bf16_trunc", "at_mitchell"]
    assert "operand A" in fig.get_supxlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["mean over operand B", "min..max over operand B"]


def test_width_figure_and_plot_width_api():
    fig = plots.plot_width(["mitchell", "at_mbm"], widths=range(1, 6))
    assert fig.get_suptitle() == "Error statistics against mantissa width (truncated reference)"
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["Mean |RE|", "Bias (mean RE)", "Peak |RE|"]
    assert all(a.get_xlabel() == "mantissa width M (bits)" and "(%)" in a.get_ylabel() for a in axes)
    assert legend_texts(axes[0]) == ["mitchell", "at_mbm"]
    mitchell, at_mbm = axes[0].get_lines()[:2]
    assert list(mitchell.get_xdata()) == [1, 2, 3, 4, 5] and list(at_mbm.get_xdata()) == [1, 3, 5]
    assert mitchell.get_ydata()[-1] == pytest.approx(100 * built("mitchell", 5).stats["truncated"]["mean_abs_re"])


def test_pareto_figure_labels_front_and_notes_cost_sources(tmp_path):
    cands = [{"label": "cheap", "power": 0.3, "mean_abs_re": 0.05}, {"label": "exact", "power": 1.0, "mean_abs_re": 0.0},
             {"label": "bad", "power": 0.9, "mean_abs_re": 0.06}, {"label": "unpriced", "power": None, "mean_abs_re": 0.01}]
    fig = plots.pareto_figure(pareto.pareto_front(cands, ["power", "mean_abs_re"]))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "power (relative to exact = 1)" and ax.get_ylabel() == "mean |RE| (%)"
    assert "Pareto front" in fig.get_suptitle()
    assert legend_texts(ax) == ["dominated (1)", "Pareto front (2)"]
    texts = [t.get_text() for t in ax.texts]
    assert {"cheap", "exact", "bad"} <= set(texts)
    note = next(t for t in texts if "different papers" in t)
    assert "No cost data (not plotted): unpriced" in note
    assert_saved(plots.save_figure(fig, tmp_path / "front"))


def test_curves_figure_for_training_curves():
    fig = plots.curves_figure({"mitchell": ([1, 2, 3], [0.5, 0.7, 0.8]), "mbm": ([1, 2, 3], [0.6, 0.75, 0.85])},
                              title="Training", xlabel="epoch", ylabel="accuracy (%)", hlines={"exact": 0.9})
    ax = fig.axes[0]
    assert fig.get_suptitle() == "Training" and ax.get_xlabel() == "epoch"
    assert legend_texts(ax) == ["mitchell", "mbm", "exact"]


def test_figures_avoid_pyplot_and_build_in_threads():
    errors = []

    def work():
        try:
            for _ in range(2):
                plots.distribution_figure([grid("mitchell")]).savefig(__import__("io").BytesIO(), format="png")
                plots.heatmap_figure(grid("mbm"))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_figures_never_import_pyplot():
    """In a fresh process (TensorFlow, loaded by other tests, imports pyplot itself)."""
    code = ("import sys, io\n"
            "from amsim.analysis import plots\n"
            "fig = plots.curves_figure({'a': ([1, 2], [0.5, 0.6])}, title='t', xlabel='x', ylabel='y')\n"
            "fig.savefig(io.BytesIO(), format='png')\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# amsim plot
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,stems", [
    (["distribution", "--model", "mitchell", "--model", "drum", "--param", "k=3..4", "--bits", "5"],
     ["distribution_mitchell_drum_k3_drum_k4_m5"]),
    (["distribution", "--model", "mbm", "--bits", "5", "--reference", "full", "--samples", "5000"],
     ["distribution_mbm_t0_m5_full"]),
    (["heatmap", "--model", "mitchell", "--model", "mbm", "--bits", "5"], ["heatmap_mitchell_m5", "heatmap_mbm_t0_m5"]),
    (["heatmap", "--model", "mbm", "--bits", "6", "--integer"], ["heatmap_mbm_t0_n6"]),
    (["operand", "--model", "mitchell", "--bits", "5", "--name", "mine"], ["mine"]),
    (["width", "--model", "mitchell", "--widths", "2..4"], ["width_mitchell_m2-4"]),
])
def test_cli_plot_kinds(tmp_path, capsys, argv, stems):
    code, out, err = run_cli(capsys, "plot", *argv, "--out", str(tmp_path))
    assert code == 0, err
    expected = [tmp_path / f"{s}.{ext}" for s in stems for ext in ("png", "svg")]
    assert out.split() == [str(p) for p in expected]
    for s in stems:
        assert_saved([tmp_path / f"{s}.png", tmp_path / f"{s}.svg"])


def test_cli_plot_from_lut_file_and_operands(tmp_path, capsys):
    path = lutmod.save(built("mitchell", 5), tmp_path / "mitchell_m5.npz")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ops.npz", a=rng.random(300).astype(np.float32) + 1, b=rng.random(300).astype(np.float32) + 1)
    code, out, err = run_cli(capsys, "plot", "distribution", "--lut", str(path), "--bits", "5", "--out",
                             str(tmp_path), "--operands", str(tmp_path / "ops.npz"))
    assert code == 0, err
    assert out.split()[0].endswith("distribution_mitchell_m5_operands.png")


@pytest.mark.parametrize("argv,message", [
    (["distribution", "--bits", "5"], "at least one --model or --lut"),
    (["heatmap", "--model", "mbm", "--bits", "9", "--integer"], "up to 8"),
    (["heatmap", "--model", "mbm", "--bits", "5", "--reference", "full"], "--reference full"),
    (["operand", "--model", "mbm"], "needs --bits"),
    (["width", "--model", "mbm", "--integer"], "drop --integer"),
    (["distribution", "--model", "nosuchmodel", "--bits", "5"], "unknown model"),
])
def test_cli_plot_errors_are_one_line(tmp_path, capsys, argv, message):
    code, _out, err = run_cli(capsys, "plot", *argv, "--out", str(tmp_path))
    assert code in (1, 2) and message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href"):
                self.refs.append(value)


def references(index: Path):
    parser = _Refs()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser.refs


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report"
    argv = ["report", "--bits", "5", "--model", "mitchell", "--model", "mbm", "--model", "exact", "--model", "drum",
            "--param", "k=3..4", "--samples", "5000", "--out", str(out)]
    assert cli.main(argv) == 0
    return out


def test_report_references_only_files_that_exist(report_dir):
    index = report_dir / "index.html"
    refs = references(index)
    assert refs and not any(r.startswith(("http:", "https:", "/", "file:")) for r in refs)  # relative only
    for ref in refs:
        assert (report_dir / ref).is_file(), ref
    pngs = [r for r in refs if r.endswith(".png")]
    assert len(pngs) == 3 + 5  # distribution, operand, Pareto, one heat map per configuration
    for ref in pngs:
        assert_saved([report_dir / ref, report_dir / ref.replace(".png", ".svg")])


def test_report_content(report_dir):
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    info = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    import matplotlib
    import numba

    for needle in ("truncated reference", "full reference", "Saadat et al., IEEE TCAD 2018",
                   "Hashemi, R. I. Bahar", "no cost data", "not strictly comparable", "drum k=3",
                   f"numpy</th><td>{np.__version__}", f"numba</th><td>{numba.__version__}",
                   f"matplotlib</th><td>{matplotlib.__version__}", "compiler", "amsim report --bits 5",
                   "amsim generate-lut --bits 5 --model drum --param k=3 --samples 5000"):
        assert needle in text, needle
    assert info["format"] == "amsim-report" and info["command"].startswith("amsim report --bits 5 --model mitchell")
    assert [m["label"] for m in info["models"]] == ["mitchell", "mbm t=0", "exact", "drum k=3", "drum k=4"]
    mbm = info["models"][1]
    assert mbm["cost"] is None and mbm["cost_bits"] == 6  # lifted from 6 bits: no published figure
    assert info["models"][0]["stats"]["full"]["samples"] == 5000
    assert [c["label"] for c in info["pareto"]["front"]] == ["exact"]


def test_report_regeneration_replaces_the_folder(tmp_path, capsys):
    out = tmp_path / "rep"
    argv = ["report", "--bits", "5", "--model", "mitchell", "--samples", "2000", "--out", str(out)]
    assert run_cli(capsys, *argv)[0] == 0
    (out / "stray.txt").write_text("from an old run")
    first = (out / "report.json").read_text()
    code, out_text, err = run_cli(capsys, *argv)
    assert code == 0, err and "wrote" in out_text
    assert not (out / "stray.txt").exists() and (out / "index.html").exists()
    assert json.loads((out / "report.json").read_text())["created"] >= json.loads(first)["created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no staging or old folders left


def test_report_failure_leaves_the_old_report(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    report.build_report(out, 5, ["mitchell"], samples=2000, isolate=False)
    before = (out / "report.json").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "pareto_figure", boom)
    with pytest.raises(RuntimeError):
        report.build_report(out, 5, ["mitchell"], samples=2000, isolate=False)
    assert (out / "report.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_report_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    code, _out, err = run_cli(capsys, "report", "--bits", "5", "--model", "mitchell", "--out", str(tmp_path))
    assert code == 1 and "refusing to replace" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_pareto_figure_names_tied_points_together():
    cands = [{"label": "exact", "power": 1.0, "err": 0.0}, {"label": "exact_int", "power": 1.0, "err": 0.0},
             {"label": "cheap", "power": 0.5, "err": 0.1}]
    fig = plots.pareto_figure(pareto.pareto_front(cands, ["power", "err"]))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "exact = exact_int" in texts and "cheap" in texts
    assert legend_texts(fig.axes[0]) == ["Pareto front (3)"]


def test_high_level_plot_api_returns_figures():
    fig = plots.plot_distribution(["mitchell", "drum"], 5, {"k": [3, 4]}, samples=5000)
    assert isinstance(fig, Figure) and len(fig.legends[0].get_texts()) == 3 + 2
    fig = plots.plot_distribution(["mitchell"], 5, reference="full", samples=5000)
    assert fig.get_suptitle() == "Relative error distribution, M = 5, full reference"
    assert plots.plot_heatmap("mbm", 5).get_suptitle().startswith("Relative error of mbm t=0")
    assert "6-bit integer grid" in plots.plot_heatmap("mbm", 6, integer=True).get_suptitle()
    assert isinstance(plots.plot_operand(["mitchell"], 5), Figure)
