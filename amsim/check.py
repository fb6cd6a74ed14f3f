"""Properties of a multiplier, checked against exact products: what ``amsim check`` and
:mod:`amsim.testing` run. docs/designs.md ("Claims") defines every property; this module is their
one implementation.

What is checked (:func:`check`) is a *subject*: a C model compiled at one width and parameter set,
or a mantissa LUT. Its properties are stated over a :class:`Domain` of operand pairs, n-bit
integers or M-bit mantissas, and compared with the exact products:

* always: the model answers on every pair (``no-crash``) and its products fit their width
  (``in-range``); float subjects also multiply float32 values as docs/numerics.md section 2 says
  (``float-specials``, ``float-scaling``);
* what the model's ``@amsim`` block claims (:class:`amsim.models.Claim`) and what the caller asks.

Pointwise properties are checked on every pair when the domain has at most
:data:`EXHAUSTIVE_MAX_PAIRS` of them, from the product grid the sweeps compute; otherwise
hypothesis samples pairs (seeded, no example database) and shrinks a failure to a small
counterexample. Statistics (mean relative error, bias, mean absolute error, error probability) come
from :mod:`amsim.stats`, over every pair or over seeded samples. A model's C code runs in a
:class:`amsim.generate.Sandbox`, so a crash or a hang is a failed ``no-crash`` with the operands that
caused it.

One file, although long: each property is written once, as a vectorised predicate over operand
pairs, and the exhaustive scan, the hypothesis search and the reports all run that one definition.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from hypothesis import (HealthCheck, Phase, Verbosity, example, given, seed as hypothesis_seed, settings,
                        strategies as st, target)
from hypothesis.errors import Flaky

from . import generate, reference, stats, sweep
from .errors import AmsimError, LUTError, ModelCrashed, ModelError, ModelTimedOut, RangeError, check_integer
from .lut import LUT, load_any, names_lut_file
from .models import BOUND_CEILINGS, CLAIM_BOUNDS, Model, find_model, parse_bound

__all__ = ["check", "Report", "PropertyResult", "Counterexample", "Domain", "PROPERTIES", "STATISTICS",
           "property_names", "EXHAUSTIVE_MAX_PAIRS", "DEFAULT_EXAMPLES", "DEFAULT_SAMPLES", "DEFAULT_TIMEOUT",
           "operands", "operand_pairs", "mantissas", "float32s"]

#: A domain of at most this many operand pairs is checked exhaustively (12-bit operands, M = 12).
EXHAUSTIVE_MAX_PAIRS = 1 << 24
#: Examples hypothesis tries per sampled property.
DEFAULT_EXAMPLES = 1000
#: Seeded pairs behind a sampled statistic.
DEFAULT_SAMPLES = 1 << 20
#: Seconds a model may compute without progress: on a block of the exhaustive grid, a sampled pair, a
#: row or a pair while a fault is located, or a statistic.
DEFAULT_TIMEOUT = 10.0
#: A sampled statistic fails only when it exceeds its bound by more than this many standard errors of
#: the sample mean: a claim that holds exactly at its bound then fails by chance in fewer than 1 in
#: 30000 runs.
STANDARD_ERRORS = 4.0


# ----------------------------------------------------------------------------------------------
# The operands
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Domain:
    """The operand pairs a subject's properties are stated over, and their exact products.

    ``kind="int"``: n-bit integers, unsigned [0, 2^n) or signed [-2^(n-1), 2^(n-1)); the exact
    product is a * b. Values are uint64 (unsigned) or int64 (signed) arrays, so that an unsigned
    model's result with bit 63 set is the huge number it is, not a negative one.

    ``kind="mantissa"``: M-bit mantissa indices i, j in [0, 2^M), standing for the significands
    1 + i/2^M and 1 + j/2^M (docs/numerics.md section 1); the exact product of the significands, in
    float64 (exact: at most 2M + 2 <= 48 significant bits).
    """

    kind: str
    bits: int
    signed: bool = False

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        """One past the largest operand."""
        return 1 << (self.bits - 1) if self.signed else 1 << self.bits

    @property
    def pairs(self) -> int:
        return (self.hi - self.lo) ** 2

    @property
    def exhaustive(self) -> bool:
        return self.pairs <= EXHAUSTIVE_MAX_PAIRS

    @property
    def one(self) -> int:
        """The operand that stands for the number 1: the integer 1, or mantissa index 0 (1.0)."""
        return 1 if self.kind == "int" else 0

    @property
    def operands_name(self) -> str:
        return "integers" if self.kind == "int" else "significands"

    def describe(self) -> str:
        if self.kind == "int":
            return f"{self.bits}-bit {'signed' if self.signed else 'unsigned'} integers"
        return f"significands 1 + i/2^{self.bits} (M = {self.bits})"

    def values(self, products) -> np.ndarray:
        """Products as this domain compares them: uint64, int64 or float64."""
        products = np.asarray(products)
        if self.kind == "mantissa":
            return products.astype(np.float64)
        return products.astype(np.int64 if self.signed else np.uint64)

    def exact(self, a, b) -> np.ndarray:
        if self.kind == "int":
            t = np.int64 if self.signed else np.uint64  # |a b| < 2^64 unsigned, <= 2^62 signed
            return np.asarray(a).astype(t) * np.asarray(b).astype(t)
        base = 1 << self.bits
        return np.ldexp((base + np.asarray(a)).astype(np.float64) * (base + np.asarray(b)), -2 * self.bits)

    def fits(self, p) -> np.ndarray:
        """True where a product is one the subject may return (property ``in-range``)."""
        if self.kind == "mantissa":  # what a LUT entry may hold (docs/numerics.md section 1)
            return np.isfinite(p) & (p >= 0)
        width = 2 * self.bits
        if width >= 64:
            return np.ones(np.shape(p), bool)
        if self.signed:
            return (p >= -(1 << (width - 1))) & (p < (1 << (width - 1)))
        return p < np.uint64(1 << width)

    def order(self) -> np.ndarray:
        """Every operand, simplest first: 0, 1, -1, 2, -2, ... (the order hypothesis shrinks towards).

        The exhaustive checks report the first failing pair (a, b) in this order, a first.
        """
        values = np.arange(self.lo, self.hi, dtype=np.int64)
        return values[np.lexsort((values < 0, np.abs(values)))]

    def strategy(self):
        return st.integers(self.lo, self.hi - 1)

    def number(self, v):
        """A product as a Python number, exact: int, or float for significands."""
        return float(v) if self.kind == "mantissa" else int(v)


# ----------------------------------------------------------------------------------------------
# Hypothesis strategies (public through amsim.testing)
# ----------------------------------------------------------------------------------------------


def operands(bits: int, *, signed: bool = False):
    """Operands of an n-bit integer multiplier: integers in [0, 2^n), or [-2^(n-1), 2^(n-1)) signed."""
    check_integer(bits, "bits", 1, 32)
    return Domain("int", bits, signed).strategy()


def operand_pairs(bits: int, *, signed: bool = False):
    """Pairs (a, b) of :func:`operands`."""
    return st.tuples(operands(bits, signed=signed), operands(bits, signed=signed))


def mantissas(bits: int):
    """Mantissa indices i in [0, 2^M) of an M-bit mantissa multiplier (the significand 1 + i/2^M)."""
    check_integer(bits, "bits (M)", 1, 23)
    return Domain("mantissa", bits).strategy()


_SPECIALS = tuple(np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001,
                            0x00000001, 0x807FFFFF], np.uint32).view(np.float32))


def float32s(bits: int = 23, *, normal: bool = True, specials: bool = False):
    """float32 operands for an M-bit float multiplier, as numpy float32 scalars.

    ``normal``: normal numbers of every exponent whose fraction has at most ``bits`` bits (23: any
    normal float32; a model truncates the others itself). ``specials``: ±0, subnormals, ±inf and
    NaNs. They shrink towards 1.0 and +0.
    """
    check_integer(bits, "bits (M)", 0, 23)
    if not (normal or specials):
        raise RangeError("float32s needs normal=True, specials=True or both")
    options = []
    if normal:
        options.append(st.builds(_float32, st.booleans(), st.integers(-126, 127),
                                 st.integers(0, (1 << bits) - 1).map(lambda f: f << (23 - bits))))
    if specials:
        subnormal = st.integers(1, (1 << 23) - 1).map(lambda f: np.uint32(f).view(np.float32))
        options += [st.sampled_from(_SPECIALS), st.builds(lambda s, x: -x if s else x, st.booleans(), subnormal)]
    return st.one_of(options)


def _float32(negative: bool, exponent: int, fraction: int) -> np.float32:
    pattern = (int(negative) << 31) | ((exponent + 127) << 23) | fraction
    return np.uint32(pattern).view(np.float32)


# ----------------------------------------------------------------------------------------------
# Where the approximate products come from
# ----------------------------------------------------------------------------------------------


class _Fault(Exception):
    """The model crashed, or hung, on the operands (a, b) (None: not known): a failure of ``no-crash``.

    ``float32``: a and b are float32 operands, not operands of the domain.
    """

    def __init__(self, a, b, how: str, float32: bool = False):
        super().__init__(how)
        self.a, self.b, self.how, self.float32 = a, b, how, float32


class _Hang(BaseException):
    """A :class:`_Fault` that ends a hypothesis run at once: hypothesis shrinks Exceptions only, and
    each try at shrinking a hang would cost the whole time limit."""

    def __init__(self, fault: _Fault):
        super().__init__(str(fault))
        self.fault = fault


def _describe(exc: ModelCrashed) -> str:
    """What the sandbox says happened, without the model's name: "crashed (killed by SIGSEGV)"."""
    return str(exc).split(" ", 2)[-1] if str(exc).startswith("model ") else str(exc)


