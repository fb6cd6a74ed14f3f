"""C multiplier models: parse their self-description, compile them with cffi, call them.

One C file is one model. A metadata block at the top describes it::

    /* @amsim
     * name:        drum
     * kind:        int
     * bits:        2..32
     * param:       k default=6 range=2..32 "window width in bits"
     * description: Dynamic range unbiased multiplier.
     * citation:    S. Hashemi, R. I. Bahar, S. Reda, ICCAD 2015.
     * cost:        power=0.30 area=0.30 node="65 nm" source="Hashemi 2015" bits=16 k=6
     */

Float models follow ApproxTrain's prototype ``float NAME(float a, float b)``;
integer models EvoApproxLib's ``uint64_t NAME(uint64_t a, uint64_t b)`` or its
fixed-width variants (``uint16_t NAME(uint8_t A, uint8_t B)``,
``int16_t NAME(int8_t A, int8_t B)``, ...). A file without the block still
loads: name and kind come from the function, the width from the EvoApproxLib
name (``mul8u_...``) or from the caller, and EvoApproxLib's header figures
(``// MAE% = 1.78 %``, ``// PDK45_PWR = 0.014 mW``) are kept as metadata.

Compilation goes through cffi's API mode: cffi writes the extension source, we
run the C compiler ourselves so that its diagnostics can be reported with the
model's file and line, and the shared object is cached under a hash of
everything that affects it, so a second run compiles nothing.

The metadata parser, the prototype detection and the compiled wrapper stay in one file: each
checks what the others rely on (a declared width against the prototype's integer types, a
parameter's name against the macro the wrapper defines), so they change together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import numbers
import os
import re
import shlex
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import cbuild
from .errors import CompileError, ModelError, RangeError, UnknownModelError, check_integer

__all__ = [
    "Param", "Cost", "Claim", "CLAIM_BOUNDS", "BOUND_CEILINGS", "EVOAPPROX_EXACT_PDK45", "parse_bound", "Model",
    "CompiledModel", "load_model", "find_model", "list_models", "builtin_models_dir", "include_dir", "cache_dir",
]

#: Bumped whenever the generated wrapper changes, so stale cache entries are not reused.
_WRAPPER_VERSION = "1"

_INT_TYPES = {
    "uint8_t": (8, False), "uint16_t": (16, False), "uint32_t": (32, False), "uint64_t": (64, False),
    "int8_t": (8, True), "int16_t": (16, True), "int32_t": (32, True), "int64_t": (64, True),
}
_FLOAT_PROTOTYPE = "float {name}(float a, float b)"
_INT_PROTOTYPE = "uint64_t {name}(uint64_t a, uint64_t b)"

include_dir = cbuild.include_dir
cache_dir = cbuild.cache_dir


def builtin_models_dir() -> Path:
    """The folder of the built-in models (``AMSIM_BUILTIN_MODELS`` overrides it).

    They are the package ``amsim.c_models`` (the repository's ``c_models/``, mapped into amsim
    by pyproject.toml), found through the import system, so a checkout's editable install and an
    installed wheel give the same answer. The C compiler reads them, so they must be files on disk.
    """
    override = os.environ.get("AMSIM_BUILTIN_MODELS")
    if override:
        return Path(override)
    folder = importlib.resources.files("amsim.c_models")
    if not isinstance(folder, Path):
        raise ModelError(f"the built-in models ({folder}) are not files on disk; install amsim unpacked")
    return folder


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
    """A compile-time parameter of a model, passed to the compiler as the macro ``NAME.upper()``."""

    name: str
    default: int
    lo: int
    hi: int
    description: str = ""

    @property
    def macro(self) -> str:
        return self.name.upper()


@dataclasses.dataclass(frozen=True)
class Cost:
    """Published hardware cost of a model.

    ``power``, ``area`` and ``delay`` are relative to an exact multiplier of the
    same width (exact = 1.0); ``absolute`` holds figures in physical units
    (EvoApproxLib's ``PDK45_PWR`` in mW, ...). ``conditions`` says which
    configuration the figure is for (``{"bits": 16, "k": 6}``); empty means any.
    """

    power: float | None = None
    area: float | None = None
    delay: float | None = None
    node: str = ""
    source: str = ""
    conditions: dict = dataclasses.field(default_factory=dict)
    absolute: dict = dataclasses.field(default_factory=dict)

    def applies_to(self, bits: int | None, params: dict) -> bool:
        for key, value in self.conditions.items():
            actual = bits if key == "bits" else params.get(key)
            if actual is not None and int(actual) != int(value):
                return False
        return True


def _parse_widths(text: str, where: str) -> tuple[int, ...]:
    widths: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if ".." in part:
                lo, hi = (int(x) for x in part.split(".."))
                widths.update(range(lo, hi + 1))
            elif part:
                widths.add(int(part))
    except ValueError:
        raise ModelError(f"{where}: cannot read bits {text!r}; write 7, 1,3,5,7 or 2..32") from None
    if not widths or min(widths) < 1:
        raise ModelError(f"{where}: bits {text!r} must name widths >= 1")
    return tuple(sorted(widths))


def _parse_param(text: str, where: str) -> Param:
    words = shlex.split(text)
    if not words or not _NAME_RE.fullmatch(words[0]):
        raise ModelError(f"{where}: param needs a name: 'param: k default=6 range=2..16 \"...\"'")
    name, fields, description = words[0], {}, []
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if eq and key in ("default", "range"):
            fields[key] = value
        else:
            description.append(word)
    try:
        default = int(fields["default"])
        lo, hi = (int(x) for x in fields.get("range", f"{default}..{default}").split(".."))
    except (KeyError, ValueError):
        raise ModelError(f"{where}: param {name!r} needs default=INT and range=LO..HI") from None
    if not lo <= default <= hi:
        raise ModelError(f"{where}: param {name!r} default {default} is outside {lo}..{hi}")
    return Param(name, default, lo, hi, " ".join(description))


def _number(text: str):
    return float(text) if text not in ("", "-") else None


def _parse_cost(text: str, where: str) -> Cost:
    known = {"power", "area", "delay", "node", "source"}
    fields, conditions = {}, {}
    for word in shlex.split(text):
        key, eq, value = word.partition("=")
        if not eq:
            raise ModelError(f"{where}: cost entry {word!r} is not key=value")
        if key in known:
            fields[key] = value
        else:
            try:
                conditions[key] = int(value)
            except ValueError:
                raise ModelError(f"{where}: cost condition {word!r} must be an integer") from None
    try:
        return Cost(
            power=_number(fields.get("power", "")), area=_number(fields.get("area", "")),
            delay=_number(fields.get("delay", "")), node=fields.get("node", ""),
            source=fields.get("source", ""), conditions=conditions,
        )
    except ValueError:
        raise ModelError(f"{where}: cost figures must be numbers: {text!r}") from None


#: The bound keys of a claim, in the order amsim check reports them (docs/designs.md, "Claims").
CLAIM_BOUNDS = ("max_rel_error", "max_abs_error", "mean_rel_error", "bias_within", "mean_abs_error",
                "error_probability")
#: The bounds that have a ceiling besides the floor of 0: a probability is at most 1.
BOUND_CEILINGS = {"error_probability": Fraction(1)}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim line of a model's ``@amsim`` block, checked by ``amsim check`` (docs/designs.md, "Claims").

    ``properties: commutative, zero`` names properties; ``max_rel_error: 1/9`` (or another of
    :data:`CLAIM_BOUNDS`) states a bound. Either may end in conditions, ``bits=8..16 k=6``: the
    widths and parameter values the claim is made for (none: every configuration).
    """

    key: str  # "properties" or one of CLAIM_BOUNDS
    value: tuple[str, ...] | Fraction  # the property names, or the bound
    conditions: dict  # name -> (lo, hi), inclusive
    where: str  # file:line, for messages

    def applies_to(self, bits: int, params: dict) -> bool:
        for name, (lo, hi) in self.conditions.items():
            actual = bits if name == "bits" else params.get(name)
            if actual is None or not lo <= actual <= hi:
                return False
        return True


def parse_bound(text, what: str, at_most: Fraction | None = None) -> Fraction:
    """A bound as an exact fraction: a decimal (``0.0385``, ``1e-3``) or a ratio (``1/9``), finite and >= 0.

    Exact, so that a bound a design attains (Mitchell's 1/9) can be stated as it is. Numbers are
    taken by their shortest decimal (0.1 is 1/10, not the binary double nearest it). ``at_most``:
    the largest value the bound may take (1 for a probability, :data:`BOUND_CEILINGS`).
    """
    if isinstance(text, Fraction):
        value = text
    else:
        if isinstance(text, bool) or not isinstance(text, (str, numbers.Real)):
            raise RangeError(f"{what} must be a number >= 0 such as 0.05 or 1/9, not {text!r}")
        try:
            value = Fraction(text.strip() if isinstance(text, str) else repr(float(text)))
        except (ValueError, ZeroDivisionError):
            raise RangeError(f"{what} must be a number >= 0 such as 0.05 or 1/9, not {text!r}") from None
    if value < 0:
        raise RangeError(f"{what} must be >= 0, not {text}")
    if at_most is not None and value > at_most:
        raise RangeError(f"{what} must be <= {at_most} (a fraction of the pairs), not {text}")
    return value


_CONDITION_RE = re.compile(r"([A-Za-z_]\w*)=(-?\d+)(?:\.\.(-?\d+))?")
_PROPERTY_NAME_RE = re.compile(r"[a-z][a-z0-9-]*")


def _parse_claim(key: str, text: str, where: str, params: dict) -> Claim:
    """``commutative, zero bits=8..16`` (key ``properties``) or ``0.0782 bits=8..32 t=0`` (a bound)."""
    conditions, words = {}, []
    for word in text.replace(",", " ").split():
        if "=" not in word:
            words.append(word)
            continue
        m = _CONDITION_RE.fullmatch(word)
        if not m:
            raise ModelError(f"{where}: condition {word!r} must read NAME=VALUE or NAME=LO..HI (integers)")
        name, lo, hi = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2))
        if name != "bits" and name not in params:
            known = ", ".join(["bits", *params])
            raise ModelError(f"{where}: condition {word!r} names neither the width nor a parameter ({known})")
        if name in conditions or lo > hi:
            raise ModelError(f"{where}: condition {word!r} is empty or repeats {name!r}")
        conditions[name] = (lo, hi)
    if key == "properties":
        if not words:
            raise ModelError(f"{where}: 'properties:' names no property")
        for word in words:
            if not _PROPERTY_NAME_RE.fullmatch(word):
                raise ModelError(f"{where}: {word!r} is not a property name (lower case, digits and -)")
        return Claim(key, tuple(words), conditions, where)
    if len(words) != 1:
        raise ModelError(f"{where}: '{key}:' takes one bound, such as 0.05 or 1/9, then optional conditions")
    try:
        bound = parse_bound(words[0], key, BOUND_CEILINGS.get(key))
    except RangeError as exc:
        raise ModelError(f"{where}: {exc}") from None
    return Claim(key, bound, conditions, where)


