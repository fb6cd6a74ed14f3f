"""How many multiplications a network performs, and what they would cost on each multiplier.

Counting
--------
Only the products of the layers :func:`amsim.keras.approximate` replaces are counted (Dense,
Conv2D, DepthwiseConv2D, MultiHeadAttention): those are the ones an approximate multiplier would
perform. Per example, from the layer's input and output shapes:

* Dense: ``L * in * units`` (``L``: the product of the dimensions between batch and features).
* Conv2D: ``Ho * Wo * Cout * kh * kw * Cin / groups``.
* DepthwiseConv2D: ``Ho * Wo * Cin * depth_multiplier * kh * kw``.
* MultiHeadAttention: the four projections (and the gate's, with ``use_gate``) as Dense layers,
  ``h * Tq * Tv * key_dim`` for the scores and ``h * Tq * Tv * value_dim`` for the weighted values.

Each GEMM ``Y = X W`` has two gradients of the same size as the forward product: ``dX = dY Wᵀ``
(*input gradient*) and ``dW = Xᵀ dY`` (*weight gradient*). The input gradient is only computed
when something upstream is trainable (TensorFlow skips the first layer's); the weight gradient only
for trainable layers. The attention GEMMs multiply two activations, so both of their gradients are
input gradients. A training example costs forward + input gradient + weight gradient; an inference
costs the forward products.

Pricing
-------
A multiplier's cost comes from its C model's published ``cost`` metadata: power relative to an
exact multiplier of the same width (:class:`amsim.models.Cost`; a lifted integer model at mantissa
width M uses its (M+1)-bit figure, the significand multiplier it replaces). An energy is therefore
a sum of counts of "exact multiplies at mantissa width M" (the exact float32 multiply is M = 23,
bfloat16's M = 7). Two energies in the same unit compare directly; across widths they compare only
through absolute figures of exact multipliers, of which amsim bundles the ones below with their
source. Whatever has no figure is reported as unknown, never estimated.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

from . import ExperimentError
from .multipliers import FLOAT32, MultiplierSpec

__all__ = ["LayerCount", "MultiplicationCounts", "count_multiplications", "CostFigure", "relative_power",
           "EXACT_ENERGY_PJ", "Energy", "run_energy", "energy_table", "board_energy_meter", "UNKNOWN"]

UNKNOWN = "unknown"
FLOAT32_M = 23
BFLOAT16_M = 7

_HOROWITZ = "M. Horowitz, \"Computing's energy problem (and what we can do about it)\", ISSCC 2014, 45 nm"
#: Energy of one exact floating-point multiply, by mantissa width M: (format, picojoules or None, source).
EXACT_ENERGY_PJ = {
    FLOAT32_M: ("float32", 3.7, _HOROWITZ),
    10: ("float16", 1.1, _HOROWITZ),
    BFLOAT16_M: ("bfloat16", None, "no published figure bundled"),
}


# ----------------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerCount:
    """Multiplications of one layer per example."""

    name: str
    kind: str
    forward: int
    input_grad: int
    weight_grad: int

    @property
    def training(self) -> int:
        return self.forward + self.input_grad + self.weight_grad


@dataclasses.dataclass(frozen=True)
class MultiplicationCounts:
    """Per-example multiplications of a model, layer by layer."""

    layers: tuple

    @property
    def forward(self) -> int:
        return sum(c.forward for c in self.layers)

    @property
    def input_grad(self) -> int:
        return sum(c.input_grad for c in self.layers)

    @property
    def weight_grad(self) -> int:
        return sum(c.weight_grad for c in self.layers)

    @property
    def backward(self) -> int:
        return self.input_grad + self.weight_grad

    @property
    def training(self) -> int:
        """Per training example: forward, input and weight gradients."""
        return self.forward + self.backward

    def per_epoch(self, train_examples: int, validation_examples: int = 0) -> dict:
        """Multiplications of one epoch: training steps over ``train_examples`` and the validation pass."""
        return {"forward": self.forward * (train_examples + validation_examples),
                "input_grad": self.input_grad * train_examples, "weight_grad": self.weight_grad * train_examples}

    def to_dict(self) -> dict:
        return {"per_example": {"forward": self.forward, "input_grad": self.input_grad,
                                "weight_grad": self.weight_grad, "training": self.training,
                                "inference": self.forward},
                "layers": [dataclasses.asdict(c) for c in self.layers]}


def _dims(shape) -> list[int]:
    dims = list(shape[1:])
    if any(d is None for d in dims):
        raise ExperimentError(f"cannot count multiplications for an unknown dimension in shape {tuple(shape)}")
    return [int(d) for d in dims]


def _history(tensor):
    return getattr(tensor, "_keras_history", None)


def _upstream_trainable(tensor, memo: dict) -> bool:
    """True when a trainable layer lies upstream of ``tensor`` (then its gradient is computed)."""
    history = _history(tensor)
    if history is None:
        return False
    op, node_index = history[0], history[1]
    key = (id(op), node_index)
    if key not in memo:
        memo[key] = False  # guards against cycles while recursing
        own = bool(getattr(op, "trainable_weights", None))
        node = op._inbound_nodes[node_index]
        memo[key] = own or any(_upstream_trainable(t, memo) for t in node.input_tensors)
    return memo[key]


def _graph_nodes(model) -> list:
    """The call nodes of a built Keras model's graph, inputs first (Sequential models wrap a functional one)."""
    graph = getattr(model, "_functional", None) or model
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:
        raise ExperimentError(f"cannot count the multiplications of {type(model).__name__} {model.name!r}: "
                              "it is not a built Sequential or functional Keras model")
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _node_count(node, memo: dict) -> LayerCount | None:
    from keras import layers as L

    layer = node.operation
    if not _is_counted(layer):
        return None
    inputs = node.input_tensors
    trainable = bool(layer.trainable and layer.trainable_weights)
    if isinstance(layer, L.MultiHeadAttention):
        return _attention_count(layer, inputs, trainable, memo)
    needs_dx = any(_upstream_trainable(t, memo) for t in inputs)
    x = _dims(inputs[0].shape)
    y = _dims(node.output_tensors[0].shape)
    if isinstance(layer, L.Dense):
        forward = math.prod(x[:-1]) * x[-1] * layer.units
    else:
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        cin = x[-1] if channels_last else x[0]
        spatial = y[:-1] if channels_last else y[1:]
        kh, kw = layer.kernel_size
        if isinstance(layer, L.DepthwiseConv2D):
            forward = math.prod(spatial) * cin * layer.depth_multiplier * kh * kw
        else:
            forward = math.prod(spatial) * layer.filters * kh * kw * cin // layer.groups
    return LayerCount(layer.name, type(layer).__name__, forward, forward if needs_dx else 0,
                      forward if trainable else 0)