def _evaluate(cm, a: np.ndarray, b: np.ndarray, floats: bool = False) -> np.ndarray:
    """The model on operands of its domain (integers, or mantissa indices: called on their significands),
    or with ``floats`` on float32 operands."""
    if floats or cm.kind == "int":
        return cm.evaluate(a, b)
    scale = 2.0 ** -cm.bits
    return cm.evaluate((1 + a * scale).astype(np.float32), (1 + b * scale).astype(np.float32))


def _pairs_in_order(cm, progress, a, b, floats=False):
    """Sandbox call: the model on (a[k], b[k]) one pair at a time, ``progress`` = k, so that a fault
    names its pair."""
    out = []
    for k in range(len(a)):
        progress.value = k
        out.append(_evaluate(cm, a[k:k + 1], b[k:k + 1], floats))
    return np.concatenate(out)


def _rows_in_order(cm, progress, order):
    """Sandbox call: the model on every pair, row a = order[r] at a time, ``progress`` = r."""
    for r, a in enumerate(order):
        progress.value = r
        _evaluate(cm, np.full(len(order), a), order)


#: Pairs per block of the exhaustive grid: the sandbox's time limit applies to each block.
_GRID_BLOCK = 1 << 20


def _grid(cm, progress, domain):
    """Sandbox call: the products of every pair, rows a and columns b in operand order, computed by the
    sweeps in blocks of rows; ``progress`` = the first row of the block being computed."""
    n, lo = domain.hi - domain.lo, domain.lo
    step = max(1, _GRID_BLOCK // n)
    blocks = []
    for r0 in range(0, n, step):
        progress.value = r0
        rows = range(r0, min(r0 + step, n))
        if domain.kind == "mantissa":  # a float model on significands
            blocks.append(sweep.float_grid(cm, domain.bits, rows=rows))
        else:
            blocks.append(sweep.int_grid(cm, range(lo + rows.start, lo + rows.stop), range(lo, domain.hi)))
    return np.concatenate(blocks)


def _int_statistics(cm, progress, samples, seed):
    return stats.int_stats(cm, samples=samples, seed=seed)


def _mantissa_statistics(cm, progress, samples, seed):
    return stats.mantissa_stats(cm.bits, cm=cm, samples=samples, seed=seed)


class _Live:
    """Products computed by calling the model in its sandbox, pair by pair (sampled checks)."""

    def __init__(self, sandbox: generate.Sandbox, domain: Domain):
        self.sandbox, self.domain = sandbox, domain

    def __call__(self, a, b, floats=False):
        a, b = np.broadcast_arrays(a, b)
        flat_a, flat_b = a.ravel(), b.ravel()
        try:
            out = self.sandbox.call(_pairs_in_order, flat_a, flat_b, floats)
        except ModelCrashed as exc:
            k = exc.index
            fault = _Fault(flat_a[k].item(), flat_b[k].item(), _describe(exc), float32=floats)
            raise (_Hang(fault) if isinstance(exc, ModelTimedOut) else fault) from None
        return out.reshape(a.shape)


class _Lookup:
    """Products looked up in a table of every pair: a model's grid, or a LUT (rows a, columns b)."""

    def __init__(self, table: np.ndarray, domain: Domain):
        self.table, self.lo = domain.values(table), domain.lo

    def __call__(self, a, b):
        return self.table[np.asarray(a) - self.lo, np.asarray(b) - self.lo]


@dataclasses.dataclass
class _Context:
    """What a property's functions see: the domain, the approximate products and the bound (if any)."""

    domain: Domain
    products: object  # _Live or _Lookup
    bound: Fraction | None = None

    def approx(self, a, b) -> np.ndarray:
        return self.domain.values(self.products(a, b))

    def exact(self, a, b) -> np.ndarray:
        return self.domain.exact(a, b)


# ----------------------------------------------------------------------------------------------
# Pointwise properties: violated(ctx, a, b) -> bool array over broadcast operand arrays
# ----------------------------------------------------------------------------------------------


def _no_crash(ctx, a, b):
    ctx.approx(a, b)  # evaluating is the test: a crash or a hang raises
    return np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), bool)


def _in_range(ctx, a, b):
    return ~ctx.domain.fits(ctx.approx(a, b))


def _commutative(ctx, a, b):
    return ctx.approx(a, b) != ctx.approx(b, a)


def _zero(ctx, a, b):
    return ((a == 0) | (b == 0)) & (ctx.approx(a, b) != 0)


def _one(ctx, a, b):
    one = ctx.domain.one
    return ((a == one) | (b == one)) & (ctx.approx(a, b) != ctx.exact(a, b))


def _monotone(ctx, a, b):
    # A step up of one operand moves the product the way it moves the exact product: up when the
    # other operand is >= 0 (always, unsigned and significands), down when it is negative.
    top = ctx.domain.hi - 1
    p = ctx.approx(a, b)
    pa = ctx.approx(np.minimum(a + 1, top), b)
    pb = ctx.approx(a, np.minimum(b + 1, top))
    wrong_a = (a < top) & np.where(b >= 0, pa < p, pa > p)
    wrong_b = (b < top) & np.where(a >= 0, pb < p, pb > p)
    return wrong_a | wrong_b