#: Model names, function names and ApproxTrain stems: C identifiers (ASCII), safe as file names.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_HEADER_RE = re.compile(r"/\*\s*@amsim\b(.*?)\*/", re.S)
_KEY_RE = re.compile(r"^([A-Za-z_][\w.]*)\s*:\s*(.*)$")


def _parse_header(source: str, path: str) -> dict | None:
    """Return the ``@amsim`` block as {key: [values...]}, or None when the file has none."""
    match = _HEADER_RE.search(source)
    if not match:
        return None
    first_line = source[: match.start()].count("\n") + 1
    entries: list[list] = []  # [key, value, line]
    for offset, raw in enumerate(match.group(1).splitlines()):
        line = re.sub(r"^\s*\*?\s?", "", raw).rstrip()
        if not line.strip():
            continue
        key = _KEY_RE.match(line)
        if key:
            entries.append([key.group(1).lower(), key.group(2).strip(), first_line + offset])
        elif entries:
            entries[-1][1] += " " + line.strip()
        else:
            raise ModelError(f"{path}:{first_line + offset}: expected 'key: value' in the @amsim block")
    fields: dict[str, list] = {}
    for key, value, line in entries:
        fields.setdefault(key, []).append((value, f"{path}:{line}"))
    return fields


_EVO_RE = re.compile(r"^//\s*([A-Z][A-Z0-9_]*%?)\s*=\s*([-+0-9.eE]+)\s*(\S*)\s*$", re.M)
_EVO_NAME_RE = re.compile(r"^mul(\d+)(?:x(\d+))?([us])_")


