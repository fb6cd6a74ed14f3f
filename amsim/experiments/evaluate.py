"""Post-training quantization of one trained model on several multipliers, no training: ``amsim evaluate``.

The trained float model (a Keras file, or the ``model.keras`` of an ``amsim train`` run) is
evaluated on the dataset's test split as it is, then once per multiplier:

* an 8-bit circuit (``uint8:exact_int``, ``int8:mul8s_trunc:k=4``, ...) by
  :func:`amsim.keras.quantize`: the model's quantized copy, its input ranges calibrated on the first
  ``calibration`` images of the training split (docs/quantized.md);
* a float multiplier (``mbm:7``) by :func:`amsim.keras.approximate`, which needs no calibration;
* ``float32``: an exact copy.

Each circuit is placed by its error (amsim's exhaustive integer statistics of its product table:
MAE, WCE) and its declared power (:func:`amsim.experiments.energy.relative_power`), and the
circuits no other circuit beats on both error and test accuracy form the Pareto front
(:func:`amsim.analysis.pareto.pareto_front`, the one definition of the front). Accuracy differences
are given against the model itself and against the exact circuit of the same scheme when it is
among the multipliers.

Everything is checked before anything is written: the model file and its fit to the dataset (as
``amsim train --model-file`` checks them), the calibration size, the multipliers. The results land
in ``out`` as ``evaluation.json`` and the figures ``pareto-mae`` (and ``pareto-power`` when a
circuit declares a power), PNG and SVG, each written whole or not at all.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import AmsimError, RangeError
from . import ExperimentError
from .datasets import load_dataset, standardize_per_image
from .energy import relative_power
from .multipliers import MultiplierSpec

__all__ = ["evaluate_multipliers", "EvaluationInputError", "DEFAULT_CALIBRATION", "RESULTS_FILE",
           "EVALUATION_HEADER", "format_evaluation"]

#: Calibration images (from the training split) when none is said: a few hundred set the ranges.
DEFAULT_CALIBRATION = 512
#: The results file in the output folder.
RESULTS_FILE = "evaluation.json"
#: The figures' objective of accuracy, minimised like the others: the test error in per cent.
TEST_ERROR = "test error (%)"
#: Test images per evaluation call (it changes no result: a calibrated copy's ranges are fixed).
_BATCH = 256


class EvaluationInputError(ExperimentError, RangeError):
    """Bad input to ``amsim evaluate``: a file that is no Keras model for the dataset, a calibration size
    out of range, a model with nothing to quantize (a usage error: exit 2)."""


def evaluate_multipliers(model_file, multipliers, *, dataset: str | None = None, data_dir=None,
                         calibration: int = DEFAULT_CALIBRATION, out=None, models_dirs=(), log=None) -> dict:
    """Evaluate ``model_file`` on ``dataset``'s test split as it is and on each of ``multipliers``.

    Args:
        model_file: a ``.keras`` (or legacy ``.h5``) file of a trained image classifier.
        multipliers: :class:`~amsim.experiments.multipliers.MultiplierSpec` list (already parsed and
            checked by :func:`~amsim.experiments.multipliers.parse_multipliers`).
        dataset: the dataset's name; None: the one the model was trained on when it is the
            ``model.keras`` of an ``amsim train`` run, else ``digits``.
        data_dir: folder of the dataset's files.
        calibration: training images the quantized copies calibrate their input ranges on.
        out: folder for ``evaluation.json`` and the figures (None: nothing is written).
        models_dirs: folders of C models (for their cost figures).
        log: called with a line of progress per multiplier.

    Returns:
        The results (``evaluation.json``'s content).

    Raises:
        EvaluationInputError: a model file that is not a Keras model for the dataset, a calibration
            size outside the training split, a model with no layer a multiplier applies to.
    """
    from .runner import _tensorflow, model_from_file
    from .study import _write_json

    log = log or (lambda line: None)
    model_file = Path(model_file)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise EvaluationInputError(f"--out {out} exists and is not a folder")
    trained = _training_run(model_file)
    dataset = dataset or (trained.dataset if trained else "digits")
    data = load_dataset(dataset, data_dir)
    if not 1 <= int(calibration) <= len(data.x_train):
        raise EvaluationInputError(f"--calibration {calibration} must lie in 1..{len(data.x_train)}: the "
                                   f"{dataset} training split holds {len(data.x_train)} images")
    # A model trained by amsim train takes its architecture's preprocessing; any other, pixels in [0, 1].
    preprocess = trained.preprocess if trained and trained.dataset == dataset else "unit"
    x_train, x_test = ((standardize_per_image(x) for x in (data.x_train, data.x_test)) if preprocess == "per_image"
                       else (data.x_train, data.x_test))
    _tensorflow()
    try:
        model = model_from_file(model_file, data)
    except ExperimentError as exc:  # train reports these as failures; here the file is the whole input
        raise EvaluationInputError(str(exc)) from None
    x_calibration = x_train[:calibration]

    reference = _evaluate(model, x_test, data.y_test)
    log(f"model as saved: test accuracy {reference['accuracy']:.4f}, loss {reference['loss']:.4f}")
    rows = []
    for spec in multipliers:
        copy = _converted(model, spec, x_calibration)
        row = {"multiplier": spec.label, "text": spec.text, "scheme": spec.quantize,
               **_evaluate(copy, x_test, data.y_test), "coverage": _coverage_fraction(copy)}
        row.update(_circuit_error(spec, models_dirs))
        figure = relative_power(spec, models_dirs)
        row["relative_power"], row["power_source"] = figure.power, figure.source
        rows.append(row)
        log(f"{spec.label}: test accuracy {row['accuracy']:.4f}, loss {row['loss']:.4f}")
    _compare(rows, reference, {spec.label: spec for spec in multipliers})
    results = {"model_file": str(model_file), "dataset": dataset, "preprocess": preprocess,
               "test_images": int(len(x_test)), "calibration_images": int(calibration),
               "model": reference, "rows": rows, "figures": []}
    fronts = _fronts(rows)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        results["figures"] = [str(p) for p in _draw(fronts, out, model_file.name, dataset)]
        _write_json(out / RESULTS_FILE, results)  # whole or not at all
    return results


def _training_run(model_file: Path):
    """The :class:`~amsim.experiments.runner.RunConfig` of the ``amsim train`` run whose ``model.keras``
    this is (its ``config.json`` beside it), or None."""
    from .runner import RunConfig

    try:
        return RunConfig.from_dict(json.loads((model_file.parent / "config.json").read_text())["run"])
    except (OSError, ValueError, KeyError, TypeError, AmsimError):
        return None


def _converted(model, spec: MultiplierSpec, x_calibration):
    """``model``'s copy computing with ``spec``: quantized and calibrated, approximate, or exact."""
    from .runner import convert_model

    if not spec.quantize:
        try:
            return convert_model(model, spec)  # float32: an exact copy; a float multiplier: no calibration
        except ExperimentError as exc:  # no layer that multiplies
            raise EvaluationInputError(str(exc)) from None
    from amsim.keras import CalibrationError, ExactLayersWarning, quantize

    arguments = spec.layer_arguments()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExactLayersWarning)  # the coverage says what stayed exact
        try:
            return quantize(model, x_calibration, arguments.pop("lut"), scheme=arguments.pop("quantize"),
                            **arguments)
        except CalibrationError as exc:  # no quantized layer: nothing in the model multiplies
            raise EvaluationInputError(f"multiplier {spec.text}: {exc}") from None