def _sign_symmetric(ctx, a, b):
    lo = ctx.domain.lo  # -lo is not an operand
    p = ctx.approx(a, b)
    wrong_a = (a != lo) & (ctx.approx(np.where(a != lo, -a, a), b) != -p)
    wrong_b = (b != lo) & (ctx.approx(a, np.where(b != lo, -b, b)) != -p)
    return wrong_a | wrong_b


def _no_overestimate(ctx, a, b):
    p, x = ctx.approx(a, b), ctx.exact(a, b)
    if not ctx.domain.signed:
        return ~(p <= x)  # NaN, from a float model, is no product
    return (np.abs(p) > np.abs(x)) | ((p < 0) & (x > 0)) | ((p > 0) & (x < 0))


#: Numbers within this relative distance of a bound are compared exactly.
_SLACK = 1e-9
#: Integers below this are exact in float64, and so are their sums and differences below it.
_EXACT = float(1 << 53)


def _beyond(bound: Fraction, approx, exact, *, relative: bool, scale: float = 1.0) -> np.ndarray:
    """True where |approx - exact| > bound (relative: > bound |exact|, where exact != 0), decided exactly.

    float64 decides the pairs that are clearly inside or outside. Those within a relative 1e-9 of the
    bound (Mitchell's worst pairs attain 1/9; every product of a broken array that drops all bits
    attains 1) are compared as integers, |P' - P| q against p |P| for the bound p/q, after scaling by
    ``scale`` (2^2M makes significand products integers): exact in float64 while everything stays
    below 2^53, and in Fractions otherwise. A product that is not a finite number is always beyond.
    """
    approx, exact = np.broadcast_arrays(approx, exact)
    pf, xf = approx.astype(np.float64), exact.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(pf - xf)
        limit = float(bound) * (np.abs(xf) if relative else 1.0)
        beyond = (error > limit * (1 + _SLACK)) | ~np.isfinite(pf)
        unsure = ~beyond & (error > limit * (1 - _SLACK))
    if relative:
        beyond &= xf != 0
        unsure &= xf != 0
    index = np.flatnonzero(unsure)
    if not len(index):
        return beyond
    num, den = bound.numerator, bound.denominator
    ps, xs = pf.flat[index] * scale, xf.flat[index] * scale
    lhs = np.abs(ps - xs) * den
    rhs = np.abs(xs) * num if relative else np.full(len(index), num * scale)
    with np.errstate(invalid="ignore", over="ignore"):
        integral = (ps == np.floor(ps)) & (xs == np.floor(xs)) & (np.abs(ps) < _EXACT) & (np.abs(xs) < _EXACT)
        as_integers = integral & (lhs < _EXACT) & (rhs < _EXACT) & (max(num, den) < _EXACT)
    beyond.flat[index[as_integers]] = lhs[as_integers] > rhs[as_integers]
    for k in index[~as_integers]:
        p, x = Fraction(approx.flat[k].item()), Fraction(exact.flat[k].item())
        beyond.flat[k] = abs(p - x) > bound * (abs(x) if relative else 1)
    return beyond


def _scale(domain) -> float:
    """What makes a domain's exact products integers: 2^2M for significands."""
    return 1.0 if domain.kind == "int" else float(1 << (2 * domain.bits))


def _max_rel_error(ctx, a, b):
    return _beyond(ctx.bound, ctx.approx(a, b), ctx.exact(a, b), relative=True, scale=_scale(ctx.domain))


def _max_abs_error(ctx, a, b):
    return _beyond(ctx.bound, ctx.approx(a, b), ctx.exact(a, b), relative=False, scale=_scale(ctx.domain))


def _relative_error(ctx, a, b):
    """|RE| where the exact product is nonzero, NaN elsewhere (the measure the bound is on)."""
    p, x = ctx.approx(a, b).astype(np.float64), ctx.exact(a, b).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x != 0, np.abs(p - x) / np.abs(x), np.nan)


def _absolute_error(ctx, a, b):
    p, x = ctx.approx(a, b).astype(np.float64), ctx.exact(a, b).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.abs(p - x)


def _with(value, domain):
    return st.one_of(st.tuples(st.just(value), domain.strategy()), st.tuples(domain.strategy(), st.just(value)))


def _any_pair(domain):
    return st.tuples(domain.strategy(), domain.strategy())


@dataclasses.dataclass(frozen=True)
class Property:
    """A statement about every operand pair (docs/designs.md, "Claims", defines each)."""

    name: str
    definition: str
    kinds: frozenset  # where it applies: "unsigned", "signed", "mantissa"
    violated: object  # (ctx, a, b) -> bool array
    pairs: object = _any_pair  # (domain) -> hypothesis strategy of the pairs it is about
    measure: object = None  # bounds: (ctx, a, b) -> the measured error, reported at its worst
    always: bool = False  # checked whether or not it is claimed

    def applies_to(self, domain: Domain) -> bool:
        return _kind(domain) in self.kinds


def _kind(domain: Domain) -> str:
    return domain.kind if domain.kind == "mantissa" else ("signed" if domain.signed else "unsigned")


_ALL = frozenset({"unsigned", "signed", "mantissa"})
_INTEGERS = frozenset({"unsigned", "signed"})

#: Every pointwise property and bound, in the order the reports list them.
PROPERTIES: dict[str, Property] = {p.name: p for p in (
    Property("no-crash", "the model returns, without crashing or hanging, on every pair", _ALL, _no_crash,
             always=True),
    Property("in-range", "every product fits the declared width: unsigned [0, 2^2n), signed [-2^(2n-1), "
             "2^(2n-1)), significands finite and >= 0", _ALL, _in_range, always=True),
    Property("commutative", "P'(a, b) = P'(b, a)", _ALL, _commutative),
    Property("zero", "P'(0, b) = P'(a, 0) = 0", _INTEGERS, _zero, pairs=lambda d: _with(0, d)),
    Property("one", "a product with 1 is exact: P'(1, b) = b and P'(a, 1) = a (significand 1.0: index 0)",
             _ALL, _one, pairs=lambda d: _with(d.one, d)),
    Property("monotone", "a larger operand never moves the product against the exact product: P'(a+1, b) >= "
             "P'(a, b) for b >= 0, <= for b < 0, and likewise in b", _ALL, _monotone),
    Property("sign-symmetric", "P'(-a, b) = P'(a, -b) = -P'(a, b) (for a, b > -2^(n-1))",
             frozenset({"signed"}), _sign_symmetric),
    Property("no-overestimate", "|P'| <= |P|, and P' is never of the opposite sign", _ALL, _no_overestimate),
    Property("max_rel_error", "|P' - P| <= B |P| wherever P != 0", _ALL, _max_rel_error, measure=_relative_error),
    Property("max_abs_error", "|P' - P| <= E (significand units for a mantissa multiplier)", _ALL,
             _max_abs_error, measure=_absolute_error),
)}


def property_names() -> list[str]:
    """The names ``--property`` and a ``properties:`` line take."""
    return [name for name, p in PROPERTIES.items() if p.measure is None] + list(_FLOAT_PROPERTIES)


# ----------------------------------------------------------------------------------------------
# Statistics over all pairs or a seeded sample (amsim.stats, docs/metrics.md)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Statistic:
    name: str
    definition: str
    value: object  # metrics dict -> the number compared with the bound
    spread: object  # metrics dict -> standard deviation of the per-pair quantity it averages
    exact: object = None  # (approx, exact) products of every pair -> the value as a Fraction, or None