def _parse_evoapprox(source: str) -> tuple[dict, dict]:
    """EvoApproxLib's header figures and how finely each is printed.

    ``// MAE% = 1.78 %`` gives ``{"MAE%": 1.78}`` and the rounding ``{"MAE%": 0.005}``: half a unit
    of the last digit shown, the most by which the true figure can differ from the printed one.
    """
    figures, rounding = {}, {}
    for key, value, _unit in _EVO_RE.findall(source):
        try:
            last_digit = Decimal(value).as_tuple().exponent  # "36" -> 0, "1.78" -> -2, "5e-3" -> -3
        except InvalidOperation:  # "1.2.3", "-": not a figure
            continue
        figures[key] = float(value)
        rounding[key] = 0.5 * 10.0 ** last_digit
    return figures, rounding


#: EvoApproxLib's own exact circuits, (width, signed) -> (circuit, PDK45 power mW, area um2, delay ns), as
#: their header comments give them: the reference that turns a header's absolute PDK45 figures into the
#: figures relative to an exact multiplier that amsim's costs are (the library synthesises every
#: circuit with the same flow, so the ratios compare like with like).
EVOAPPROX_EXACT_PDK45 = {
    (8, False): ("mul8u_1JJQ", 0.391, 709.6, 1.43),
    (8, True): ("mul8s_1KV6", 0.425, 729.8, 1.48),
}


