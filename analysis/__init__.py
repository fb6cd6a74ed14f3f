"""Plots, Pareto fronts and reports for amsim's approximate multipliers.

* :mod:`analysis.data`: error grids of models and LUTs, model/parameter
  selection (``k=3..8`` sweeps), LUTs built in crash-isolated processes.
* :mod:`analysis.plots`: matplotlib :class:`~matplotlib.figure.Figure`
  builders (no pyplot state, Agg canvas; thread safe) and atomic PNG + SVG
  saving.
* :mod:`analysis.pareto`: non-dominated sets over any objectives, all
  minimised; candidates from model costs and statistics.
* :mod:`analysis.report`: a self-contained HTML report with its figures.

The ``amsim`` command line exposes them as ``amsim plot``, ``amsim pareto``
and ``amsim report``. Submodules are imported on first use, so ``import
analysis`` does not load matplotlib.
"""

from __future__ import annotations

import importlib

from amsim.errors import AmsimError

__all__ = ["AnalysisError", "data", "plots", "pareto", "report"]


class AnalysisError(AmsimError, ValueError):
    """Bad input to a plot, Pareto or report request (unknown objective, empty selection, ...)."""


def __getattr__(name):
    if name in ("data", "plots", "pareto", "report"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