def _mean_abs_re_spread(m):
    mean_square = m["std_re"] ** 2 + m["mean_re"] ** 2  # the mean of RE^2 = |RE|^2
    return math.sqrt(max(mean_square - m["mean_abs_re"] ** 2, 0.0))


def _exact_sum(values: np.ndarray) -> Fraction:
    """The sum of finite float64 values, exactly.

    Each value is d 2^(e - 53) with d an integer below 2^53 in magnitude (``frexp``). The digits d of
    one exponent are summed as integers, split into their high and low 26 bits so that neither partial
    sum can leave int64 (at most 2^24 pairs: sums below 2^51).
    """
    fraction, exponent = np.frexp(np.asarray(values, np.float64).ravel())
    digits = np.ldexp(fraction, 53).astype(np.int64)
    total = Fraction(0)
    for e in np.unique(exponent):
        d = digits[exponent == e]
        whole = (int((d >> 26).sum()) << 26) + int((d & ((1 << 26) - 1)).sum())
        total += Fraction(whole) * Fraction(2) ** (int(e) - 53)
    return total


def _exact_mean_abs_error(approx, exact) -> Fraction:
    """The mean of |P' - P| over every pair, exactly.

    |P' - P| is s (P' - P) with s = +1 where P' >= P and -1 elsewhere, and a sign flip is exact in
    floating point: the mean is (sum of s P' - sum of s P) / pairs, two exact sums of products.
    Significand products are floating-point numbers already; integer products convert to float64
    exactly, since in range they fit 2n <= 24 bits (the exhaustive widths; ``in-range`` is checked
    before any statistic).
    """
    approx, exact = (np.asarray(v, np.float64) for v in (approx, exact))
    up = approx >= exact
    return (_exact_sum(np.where(up, approx, -approx)) - _exact_sum(np.where(up, exact, -exact))) / approx.size


def _exact_error_probability(approx, exact) -> Fraction:
    return Fraction(int(np.count_nonzero(approx != exact)), approx.size)


STATISTICS: dict[str, Statistic] = {s.name: s for s in (
    Statistic("mean_rel_error", "mean |RE| <= B (docs/metrics.md mean_abs_re; zero products left out)",
              lambda m: m["mean_abs_re"], _mean_abs_re_spread),
    Statistic("bias_within", "|mean RE| <= B (docs/metrics.md mean_re; zero products left out)",
              lambda m: abs(m["mean_re"]), lambda m: m["std_re"]),
    Statistic("mean_abs_error", "mean |P' - P| <= E over every pair (docs/metrics.md mae; significand units "
              "for a mantissa multiplier)", lambda m: m["mae"],
              lambda m: math.sqrt(max(m["mse"] - m["mae"] ** 2, 0.0)),  # the mean of |e|^2 is the mean of e^2
              _exact_mean_abs_error),
    Statistic("error_probability", "the fraction of pairs with P' != P is <= p (docs/metrics.md error_rate)",
              lambda m: m["error_rate"], lambda m: math.sqrt(m["error_rate"] * (1.0 - m["error_rate"])),
              _exact_error_probability),
)}


# ----------------------------------------------------------------------------------------------
# The float32 product of a mantissa multiplier (docs/numerics.md section 2)
# ----------------------------------------------------------------------------------------------

_ONE_ENTRY = np.ones((1, 1), np.float32)


class _Float32:
    """A float subject's product of float32 operands, and what docs/numerics.md says it must be.

    ``product(a, b)`` is what the subject returns: the model called on the floats, or the reference
    product with the LUT. ``contract(a, b)`` is section 2's product built from the subject's own
    significand products S(i, j) (its table, or the model called at exponent 0).
    """

    def __init__(self, m: int, rounding: str, product, table=None, significands=None, bound=None):
        self.m, self.rounding, self.product = m, rounding, product
        self.table, self.significands, self.bound = table, significands, bound

    def split(self, x):
        return reference.split_float32(x, self.m, self.rounding)

    def normal(self, a, b) -> np.ndarray:
        """True where both operands are normal numbers once converted to M bits."""
        return (self.split(a)[3] == reference.KIND_NORMAL) & (self.split(b)[3] == reference.KIND_NORMAL)

    def contract(self, a, b) -> np.ndarray:
        if self.table is not None:
            return reference.approx_multiply(a, b, self.table, self.m, rounding=self.rounding)
        # No table (M > 12): a normal pair's product is sign * 2^(ea + eb) * S(i, j). The reference
        # computes exactly that, range rules included, for the operands' powers of two with M = 0 and
        # the one-entry table [[S]]; specials do not read the table. Truncation (the C models'
        # rounding) keeps the kind of an operand at any M, so M = 0 classifies them as M does.
        out = np.empty(np.broadcast_shapes(np.shape(a), np.shape(b)), np.float32)
        for k, (x, y) in enumerate(zip(*np.broadcast_arrays(a, b))):
            sx, ex, ix, kx = self.split(x)
            sy, ey, iy, ky = self.split(y)
            if kx == ky == reference.KIND_NORMAL:
                s = np.float32(self.significands(np.array([ix]), np.array([iy]))[0])
                if not (np.isfinite(s) and s >= 0):
                    out.flat[k] = np.nan  # no product is right: such an S fails in-range, NaN fails float-scaling
                    continue
                powers = [np.ldexp(np.float32(-1.0 if sign else 1.0), int(e) - 127) for sign, e in ((sx, ex), (sy, ey))]
                out.flat[k] = reference.approx_multiply(*powers, np.array([[s]], np.float32), 0)
            else:
                out.flat[k] = reference.approx_multiply(x, y, _ONE_ENTRY, 0)
        return out

    def exact(self, a, b) -> np.ndarray:
        """The exact product of the operands converted to M bits (float64, exact), NaN for specials."""
        sa, ea, ia, ka = self.split(a)
        sb, eb, ib, kb = self.split(b)
        base = 1 << self.m
        value = np.ldexp(((base + ia) * (base + ib)).astype(np.float64), ea + eb - 254 - 2 * self.m)
        normal = (ka == reference.KIND_NORMAL) & (kb == reference.KIND_NORMAL)
        return np.where(normal, np.where(sa ^ sb, -value, value), np.nan)


def _same_float(x, y) -> np.ndarray:
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return (np.isnan(x) & np.isnan(y)) | (x.view(np.uint32) == y.view(np.uint32))


def _follows_contract(fctx, a, b):
    got = fctx.product(a, b)
    return ~_same_float(got, fctx.contract(a, b)) | (fctx.normal(a, b) & np.isnan(got))  # normal x normal: never NaN


_SMALLEST_NORMAL, _OVERFLOW = 2.0 ** -126, 2.0 ** 128