def _evoapprox_cost(evo: dict, bits: tuple, signed: bool) -> Cost | None:
    """The header's PDK45 figures as a :class:`Cost`, relative to EvoApproxLib's exact circuit of the
    same width where the library has one (absolute figures only otherwise)."""
    absolute = {unit_key: evo[key] for key, unit_key in
                (("PDK45_PWR", "power_mw"), ("PDK45_AREA", "area_um2"), ("PDK45_DELAY", "delay_ns")) if key in evo}
    if not absolute:
        return None
    node, source = "NanGate 45 nm (PDK45)", "EvoApproxLib header"
    exact = EVOAPPROX_EXACT_PDK45.get((bits[0], signed)) if len(bits) == 1 else None
    if exact is None:
        return Cost(node=node, source=source, absolute=absolute)
    name, *reference = exact
    relative = {field: (absolute[unit_key] / ref if unit_key in absolute else None)
                for field, unit_key, ref in zip(("power", "area", "delay"), ("power_mw", "area_um2", "delay_ns"),
                                                reference)}
    return Cost(**relative, node=node, conditions={"bits": bits[0]}, absolute=absolute,
                source=f"{source}, relative to EvoApproxLib's exact {name} ({reference[0]:g} mW)")


def _strip_comments(source: str) -> str:
    # Keep newlines so that positions still map to lines.
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))

    return re.sub(r"/\*.*?\*/|//[^\n]*", blank, source, flags=re.S)


_C_TYPE = r"(?:const\s+)?(float|double|u?int(?:8|16|32|64)_t|(?:unsigned\s+|signed\s+)?(?:char|short|int|long\s+long|long))"
_DEF_RE = re.compile(
    r"(?:^|[;}\s])(static\s+)?(?:inline\s+)?" + _C_TYPE + r"\s+([A-Za-z_]\w*)\s*\(\s*"
    + _C_TYPE + r"\s*(?:[A-Za-z_]\w*)?\s*,\s*" + _C_TYPE + r"\s*(?:[A-Za-z_]\w*)?\s*\)\s*\{"
)
_ANY_DEF_RE = re.compile(r"(?:^|[;}\s])(?:static\s+)?(?:inline\s+)?[\w\s\*]+?\b([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{")


@dataclasses.dataclass(frozen=True)
class _Prototype:
    ret: str
    args: tuple[str, str]
    static: bool

    def text(self, name):
        return f"{self.ret} {name}({self.args[0]} a, {self.args[1]} b)"


