"""The multipliers a study compares, as the user names them on the command line.

A specification is one of

* ``float32``: the network as Keras builds it, every product an exact float32 one;
* ``NAME`` or ``NAME:M``: the C model ``NAME`` as an M-bit mantissa multiplier (M defaults to
  ``default_bits``), with model parameters as further ``:key=value`` fields (``drum:7:k=4``);
  ``NAME`` may be a ``.c`` file (``./my_mul.c:7``), and is looked up in ``models_dirs`` too;
* a LUT file (``luts/x.npz``, ApproxTrain's ``MBM_7.bin``): its table, at the M it was made for.

Parsing checks everything that can be checked without TensorFlow, so a study with a misspelt
multiplier stops before its first epoch, not after the others have trained: the model exists and
supports that width, the parameters are in range, the LUT file verifies. It also sweeps each
model's LUT into amsim's cache (:func:`amsim.generate.cached_mantissa_lut`), where every run then
finds it; a C model that does not compile, crashes or hangs stops the study here too.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ..lut import names_lut_file
from . import ExperimentError

__all__ = ["MultiplierSpec", "parse_multiplier", "parse_multipliers", "FLOAT32"]

FLOAT32 = "float32"


@dataclasses.dataclass(frozen=True)
class MultiplierSpec:
    """One multiplier of a study.

    Attributes
    ----------
    kind : {"float32", "model", "lut"}
    name : str
        ``float32``, the model name, or the LUT file's path.
    bits : int or None
        Mantissa fraction bits M (None for float32).
    params : tuple of (name, value)
        Model parameters as given (defaults are filled in by the model).
    source : str
        The C file of a model that is not built in (absolute: workers may run elsewhere, and need
        no ``--models-dir``); empty for a built-in, which its name finds.
    """

    kind: str
    name: str
    bits: int | None = None
    params: tuple = ()
    source: str = ""

    @property
    def label(self) -> str:
        """A name for folders, tables and legends: ``float32``, ``mbm-M7``, ``drum-M7-k4``, ``lut-MBM_7``."""
        if self.kind == FLOAT32:
            return FLOAT32
        if self.kind == "lut":
            return "lut-" + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(self.name).stem)
        return "-".join([self.name, f"M{self.bits}", *(f"{k}{v}" for k, v in self.params)])

    @property
    def model(self) -> str:
        """The model as :func:`amsim.models.find_model` and the layers' ``lut=`` take it: its file or its name."""
        return self.source or self.name

    @property
    def text(self) -> str:
        """The specification as the command line takes it."""
        if self.kind != "model":
            return self.name
        return ":".join([self.model, str(self.bits), *(f"{k}={v}" for k, v in self.params)])

    @property
    def approximate(self) -> bool:
        return self.kind != FLOAT32

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "name": self.name, "bits": self.bits, "params": dict(self.params),
             "label": self.label, "text": self.text}
        if self.source:  # only then: the runs of built-ins read as they did before models could be files
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MultiplierSpec:
        return cls(d["kind"], d["name"], d.get("bits"), tuple(sorted(dict(d.get("params") or {}).items())),
                   d.get("source", ""))

    def layer_arguments(self) -> dict:
        """What :func:`amsim.keras.approximate` takes for this multiplier: ``lut``, ``bits``, ``params``."""
        if self.kind == FLOAT32:
            raise ExperimentError("float32 is the network itself; it has no approximate layer arguments")
        out = {"lut": self.model, "bits": self.bits}
        if self.params:
            out["params"] = dict(self.params)
        return out


def parse_multiplier(text: str, *, default_bits: int = 7, models_dirs=(), timeout=None) -> MultiplierSpec:
    """Parse and check one specification (see the module docstring for the forms).

    ``timeout``: seconds a model's LUT may take to sweep (None: no limit).
    """
    text = text.strip()
    if not text:
        raise ExperimentError("empty multiplier in --multipliers; write e.g. float32,mbm:7")
    if text == FLOAT32:
        return MultiplierSpec(FLOAT32, FLOAT32)
    name, *fields = text.split(":")
    # A C file takes :M and parameters like a name; any other path is a LUT file, which takes neither.
    if not name.endswith(".c") and (names_lut_file(text) or "/" in text):
        return _lut_spec(text)
    bits, params = default_bits, {}
    for i, field in enumerate(fields):
        key, eq, value = field.partition("=")
        if not eq and i == 0:
            bits = _integer(field, f"mantissa width in {text!r}")
        elif eq and key:
            params[key] = _integer(value, f"parameter {key} in {text!r}")
        else:
            raise ExperimentError(f"cannot read {field!r} in multiplier {text!r}; write NAME, NAME:M or "
                                  "NAME:M:key=value (e.g. mbm:7, drum:7:k=4, ./my_mul.c:7), float32, or a LUT "
                                  "file path")
    return _model_spec(name, bits, params, models_dirs, timeout)


def parse_multipliers(text, *, default_bits: int = 7, models_dirs=(), timeout=None) -> list[MultiplierSpec]:
    """Parse a comma-separated list (or an iterable of specifications); duplicates are refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    specs = [parse_multiplier(item, default_bits=default_bits, models_dirs=models_dirs, timeout=timeout)
             for item in items]
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ExperimentError(f"--multipliers names {', '.join(repeated)} more than once")
    return specs


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ExperimentError(f"{what} must be an integer, not {text!r}") from None


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