def _float_relative(fctx, a, b):
    """(|RE|, in range): the relative error of the float32 product where both the exact product of
    the M-bit operands and the returned one are normal float32 numbers (neither flushed nor overflowed)."""
    r = np.asarray(fctx.product(a, b), np.float64)
    x = fctx.exact(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = ((np.abs(x) >= _SMALLEST_NORMAL) & (np.abs(x) < _OVERFLOW) & np.isfinite(r)
              & (np.abs(r) >= _SMALLEST_NORMAL))
        return np.where(ok, np.abs(r - x) / np.abs(x), np.nan), ok, r, x


def _float_max_rel_error(fctx, a, b):
    _, ok, r, x = _float_relative(fctx, a, b)
    return ok & _beyond(fctx.bound, np.where(ok, r, 0.0), np.where(ok, x, 1.0), relative=True)


def _float_property(name: str) -> Property:
    return _FLOAT_MAX_REL_ERROR if name == "max_rel_error" else _FLOAT_PROPERTIES[name]


def _special_pairs(domain):
    special = float32s(specials=True, normal=False)
    anything = float32s(specials=True)
    return st.one_of(st.tuples(special, anything), st.tuples(anything, special))


def _normal_pairs(domain):
    return st.tuples(float32s(), float32s())


_FLOAT_PROPERTIES: dict[str, Property] = {p.name: p for p in (
    Property("float-specials", "zero (and subnormal), infinite and NaN float32 operands give docs/numerics.md "
             "section 2.2's result: NaN for a NaN or 0 x inf, else a signed infinity or zero",
             frozenset({"mantissa"}), _follows_contract, pairs=_special_pairs, always=True),
    Property("float-scaling", "normal float32 operands give sign(a) sign(b) 2^(ea+eb) S(i, j), S the subject's "
             "own significand product, ±inf from 2^128 up and ±0 below 2^-126 (docs/numerics.md section 2.3)",
             frozenset({"mantissa"}), _follows_contract, pairs=_normal_pairs, always=True),
)}

_FLOAT_MAX_REL_ERROR = Property(
    "max_rel_error", "|P' - P| <= B |P| for normal float32 operands whose exact product (of the M-bit "
    "operands) and approximate product are both normal float32 numbers", frozenset({"mantissa"}),
    _float_max_rel_error, pairs=_normal_pairs, measure=lambda fctx, a, b: _float_relative(fctx, a, b)[0])


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Counterexample:
    """Operands on which a property fails, and what the subject made of them.

    ``a`` and ``b`` are integers, mantissa indices (``significands`` then gives 1 + i/2^M) or
    float32 values; ``approximate`` is None when the model gave no product (a crash, a hang).
    """

    a: object
    b: object
    exact: object = None
    approximate: object = None
    note: str = ""
    significands: tuple | None = None

    @property
    def error(self):
        if self.approximate is None or self.exact is None:
            return None
        if isinstance(self.approximate, float) or isinstance(self.exact, float):
            if not (math.isfinite(self.approximate) and math.isfinite(self.exact)):
                return None
            return float(Fraction(self.approximate) - Fraction(self.exact))
        return self.approximate - self.exact

    @property
    def relative_error(self):
        error = self.error
        if error is None or self.exact == 0:
            return None
        return float(Fraction(error) / Fraction(self.exact))

    def to_json(self) -> dict:
        out = {"a": _json_number(self.a), "b": _json_number(self.b)}
        if self.significands:
            out["a_significand"], out["b_significand"] = self.significands
        out.update(exact=_json_number(self.exact), approximate=_json_number(self.approximate),
                   error=_json_number(self.error), relative_error=_json_number(self.relative_error), note=self.note)
        return out

    def operands_text(self) -> str:
        if self.significands:
            return f"a = {self.significands[0]!r} (index {self.a}), b = {self.significands[1]!r} (index {self.b})"
        return f"a = {_text(self.a)}, b = {_text(self.b)}"

    def describe(self) -> str:
        parts = [self.operands_text()]
        if self.approximate is not None:
            value = f"approximate {_text(self.approximate)}"
            if self.exact is not None:
                value = f"exact {_text(self.exact)}, {value}"
            if self.error is not None:
                value += f", error {_text(self.error)}"
                if self.relative_error is not None:
                    value += f" ({100 * self.relative_error:+.4g} %)"
            parts.append(value)
        if self.note:
            parts.append(self.note)
        return ": ".join(parts)


def _text(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _json_number(v):
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


@dataclasses.dataclass
class PropertyResult:
    """The outcome of one property: ``holds``, ``fails`` (with a counterexample where one applies) or
    ``not checked`` (``note`` says why)."""

    name: str
    operands: str  # "integers", "significands" or "float32"
    sources: list  # "always", "declared", "requested"
    definition: str = ""  # what holds means, as docs/designs.md states it
    status: str = "not checked"
    method: str = ""  # "exhaustive" or "sampled"
    bound: Fraction | None = None
    observed: float | None = None  # bounds: the worst error found; statistics: the statistic
    observed_at: Counterexample | None = None
    counterexample: Counterexample | None = None
    note: str = ""
    examples: int | None = None  # sampled pointwise properties
    pairs: int | None = None  # statistics: pairs they are over
    standard_error: float | None = None  # sampled statistics

    @property
    def title(self) -> str:
        relation = " " if self.name == "bias_within" else " <= "  # bias_within B: the mean RE lies in [-B, B]
        bound = "" if self.bound is None else f"{relation}{_fraction_text(self.bound)}"
        where = "" if self.operands != "float32" else " (float32 operands)"
        return f"{self.name}{bound}{where}"

    def to_json(self) -> dict:
        out = {"property": self.name, "operands": self.operands, "sources": self.sources, "status": self.status,
               "method": self.method, "definition": self.definition}
        if self.bound is not None:
            out["bound"] = _fraction_text(self.bound)
            out["bound_value"] = float(self.bound)
        for key in ("observed", "examples", "pairs", "standard_error"):
            if getattr(self, key) is not None:
                out[key] = _json_number(getattr(self, key))
        if self.observed_at is not None:
            out["observed_at"] = self.observed_at.to_json()
        if self.counterexample is not None:
            out["counterexample"] = self.counterexample.to_json()
        if self.note:
            out["note"] = self.note
        return out


def _fraction_text(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    text = repr(float(f))  # a short decimal when it is exact, else the ratio
    return text if Fraction(text) == f else f"{f.numerator}/{f.denominator}"


@dataclasses.dataclass
class Report:
    """Everything :func:`check` found about one subject."""

    subject: dict
    exhaustive: bool
    pairs: int
    examples: int
    seed: int
    samples: int
    results: list

    @property
    def holds(self) -> bool:
        return all(r.status == "holds" for r in self.results)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r.status != "holds"]

    def to_json(self) -> dict:
        return {"subject": self.subject, "holds": self.holds, "exhaustive": self.exhaustive, "pairs": self.pairs,
                "examples": self.examples, "seed": self.seed, "samples": self.samples,
                "results": [r.to_json() for r in self.results]}

    def format(self) -> str:
        """The report for people: a line per property, a counterexample under each failure."""
        s = self.subject
        label = s["model"] + "".join(f" {k}={v}" for k, v in s.get("params", {}).items())
        how = (f"exhaustive over all {self.pairs} pairs" if self.exhaustive else
               f"sampled: hypothesis, {self.examples} examples per property, seed {self.seed}")
        lines = [f"{label}: {s['operands']}; {how}"]
        width = max(len(r.title) for r in self.results) if self.results else 0
        for r in self.results:
            status = {"holds": "holds", "fails": "FAILS", "not checked": "----"}[r.status]
            line = f"  {status:5}  {r.title:{width}}  {', '.join(r.sources):9}  {self._detail(r)}".rstrip()
            lines.append(line)
            if r.counterexample is not None:
                lines.append(f"{'':9}{r.counterexample.describe()}")
        bad = self.failures
        lines.append("all properties hold" if not bad else
                     f"{len(bad)} of {len(self.results)} properties do not hold")
        return "\n".join(lines)

    def _detail(self, r) -> str:
        parts = []
        if r.method == "sampled" and r.examples and r.status != "not checked" and r.name not in STATISTICS:
            parts.append(f"sampled, {r.examples} examples")
        if r.observed is not None:
            if r.name in STATISTICS:
                over = "all pairs" if r.method == "exhaustive" else f"{r.pairs} seeded pairs"
                se = f" ± {r.standard_error:.2g} (standard error)" if r.standard_error is not None else ""
                parts.append(f"{r.observed:.6g}{se} over {over}")
            else:
                at = f" at {r.observed_at.operands_text()}" if r.observed_at else ""
                parts.append(f"worst {r.observed:.6g}{at}")
        if r.note:
            parts.append(r.note)
        return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# The subject and the plan
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Subject:
    label: dict  # Report.subject
    domain: Domain
    cm: object = None  # CompiledModel (C models)
    table: np.ndarray | None = None  # mantissa LUTs
    rounding: str = "truncate"
    claims: list = dataclasses.field(default_factory=list)

    @property
    def float(self) -> bool:
        return self.domain.kind == "mantissa"


def _subject(target, bits, params, models_dirs) -> _Subject:
    source = ""
    if isinstance(target, (str, Path)) and names_lut_file(target):
        source, target = str(target), load_any(target)
    if isinstance(target, LUT):
        if params:
            raise RangeError("parameters apply to models; a LUT's are fixed")
        return _lut_subject(target, bits, source)
    model = target if isinstance(target, Model) else find_model(str(target), models_dirs)
    if bits is None:
        raise RangeError(f"say which width to check {model.name!r} at (--bits): "
                         f"{'M, the mantissa bits' if model.kind == 'float' else 'n, the operand bits'}")
    params = model.resolve_params(params)
    cm = model.compile(bits, params)
    domain = Domain("mantissa", bits) if model.kind == "float" else Domain("int", bits, model.signed)
    label = {"model": model.name, "kind": model.kind, "bits": bits, "signed": model.signed, "params": params,
             "source": str(model.path), "operands": domain.describe()}
    return _Subject(label, domain, cm=cm, claims=model.claims_for(bits, params))


def _lut_subject(lut: LUT, bits, source: str) -> _Subject:
    if lut.kind != "mantissa":
        raise LUTError("amsim check takes mantissa LUTs; check the integer model itself instead")
    if bits is not None and int(bits) != lut.bits:
        raise LUTError(f"the LUT is for M={lut.bits}, not M={bits}")
    domain = Domain("mantissa", lut.bits)
    label = {"model": source or lut.model or "LUT", "kind": "lut", "bits": lut.bits, "signed": False,
             "params": dict(lut.params), "source": source, "lut_model": lut.model, "rounding": lut.rounding,
             "operands": domain.describe()}
    return _Subject(label, domain, table=lut.table, rounding=lut.rounding)


@dataclasses.dataclass
class _Item:
    """One line of the plan: a property, statistic or float32 property with its bound and sources."""

    name: str
    bound: Fraction | None
    sources: list
    operands: str


def _plan(subject: _Subject, properties, bounds: dict, declared: bool) -> list[_Item]:
    """What to check, in report order: always-checked properties, claimed and requested ones, then bounds."""
    items: dict[tuple, _Item] = {}

    def add(name, bound, source, operands, where=""):
        prop = PROPERTIES.get(name) or _FLOAT_PROPERTIES.get(name)
        if prop is not None and not prop.applies_to(subject.domain):
            what = subject.domain.describe()
            message = f"property {name!r} does not apply to {subject.label['model']} ({what})"
            raise ModelError(f"{where}: {message}") if where else RangeError(message)
        item = items.setdefault((name, bound, operands), _Item(name, bound, [], operands))
        if source not in item.sources:
            item.sources.append(source)

    domain_operands = subject.domain.operands_name
    for name, prop in PROPERTIES.items():
        if prop.always and (name != "no-crash" or subject.cm is not None):
            add(name, None, "always", domain_operands)
    if subject.float:
        for name in _FLOAT_PROPERTIES:
            add(name, None, "always", "float32")
    valid = property_names()
    requests = [(c.value, "declared", c.where) for c in subject.claims if c.key == "properties" and declared]
    requests.append((tuple(properties), "requested", ""))
    for names, source, where in requests:
        for name in names:
            if name not in valid:
                message = f"unknown property {name!r}; the properties are: {', '.join(valid)}"
                raise ModelError(f"{where}: {message}") if where else RangeError(message)
            if name == "no-crash" and subject.cm is None:
                continue  # a LUT runs no code
            add(name, None, source, "float32" if name in _FLOAT_PROPERTIES else domain_operands, where)
    claimed = {}
    for c in subject.claims:
        if c.key != "properties" and declared:  # the tightest bound of each key: the others follow from it
            claimed[c.key] = min(claimed.get(c.key, c.value), c.value)
    for key in CLAIM_BOUNDS:
        for bound, source in ((claimed.get(key), "declared"), (bounds.get(key), "requested")):
            if bound is None:
                continue
            add(key, bound, source, domain_operands)
            if key == "max_rel_error" and subject.float:
                add(key, bound, source, "float32")
    order = [*PROPERTIES, *_FLOAT_PROPERTIES, *STATISTICS]
    return sorted(items.values(), key=lambda i: (i.operands == "float32", i.bound is not None, order.index(i.name)))


# ----------------------------------------------------------------------------------------------
# Checking
# ----------------------------------------------------------------------------------------------


class _Violation(AssertionError):
    def __init__(self, a, b):
        super().__init__(f"fails at ({a}, {b})")
        self.a, self.b = a, b


def _search(strategy, test, examples: int, seed: int, explicit=()):
    """Run ``test(a, b)`` on the ``explicit`` pairs, then on pairs hypothesis draws from ``strategy``;
    return the pair on which it returned True (shrunk, unless explicit), or None. ``test`` may raise
    :class:`_Fault` (shrunk too) or :class:`_Hang` (which ends the search at once)."""

    def search(pair):
        if test(*pair):
            raise _Violation(*pair)

    for pair in reversed(explicit):  # the decorator closest to the function runs first
        search = example(pair)(search)
    search = settings(max_examples=examples, database=None, deadline=None, derandomize=False, print_blob=False,
                      verbosity=Verbosity.quiet, report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                      phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink))(
        hypothesis_seed(seed)(given(strategy)(search)))

    try:
        search()
    except _Violation as v:
        return v.a, v.b
    except Flaky as exc:  # the same operands failed once and then held: the model is not deterministic
        inner = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, (_Violation, _Fault))]
        if inner and isinstance(inner[0], _Fault):
            raise inner[0] from None
        if inner:
            return inner[0].a, inner[0].b
        raise
    return None


