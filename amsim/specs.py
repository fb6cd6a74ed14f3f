"""The text that names a multiplier, and the text that assigns multipliers to a model's layers.

A multiplier is written ``NAME`` or ``NAME:M``, with model parameters as further ``:key=value``
fields (``drum:7:k=4``); ``NAME`` may be a C model's ``.c`` file (``./my_mul.c:7``). ``float32`` is
the exact network itself, and a path (a LUT suffix, a ``/``, or an existing file other than C
source) is a LUT file, which takes no fields. An 8-bit quantized multiplier is the scheme, then an
integer circuit: ``uint8:exact_int``, ``int8:mul8s_trunc:k=4``, ``uint8:./mul8u_x.c``,
``uint8:luts/mul8u_x.npy`` (docs/quantized.md); it takes no width. This is the syntax of ``amsim train --multipliers``
and of the values of :func:`amsim.keras.approximate`'s per-layer assignment; :func:`parse_spec`
is its one parser. What the text names (the model, its range, the file) is checked by its users.

An assignment is ``PATTERN=SPEC,PATTERN=SPEC,...`` (``conv*=drum:7:k=4,dense_2=exact,*=mbm:7``) or
a JSON or TOML file holding such a table; :func:`parse_assignment` reads either into the ordered
dict :func:`amsim.keras.approximate` takes.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from .errors import AmsimError
from .lut import names_lut_file

__all__ = ["SpecError", "SpecText", "parse_spec", "parse_assignment", "FLOAT32", "EXACT", "QUANTIZE_SCHEMES"]

#: The exact float32 network, as a multiplier of a study.
FLOAT32 = "float32"
#: An assignment's value for layers left exact on purpose.
EXACT = "exact"

_FORMS = ("write NAME, NAME:M or NAME:M:key=value (e.g. mbm:7, drum:7:k=4, ./my_mul.c:7), float32, a LUT "
          "file path, or an 8-bit quantized circuit SCHEME:NAME[:key=value] (uint8:exact_int, int8:mul8s_trunc:k=4)")
#: The 8-bit quantization schemes a multiplier's text may start with (amsim.keras.quantization).
QUANTIZE_SCHEMES = ("uint8", "int8")


class SpecError(AmsimError, ValueError):
    """A multiplier's or an assignment's text cannot be read; the message says what is expected."""


@dataclasses.dataclass(frozen=True)
class SpecText:
    """A multiplier's text, read.

    Attributes:
        kind: ``"float32"``, ``"model"`` or ``"lut"``.
        name: ``float32``, the model's name or ``.c`` file, or the LUT file's path, as written.
        bits: the mantissa width M when written (``None``: the user's default).
        params: the model parameters written, as ``(name, value)`` pairs in their order.
        quantize: the 8-bit scheme (``"uint8"``, ``"int8"``) of a quantized multiplier, else None.
    """

    kind: str
    name: str
    bits: int | None = None
    params: tuple = ()
    quantize: str | None = None


def parse_spec(text: str) -> SpecText:
    """Read a multiplier's text (see the module docstring); only its syntax is checked."""
    text = str(text).strip()
    if not text:
        raise SpecError("empty multiplier; write e.g. mbm:7 or float32")
    if text == FLOAT32:
        return SpecText(FLOAT32, FLOAT32)
    scheme, colon, rest = text.partition(":")
    if colon and scheme in QUANTIZE_SCHEMES:
        circuit = parse_spec(rest) if rest.strip() not in ("", FLOAT32) else None
        if circuit is None or circuit.quantize:
            raise SpecError(f"{scheme}: must be followed by an integer circuit (e.g. {scheme}:exact_int), not "
                            f"{rest!r}")
        if circuit.bits is not None:
            raise SpecError(f"{text!r}: a {scheme} circuit multiplies 8-bit operands and takes no width; "
                            "write its parameters as key=value")
        return dataclasses.replace(circuit, quantize=scheme)
    name, *fields = text.split(":")
    # A C file takes :M and parameters like a name; any other path is a LUT file, which takes neither.
    if not name.endswith(".c") and (names_lut_file(text) or "/" in text):
        return SpecText("lut", text)
    bits, params = None, {}
    for i, field in enumerate(fields):
        key, eq, value = field.partition("=")
        if not eq and i == 0:
            bits = _integer(field, f"mantissa width in {text!r}")
        elif eq and key in params:
            raise SpecError(f"parameter {key} is given twice in multiplier {text!r}")
        elif eq and key:
            params[key] = _integer(value, f"parameter {key} in {text!r}")
        else:
            raise SpecError(f"cannot read {field!r} in multiplier {text!r}; {_FORMS}")
    if not name:
        raise SpecError(f"multiplier {text!r} has no name; {_FORMS}")
    return SpecText("model", name, bits, tuple(params.items()))


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{what} must be an integer, not {text!r}") from None


def parse_assignment(text) -> dict:
    """An assignment of multipliers to layers, from ``PATTERN=SPEC,...`` or a ``.json``/``.toml`` file.

    Args:
        text: the comma-separated pairs (a pattern is a layer name or an fnmatch pattern of names;
            a spec is a multiplier's text or ``exact``), or the path of a JSON object or TOML table
            of the same pairs (a value may also be a list ``[NAME, M]`` or ``[NAME, M, {params}]``).

    Returns:
        The dict :func:`amsim.keras.approximate` takes, in the order written (the first pattern a
        layer matches decides).
    """
    text = str(text).strip()
    if text.endswith((".json", ".toml")):
        return _assignment_file(Path(text))
    table = {}
    for item in text.split(","):
        pattern, eq, spec = (s.strip() for s in item.partition("="))
        if not eq or not pattern or not spec:
            raise SpecError(f"cannot read {item.strip()!r} in the assignment {text!r}; write PATTERN=SPEC pairs "
                            "separated by commas (e.g. 'conv*=drum:7:k=4,dense_2=exact,*=mbm:7')")
        table[_new(pattern, table, text)] = _value(spec, pattern)
    return table


def _assignment_file(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the assignment file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"assignment file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise SpecError(f"assignment file {path} must hold a table of PATTERN = SPEC pairs")
    return {pattern: _value(value, pattern) for pattern, value in data.items()}


def _new(pattern, table, text) -> str:
    if pattern in table:
        raise SpecError(f"the assignment {text!r} gives {pattern!r} twice")
    return pattern


def _value(value, pattern):
    """An assignment's value as approximate() takes it, its syntax checked."""
    if isinstance(value, str):
        if value.strip() != EXACT:
            parse_spec(value)
        return value.strip()
    if isinstance(value, list) and 2 <= len(value) <= 3 and isinstance(value[0], str) \
            and isinstance(value[1], int) and not isinstance(value[1], bool) \
            and (len(value) == 2 or isinstance(value[2], dict)):
        return tuple(value)
    raise SpecError(f"the multiplier for {pattern!r} must be a multiplier's text, 'exact', or [NAME, M] / "
                    f"[NAME, M, {{params}}], not {value!r}")
