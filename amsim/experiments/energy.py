"""How many multiplications a network performs, and what they would cost on each multiplier.

Counting
--------
The products of a network's matrix products and convolutions are counted per example by
:func:`amsim.keras.coverage` (its one definition of the counts, per Keras layer class; a custom
layer's from its traced graph): those are the ones an approximate multiplier performs. Each GEMM
``Y = X W`` has two gradients of the same size as the forward product: ``dX = dY Wᵀ`` (*input
gradient*, only computed when something upstream is trainable: TensorFlow skips the first
layer's) and ``dW = Xᵀ dY`` (*weight gradient*, only for trainable layers); a product of two
activations (attention) has two input gradients. A training example costs forward + input gradient
+ weight gradient; an inference costs the forward products.

Pricing
-------
A multiplier's cost comes from its C model's published ``cost`` metadata: power relative to an
exact multiplier of the same width (:class:`amsim.models.Cost`; a lifted integer model at mantissa
width M uses its (M+1)-bit figure, the significand multiplier it replaces). An energy is therefore
a sum of counts of "exact multiplies at mantissa width M" (the exact float32 multiply is M = 23,
bfloat16's M = 7). Two energies in the same unit compare directly; across widths they compare only
through absolute figures of exact multipliers, of which amsim bundles the ones below with their
source. Whatever has no figure is reported as unknown, never estimated.

An 8-bit quantized multiplier (``uint8:CIRCUIT``, ``int8:CIRCUIT``) is an integer circuit whose
``cost`` is relative to the exact 8-bit integer multiplier of its signedness: ``exact_int`` and
``mul8s_exact`` are 1.0 by definition, an EvoApproxLib circuit's header figures are taken relative to
EvoApproxLib's own exact 8-bit circuits (docs/designs.md, "EvoApproxLib header figures"). Its energy
is counted in "exact 8-bit integer multiplies" of its scheme, the unit ``"uint8"`` or ``"int8"``.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from .multipliers import EXACT_CIRCUITS, FLOAT32, MultiplierSpec

__all__ = ["count_multiplications", "CostFigure", "relative_power", "EXACT_ENERGY_PJ", "Energy", "run_energy",
           "energy_table", "board_energy_meter", "UNKNOWN", "RELATIVE_POWER_NOTE"]

UNKNOWN = "unknown"
FLOAT32_M = 23
BFLOAT16_M = 7

_HOROWITZ = "M. Horowitz, \"Computing's energy problem (and what we can do about it)\", ISSCC 2014, 45 nm"
#: Energy of one exact multiply, by unit (a floating-point mantissa width M, or an 8-bit quantization scheme):
#: (format, picojoules or None, source).
EXACT_ENERGY_PJ = {
    FLOAT32_M: ("float32", 3.7, _HOROWITZ),
    10: ("float16", 1.1, _HOROWITZ),
    BFLOAT16_M: ("bfloat16", None, "no published figure bundled"),
    # Horowitz gives one 8-bit integer multiply, signedness unstated: the figure of both schemes.
    "uint8": ("8-bit integer", 0.2, _HOROWITZ),
    "int8": ("8-bit integer", 0.2, _HOROWITZ),
}


# ----------------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------------


def count_multiplications(model, input_shape=None):
    """Per-example multiplications of a built Keras model's matrix products and convolutions, layer by
    layer: :func:`amsim.keras.coverage`'s report (every call of a shared layer, nested models too),
    whose ``per_epoch`` gives an epoch's counts."""
    from amsim.keras.coverage import coverage

    return coverage(model, input_shape)


# ----------------------------------------------------------------------------------------------
# Pricing
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CostFigure:
    """Power of a multiplier relative to the exact multiplier of its unit ``bits`` (a mantissa width M, or an
    8-bit quantization scheme, ``"uint8"`` or ``"int8"``), with its source."""

    power: float | None
    bits: int | str
    source: str

    @property
    def known(self) -> bool:
        return self.power is not None


def relative_power(spec: MultiplierSpec, models_dirs=()) -> CostFigure:
    """``spec``'s published relative power, or an unknown figure saying what is missing."""
    if spec.kind == FLOAT32:
        return CostFigure(1.0, FLOAT32_M, "the float32 baseline itself")
    if spec.quantize:
        return _circuit_power(spec, models_dirs)
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