def _find_definitions(source: str) -> dict[str, _Prototype]:
    code = _strip_comments(source)
    found = {}
    for m in _DEF_RE.finditer(code):
        static, ret, name, a, b = m.groups()
        norm = lambda t: re.sub(r"\s+", " ", t)  # noqa: E731
        found[name] = _Prototype(norm(ret), (norm(a), norm(b)), bool(static))
    return found


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A parsed C model: its self-description, not yet compiled.

    Use :meth:`compile` to get a callable :class:`CompiledModel` for one width
    and parameter set.
    """

    name: str
    kind: str  # "float" or "int"
    function: str
    bits: tuple[int, ...]
    signed: bool
    params: dict  # name -> Param
    description: str
    citation: str
    costs: tuple[Cost, ...]
    path: Path
    source_sha256: str
    prototype: _Prototype
    approxtrain: str = ""
    #: EvoApproxLib's header figures (``{"MAE": 36.0, "PDK45_PWR": 0.0023, ...}``), as the file states them.
    evoapprox: dict = dataclasses.field(default_factory=dict)
    #: How finely each of them is printed: half a unit of its last digit.
    evoapprox_rounding: dict = dataclasses.field(default_factory=dict)
    has_header: bool = True
    #: Files of models of the same name that this one hides (see :func:`list_models`), first listed first.
    shadows: tuple[Path, ...] = ()
    #: What the block claims about the design (``properties:`` and bound lines), for ``amsim check``.
    claims: tuple[Claim, ...] = ()

    # -- validation --------------------------------------------------------------------------

    def check_bits(self, bits: int) -> int:
        """Return ``bits`` if the model supports it, else raise :class:`RangeError`."""
        what = "mantissa width M" if self.kind == "float" else "operand width"
        if check_integer(bits, f"the {what} of model {self.name!r}") not in self.bits:
            raise RangeError(
                f"model {self.name!r} does not support {what} {bits}; it supports {format_widths(self.bits)}"
            )
        return int(bits)

    def resolve_params(self, params: dict | None) -> dict:
        """Fill defaults and check ranges; unknown names are refused with the known ones."""
        params = dict(params or {})
        resolved = {}
        for name, value in params.items():
            if name not in self.params:
                known = ", ".join(self.params) or "none"
                raise RangeError(f"model {self.name!r} has no parameter {name!r} (its parameters: {known})")
            p = self.params[name]
            if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # 1.5 is refused, not truncated
                raise RangeError(f"parameter {name} of {self.name!r} must be an integer, got {value!r}")
            value = int(value)
            if not p.lo <= value <= p.hi:
                raise RangeError(f"parameter {name}={value} of {self.name!r} is outside its range {p.lo}..{p.hi}")
            resolved[name] = value
        for name, p in self.params.items():
            resolved.setdefault(name, p.default)
        return resolved

    def cost_for(self, bits: int | None = None, params: dict | None = None) -> Cost | None:
        """The published cost figure for this configuration, or None when there is none."""
        params = self.resolve_params(params)
        matches = [c for c in self.costs if c.applies_to(bits, params)]
        # Prefer the most specific figure (most conditions).
        return max(matches, key=lambda c: len(c.conditions), default=None)

    def claims_for(self, bits: int, params: dict | None = None) -> list[Claim]:
        """The claims made for this width and parameter set (defaults filled in)."""
        params = self.resolve_params(params)
        return [c for c in self.claims if c.applies_to(bits, params)]

    @property
    def expected_prototype(self) -> str:
        return (_FLOAT_PROTOTYPE if self.kind == "float" else _INT_PROTOTYPE).format(name=self.function)

    # -- compilation ---------------------------------------------------------------------------

    def compile(self, bits: int, params: dict | None = None) -> CompiledModel:
        """Compile (or fetch from the cache) this model for one width and parameter set."""
        bits = self.check_bits(bits)
        params = self.resolve_params(params)
        return _compile(self, bits, params)


def format_widths(widths) -> str:
    """Render a set of widths compactly: ``1, 3, 5, 7`` or ``2..32``."""
    widths = sorted(widths)
    if len(widths) > 2 and widths == list(range(widths[0], widths[-1] + 1)):
        return f"{widths[0]}..{widths[-1]}"
    return ", ".join(map(str, widths))


def load_model(path) -> Model:
    """Parse one C model file.

    Parameters
    ----------
    path : str or Path
        A ``.c`` file: an amsim model with an ``@amsim`` block, an ApproxTrain
        float model, or an EvoApproxLib circuit exactly as downloaded.

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        With the file, line and the expected prototype, when the file does not
        describe a usable model.
    """
    path = Path(path).resolve()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None
    source = raw.decode("utf-8", errors="replace")
    header = _parse_header(source, str(path))
    definitions = _find_definitions(source)
    evo, evo_rounding = _parse_evoapprox(source)

    def one(key, default=""):
        values = (header or {}).get(key)
        if not values:
            return default
        if len(values) > 1:
            raise ModelError(f"{values[1][1]}: '{key}' given twice")
        return values[0][0]

    def where(key):
        return (header or {}).get(key, [("", str(path))])[0][1]

    if header is not None:
        name = one("name")
        if not name:
            raise ModelError(f"{path}: the @amsim block needs 'name:'")
        function = one("function", name)
    else:
        name = function = _guess_function(path, definitions)
    # The name and the ApproxTrain stem become output file names: a name such as ../x would
    # write outside --out, so both must be identifier-like.
    for key, value in (("name", name), ("approxtrain", one("approxtrain"))):
        if value and not _NAME_RE.fullmatch(value):
            raise ModelError(f"{where(key)}: {key} {value!r} must be an identifier: a letter or _, then "
                             "letters, digits or _ (it names the output files)")
    if not _NAME_RE.fullmatch(function):
        raise ModelError(f"{where('function')}: function name {function!r} is not a C identifier")

    kind = one("kind").lower() or None
    proto = definitions.get(function)
    if kind not in (None, "float", "int"):
        raise ModelError(f"{path}: kind must be 'float' or 'int', not {kind!r}")
    if proto is None:
        expected = (_FLOAT_PROTOTYPE if kind == "float" else _INT_PROTOTYPE).format(name=function)
        hint = ""
        for m in _ANY_DEF_RE.finditer(_strip_comments(source)):
            if m.group(1) == function:
                line = source[: m.start(1)].count("\n") + 1
                hint = f" (found {function}({m.group(2).strip()}) at line {line}, which does not match)"
                break
        raise ModelError(f"{path}: no function {function!r} with the expected prototype '{expected}'{hint}")
    proto_kind = _prototype_kind(proto)
    if proto_kind is None or (kind and kind != proto_kind):
        expected = (_FLOAT_PROTOTYPE if (kind or "int") == "float" else _INT_PROTOTYPE).format(name=function)
        raise ModelError(
            f"{path}: wrong prototype '{proto.text(function)}'; expected '{expected}'"
            + ("" if kind == "float" else " or an EvoApproxLib fixed-width variant such as"
               f" 'uint16_t {function}(uint8_t A, uint8_t B)'")
        )
    kind = proto_kind
    if proto.static:
        raise ModelError(f"{path}: function {function!r} is static; the model function must have external linkage")

    evo_name = _EVO_NAME_RE.match(function)
    signed_text = one("signed").lower()
    if signed_text:
        if signed_text not in ("yes", "no", "true", "false"):
            raise ModelError(f"{path}: signed must be yes or no, not {signed_text!r}")
        signed = signed_text in ("yes", "true")
    elif evo_name:
        signed = evo_name.group(3) == "s"
    else:
        signed = kind == "int" and _INT_TYPES[proto.args[0]][1]
    if kind == "float" and signed_text:
        raise ModelError(f"{path}: 'signed' applies to integer models only")

    bits_text = one("bits")
    if bits_text:
        bits = _parse_widths(bits_text, str(path))
    elif evo_name:
        bits = (int(evo_name.group(1)),)
    elif kind == "float":
        bits = tuple(range(1, 24))
    else:
        arg_bits = _INT_TYPES.get(proto.args[0], (64, False))[0]
        bits = tuple(range(1, min(arg_bits, 32) + 1))
    if kind == "float" and max(bits) > 23:
        raise ModelError(f"{path}: a float model has at most 23 mantissa bits, not {max(bits)}")
    if kind == "int" and max(bits) > 32:
        raise ModelError(f"{path}: integer models are supported up to 32-bit operands, not {max(bits)}")

    params = {}
    for value, where in (header or {}).get("param", []):
        p = _parse_param(value, where)
        if p.name in params:
            raise ModelError(f"{where}: param {p.name!r} given twice")
        params[p.name] = p
    costs = [_parse_cost(value, where) for value, where in (header or {}).get("cost", [])]
    header_cost = _evoapprox_cost(evo, bits, signed) if kind == "int" else None
    if header_cost is not None:
        costs.append(header_cost)

    claims = [_parse_claim(key, value, where, params)
              for key in ("properties", *CLAIM_BOUNDS) for value, where in (header or {}).get(key, [])]

    known = {"name", "kind", "function", "bits", "signed", "param", "description", "citation", "cost",
             "approxtrain", "properties", *CLAIM_BOUNDS}
    for key, values in (header or {}).items():
        if key not in known:
            raise ModelError(f"{values[0][1]}: unknown key {key!r} in the @amsim block (known: {', '.join(sorted(known))})")

    citation = one("citation")
    if not citation and header is None and "cite" in source[:2000]:
        m = re.search(r"please cite the following article\(s\):\s*(.*)", source)
        citation = m.group(1).strip() if m else ""
    return Model(
        name=name, kind=kind, function=function, bits=bits, signed=signed, params=params,
        description=one("description"), citation=citation, costs=tuple(costs), path=path,
        source_sha256=hashlib.sha256(raw).hexdigest(), prototype=proto,
        approxtrain=one("approxtrain"), evoapprox=evo, evoapprox_rounding=evo_rounding,
        has_header=header is not None, claims=tuple(claims),
    )


def _prototype_kind(proto: _Prototype) -> str | None:
    types = {proto.ret, *proto.args}
    if types == {"float"}:
        return "float"
    if all(t in _INT_TYPES for t in types) and proto.args[0] == proto.args[1]:
        return "int"
    return None


def _guess_function(path: Path, definitions: dict) -> str:
    candidates = [n for n, p in definitions.items() if not p.static and _prototype_kind(p)]
    if path.stem in candidates:
        return path.stem
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelError(
            f"{path}: no @amsim block and no function with a multiplier prototype; expected "
            f"'{_FLOAT_PROTOTYPE.format(name='NAME')}' or '{_INT_PROTOTYPE.format(name='NAME')}'"
        )
    raise ModelError(
        f"{path}: no @amsim block and several candidate functions ({', '.join(candidates)}); "
        "add an @amsim block naming the model function, or name the file after it"
    )


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def list_models(models_dirs=()) -> dict[str, Model]:
    """All models by name: the built-ins, then each of ``models_dirs`` (later folders win).

    A model that hides another of the same name lists the hidden files in
    :attr:`Model.shadows`, so that callers can tell the user which one is used.
    """
    models: dict[str, Model] = {}
    for folder in (builtin_models_dir(), *map(Path, models_dirs)):
        if not folder.is_dir():
            raise ModelError(f"models directory {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
        for path in sorted(folder.glob("*.c")):
            model = load_model(path)
            hidden = models.get(model.name)
            if hidden is not None:  # a folder given twice hides nothing new
                extra = (hidden.path,) if hidden.path != model.path else ()
                model = dataclasses.replace(model, shadows=(*hidden.shadows, *extra))
            models[model.name] = model
    return models


def find_model(name: str, models_dirs=()) -> Model:
    """The model ``name`` names: a path to a ``.c`` file, or a model's name (the built-ins, then
    ``models_dirs``); an unknown name raises :class:`UnknownModelError` listing the known ones.

    This is the one place that decides what a model argument means, so every command and every
    function taking a model takes a C file as well as a name. Names are C identifiers, so a name
    ending in ``.c`` is always a file, and a missing one is reported as such.
    """
    candidate = Path(name)
    if candidate.suffix == ".c":
        return load_model(candidate)
    models = list_models(models_dirs)
    if name not in models:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(sorted(models))}")
    return models[name]


# ----------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------


class CompiledModel:
    """A model compiled for one width and one parameter set.

    Attributes
    ----------
    model : Model
    bits : int
        Operand width (integer models) or mantissa width M (float models).
    params : dict
    address : int
        Address of the uniform entry point ``amsim__model``: ``float(float,
        float)`` for float models, ``int64_t(int64_t, int64_t)`` for integer
        models (unsigned results are returned as their uint64 bit pattern,
        signed results sign-extended). The Numba sweeps call it through this
        pointer.
    lib, ffi
        The cffi module; it is registered with Numba, so ``lib.amsim__model``
        can also be called from your own ``@njit`` code.
    key : str
        The build's name in the cache: a hash of everything that went into the
        shared object (source, width, parameters, amsim's headers, compiler and
        flags). What is computed from the model alone may be cached under it.
    """

    def __init__(self, model: Model, bits: int, params: dict, module):
        self.model = model
        self.bits = bits
        self.params = params
        self.key = module.__name__
        self.ffi = module.ffi
        self.lib = module.lib
        self.address = int(self.ffi.cast("uintptr_t", self.ffi.addressof(self.lib, "amsim__model")))

    @property
    def kind(self):
        return self.model.kind

    @property
    def signed(self):
        return self.model.signed

    def __repr__(self):
        params = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"<CompiledModel {self.model.name} bits={self.bits}{params}>"

    def operand_range(self) -> tuple[int, int]:
        """Integer models: the operand interval ``[lo, hi)``."""
        n = self.bits
        return (-(1 << (n - 1)), 1 << (n - 1)) if self.signed else (0, 1 << n)

    def evaluate(self, a, b) -> np.ndarray:
        """Call the model elementwise on two arrays (broadcast), in C, without the GIL.

        Integer models take and return int64 (an unsigned 32-bit product that
        exceeds 2^63 comes back as uint64); float models take and return float32.
        """
        if self.kind == "float":
            a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            out = np.empty(a.shape, np.float32)
            self.lib.amsim__eval(self.ffi.from_buffer("float[]", a), self.ffi.from_buffer("float[]", b),
                                 self.ffi.from_buffer("float[]", out), a.size)
            return out
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        lo, hi = self.operand_range()
        for name, x in (("a", a), ("b", b)):
            if x.size and (x.min() < lo or x.max() >= hi):
                raise RangeError(f"operand {name} of {self.model.name} ({self.bits}-bit) must lie in [{lo}, {hi})")
        a = np.ascontiguousarray(a, np.int64)
        b = np.ascontiguousarray(b, np.int64)
        out = np.empty(a.shape, np.int64)
        self.lib.amsim__eval(self.ffi.from_buffer("int64_t[]", a), self.ffi.from_buffer("int64_t[]", b),
                             self.ffi.from_buffer("int64_t[]", out), a.size)
        return out.view(np.uint64) if not self.signed and self.bits == 32 else out


_BASE_FLAGS = ["-O2", "-fno-strict-aliasing"]


def _wrapper_source(model: Model) -> tuple[str, str]:
    """The cffi cdef and the C glue that gives every model one uniform entry point."""
    fn = model.function
    if model.kind == "float":
        cdef = ("float amsim__model(float a, float b);\n"
                "void amsim__eval(const float *a, const float *b, float *out, int64_t n);\n")
        body = f"""
