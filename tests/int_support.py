"""What the tests of the integer LUT GEMM, its TensorFlow ops and the integer convolution share: the n-bit
operands' ranges, the exact product table indexed by patterns, circuits' integer LUTs, and the check that bad
input is refused with one line."""

import numpy as np
import pytest

import amsim
from amsim import generate
from amsim.errors import AmsimError

INT32_MAX = 2**31 - 1
FULL = np.full((2, 2), 2**16 - 1)  # 1-bit operands, every product the largest 16-bit output
K32 = INT32_MAX // (2**16 - 1)     # the most such products int32 holds


def circuit(name, bits=8, **params):
    """The integer LUT of the library's circuit ``name`` at ``bits``-bit operands."""
    return generate.integer_lut(amsim.find_model(name), bits, params or None)


EXACT_U8 = circuit("exact_int")
EXACT_S8 = circuit("mul8s_exact")


def value_range(bits, signed):
    """[lo, hi) of the n-bit operands."""
    return (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)


def exact_table(bits, signed):
    """The exact product table indexed by patterns: pattern p is the value p, or p - 2^n when signed and
    p >= 2^(n-1) (two's complement)."""
    p = np.arange(1 << bits)
    v = np.where(p >= 1 << (bits - 1), p - (1 << bits), p) if signed else p
    return np.outer(v, v)


def sums_beyond_int32():
    """Signed 2-bit operands a (3, K) and b (K, 2) and a table of 16-bit outputs whose every exact sum is below
    -2^31: the first 75000 of the K = 80000 products are pattern 3 by pattern 3, -2^15 each; the rest are random."""
    rng = np.random.default_rng(3)
    table = rng.integers(-(2**15), 2**15, (4, 4))
    table[3, 3] = -(2**15)
    k, fixed = 80_000, 75_000
    a, b = rng.integers(-2, 2, (3, k)), rng.integers(-2, 2, (k, 2))
    a[:, :fixed] = b[:fixed] = -1
    return a, b, table


def assert_refused_with_one_line(error, message, call, *args, **kwargs):
    """``call(*args, **kwargs)`` raises ``error``, an :class:`AmsimError` whose text is one line holding
    ``message``."""
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert isinstance(caught.value, AmsimError)
    text = str(caught.value)
    assert message in text and "\n" not in text