def _circuit_power(spec: MultiplierSpec, models_dirs) -> CostFigure:
    """An 8-bit circuit's declared power, relative to the exact 8-bit integer multiplier of its scheme."""
    from ..errors import AmsimError
    from ..models import find_model

    scheme = spec.quantize
    name, params = spec.model, dict(spec.params)
    try:
        if spec.kind == "lut":  # amsim's own LUT file names its model; a peer's table names none
            from ..lut import load_any

            lut = load_any(spec.name) if spec.name.endswith(".npz") else None
            if lut is None or not lut.model:
                return CostFigure(None, scheme, f"LUT {spec.name} names no model, so no cost data")
            name, params = lut.model, dict(lut.params)
        model = find_model(name, models_dirs)
        cost = model.cost_for(8, params)
    except AmsimError as exc:
        return CostFigure(None, scheme, f"no cost data ({exc})")
    if cost is None or cost.power is None:
        return CostFigure(None, scheme, f"circuit {model.name} declares no power for 8-bit operands")
    where = ", ".join(x for x in (cost.source, cost.node) if x)
    return CostFigure(float(cost.power), scheme, f"{where}; relative to the exact {scheme} multiplier "
                                                 f"{EXACT_CIRCUITS[scheme]} = 1")


@dataclasses.dataclass(frozen=True)
class Energy:
    """A multiplier energy as counts of exact multiplies per unit ({M or scheme: count}), or unknown."""

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

    @classmethod
    def sum(cls, energies) -> Energy:
        """The energy of several parts (unknown when any part is)."""
        units: dict = {}
        for part in energies:
            if part.units is None:
                return cls(None, part.note)
            for m, n in part.units.items():
                units[m] = units.get(m, 0) + n
        return cls(units)

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
    """One line per run description ``{"label", "spec", "gradient", "epoch_counts", "epochs"}``, or
    ``{"label", "groups", "epochs"}`` for a run whose products are shared among several multipliers:
    ``groups`` lists ``(spec, epoch_counts)``, each priced on its own multiplier (float32 for the
    products left exact) and summed.

    Columns: multiplications per epoch, energy per epoch and per run in joules, the ratios to the
    same multiplications on exact float32 and exact bfloat16 multipliers, the cost figure and its
    source (each multiplier's, for several). Missing data stays "unknown".
    """
    table = exact_energy_pj or EXACT_ENERGY_PJ
    out = []
    for row in rows:
        if "groups" in row:
            parts = [(spec, counts, relative_power(spec), "approximate") for spec, counts in row["groups"]]
        else:
            spec = row["spec"]
            parts = [(spec, row["epoch_counts"], row.get("figure") or relative_power(spec),
                      row.get("gradient", "approximate"))]
        energy = Energy.sum(run_energy(counts, spec, figure, gradient) for spec, counts, figure, gradient in parts)
        total = sum(sum(counts.values()) for _, counts, _, _ in parts)
        priced = [(spec, figure) for spec, _, figure, _ in parts if spec.kind != FLOAT32] or \
            [(spec, figure) for spec, _, figure, _ in parts]
        if len(priced) == 1:
            power, source = priced[0][1].power, priced[0][1].source
        else:
            power = None
            source = "; ".join(f"{spec.label}: {_fmt(figure.power)} ({figure.source})" for spec, figure in priced)
        per_epoch = energy.joules(table)
        out.append({
            "label": row["label"], "multiplications_per_epoch": total,
            "energy_per_epoch_j": per_epoch,
            "energy_per_run_j": None if per_epoch is None else per_epoch * row.get("epochs", 1),
            "vs_float32": energy.ratio(Energy({FLOAT32_M: total}), table),
            "vs_bfloat16": energy.ratio(Energy({BFLOAT16_M: total}), table),
            "relative_power": power, "power_source": source, "mixed": len(priced) > 1,
            "exact_energy_sources": {table[m][0]: table[m][2] for m in (energy.units or {}) if m in table},
        })
    return out


def format_energy(table: list[dict]) -> list[list[str]]:
    """The table's cells as text, unknowns spelled out."""
    return [[r["label"], f"{r['multiplications_per_epoch']:.3e}", _fmt(r["energy_per_epoch_j"]),
             _fmt(r["energy_per_run_j"]), _fmt(r["vs_float32"], "{:.3f}"), _fmt(r["vs_bfloat16"], "{:.3f}"),
             "mixed" if r.get("mixed") else _fmt(r["relative_power"], "{:.3g}"), r["power_source"]] for r in table]


ENERGY_HEADER = ["multiplier", "mults/epoch", "J/epoch", "J/run", "vs float32", "vs bfloat16", "rel. power",
                 "cost source"]
#: What a "rel. power" figure is relative to, as the tables' readers need it said.
RELATIVE_POWER_NOTE = ("rel. power: against an exact multiplier of the same width (a float multiplier: its "
                       "(M+1)-bit significand multiplier; an 8-bit circuit: the exact one of its scheme, uint8 "
                       "exact_int, int8 mul8s_exact = 1)")


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