__attribute__((noinline)) float amsim__model(float a, float b) {{ return {fn}(a, b); }}
"""
        eval_t = "float"
    else:
        ret_signed = _INT_TYPES[model.prototype.ret][1]
        arg = model.prototype.args[0]
        # Operands arrive as int64 (two's complement for signed models); the circuit sees the
        # low AMSIM_BITS bits in its own argument type. A signed result held in an unsigned type
        # (EvoApproxLib's uint16_t mul8s_...) is sign-extended from 2n bits.
        if model.signed and not ret_signed:
            fix = ("const int sh = 64 - (2 * AMSIM_BITS > 64 ? 64 : 2 * AMSIM_BITS);\n"
                   "    return (int64_t)((uint64_t)r << sh) >> sh;")
        else:
            fix = "return (int64_t)r;"
        body = f"""
__attribute__((noinline)) int64_t amsim__model(int64_t a, int64_t b) {{
    const uint64_t mask = AMSIM_BITS >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << AMSIM_BITS) - 1);
    {model.prototype.ret} r = {fn}(({arg})((uint64_t)a & mask), ({arg})((uint64_t)b & mask));
    {fix}
}}
"""
        cdef = ("int64_t amsim__model(int64_t a, int64_t b);\n"
                "void amsim__eval(const int64_t *a, const int64_t *b, int64_t *out, int64_t n);\n")
        eval_t = "int64_t"
    # A plain C loop over an operand grid: the baseline the Numba sweeps are measured against.
    if model.kind == "float":
        cdef += "void amsim__grid(int64_t row0, int64_t row1, int64_t m, float *out);\n"
        body += """