def _attention_count(layer, inputs, trainable, memo) -> LayerCount:
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    q, v, k = (_dims(t.shape) for t in (query, value, key))
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    out_dim = q[-1] if layer._output_shape is None else math.prod(
        layer._output_shape if isinstance(layer._output_shape, (tuple, list)) else (layer._output_shape,))
    tq, tv = math.prod(q[:-1]), math.prod(v[:-1])
    projections = [(query, tq * q[-1] * heads * key_dim), (key, tv * k[-1] * heads * key_dim),
                   (value, tv * v[-1] * heads * value_dim)]
    if getattr(layer, "_use_gate", False):  # the gate is a projection of the query to the values' size
        projections.append((query, tq * q[-1] * heads * value_dim))
    attention = heads * tq * tv * key_dim + heads * tq * tv * value_dim
    output = tq * heads * value_dim * out_dim
    forward = sum(n for _, n in projections) + attention + output
    input_grad = sum(n for t, n in projections if _upstream_trainable(t, memo)) + 2 * attention + output
    weight_grad = sum(n for _, n in projections) + output if trainable else 0
    return LayerCount(layer.name, "MultiHeadAttention", forward, input_grad, weight_grad)


def count_multiplications(model) -> MultiplicationCounts:
    """Per-example multiplications of a built Keras model's Dense/Conv2D/DepthwiseConv2D/MultiHeadAttention
    layers (every call of a shared layer counts; nested models are counted from their own inputs)."""
    import keras

    memo: dict = {}
    counts = []
    for node in _graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model) and not _is_counted(layer):
            counts += count_multiplications(layer).layers
        else:
            count = _node_count(node, memo)
            if count is not None:
                counts.append(count)
    return MultiplicationCounts(tuple(counts))