class _Run:
    """One call of :func:`check`: the subject, its sources of products, and the results so far."""

    def __init__(self, subject: _Subject, examples, seed, samples, timeout):
        self.subject, self.domain = subject, subject.domain
        self.examples, self.seed, self.samples = examples, seed, samples
        self.sandbox = generate.Sandbox(subject.cm, timeout) if subject.cm is not None else None
        self.fault: _Fault | None = None  # the first crash or hang: no-crash fails, nothing more is checked
        self.grid = None
        self._products = None
        self.failed: set[str] = set()
        self.worst: dict[str, tuple] = {}  # bound -> the operands of its worst error found

    # -- where products come from --------------------------------------------------------------

    @property
    def table(self) -> np.ndarray | None:
        """The product of every pair, when there is one: the LUT, or the model's grid (exhaustive)."""
        return self.subject.table if self.subject.table is not None else self.grid

    def products(self):
        """Where the approximate products come from: the table, or the model itself."""
        if self._products is None:
            self._products = (_Lookup(self.table, self.domain) if self.table is not None
                              else _Live(self.sandbox, self.domain))
        return self._products

    def compute_grid(self) -> None:
        """Exhaustive model checks: every product, once, in the sandbox (a fault is located pair by pair)."""
        try:
            self.grid = self.sandbox.call(_grid, self.domain)
        except ModelCrashed as exc:
            self.fault = self._locate(exc)

    def _locate(self, exc: ModelCrashed) -> _Fault:
        """The first pair, in :meth:`Domain.order`, on which the model crashes or hangs."""
        order = self.domain.order()
        try:
            self.sandbox.call(_rows_in_order, order)
        except ModelCrashed as row_exc:
            a = order[row_exc.index]
            try:
                self.sandbox.call(_pairs_in_order, np.full(len(order), a), order)
            except ModelCrashed as pair_exc:
                return _Fault(int(a), int(order[pair_exc.index]), _describe(pair_exc))
        if isinstance(exc, ModelTimedOut):
            return _Fault(None, None, f"{_describe(exc)} for a block of {_GRID_BLOCK} pairs, though no pair hangs "
                                      "on its own: a slow model; give it a longer --timeout")
        return _Fault(None, None, f"{_describe(exc)} while computing every product, but on no pair when "
                                  "evaluated one at a time: the model is not deterministic")

    def float32(self, bound=None) -> _Float32:
        m, rounding, table = self.domain.bits, self.subject.rounding, self.table
        if self.subject.cm is None:
            def product(a, b):
                return reference.approx_multiply(a, b, table, m, rounding=rounding)
        else:
            live = _Live(self.sandbox, self.domain)

            def product(a, b):
                return live(np.asarray(a, np.float32), np.asarray(b, np.float32), floats=True).astype(np.float32)
        return _Float32(m, rounding, product, table=None if table is None else np.asarray(table, np.float32),
                        significands=self.products(), bound=bound)

    # -- the checks ----------------------------------------------------------------------------

    def check(self, plan: list[_Item]) -> list[PropertyResult]:
        """Every item of the plan, in order. Once the model has crashed or hung, the rest are not checked,
        and ``no-crash`` fails with the first such pair, whichever property's pairs met it."""
        if self.sandbox is not None and self.domain.exhaustive:
            self.compute_grid()
        results = [self.run(item) for item in plan]
        for r in results:
            if r.name == "no-crash" and self.fault is not None:
                r.status, r.note, r.counterexample = "fails", "", None
                if self.fault.a is None:
                    r.note = self.fault.how
                else:
                    r.counterexample = self._counterexample(self.fault.a, self.fault.b, note=self.fault.how,
                                                            evaluate=False, float32=self.fault.float32)
                if self.fault.float32:  # met by a float32 property's samples
                    r.operands, r.method = "float32", "sampled"
        return results

    def run(self, item: _Item) -> PropertyResult:
        result = PropertyResult(item.name, item.operands, item.sources, _definition(item), bound=item.bound)
        result.method = "exhaustive" if self.domain.exhaustive and item.operands != "float32" else "sampled"
        if self.fault is not None:
            result.note = "" if item.name == "no-crash" else "not checked: the model crashes or hangs (see no-crash)"
            return result
        if "in-range" in self.failed and (item.name in STATISTICS or item.operands == "float32"):
            result.note = "not checked: products out of range (see in-range)"
            return result
        try:
            if item.name in STATISTICS:
                self._statistic(item, result)
            elif item.operands == "float32":
                fctx = self.float32(item.bound)
                prop = _float_property(item.name)
                self._sampled(prop, fctx, result, float32=True, explicit=self._scaled_worst(item.name))
            elif result.method == "exhaustive":
                self._exhaustive(item, result)
            else:
                self._sampled(PROPERTIES[item.name], _Context(self.domain, self.products(), item.bound), result)
        except _Fault as fault:
            self.fault = fault
        except _Hang as hang:
            self.fault = hang.fault
        if self.fault is not None and item.name != "no-crash":
            result.status, result.note = "not checked", "not checked: the model crashes or hangs (see no-crash)"
        if result.status == "fails":
            self.failed.add(item.name)
        if result.observed_at is not None and item.operands != "float32":
            self.worst[item.name] = (result.observed_at.a, result.observed_at.b)
        return result

    def _scaled_worst(self, name) -> list:
        """The significands of a bound's worst pair as float32 operands near 1, near the top and the bottom
        of the normal range, and far apart: where a float32 product could first break the bound."""
        if name not in self.worst:
            return []
        scale = 2.0 ** -self.domain.bits
        a, b = (1 + i * scale for i in self.worst[name])
        return [(np.float32(np.ldexp(sa * a, ea)), np.float32(np.ldexp(b, eb)))
                for sa, ea, eb in ((1, 0, 0), (1, 63, 63), (1, -63, -63), (-1, 100, -100), (-1, -100, 100))]

    def _counterexample(self, a, b, note="", evaluate=True, ctx=None, float32=False) -> Counterexample:
        d = self.domain
        if float32:
            return Counterexample(float(a), float(b), note=note)
        exact = d.number(d.exact(np.array([a]), np.array([b]))[0])
        approx = None
        if evaluate:
            approx = d.number((ctx or _Context(d, self.products())).approx(np.array([a]), np.array([b]))[0])
        sig = (1 + a / (1 << d.bits), 1 + b / (1 << d.bits)) if d.kind == "mantissa" else None
        return Counterexample(int(a), int(b), exact, approx, note, sig)

    def _exhaustive(self, item, result):
        prop = PROPERTIES[item.name]
        ctx = _Context(self.domain, self.products(), item.bound)
        first, worst, worst_at = _scan(prop, ctx, self.domain.order())
        if worst_at is not None:
            result.observed, result.observed_at = worst, self._counterexample(*worst_at, ctx=ctx)
        result.status = "holds" if first is None else "fails"
        if first is not None:
            result.counterexample = self._counterexample(*first, note=_explain(item.name, ctx, *first), ctx=ctx)

    def _sampled(self, prop, ctx, result, float32=False, explicit=()):
        result.examples = self.examples
        worst = [-math.inf, None]

        def test(a, b):
            a_, b_ = np.array([a]), np.array([b])
            if prop.measure is not None:
                value = float(prop.measure(ctx, a_, b_)[0])
                if not math.isnan(value):
                    target(value if math.isfinite(value) else 1e300, label=prop.name)
                    if value > worst[0]:
                        worst[:] = [value, (a, b)]
            return bool(prop.violated(ctx, a_, b_)[0])

        found = _search(prop.pairs(self.domain), test, self.examples, self.seed, explicit)
        if worst[1] is not None:
            result.observed = worst[0]
            result.observed_at = (self._float_counterexample(ctx, *worst[1]) if float32
                                  else self._counterexample(*worst[1], ctx=ctx))
        result.status = "holds" if found is None else "fails"
        if found is not None:
            result.counterexample = (self._float_counterexample(ctx, *found) if float32 else
                                     self._counterexample(*found, note=_explain(prop.name, ctx, *found), ctx=ctx))

    def _float_counterexample(self, fctx, a, b) -> Counterexample:
        a_, b_ = np.array([a], np.float32), np.array([b], np.float32)
        exact = float(fctx.exact(a_, b_)[0])  # NaN for a special operand: shown as none
        approx, expected = float(fctx.product(a_, b_)[0]), float(fctx.contract(a_, b_)[0])
        note = "" if _same_float(approx, expected) else f"docs/numerics.md gives {expected!r}"
        return Counterexample(float(a), float(b), exact if math.isfinite(exact) else None, approx, note)

    def _statistic(self, item, result):
        stat, d = STATISTICS[item.name], self.domain
        exhaustive = d.exhaustive
        samples = None if exhaustive else self.samples
        try:
            if d.kind == "mantissa" and self.table is not None:
                metrics = stats.mantissa_stats(d.bits, table=self.table, samples=samples, seed=self.seed)
            elif d.kind == "int":  # the sweep of amsim.stats again, in the sandbox
                metrics = self.sandbox.call(_int_statistics, samples, self.seed)
            else:
                metrics = self.sandbox.call(_mantissa_statistics, samples, self.seed)
        except ModelCrashed as exc:  # on one of pairs no property met: which one is not known
            self.fault = _Fault(None, None, f"{_describe(exc)} while computing {item.name} over "
                                            f"{'every pair' if exhaustive else f'{samples} seeded pairs'}")
            return
        except AmsimError as exc:  # products out of range (sampled): the statistics are not defined
            result.note = f"not checked: {exc}"
            return
        result.pairs = metrics["pairs"]
        value = stat.value(metrics)
        if value is None:
            result.status, result.note = "holds", "no pair has a nonzero exact product"
            return
        result.observed = value
        bound = float(item.bound)
        if not exhaustive:
            result.standard_error = stat.spread(metrics) / math.sqrt(metrics["pairs"])
            holds = value <= bound + STANDARD_ERRORS * result.standard_error
        elif stat.exact is not None and bound * (1 - _SLACK) < value <= bound * (1 + _SLACK):
            # Too close for floating point to tell (a design that attains its bound): decide it in
            # rational arithmetic from the table of every product, as the pointwise bounds are decided.
            operands = np.arange(d.lo, d.hi)
            holds = stat.exact(d.values(self.table), d.exact(operands[:, None], operands[None, :])) <= item.bound
        else:
            holds = value <= bound
        result.status = "holds" if holds else "fails"


