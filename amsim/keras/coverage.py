"""coverage(): which of a model's products are approximate, layer by layer, and with which multiplier.

The model's graph is walked from its inputs (nested models included, every call of a shared layer
counted); each layer call's products are counted per example by :mod:`amsim.keras.products`
(formulas for Keras' classes, the traced graph for any other). A row of the report is a layer the
user sees (a wrapper such as ``Bidirectional(LSTM)`` is one row; a layer inside a nested model is
named ``model/layer``) under one arithmetic: approximate with a multiplier (``"mbm:7"``) or exact
float32. The fraction is of the forward pass's matrix products; element-wise products are listed
apart, exact float32 in every case.

Whether a gradient flows back to a tensor follows the graph: a layer's input gradient is counted
only when something upstream of that input trains, its weight gradient only when it trains itself
(what TensorFlow computes in a training step).
"""

from __future__ import annotations

import dataclasses

import keras

from ..specs import FLOAT32
from .products import EXACT, Call, CoverageError, In, Tally, count_call, error_line, keras_class

__all__ = ["coverage", "Coverage", "LayerCoverage", "ElementwiseCount", "CoverageError"]


@dataclasses.dataclass(frozen=True)
class LayerCoverage:
    """The matrix products of one layer per example under one arithmetic.

    Attributes:
        name: the layer's name (``model/layer`` inside a nested model).
        kind: its Keras class (an AM layer's is the class it replaces; a wrapper's names its layer).
        multiplier: the approximate multiplier (``"mbm:7"``), or None for exact float32 products.
        gradient: ``"approximate"`` when the backward products use the multiplier too, else ``"exact"``.
        forward, input_grad, weight_grad: products of the forward pass and of both gradients.
    """

    name: str
    kind: str
    multiplier: str | None
    gradient: str
    forward: int
    input_grad: int
    weight_grad: int

    @property
    def approximate(self) -> bool:
        return self.multiplier is not None

    @property
    def training(self) -> int:
        return self.forward + self.input_grad + self.weight_grad


@dataclasses.dataclass(frozen=True)
class ElementwiseCount:
    """Element-wise products of one layer per example (forward), exact float32."""

    name: str
    kind: str
    forward: int