def _is_counted(layer) -> bool:
    from keras import layers as L

    return isinstance(layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D, L.MultiHeadAttention))


# ----------------------------------------------------------------------------------------------
# Pricing
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CostFigure:
    """Power of a multiplier relative to an exact one at mantissa width ``bits``, with its source."""

    power: float | None
    bits: int
    source: str

    @property
    def known(self) -> bool:
        return self.power is not None


def relative_power(spec: MultiplierSpec, models_dirs=()) -> CostFigure:
    """``spec``'s published relative power, or an unknown figure saying what is missing."""
    if spec.kind == FLOAT32:
        return CostFigure(1.0, FLOAT32_M, "the float32 baseline itself")
    from ..errors import AmsimError
    from ..generate import mantissa_width
    from ..models import find_model

    name, params = spec.model, dict(spec.params)  # a model's file when it is not built in: its own cost figures
    if spec.kind == "lut":
        from ..lut import load_any

        lut = load_any(spec.name)
        name, params = lut.model, dict(lut.params)
        if not name:
            return CostFigure(None, spec.bits, f"LUT {spec.name} names no model, so no cost data")
    try:
        model = find_model(name, models_dirs)
        width = mantissa_width(model, spec.bits)
        cost = model.cost_for(width, params)
    except AmsimError as exc:
        return CostFigure(None, spec.bits, f"no cost data ({exc})")
    if cost is None or cost.power is None:
        return CostFigure(None, spec.bits, f"model {model.name} has no power figure for {width}-bit operands")
    where = ", ".join(x for x in (cost.source, cost.node) if x)
    lifted = f" ({width}-bit significand multiplier)" if model.kind == "int" else ""
    return CostFigure(float(cost.power), spec.bits, f"{where}{lifted}; relative to an exact multiplier of that width")


@dataclasses.dataclass(frozen=True)
class Energy:
    """A multiplier energy as counts of exact multiplies per mantissa width ({M: count}), or unknown."""

    units: dict | None
    note: str = ""

    @property
    def known(self) -> bool:
        return self.units is not None

    def joules(self, exact_energy_pj=None) -> float | None:
        table = exact_energy_pj or EXACT_ENERGY_PJ
        if self.units is None or any(table.get(m, (None, None))[1] is None for m in self.units):
            return None
        return sum(n * table[m][1] for m, n in self.units.items()) * 1e-12

    def ratio(self, other: Energy, exact_energy_pj=None) -> float | None:
        """self / other: directly when both are in one unit, else through absolute figures, else None."""
        if self.units is None or other.units is None:
            return None
        if set(self.units) == set(other.units) and len(self.units) == 1:
            (m,) = self.units
            return self.units[m] / other.units[m] if other.units[m] else None
        a, b = self.joules(exact_energy_pj), other.joules(exact_energy_pj)
        return a / b if a is not None and b else None


