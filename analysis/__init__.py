"""Plots, Pareto fronts and reports for amsim's approximate multipliers.

* :mod:`amsim.analysis.data`: error grids of models and LUTs, model/parameter
  selection (``k=3..8`` sweeps), LUTs built in crash-isolated processes.
* :mod:`amsim.analysis.plots`: matplotlib :class:`~matplotlib.figure.Figure`
  builders (no pyplot state, Agg canvas; thread safe) and atomic PNG + SVG
  saving.
* :mod:`amsim.analysis.pareto`: non-dominated sets over any objectives, all
  minimised; candidates from model costs and statistics.
* :mod:`amsim.analysis.report`: a self-contained HTML report with its figures.
* :mod:`amsim.analysis.training`: curves and final accuracies of training
  studies (:mod:`amsim.experiments`).

The ``amsim`` command line exposes them as ``amsim plot``, ``amsim pareto``
and ``amsim report``; the training studies' command line draws the training
figures. Submodules are imported on first use, so ``import
amsim.analysis`` does not load matplotlib.

The repository keeps this package in its top-level ``analysis/`` folder;
pyproject.toml installs it as ``amsim.analysis``. It imports amsim by absolute
name and its own modules relatively; amsim's modules never import it, only the
command lines do.
"""

from __future__ import annotations

import importlib

from amsim.errors import AmsimError

_SUBMODULES = ("data", "plots", "pareto", "report", "training")

__all__ = ["AnalysisError", *_SUBMODULES]


class AnalysisError(AmsimError, ValueError):
    """Bad input to a plot, Pareto or report request (unknown objective, empty selection, ...)."""


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
