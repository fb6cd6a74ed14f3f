"""The multipliers a study compares, as the user names them on the command line.

A specification is one of

* ``float32``: the network as Keras builds it, every product an exact float32 one;
* ``NAME`` or ``NAME:M``: the C model ``NAME`` as an M-bit mantissa multiplier (M defaults to
  ``default_bits``), with model parameters as further ``:key=value`` fields (``drum:7:k=4``);
  ``NAME`` may be a ``.c`` file (``./my_mul.c:7``), and is looked up in ``models_dirs`` too;
* a LUT file (``luts/x.npz``, ApproxTrain's ``MBM_7.bin``): its table, at the M it was made for;
* an 8-bit quantized multiplier ``SCHEME:CIRCUIT`` (``uint8:exact_int``, ``int8:mul8s_trunc:k=4``,
  ``uint8:./mul8u_x.c``, ``uint8:luts/mul8u_x.npz``): the network's products quantized to 8-bit
  integers (``uint8`` asymmetric, ``int8`` symmetric) and multiplied by the integer circuit, an
  integer C model (``kind: int``) of the scheme's signedness or an integer LUT file
  (docs/quantized.md); it takes no width. The exact circuits ``uint8:exact_int`` and
  ``int8:mul8s_exact`` (:data:`EXACT_CIRCUITS`) are the baselines quantized runs compare with;
* an assignment (``amsim train --assign``): a multiplier per layer, ``PATTERN=SPEC,...``
  (``conv*=drum:7:k=4,dense_2=exact,*=mbm:7``) or a JSON/TOML file of such pairs, each SPEC one of
  the forms above or ``exact``; a layer takes the first pattern its name matches.

The syntax is :mod:`amsim.specs`' (shared with the per-layer assignments of
:func:`amsim.keras.approximate`); this module checks what the text names.

Parsing checks everything that can be checked without TensorFlow, so a study with a misspelt
multiplier stops before its first epoch, not after the others have trained: the model exists and
supports that width, the parameters are in range, the LUT file verifies. It also sweeps each
model's LUT into amsim's cache (:func:`amsim.generate.cached_mantissa_lut`), where every run then
finds it; a C model that does not compile, crashes or hangs stops the study here too. An integer
circuit is swept in a child process (its C code cannot take the study down) and checked as the
quantized layers will take it (:func:`amsim.gemm.circuit.resolve_circuit`): a float model, a
circuit of the other signedness or products outside 16 bits are refused with
:class:`QuantizedMultiplierError`, a usage error.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..errors import LUTError, RangeError
from ..specs import EXACT, FLOAT32, QUANTIZE_SCHEMES, SpecError, parse_assignment, parse_spec
from . import ExperimentError

__all__ = ["MultiplierSpec", "parse_multiplier", "parse_multipliers", "parse_assignment_spec", "FLOAT32", "ASSIGN",
           "EXACT_CIRCUITS", "QuantizedMultiplierError"]

#: The kind of a per-layer assignment of multipliers.
ASSIGN = "assign"
#: The exact 8-bit circuit of each quantization scheme: the baseline its approximate circuits compare with
#: (their declared power is relative to it, and the summaries show the accuracy against its run).
EXACT_CIRCUITS = {"uint8": "exact_int", "int8": "mul8s_exact"}


class QuantizedMultiplierError(ExperimentError, RangeError):
    """An 8-bit quantized multiplier whose circuit cannot be one: a float model, the other signedness, a
    table that is not an 8-bit integer one or whose products leave 16 bits (a usage error: exit 2)."""


@dataclasses.dataclass(frozen=True)
class MultiplierSpec:
    """One multiplier of a study.

    Attributes
    ----------
    kind : {"float32", "model", "lut", "assign"}
    name : str
        ``float32``, the model name, the LUT file's path, or an assignment's text (its patterns and
        its multipliers' texts).
    bits : int or None
        Mantissa fraction bits M (None for float32).
    params : tuple of (name, value)
        Model parameters as given (defaults are filled in by the model).
    source : str
        The C file of a model that is not built in (absolute: workers may run elsewhere, and need
        no ``--models-dir``); empty for a built-in, which its name finds.
    entries : tuple of (pattern, MultiplierSpec or None)
        An assignment's layer-name patterns and their multipliers, in order (None: left exact).
    quantize : {"uint8", "int8"} or None
        The 8-bit quantization scheme of an integer circuit (``bits`` is then its operand width, 8);
        None for float multipliers.
    """

    kind: str
    name: str
    bits: int | None = None
    params: tuple = ()
    source: str = ""
    entries: tuple = ()
    quantize: str | None = None

    @property
    def label(self) -> str:
        """A name for folders, tables and legends: ``float32``, ``mbm-M7``, ``drum-M7-k4``, ``lut-MBM_7``,
        ``uint8-exact_int``, ``int8-mul8s_trunc-k4``, ``uint8-lut-mul8u_x``."""
        if self.kind == FLOAT32:
            return FLOAT32
        if self.kind == "lut":
            return (f"{self.quantize}-" if self.quantize else "") + "lut-" + re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                                                  Path(self.name).stem)
        if self.quantize:
            return "-".join([self.quantize, self.name, *(f"{k}{v}" for k, v in self.params)])
        if self.kind == ASSIGN:  # conv*=drum:7:k=4,*=mbm:7 -> conv-drum-M7-k4+all-mbm-M7
            return "+".join(f"{re.sub(r'[^A-Za-z0-9_.-]', '', pattern) or 'all'}-{spec.label if spec else EXACT}"
                            for pattern, spec in self.entries)
        return "-".join([self.name, f"M{self.bits}", *(f"{k}{v}" for k, v in self.params)])

    @property
    def model(self) -> str:
        """The model as :func:`amsim.models.find_model` and the layers' ``lut=`` take it: its file or its name."""
        return self.source or self.name

    @property
    def text(self) -> str:
        """The specification as the command line takes it."""
        scheme = [self.quantize] if self.quantize else []
        if self.kind == "lut":
            return ":".join([*scheme, self.name])
        if self.kind != "model":
            return self.name
        width = [] if self.quantize else [str(self.bits)]  # a circuit's operands are the scheme's 8 bits
        return ":".join([*scheme, self.model, *width, *(f"{k}={v}" for k, v in self.params)])

    @property
    def exact_baseline(self) -> str | None:
        """The label of the exact circuit of this multiplier's scheme (``uint8-exact_int``), or None for a
        float multiplier."""
        return f"{self.quantize}-{EXACT_CIRCUITS[self.quantize]}" if self.quantize else None

    @property
    def approximate(self) -> bool:
        return self.kind != FLOAT32

    @property
    def multipliers(self) -> tuple:
        """The approximate multipliers this specification uses: itself, or an assignment's."""
        if self.kind == ASSIGN:
            return tuple(dict.fromkeys(spec for _, spec in self.entries if spec is not None))
        return (self,) if self.approximate else ()

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "name": self.name, "bits": self.bits, "params": dict(self.params),
             "label": self.label, "text": self.text}
        if self.source:  # only then: the runs of built-ins read as they did before models could be files
            d["source"] = self.source
        if self.entries:
            d["entries"] = [[pattern, spec.to_dict() if spec else EXACT] for pattern, spec in self.entries]
        if self.quantize:  # only then: run folders of float multipliers read as before quantized ones
            d["quantize"] = self.quantize
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MultiplierSpec:
        entries = tuple((pattern, None if spec == EXACT else cls.from_dict(spec))
                        for pattern, spec in d.get("entries", ()))
        return cls(d["kind"], d["name"], d.get("bits"), tuple(sorted(dict(d.get("params") or {}).items())),
                   d.get("source", ""), entries, d.get("quantize"))

    def layer_arguments(self) -> dict:
        """What :func:`amsim.keras.approximate` takes for this multiplier: ``lut``, ``bits``, ``params``,
        and ``quantize`` for an integer circuit."""
        if self.kind == FLOAT32:
            raise ExperimentError("float32 is the network itself; it has no approximate layer arguments")
        if self.kind == ASSIGN:  # the dict approximate() takes, each multiplier as (model, M, params) or its text
            return {"lut": {pattern: EXACT if spec is None else _as_tuple(spec) for pattern, spec in self.entries}}
        if self.quantize:
            out = {"lut": self.model, "quantize": self.quantize}
        else:
            out = {"lut": self.model, "bits": self.bits}
        if self.params:
            out["params"] = dict(self.params)
        return out


