"""A self-contained HTML report of a set of mantissa multipliers, with its figures.

:func:`build_report` writes a folder::

    DIR/index.html          the page: no scripts, no external CSS; figures by relative path
    DIR/report.json         the same data (statistics, costs, front, versions, commands)
    DIR/figures/*.png|svg   error distributions, one heat map per model, error against operand A,
                            the Pareto front
    DIR/.amsim-report       marker: this folder may be replaced by the next report

The folder is built in a temporary folder next to ``DIR`` and swapped in with
two renames (the old one is moved aside, the new one renamed into place, the
old one deleted), so a reader never sees a half-written report and a failed
run leaves the previous report untouched. A non-empty ``DIR`` without the
marker is refused rather than deleted.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from amsim import __version__, generate, stats

from . import AnalysisError, data, pareto, plots

__all__ = ["build_report", "versions", "MARKER"]

MARKER = ".amsim-report"
_STAT_COLUMNS = (("mean |RE| %", "mean_abs_re", "{:.4f}"), ("bias %", "mean_re", "{:+.4f}"),
                 ("peak |RE| %", "max_abs_re", "{:.4f}"), ("std RE %", "std_re", "{:.4f}"),
                 ("error rate %", "error_rate", "{:.2f}"))


def _compiler_command() -> list[str]:
    try:
        from amsim import cbuild

        return list(cbuild.compiler())
    except (ImportError, AttributeError):
        import sysconfig

        return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def versions() -> dict:
    """Versions of everything that shaped the numbers: amsim, Python, libraries, C compiler, platform."""
    import cffi
    import matplotlib
    import numba
    import numpy

    cc = _compiler_command()
    try:
        proc = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=20)
        compiler = (proc.stdout or proc.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        compiler = "unknown"
    out = {"amsim": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "numba": numba.__version__, "matplotlib": matplotlib.__version__, "cffi": cffi.__version__,
           "compiler": f"{shlex.join(cc)}: {compiler}", "platform": platform.platform()}
    commit = _git_commit()
    if commit:
        out["amsim_git_commit"] = commit
    return out


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    if proc.returncode != 0:
        return ""
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def build_report(out, bits: int = 7, models=None, param_specs=(), *, objectives=("power", "mean_abs_re"),
                 pareto_reference: str = "truncated", rounding: str = "truncate", samples=None, seed: int = 0,
                 models_dirs=(), command: str | None = None, isolate: bool = True, max_parallel: int = 1,
                 runs=(), design: dict | None = None, grids=None) -> Path:
    """Write the report of ``models`` (default: every model supporting M = ``bits``) into folder ``out``.

    Parameters
    ----------
    out : str or Path
        The report folder; replaced atomically if it holds an earlier report.
    bits : int
        Mantissa width M (integer models are lifted from M + 1 bits).
    models, param_specs
        As :func:`amsim.analysis.data.select_configs` (``param_specs`` may sweep: ``["k=4..8"]``).
    objectives : sequence of str
        Objectives of the Pareto front (:data:`amsim.analysis.pareto.OBJECTIVES`).
    pareto_reference : {"truncated", "full"}
        The statistics reference the front uses.
    rounding, samples, seed
        Operand conversion and Monte Carlo size/seed of the ``full`` statistics.
    command : str, optional
        The command that produced the report, shown verbatim (the CLI passes its argv).
    isolate : bool
        Build each model's LUT in a forked process (a crashing model is listed as failed).
    runs : sequence of paths
        Training run or study folders (``amsim train``): adds a training section.
    design : dict, optional
        ``amsim study``'s verdict on one design: ``label``, ``summary`` (a paragraph) and ``check``
        (:meth:`amsim.check.Report.to_json`), shown first.
    grids : list of ErrorGrid, optional
        Grids the caller built already (:func:`amsim.analysis.data.build_grids`, with these
        ``rounding``, ``samples`` and ``seed``), reported instead of ``models`` and ``param_specs``.

    Returns
    -------
    Path
        ``out/index.html``.
    """
    out = Path(out)
    objectives = pareto.parse_objectives(objectives)
    _check_replaceable(out)
    failures = []
    if grids is None:
        configs = data.select_configs(models, param_specs, bits, models_dirs=models_dirs)
        grids, failed = data.build_grids(configs, bits, rounding=rounding, samples=samples, seed=seed,
                                         isolate=isolate, max_parallel=max_parallel)
        failures = [(label, str(exc)) for label, exc in failed]
    if not grids:
        raise AnalysisError("no model could be characterised: "
                            + "; ".join(f"{name}: {msg}" for name, msg in failures))
    candidates = [pareto.make_candidate(g.config, bits, g.stats.get(pareto_reference), reference=pareto_reference)
                  for g in grids]
    front = pareto.pareto_front(candidates, objectives)
    if command is None:
        command = _api_command(out, bits, models, param_specs, objectives, pareto_reference, rounding, samples, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        figures = _write_figures(stage, grids, front, bits, objectives)
        info = {
            "format": "amsim-report", "bits": bits, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                timespec="seconds"),
            "command": command, "versions": versions(), "rounding": rounding,
            "samples": grids[0].stats.get("full", {}).get("samples"), "seed": seed,
            "models": [_model_entry(g, bits) for g in grids],
            "failed": [{"label": name, "error": msg} for name, msg in failures],
            "pareto": pareto.to_json(front, reference=pareto_reference, bits=bits),
            "figures": figures,
            "regenerate": _regenerate_commands(grids, bits, rounding, samples, seed),
        }
        if runs:
            from . import training

            info["training"] = training.report_section(runs, stage)
        if design:
            info["design"] = design
        (stage / "report.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
        (stage / "index.html").write_text(_html(info, grids, front), encoding="utf-8")
        (stage / MARKER).write_text("amsim report folder: `amsim report` may replace it\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        for path in [stage, *stage.rglob("*")]:
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        _swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out / "index.html"


def _check_replaceable(out: Path):
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise AnalysisError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise AnalysisError(f"{out} is a non-empty folder that is not an amsim report (no {MARKER}); "
                            "refusing to replace it: choose another --out")


def _swap_in(stage: Path, out: Path):
    _check_replaceable(out)  # again: the folder may have changed while we worked
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        try:
            os.rename(stage, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, out)


def _write_figures(stage: Path, grids, front, bits, objectives) -> dict:
    folder = stage / "figures"
    folder.mkdir()
    figures = {}

    def save(key, fig, stem, caption):
        plots.save_figure(fig, folder / stem)
        figures[key] = {"png": f"figures/{stem}.png", "svg": f"figures/{stem}.svg", "caption": caption,
                        "title": fig.get_suptitle()}

    save("distribution", plots.distribution_figure(
        grids, title=f"Relative error distribution, M = {bits}, truncated reference"), "distribution",
        "Signed relative error over all mantissa pairs (shared bins; dashed: mean/bias, dotted: peak), "
        "and the cumulative distribution of |RE|.")
    for g in grids:
        save(f"heatmap:{g.label}", plots.heatmap_figure(g), f"heatmap_{g.config.slug}",
             f"Relative error of {g.label} over the (mantissa A, mantissa B) grid.")
    save("operand", plots.operand_figure(grids), "operand",
         "Mean (line) and extremes (band) of the relative error for each mantissa of operand A.")
    save("pareto", plots.pareto_figure(front), "pareto",
         f"Pareto front over {', '.join(objectives)} (all minimised). {plots.COST_NOTE}")
    return figures


def _model_entry(g, bits) -> dict:
    model, params = g.config.model, g.config.params
    cost_width = data.cost_bits(model, bits)
    cost = model.cost_for(cost_width, params)

    def cost_dict(c):
        return {"power": c.power, "area": c.area, "delay": c.delay, "node": c.node, "source": c.source,
                "conditions": c.conditions, "absolute": c.absolute}

    return {
        "label": g.label, "model": model.name, "params": params, "kind": model.kind,
        "lifted_from_bits": bits + 1 if model.kind == "int" else None,
        "description": model.description, "citation": model.citation, "source": str(model.path),
        "source_sha256": model.source_sha256, "cost_bits": cost_width,
        "cost": cost_dict(cost) if cost is not None else None,
        "all_costs": [cost_dict(c) for c in model.costs],
        "stats": g.stats, "table_sha256": g.lut.checksum,
        "header": _header_entry(model, params),
    }


def _header_entry(model, params) -> dict | None:
    """An EvoApproxLib circuit's header figures beside amsim's exhaustive integer statistics of the
    circuit at its own width (the report's own statistics are of the lifted mantissa multiplier, which
    the header does not describe); None for a model without header figures."""
    if not model.evoapprox:
        return None
    result = {}
    if len(model.bits) == 1 and model.bits[0] <= stats.MAX_EXHAUSTIVE_INT_BITS:
        result = generate.run_isolated(model.name, generate.characterise, model, model.bits[0], params)
    return stats.header_comparison(model, result)


def _param_args(params) -> str:
    return "".join(f" --param {k}={v}" for k, v in params.items())


def _regenerate_commands(grids, bits, rounding, samples, seed) -> list[str]:
    extra = (f" --rounding {rounding}" if rounding != "truncate" else "") + \
        (f" --samples {samples}" if samples else "") + (f" --seed {seed}" if seed else "")
    return [f"amsim generate-lut --bits {bits} --model {shlex.quote(g.config.model.name)}"
            f"{_param_args(g.config.params)}{extra}" for g in grids]


def _api_command(out, bits, models, param_specs, objectives, reference, rounding, samples, seed) -> str:
    names = None if not models else [getattr(m, "name", str(m)) for m in models]
    specs = [s if isinstance(s, str) else f"{s[0]}={','.join(map(str, s[1]))}" for s in param_specs]
    return (f"amsim.analysis.report.build_report({str(out)!r}, bits={bits}, models={names!r}, "
            f"param_specs={specs!r}, objectives={list(objectives)!r}, pareto_reference={reference!r}, "
            f"rounding={rounding!r}, samples={samples!r}, seed={seed!r})")


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.front td { background: #fff3f0; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }
.note { background: #fffbe6; border-left: 4px solid #e6c200; padding: 0.5em 0.8em; }
.fail { background: #fdecec; border-left: 4px solid #d33; padding: 0.5em 0.8em; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; font-size: 0.88em; }
.model { margin-bottom: 1.2em; } .muted { color: #666; font-size: 0.9em; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(fig: dict, alt: str) -> str:
    return (f'<figure><a href="{_e(fig["svg"])}"><img src="{_e(fig["png"])}" alt="{_e(alt)}"></a>'
            f'<figcaption>{_e(fig["caption"])} <a href="{_e(fig["svg"])}">SVG</a></figcaption></figure>')


def _stat_cell(stats, key, fmt):
    value = (stats or {}).get(key)
    if value is None:
        return '<td class="num">-</td>'
    return f'<td class="num">{_e(fmt.format(100 * value))}</td>'


def _cost_text(cost: dict | None) -> str:
    if not cost:
        return ""
    parts = [f"{k} {cost[k]:g}" for k in ("power", "area", "delay") if cost.get(k) is not None]
    units = {"power_mw": "mW", "area_um2": "um²", "delay_ns": "ns"}
    parts += [f"{v:g} {units.get(k, k)}" for k, v in cost.get("absolute", {}).items()]
    where = ", ".join(x for x in (cost.get("node"), cost.get("source")) if x)
    cond = " ".join(f"{k}={v}" for k, v in cost.get("conditions", {}).items())
    return ", ".join(parts) + (f" ({where})" if where else "") + (f"; for {cond}" if cond else "")


def _design_html(design: dict) -> str:
    """``amsim study``'s verdict: the summary paragraph, then a line per checked property."""
    check = design["check"]
    how = (f"exhaustive over all {check['pairs']} operand pairs" if check["exhaustive"] else
           f"sampled: hypothesis, {check['examples']} examples per property, seed {check['seed']}")
    rows = []
    for r in check["results"]:
        detail = r.get("counterexample_text") or r.get("note", "")
        bound = f" &le; {_e(r['bound'])}" if "bound" in r else ""
        cls = "" if r["status"] == "holds" else ' class="fail"'
        rows.append(f"<tr{cls}><td>{_e(r['property'])}{bound}</td><td>{_e(r['operands'])}</td>"
                    f"<td>{_e(', '.join(r['sources']))}</td><td>{_e(r['status'])}</td><td>{_e(r['method'])}</td>"
                    f"<td>{_e(detail)}</td></tr>")
    return (f'<h2>Verdict</h2><p class="summary">{_e(design["summary"])}</p>'
            f"<h3>Properties (amsim check)</h3><p class='muted'>{_e(how)}; docs/designs.md defines each "
            "property.</p><table><tr><th>property</th><th>operands</th><th>from</th><th>status</th>"
            "<th>method</th><th>counterexample or note</th></tr>" + "".join(rows) + "</table>")