static float amsim__significand(int64_t i, int64_t m) {
    uint32_t u = 0x3F800000u | (uint32_t)(i << (23 - m));
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
void amsim__grid(int64_t row0, int64_t row1, int64_t m, float *out) {
    const int64_t n = (int64_t)1 << m;
    for (int64_t i = row0; i < row1; ++i)
        for (int64_t j = 0; j < n; ++j) *out++ = amsim__model(amsim__significand(i, m), amsim__significand(j, m));
}
"""
    else:
        cdef += "void amsim__grid(int64_t a0, int64_t a1, int64_t b0, int64_t nb, int64_t *out);\n"
        body += """
void amsim__grid(int64_t a0, int64_t a1, int64_t b0, int64_t nb, int64_t *out) {
    for (int64_t a = a0; a < a1; ++a)
        for (int64_t j = 0; j < nb; ++j) *out++ = amsim__model(a, b0 + j);
}
"""
    body += f"""
void amsim__eval(const {eval_t} *a, const {eval_t} *b, {eval_t} *out, int64_t n) {{
    for (int64_t i = 0; i < n; ++i) out[i] = amsim__model(a[i], b[i]);
}}
"""
    return cdef, body


def _compile(model: Model, bits: int, params: dict) -> CompiledModel:
    cdef, glue = _wrapper_source(model)
    macros = [f"-DAMSIM_BITS={bits}"] + [f"-D{model.params[k].macro}={v}" for k, v in sorted(params.items())]
    # #include the model by path so that compiler diagnostics name the model's own file and line.
    source = f'#include <stdint.h>\n#include <string.h>\n#include "{model.path}"\n{glue}'
    try:
        module = cbuild.load_cached("_amsim_model", cdef, source, [*_BASE_FLAGS, *macros],
                                    key_parts=[_WRAPPER_VERSION, model.source_sha256],
                                    include_dirs=[model.path.parent])
    except cbuild.BuildFailed as exc:
        raise _compile_error(model, exc.output) from None
    except FileNotFoundError:
        raise CompileError(f"no C compiler found (tried {cbuild.compiler()[0]!r}); install gcc or set CC",
                           path=str(model.path)) from None
    _register_with_numba(module)
    return CompiledModel(model, bits, params, module)


_REGISTERED: set[str] = set()


def _register_with_numba(module) -> None:
    """Let user ``@njit`` code call ``lib.amsim__model`` (cffi_utils.register_module)."""
    if module.__name__ in _REGISTERED:
        return
    from numba.core.typing import cffi_utils

    cffi_utils.register_module(module)
    _REGISTERED.add(module.__name__)


_DIAG_RE = re.compile(r"^(.*?):(\d+):(?:(\d+):)?\s*(fatal error|error):\s*(.*)$", re.M)


def _compile_error(model: Model, output: str) -> CompileError:
    diags = _DIAG_RE.findall(output)
    in_model = [d for d in diags if Path(d[0]).name == model.path.name]
    if in_model:
        _file, line, col, _sev, msg = in_model[0]
        where = f"{model.path}:{line}" + (f":{col}" if col else "")
        return CompileError(f"{where}: error: {msg}", path=str(model.path), line=int(line),
                            compiler_output=output)
    if diags:
        _file, line, col, _sev, msg = diags[0]
        return CompileError(
            f"{model.path}: compiling the model failed: {msg} (while calling it as "
            f"'{model.expected_prototype}')", path=str(model.path), compiler_output=output)
    tail = output.strip().splitlines()[-1:] or ["no diagnostics"]
    return CompileError(f"{model.path}: compiling the model failed: {tail[0]}", path=str(model.path),
                        compiler_output=output)