def _scan(prop: Property, ctx: _Context, order: np.ndarray, block: int = 1 << 20):
    """Every pair of ``order`` x ``order``: the first that violates ``prop`` (in that order, a first) and,
    for a bound, the worst measured error with its pair. Blocks of rows keep the memory small."""
    rows = max(1, block // len(order))
    b = order[None, :]
    first, worst, worst_at = None, -math.inf, None
    for r0 in range(0, len(order), rows):
        a = order[r0:r0 + rows, None]
        if prop.measure is not None:
            with np.errstate(invalid="ignore"):
                values = np.broadcast_to(prop.measure(ctx, a, b), (len(a), len(order)))
            if not np.all(np.isnan(values)):
                k = np.nanargmax(values)
                if values.flat[k] > worst:
                    i, j = np.unravel_index(k, values.shape)
                    worst, worst_at = float(values.flat[k]), (int(a[i, 0]), int(order[j]))
        if first is None:
            bad = prop.violated(ctx, a, b)
            if bad.any():
                i, j = np.unravel_index(np.argmax(bad), bad.shape)
                first = (int(a[i, 0]), int(order[j]))
                if prop.measure is None:
                    break
    return first, worst if worst_at is not None else None, worst_at


def _definition(item: _Item) -> str:
    if item.name in STATISTICS:
        return STATISTICS[item.name].definition
    if item.operands == "float32":
        return _float_property(item.name).definition
    return PROPERTIES[item.name].definition


def _explain(name: str, ctx, a, b) -> str:
    """What else, besides (a, b) and its product, shows the failure: the other pair it is compared with."""
    d = ctx.domain
    one = lambda x, y: d.number(ctx.approx(np.array([x]), np.array([y]))[0])  # noqa: E731
    if name == "commutative":
        return f"b x a gives {_text(one(b, a))}"
    if name == "monotone":
        top, p = d.hi - 1, one(a, b)
        if a < top and ((b >= 0 and one(a + 1, b) < p) or (b < 0 and one(a + 1, b) > p)):
            return f"a + 1 gives {_text(one(a + 1, b))}"
        return f"b + 1 gives {_text(one(a, b + 1))}"
    if name == "sign-symmetric":
        if a != d.lo and one(-a, b) != -one(a, b):
            return f"-a gives {_text(one(-a, b))}"
        return f"-b gives {_text(one(a, -b))}"
    if name == "in-range":
        if d.kind == "mantissa":
            return "not a finite number >= 0"
        w = 2 * d.bits
        return f"outside [-2^{w - 1}, 2^{w - 1})" if d.signed else f"outside [0, 2^{w})"
    return ""


def _check_bounds(bounds: dict) -> dict:
    unknown = set(bounds) - set(CLAIM_BOUNDS)
    if unknown:
        raise RangeError(f"unknown bound {sorted(unknown)[0]!r}; the bounds are {', '.join(CLAIM_BOUNDS)}")
    return {k: parse_bound(v, k, BOUND_CEILINGS.get(k)) for k, v in bounds.items() if v is not None}


def check(target, bits: int | None = None, *, params=None, models_dirs=(), properties=(), declared=True,
          max_rel_error=None, max_abs_error=None, mean_rel_error=None, bias_within=None, mean_abs_error=None,
          error_probability=None, examples: int = DEFAULT_EXAMPLES, seed: int = 0, samples: int = DEFAULT_SAMPLES,
          timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Check a multiplier's properties against exact products (docs/designs.md, "Claims").

    Parameters
    ----------
    target : str, Path, Model or LUT
        A model name, a ``.c`` file, a :class:`~amsim.models.Model`, a mantissa LUT file (``.npz``,
        ApproxTrain's ``NAME_M.bin``) or an :class:`~amsim.lut.LUT`.
    bits : int
        The operand width n (integer models) or mantissa width M (float models); a LUT's own M when None.
    params : dict, optional
        Model parameters (defaults filled in).
    properties : iterable of str
        Properties to check besides the always-checked ones and the model's claims (:func:`property_names`).
    declared : bool
        Check what the model's ``@amsim`` block claims for this configuration.
    max_rel_error, max_abs_error, mean_rel_error, bias_within : number, str or Fraction, optional
        Bounds to check besides the claimed ones (``"1/9"`` is exact).
    mean_abs_error, error_probability : number, str or Fraction, optional
        Likewise: the mean of |P' - P| (significand units for a mantissa multiplier), and the fraction of
        pairs whose product is not exact (at most 1).
    examples, seed : int
        hypothesis examples per sampled property, and its seed (sampling is deterministic given both).
    samples : int
        Seeded pairs behind a sampled statistic.
    timeout : float
        Seconds the model may compute without progress before it counts as hanging.

    Returns
    -------
    Report
        ``report.holds`` is True when every property holds.
    """
    check_integer(examples, "examples", 1)
    check_integer(seed, "seed", 0)
    check_integer(samples, "samples", 1)
    bounds = _check_bounds({"max_rel_error": max_rel_error, "max_abs_error": max_abs_error,
                            "mean_rel_error": mean_rel_error, "bias_within": bias_within,
                            "mean_abs_error": mean_abs_error, "error_probability": error_probability})
    if isinstance(properties, str):
        properties = [properties]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise RangeError(f"timeout must be a positive number of seconds, not {timeout!r}")
    subject = _subject(target, bits, params, models_dirs)
    plan = _plan(subject, list(properties), bounds, declared)
    run = _Run(subject, examples, seed, samples, timeout)
    try:
        results = run.check(plan)
    finally:
        if run.sandbox is not None:
            run.sandbox.close()
    d = subject.domain
    return Report(subject.label, d.exhaustive, d.pairs, examples, seed, samples, results)