def _html(info: dict, grids, front) -> str:
    bits = info["bits"]
    full_samples = info.get("samples")
    design = info.get("design")
    title = (f"amsim study: {design['label']}" if design else f"amsim report: M = {bits} mantissa multipliers")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
           f'<p class="muted">Generated {_e(info["created"])} by amsim {_e(info["versions"]["amsim"])}. '
           f'{len(grids)} model configuration(s). Data: <a href="report.json">report.json</a>.</p>']
    if info["failed"]:
        out.append('<div class="fail"><strong>Failed:</strong><ul>'
                   + "".join(f"<li>{_e(f['label'])}: {_e(f['error'])}</li>" for f in info["failed"]) + "</ul></div>")

    if design:
        out.append(_design_html(design))

    # Statistics table
    out.append("<h2>Error statistics</h2>")
    full_what = (f"float32 operands with uniform random dropped bits, Monte Carlo ({full_samples} pairs, "
                 f"seed {info['seed']}, operand rounding {info['rounding']})") if full_samples else \
        "float32 operands with uniform random dropped bits, Monte Carlo"
    out.append(f"<p>Two references (docs/metrics.md): <strong>truncated</strong>: the exact product of the "
               f"M-bit operands, exhaustive over all 2<sup>{2 * bits}</sup> mantissa pairs; <strong>full</strong>: "
               f"the exact product of {_e(full_what)}. Ratios in %. Bias = mean RE; peak = max |RE|.</p>")
    head = "".join(f"<th>{_e(t)}</th>" for t, _, _ in _STAT_COLUMNS)
    out.append('<table><tr><th rowspan="2">model</th>'
               f'<th colspan="{len(_STAT_COLUMNS)}">truncated reference</th>'
               f'<th colspan="{len(_STAT_COLUMNS)}">full reference</th></tr>'
               f"<tr>{head}{head}</tr>")
    for g in grids:
        cells = "".join(_stat_cell(g.stats.get("truncated"), k, f) for _, k, f in _STAT_COLUMNS)
        cells += "".join(_stat_cell(g.stats.get("full"), k, f) for _, k, f in _STAT_COLUMNS)
        out.append(f"<tr><td>{_e(g.label)}</td>{cells}</tr>")
    out.append("</table>")

    # Models
    out.append("<h2>Models</h2>")
    for m in info["models"]:
        kind = ("float mantissa model" if m["kind"] == "float"
                else f"integer model lifted from {m['lifted_from_bits']}-bit operands (docs/numerics.md §4)")
        cost = (f"<strong>Cost</strong> (relative to an exact multiplier, exact = 1): {_e(_cost_text(m['cost']))}"
                if m["cost"] else
                f"<strong>Cost</strong>: no cost data for this configuration (looked up for {m['cost_bits']}-bit "
                "operands)" + (". Published figures: " + "; ".join(_e(_cost_text(c)) for c in m["all_costs"])
                               if m["all_costs"] else ""))
        header = ""
        if m.get("header"):
            header = f"<p>{_e(stats.format_header(m['header']))}</p>" + "".join(
                f"<p><strong>Warning</strong>: {_e(message)}</p>" for message in m["header"]["mismatches"])
        out.append(f'<div class="model"><h3>{_e(m["label"])}</h3>'
                   f"<p>{_e(m['description']) or '<em>no description</em>'} <span class='muted'>({_e(kind)})</span></p>"
                   f"<p><strong>Citation</strong>: {_e(m['citation']) or '<em>none given</em>'}</p><p>{cost}</p>{header}"
                   f"<p class='muted'>Source {_e(m['source'])} (sha256 {_e(m['source_sha256'][:16])}…), "
                   f"table sha256 {_e(m['table_sha256'][:16])}…</p></div>")

    figs = info["figures"]
    out.append("<h2>Error distributions</h2>")
    out.append(_figure(figs["distribution"], "relative error distributions"))
    out.append("<h2>Heat maps</h2><p>Rows: mantissa of operand A; columns: mantissa of operand B. Diverging "
               "colours centred on 0 (red: the multiplier overestimates, blue: it underestimates).</p>"
               '<div class="grid">')
    for g in grids:
        out.append(_figure(figs[f"heatmap:{g.label}"], f"heat map of {g.label}"))
    out.append("</div>")
    out.append("<h2>Error against operand value</h2>")
    out.append(_figure(figs["operand"], "relative error against operand A"))

    # Pareto
    pj = info["pareto"]
    out.append("<h2>Pareto front</h2>")
    out.append(f'<p class="note">{_e(plots.COST_NOTE)} Cost figures are matched to each configuration '
               "(a lifted integer model at mantissa width M uses its (M + 1)-bit figure); configurations "
               "without a published figure are listed as <em>no cost data</em>, never given a default.</p>")
    out.append(_figure(figs["pareto"], "Pareto front"))
    objectives = pj["objectives"]
    out.append("<table><tr><th>candidate</th>" + "".join(f"<th>{_e(pareto.objective_label(o))}</th>"
                                                           for o in objectives) + "<th>status</th></tr>")
    for group in ("front", "dominated", "no_cost_data"):
        for c in pj[group]:
            status = c["status"] + (f" by {c['dominated_by']}" if "dominated_by" in c else "") + \
                (f" ({', '.join(c['missing'])})" if "missing" in c else "")
            vals = "".join(f'<td class="num">{_e(pareto.format_value(o, c.get(o)))}</td>' for o in objectives)
            cls = ' class="front"' if group == "front" else ""
            out.append(f"<tr{cls}><td>{_e(c['label'])}</td>{vals}<td>{_e(status)}</td></tr>")
    out.append(f"</table><p class='muted'>All objectives minimised; statistics from the "
               f"{_e(pj['reference'])} reference. Candidates with identical objective vectors are all kept.</p>")

    if info.get("training"):
        from . import training

        out.append(training.report_html(info["training"]))

    # Reproduce
    out.append("<h2>How this report was made</h2><p>Command:</p>")
    out.append(f"<pre>{_e(info['command'])}</pre>")
    out.append("<p>Each LUT on its own:</p><pre>" + _e("\n".join(info["regenerate"])) + "</pre>")
    out.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info["versions"].items())
               + "</table>")
    out.append("</body></html>\n")
    return "\n".join(out)