@dataclasses.dataclass(frozen=True)
class Coverage:
    """A model's products per example, layer by layer: what :func:`coverage` returns."""

    layers: tuple
    elementwise: tuple = ()

    @property
    def forward(self) -> int:
        return sum(r.forward for r in self.layers)

    @property
    def input_grad(self) -> int:
        return sum(r.input_grad for r in self.layers)

    @property
    def weight_grad(self) -> int:
        return sum(r.weight_grad for r in self.layers)

    @property
    def training(self) -> int:
        return self.forward + self.input_grad + self.weight_grad

    @property
    def approximate_forward(self) -> int:
        return sum(r.forward for r in self.layers if r.approximate)

    @property
    def fraction(self) -> float:
        """Approximate products over all matrix products of the forward pass (1.0 when there are none:
        nothing is left exact)."""
        return self.approximate_forward / self.forward if self.forward else 1.0

    @property
    def exact_layers(self) -> tuple:
        """The names of the layers with exact matrix products, in graph order."""
        return tuple(dict.fromkeys(r.name for r in self.layers if not r.approximate and r.forward))

    def by_multiplier(self) -> dict:
        """Products per example by the arithmetic that performs them, for energy accounting:
        ``{multiplier or "float32": {"forward", "input_grad", "weight_grad"}}`` (gradients of a layer
        with ``gradient="exact"`` count as float32)."""
        out: dict = {}
        for r in self.layers:
            forward = r.multiplier or FLOAT32
            backward = forward if r.gradient == "approximate" else FLOAT32
            for key, what, n in ((forward, "forward", r.forward), (backward, "input_grad", r.input_grad),
                                 (backward, "weight_grad", r.weight_grad)):
                out.setdefault(key, {"forward": 0, "input_grad": 0, "weight_grad": 0})[what] += n
        return out

    def per_epoch(self, train_examples: int, validation_examples: int = 0) -> dict:
        """Products of one epoch: training steps over ``train_examples`` and the validation pass."""
        return {"forward": self.forward * (train_examples + validation_examples),
                "input_grad": self.input_grad * train_examples, "weight_grad": self.weight_grad * train_examples}

    def to_dict(self) -> dict:
        """The report as JSON-serialisable data (for a run's config)."""
        return {"fraction": self.fraction, "forward": self.forward, "approximate_forward": self.approximate_forward,
                "input_grad": self.input_grad, "weight_grad": self.weight_grad,
                "per_example": {"forward": self.forward, "input_grad": self.input_grad,
                                "weight_grad": self.weight_grad, "training": self.training,
                                "inference": self.forward},
                "exact_layers": list(self.exact_layers), "by_multiplier": self.by_multiplier(),
                "layers": [dataclasses.asdict(r) for r in self.layers],
                "elementwise": [dataclasses.asdict(e) for e in self.elementwise]}

    def __str__(self) -> str:
        header = ("layer", "kind", "multiplier", "forward", "share", "input grad", "weight grad")
        total = self.forward or 1
        rows = [(r.name, r.kind, (r.multiplier or "exact") + (" (exact gradients)" if r.approximate
                                                            and r.gradient == "exact" else ""),
                 f"{r.forward:,}", f"{100 * r.forward / total:.1f} %", f"{r.input_grad:,}", f"{r.weight_grad:,}")
                for r in self.layers]
        rows.append(("total", "", f"{100 * self.fraction:.1f} % approximate", f"{self.forward:,}", "100.0 %",
                     f"{self.input_grad:,}", f"{self.weight_grad:,}"))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        right = {3, 4, 5, 6}

        def line(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

        lines = [line(header), "  ".join("-" * w for w in widths), *map(line, rows[:-1]),
                 "  ".join("-" * w for w in widths), line(rows[-1])]
        if self.exact_layers:
            lines.append(f"exact matrix products in: {', '.join(self.exact_layers)}")
        if self.elementwise:
            listed = ", ".join(f"{e.name} {e.forward:,}" for e in self.elementwise)
            lines.append(f"element-wise products (exact float32, not in the fraction): "
                         f"{sum(e.forward for e in self.elementwise):,} ({listed})")
        return "\n".join(lines)


def coverage(model, input_shape=None) -> Coverage:
    """The matrix products of a model per example, approximate or exact, layer by layer.

    Args:
        model: a built Sequential or functional ``keras.Model`` (nested models too).
        input_shape: the input's shape without the batch dimension (a list of shapes for a model of
            several inputs), for a model whose input shape has unknown dimensions (``(None, None, 3)``);
            by default the model's own.

    Returns:
        A :class:`Coverage`: per layer the products of the forward pass and of the input and weight
        gradients, whether they are approximate and with which multiplier; totals, the fraction
        approximate, the element-wise products apart.

    Raises:
        CoverageError: a dimension a count needs is unknown, a layer cannot be traced, or the model
            has no graph (a subclassed model).
    """
    graph = _graph(model)
    inputs = list(graph.inputs)
    if input_shape is not None:
        inputs = [keras.KerasTensor((None, *shape), dtype=x.dtype) for x, shape in
                  zip(inputs, _shapes(input_shape, len(inputs), model))]
    walk = _Walk(resolve=input_shape is not None)
    for x in inputs:
        walk.needs[id(x)] = False
        walk.keep.append(x)
    walk.model(model, inputs, ())
    return Coverage(tuple(walk.rows), tuple(walk.elementwise))


def _shapes(input_shape, n, model) -> list[tuple]:
    shapes = [input_shape] if n == 1 and all(isinstance(d, (int, type(None))) for d in input_shape) \
        else list(input_shape)
    if len(shapes) != n or not all(isinstance(s, (tuple, list)) for s in shapes):
        raise CoverageError(f"input_shape= {input_shape!r} does not fit model {model.name!r}, which has {n} "
                            "input(s): give one shape (without the batch dimension) per input")
    return [tuple(s) for s in shapes]


def _graph(model):
    """The functional graph of a Sequential or functional model."""
    graph = getattr(model, "_functional", None) or model
    if not isinstance(model, keras.Model) or getattr(graph, "_nodes_by_depth", None) is None:
        raise CoverageError(f"coverage() takes a built Sequential or functional keras.Model, not "
                            f"{type(model).__name__} {getattr(model, 'name', '')!r} (a subclassed model has no "
                            "graph of layers to count; a Sequential model needs its keras.Input)")
    return graph


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(getattr(layer, "_functional", None) or layer,
                                                      "_nodes_by_depth", None) is not None


def _kind(layer) -> str:
    from keras import layers as L

    name = keras_class(layer).__name__
    if isinstance(layer, (L.TimeDistributed, L.SpectralNormalization)):
        return f"{name}({_kind(layer.layer)})"
    if isinstance(layer, L.Bidirectional):
        return f"{name}({_kind(layer.forward_layer)})"
    if type(layer) is L.RNN:
        return f"{name}({_kind(layer.cell)})"
    if isinstance(layer, L.StackedRNNCells):
        return f"{name}({', '.join(_kind(c) for c in layer.cells)})"
    return name


class _Walk:
    """The walk of a model's graph: each tensor's stand-in, whether a gradient flows back to it, the rows."""

    def __init__(self, resolve: bool):
        self.resolve = resolve
        self.needs: dict[int, bool] = {}
        self.keep: list = []  # the tensors whose ids key self.needs stay alive, so no id is reused
        self.rows: list[LayerCoverage] = []
        self.elementwise: list[ElementwiseCount] = []

    def model(self, model, inputs, path) -> list:
        graph = _graph(model)
        tensors = {id(x): y for x, y in zip(graph.inputs, inputs)}
        by_depth = graph._nodes_by_depth  # noqa: SLF001 - Keras' own order of the graph's calls
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if node.is_input or not node.operation:
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                outputs = self.call(node.operation, node, args, kwargs, path)
                for x, y in zip(node.outputs, outputs):
                    tensors[id(x)] = y
        return [tensors[id(x)] for x in graph.outputs]

    def call(self, layer, node, args, kwargs, path) -> list:
        given = [x for x in keras.tree.flatten((list(args), kwargs)) if isinstance(x, keras.KerasTensor)]
        if _is_graph_model(layer):
            return self.model(layer, given, (*path, layer.name))
        name = "/".join((*path, layer.name))
        to_in = {id(x): In(tuple(x.shape[1:]), x.dtype, frozenset([id(x)])) for x in given}
        call = Call(*keras.tree.map_structure(
            lambda v: to_in[id(v)] if isinstance(v, keras.KerasTensor) else v, (tuple(args), dict(kwargs))))
        tally = Tally(lambda dep: self.needs.get(dep, False))
        count_call(tally, layer, call)
        kind = _kind(layer)
        for (multiplier, gradient), part in tally.parts.items():
            if part.forward:
                self.rows.append(LayerCoverage(name, kind, multiplier, gradient if multiplier else EXACT[1],
                                               part.forward, part.input_grad, part.weight_grad))
        if tally.elementwise:
            self.elementwise.append(ElementwiseCount(name, kind, tally.elementwise))
        outputs = node.outputs if not self.resolve else self.output_spec(layer, name, args, kwargs)
        flows = any(self.needs.get(id(x), False) for x in given) or bool(layer.trainable_weights)
        for y in outputs:
            self.needs[id(y)] = flows or self.needs.get(id(y), False)
            self.keep.append(y)
        return outputs

    @staticmethod
    def output_spec(layer, name, args, kwargs) -> list:
        try:
            return keras.tree.flatten(layer.compute_output_spec(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds; each means the shape does not fit
            raise CoverageError(f"layer {name!r} ({type(layer).__name__}) does not take the inputs input_shape= "
                                f"gives it: {error_line(exc)}") from None