def _evaluate(model, x, y) -> dict:
    import tensorflow as tf

    from .runner import _LOSS

    model.compile(loss=_LOSS, metrics=["accuracy"])
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(_BATCH)
    scores = model.evaluate(batches, verbose=0, return_dict=True)
    return {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"])}


def _coverage_fraction(model) -> float | None:
    """The share of the forward products the multiplier performs (the rest stayed exact float32)."""
    from amsim.keras.coverage import coverage

    return coverage(model).to_dict()["fraction"]


def _circuit_error(spec: MultiplierSpec, models_dirs) -> dict:
    """An 8-bit circuit's exhaustive integer error statistics (MAE, WCE, error rate), from amsim's sweep
    of its C model (:func:`amsim.generate.integer_lut`) or the statistics an amsim LUT file carries;
    None for float multipliers and for tables that carry none."""
    empty = {"mae": None, "wce": None, "error_rate": None, "error_source": None}
    if not spec.quantize:
        return empty
    if spec.kind == "lut":
        from ..lut import load_any

        lut = load_any(spec.name) if spec.name.endswith(".npz") else None
        stats = (lut.stats or {}).get("integer") if lut is not None else None
        source = f"the statistics stored in {spec.name}" if stats else None
    else:
        from ..generate import integer_lut
        from ..models import find_model

        stats = integer_lut(find_model(spec.model, models_dirs), 8, dict(spec.params)).stats["integer"]
        source = "amsim's exhaustive sweep of all 65536 operand pairs"
    if not stats:
        return {**empty, "error_source": f"{spec.name} carries no statistics"}
    return {"mae": stats["mae"], "wce": stats["wce"], "error_rate": stats["error_rate"], "error_source": source}


def _compare(rows, reference: dict, specs: dict) -> None:
    """Each row's accuracy drop (in accuracy fractions, positive: worse) against the model as saved and,
    for a circuit, against the exact circuit of its scheme when it was evaluated too."""
    accuracy = {r["multiplier"]: r["accuracy"] for r in rows}
    for row in rows:
        row["drop_vs_model"] = reference["accuracy"] - row["accuracy"]
        baseline = specs[row["multiplier"]].exact_baseline
        row["exact_baseline"] = baseline if baseline in accuracy else None
        row["drop_vs_exact"] = accuracy[baseline] - row["accuracy"] if row["exact_baseline"] else None


def _fronts(rows) -> dict:
    """The Pareto fronts of the 8-bit circuits: test error against MAE and, when a circuit declares one,
    against power (all minimised); each row gets its place (``pareto``: objective -> status)."""
    from amsim.analysis.pareto import pareto_front

    circuits = [r for r in rows if r["scheme"]]
    candidates = [{"label": r["multiplier"], "mae": r["mae"], "power": r["relative_power"],
                   TEST_ERROR: 100 * (1 - r["accuracy"])} for r in circuits]
    fronts = {}
    for cost in ("mae", "power"):
        if cost == "power" and not any(c["power"] is not None for c in candidates):
            continue
        result = pareto_front(candidates, [cost, TEST_ERROR])
        fronts[cost] = result
        for i, row in enumerate(circuits):
            row.setdefault("pareto", {})[cost] = result.status(i)
    for row in rows:
        row.setdefault("pareto", {})
    return fronts


_AXES = {"mae": "MAE", "power": "power"}
_NOTES = {
    "mae": "MAE: mean |circuit product - exact product| over all 8-bit operand pairs (product units); "
           "uint8 and int8 circuits are in their own units.",
    "power": "Power: the circuit's declared figure, relative to the exact 8-bit multiplier of its scheme "
             "(uint8: exact_int, int8: mul8s_exact = 1); figures from different sources are not strictly "
             "comparable.",
}


def _draw(fronts: dict, out: Path, model_name: str, dataset: str) -> list[Path]:
    from amsim.analysis import plots

    written = []
    for cost, result in fronts.items():
        fig = plots.pareto_figure(result, title=f"{model_name} quantized after training, {dataset} test set: "
                                                f"test error against circuit {_AXES[cost]}", note=_NOTES[cost])
        written += plots.save_figure(fig, out / f"pareto-{cost}")
    return written


EVALUATION_HEADER = ["multiplier", "test acc", "loss", "drop vs model", "drop vs exact int", "MAE", "WCE",
                     "rel. power", "front (MAE)"]


def format_evaluation(results: dict) -> tuple[list[str], list[list[str]]]:
    """The table ``amsim evaluate`` prints: accuracies in per cent, drops in points, unknowns as "-"."""
    def num(value, fmt):
        return "-" if value is None else fmt.format(value)

    model = results["model"]
    cells = [["model as saved", f"{100 * model['accuracy']:.2f}", f"{model['loss']:.4f}", "-", "-", "-", "-", "-",
              "-"]]
    for r in results["rows"]:
        cells.append([r["multiplier"], f"{100 * r['accuracy']:.2f}", f"{r['loss']:.4f}",
                      num(None if r["drop_vs_model"] is None else 100 * r["drop_vs_model"], "{:+.2f}"),
                      num(None if r["drop_vs_exact"] is None else 100 * r["drop_vs_exact"], "{:+.2f}"),
                      num(r["mae"], "{:.4g}"), num(r["wce"], "{:.4g}"), num(r["relative_power"], "{:.3g}"),
                      r["pareto"].get("mae", "-")])
    return EVALUATION_HEADER, cells