def parse_multiplier(text: str, *, default_bits: int = 7, models_dirs=(), timeout=None) -> MultiplierSpec:
    """Parse and check one specification (see the module docstring for the forms).

    ``timeout``: seconds a model's LUT may take to sweep (None: no limit).
    """
    try:
        written = parse_spec(text)  # the syntax, shared with amsim.keras.approximate's assignments
    except SpecError as exc:
        quantized = str(text).strip().partition(":")[0] in QUANTIZE_SCHEMES
        raise (QuantizedMultiplierError if quantized else ExperimentError)(str(exc)) from None
    if written.kind == FLOAT32:
        return MultiplierSpec(FLOAT32, FLOAT32)
    if written.quantize:
        return _circuit_spec(text.strip(), written, models_dirs, timeout)
    if written.kind == "lut":
        return _lut_spec(written.name)
    bits = default_bits if written.bits is None else written.bits
    return _model_spec(written.name, bits, dict(written.params), models_dirs, timeout)


def parse_multipliers(text, *, default_bits: int = 7, models_dirs=(), timeout=None, assignments=()) \
        -> list[MultiplierSpec]:
    """Parse a comma-separated list (or an iterable of specifications) and the ``assignments`` (texts
    or files, see :func:`parse_assignment_spec`), one run each; duplicates are refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    specs = [parse_multiplier(item, default_bits=default_bits, models_dirs=models_dirs, timeout=timeout)
             for item in items]
    specs += [parse_assignment_spec(a, default_bits=default_bits, models_dirs=models_dirs, timeout=timeout)
              for a in assignments]
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ExperimentError(f"--multipliers and --assign name {', '.join(repeated)} more than once")
    return specs


def parse_assignment_spec(text, *, default_bits: int = 7, models_dirs=(), timeout=None) -> MultiplierSpec:
    """Parse and check an assignment of multipliers to layers (``conv*=drum:7:k=4,dense_2=exact,*=mbm:7``
    or a ``.json``/``.toml`` file of such pairs): every multiplier is checked as :func:`parse_multiplier`
    checks it; ``exact`` and ``float32`` leave the layers they match exact."""
    try:
        table = parse_assignment(text)
    except SpecError as exc:
        raise ExperimentError(f"--assign: {exc}") from None
    entries = []
    for pattern, value in table.items():
        if isinstance(value, tuple):  # [NAME, M] or [NAME, M, {params}] from a file
            name, bits, *params = value
            value = ":".join([name, str(bits), *(f"{k}={v}" for k, v in (params[0] if params else {}).items())])
        spec = None if value == EXACT else parse_multiplier(value, default_bits=default_bits,
                                                             models_dirs=models_dirs, timeout=timeout)
        entries.append((pattern, spec if spec is not None and spec.approximate else None))
    if not any(spec for _, spec in entries):
        raise ExperimentError(f"--assign {text}: assigns no approximate multiplier (every layer would stay exact; "
                              "that run is float32)")
    name = ",".join(f"{pattern}={spec.text if spec else EXACT}" for pattern, spec in entries)
    return MultiplierSpec(ASSIGN, name, entries=tuple(entries))


def _as_tuple(spec: MultiplierSpec):
    """A model or LUT multiplier as the value ``(lut, M, params)`` of approximate()'s assignment; a
    quantized one as its text, which carries its scheme."""
    if spec.quantize:
        return spec.text
    return (spec.model, spec.bits, *((dict(spec.params),) if spec.params else ()))


def _circuit_spec(text: str, written, models_dirs, timeout) -> MultiplierSpec:
    """Check an 8-bit quantized multiplier as its layers will take it, its C model swept in a child."""
    from ..gemm.circuit import CircuitError, resolve_circuit

    scheme = written.quantize
    signed = scheme == "int8"  # the signed scheme (amsim.keras.quantization.SCHEMES), read without TensorFlow
    try:
        if written.kind == "lut":
            path = Path(written.name)
            if not path.is_file():
                raise QuantizedMultiplierError(f"multiplier {text}: LUT file {path} does not exist")
            circuit = resolve_circuit(path, signed=signed)  # LUTError when it does not verify
            return MultiplierSpec("lut", str(path.resolve()), circuit.bits, quantize=scheme)
        from ..generate import integer_lut, run_isolated
        from ..models import builtin_models_dir, find_model

        model = find_model(written.name, models_dirs)  # UnknownModelError lists the known ones
        if model.kind != "int":
            raise QuantizedMultiplierError(f"multiplier {text}: {model.name} is a float model; a {scheme} "
                                           "multiplier is an integer circuit (a C model of kind: int)")
        params = dict(written.params)
        resolved = model.resolve_params(params)  # RangeError for unknown names and out-of-range values
        lut = run_isolated(model.name, integer_lut, model, 8, resolved, timeout=timeout)
        circuit = resolve_circuit(lut, signed=signed)  # its signedness, its products within 16 bits
    except (CircuitError, LUTError) as exc:
        raise QuantizedMultiplierError(f"multiplier {text}: {exc}") from None
    builtin = model.path.parent == builtin_models_dir().resolve()
    given = {k: resolved[k] for k in params}
    return MultiplierSpec("model", model.name, circuit.bits, tuple(sorted(given.items())),
                          "" if builtin else str(model.path), quantize=scheme)


def _model_spec(name: str, bits: int, params: dict, models_dirs, timeout) -> MultiplierSpec:
    from ..generate import MAX_LUT_BITS, cached_mantissa_lut, mantissa_width
    from ..models import builtin_models_dir, find_model

    model = find_model(name, models_dirs)  # UnknownModelError lists the known ones; a missing file is named
    mantissa_width(model, bits)  # RangeError when the model cannot be an M-bit mantissa multiplier
    if not 1 <= bits <= MAX_LUT_BITS:
        raise ExperimentError(f"multiplier {name}:{bits}: training needs a LUT, made for M = 1..{MAX_LUT_BITS}")
    resolved = model.resolve_params(params)  # RangeError for unknown names and out-of-range values
    cached_mantissa_lut(model, bits, resolved, timeout=timeout)  # CompileError, ModelCrashed, ModelTimedOut
    given = {k: resolved[k] for k in params}
    builtin = model.path.parent == builtin_models_dir().resolve()
    return MultiplierSpec("model", model.name, bits, tuple(sorted(given.items())), "" if builtin else str(model.path))


def _lut_spec(text: str) -> MultiplierSpec:
    from ..lut import load_any

    path = Path(text)
    if not path.is_file():
        raise ExperimentError(f"LUT file {path} does not exist (multipliers are float32, NAME:M, FILE.c:M or a "
                              "LUT file)")
    lut = load_any(path)  # LUTError with the reason when it does not verify
    if lut.kind != "mantissa":
        raise ExperimentError(f"{path} is an {lut.kind} table; training needs a mantissa LUT")
    return MultiplierSpec("lut", str(path.resolve()), lut.bits)  # absolute: workers may run elsewhere