def run_energy(counts: dict, spec: MultiplierSpec, figure: CostFigure, gradient: str = "approximate") -> Energy:
    """Energy of ``counts`` ({"forward", "input_grad", "weight_grad"} multiplications) on ``spec``.

    With ``gradient="exact"`` the gradients are exact float32 products.
    """
    total = sum(counts.values())
    if spec.kind == FLOAT32:
        return Energy({FLOAT32_M: total})
    if not figure.known:
        return Energy(None, figure.source)
    approximate = total if gradient == "approximate" else counts["forward"]
    units = {figure.bits: approximate * figure.power}
    if total - approximate:
        units[FLOAT32_M] = units.get(FLOAT32_M, 0) + (total - approximate)
    return Energy(units)


def _fmt(value, fmt="{:.3g}"):
    return UNKNOWN if value is None else fmt.format(value)


def energy_table(rows, exact_energy_pj=None) -> list[dict]:
    """One line per run description ``{"label", "spec", "gradient", "epoch_counts", "epochs"}``.

    Columns: multiplications per epoch, energy per epoch and per run in joules, the ratios to the
    same multiplications on exact float32 and exact bfloat16 multipliers, the cost figure and its
    source. Missing data stays "unknown".
    """
    table = exact_energy_pj or EXACT_ENERGY_PJ
    out = []
    for row in rows:
        spec, counts = row["spec"], row["epoch_counts"]
        figure = row.get("figure") or relative_power(spec)
        energy = run_energy(counts, spec, figure, row.get("gradient", "approximate"))
        total = sum(counts.values())
        per_epoch = energy.joules(table)
        out.append({
            "label": row["label"], "multiplications_per_epoch": total,
            "energy_per_epoch_j": per_epoch,
            "energy_per_run_j": None if per_epoch is None else per_epoch * row.get("epochs", 1),
            "vs_float32": energy.ratio(Energy({FLOAT32_M: total}), table),
            "vs_bfloat16": energy.ratio(Energy({BFLOAT16_M: total}), table),
            "relative_power": figure.power, "power_source": figure.source,
            "exact_energy_sources": {table[m][0]: table[m][2] for m in (energy.units or {}) if m in table},
        })
    return out


def format_energy(table: list[dict]) -> list[list[str]]:
    """The table's cells as text, unknowns spelled out."""
    return [[r["label"], f"{r['multiplications_per_epoch']:.3e}", _fmt(r["energy_per_epoch_j"]),
             _fmt(r["energy_per_run_j"]), _fmt(r["vs_float32"], "{:.3f}"), _fmt(r["vs_bfloat16"], "{:.3f}"),
             _fmt(r["relative_power"], "{:.3g}"), r["power_source"]] for r in table]


ENERGY_HEADER = ["multiplier", "mults/epoch", "J/epoch", "J/run", "vs float32", "vs bfloat16", "rel. power",
                 "cost source"]


# ----------------------------------------------------------------------------------------------
# Board energy (NVML)
# ----------------------------------------------------------------------------------------------


class _NvmlMeter:
    """Board energy of GPU 0 between start() and stop(), from NVML's energy counter when the board has
    one, else by integrating power samples taken every 50 ms."""

    def __init__(self, nvml, handle):
        self.nvml, self.handle = nvml, handle
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.counter = True
        except nvml.NVMLError:
            self.counter = False
        self._thread = None

    def start(self):
        if self.counter:
            self._start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return
        self._joules, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        last = time.perf_counter()
        while not self._stop.wait(0.05):
            now = time.perf_counter()
            self._joules += self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0 * (now - last)
            last = now

    def stop(self) -> float:
        if self.counter:
            return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self._start) / 1000.0
        self._stop.set()
        self._thread.join()
        return self._joules


def board_energy_meter():
    """A meter of the GPU board's energy when nvidia-ml-py and a GPU are present, else None."""
    try:
        import pynvml as nvml
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
        if nvml.nvmlDeviceGetCount() < 1:
            return None
        return _NvmlMeter(nvml, nvml.nvmlDeviceGetHandleByIndex(0))
    except Exception:  # noqa: BLE001 - NVML raises its own errors, and any of them means: no meter
        return None
