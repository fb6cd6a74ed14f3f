"""Plain numpy reference ("oracle") of the approximate float32 product and GEMM.

This module is the executable form of ``docs/numerics.md`` sections 2 and 3. It is
written to be obviously correct rather than fast, and every other backend
(CPU, CUDA, TensorFlow ops) is tested against it. It imports only numpy so
that it stays at the bottom of the dependency graph.

Conventions used throughout
---------------------------
* ``bits`` is M, the number of fraction bits an operand keeps (0 <= M <= 23).
* The LUT ("table") has shape ``(2**M, 2**M)``; entry ``[i, j]`` is the value
  the multiplier returns for the significands ``(1 + i/2**M) * (1 + j/2**M)``.
  Row = mantissa index of the left operand ``a``, column = that of ``b``.
  The table is never transposed.
* Exponents returned by :func:`split_float32` are *biased* (as in the float32
  bit pattern, 1..254 for normal numbers), because the ApproxTrain mode is
  defined on biased exponents.
"""

import numpy as np

__all__ = [
    "KIND_ZERO",
    "KIND_NORMAL",
    "KIND_INF",
    "KIND_NAN",
    "ROUNDINGS",
    "MODES",
    "split_float32",
    "approx_multiply",
    "approx_matmul",
]

#: ``kind`` code of a zero operand (±0, and subnormals, which are flushed: DAZ).
KIND_ZERO = 0
#: ``kind`` code of a normal (finite, nonzero, not subnormal) operand.
KIND_NORMAL = 1
#: ``kind`` code of ±inf (including a finite value that rounds past FLT_MAX).
KIND_INF = 2
#: ``kind`` code of NaN.
KIND_NAN = 3

#: Accepted values of the ``rounding`` argument.
ROUNDINGS = ("truncate", "rne")
#: Accepted values of the ``mode`` argument.
MODES = ("ieee", "approxtrain")

_MAX_BITS = 23
_EXP_BIAS = 127
_EXP_INF = 255
_SMALLEST_NORMAL = 2.0 ** -126  # smallest normal float32
_OVERFLOW = 2.0 ** 128  # first magnitude that is not a finite float32


# ---------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------

def _check_bits(bits):
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an integer, got {bits!r}")
    bits = int(bits)
    if not 0 <= bits <= _MAX_BITS:
        raise ValueError(f"bits must lie in [0, {_MAX_BITS}], got {bits}")
    return bits


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def _check_mode(mode, rounding):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "approxtrain" and rounding != "truncate":
        raise ValueError(
            "mode='approxtrain' truncates operands (as ApproxTrain does); "
            f"rounding={rounding!r} is not allowed with it"
        )
    return mode


def _as_float32(x, name):
    """``x`` as a float32 ndarray (other real inputs are cast, rounding to nearest)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _prepare_table(table, bits, mode):
    """Validate the LUT and return it as a float32 ndarray.

    In ``approxtrain`` mode also return the ApproxTrain byte of every entry:
    the carry ``c`` (0 or 1) and the M-bit fraction ``f`` with
    ``entry == (1 + f / 2**M) * 2**c``.
    """
    arr = np.asarray(table)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"table must be a real numeric array, got dtype {arr.dtype}")
    size = 1 << bits
    if arr.shape != (size, size):
        raise ValueError(
            f"table shape {arr.shape} does not match bits={bits}: "
            f"expected ({size}, {size})"
        )
    # The contract stores the LUT in float32. A float64 table with more than
    # 24 significant bits is rounded to nearest (ties to even) here, once;
    # because the later scaling by 2**(ea+eb) is exact, this equals rounding
    # the real product to nearest float32 in the normal range.
    with np.errstate(over="ignore", invalid="ignore"):
        t32 = arr.astype(np.float32)
    if not np.all(np.isfinite(t32)):
        raise ValueError(
            "table entries must be finite float32 values "
            "(found inf, NaN or a value beyond the float32 range)"
        )
    if mode != "approxtrain":
        return t32, None, None

    v = t32.astype(np.float64)
    bad_range = (v < 1.0) | (v >= 4.0)
    if np.any(bad_range):
        i, j = np.argwhere(bad_range)[0]
        raise ValueError(
            "table is not representable in ApproxTrain form (1 + f/2^M) * 2^c: "
            f"entry [{i}, {j}] = {float(v[i, j])!r} is outside [1, 4)"
        )
    carry = (v >= 2.0).astype(np.int64)
    scaled = np.ldexp(v, bits - carry.astype(np.int32))  # (2^M + f), exact in float64
    off_grid = scaled != np.floor(scaled)
    if np.any(off_grid):
        i, j = np.argwhere(off_grid)[0]
        raise ValueError(
            "table is not representable in ApproxTrain form (1 + f/2^M) * 2^c: "
            f"entry [{i}, {j}] = {float(v[i, j])!r} is not on the {bits}-bit grid"
        )
    frac = scaled.astype(np.int64) - size
    return t32, carry, frac


def check_table(table, bits, mode="ieee"):
    """Validate a LUT for ``mode`` and return it as float32; raise ValueError saying why not.

    Every mode needs a (2^M, 2^M) table of finite values; ``approxtrain`` also
    needs every entry to be (1 + f/2^M) * 2^c with an M-bit f and c in {0, 1}.
    """
    _check_bits(bits)
    return _prepare_table(table, bits, mode)[0]


# ---------------------------------------------------------------------------
# operand conversion (docs/numerics.md 2.1) and classification
# ---------------------------------------------------------------------------

def split_float32(x, bits, rounding="truncate"):
    """Convert float32 values to M-bit operands and classify them.

    Implements operand conversion of docs/numerics.md section 2.1 on the uint32
    bit pattern, vectorised.

    Parameters
    ----------
    x : array_like
        Values; converted to float32 first (non-float32 input is rounded to
        nearest float32 by that cast).
    bits : int
        M, the number of fraction bits kept, 0 <= M <= 23.
    rounding : {"truncate", "rne"}, optional
        ``"truncate"`` (default) drops the low 23 - M mantissa bits.
        ``"rne"`` rounds to nearest, ties to even; a carry out of the
        mantissa increments the exponent, and a value that rounds past the
        largest finite float32 becomes inf (``kind == KIND_INF``).

    Returns
    -------
    sign : ndarray of int64
        0 for positive, 1 for negative (the sign bit; kept for every kind,
        including zero and NaN).
    exponent : ndarray of int64
        Biased exponent: 1..254 for normal operands, 0 for zeros, 255 for
        inf and NaN.
    mantissa_index : ndarray of int64
        The M-bit fraction, in [0, 2**M); 0 for every non-normal kind.
    kind : ndarray of int64
        ``KIND_ZERO`` (±0 and subnormals: denormals are treated as zero,
        DAZ), ``KIND_NORMAL``, ``KIND_INF`` or ``KIND_NAN``.

    Notes
    -----
    Subnormal inputs are flushed to zero *before* rounding, so under
    ``"rne"`` a subnormal never rounds up to the smallest normal number.
    """
    bits = _check_bits(bits)
    rounding = _check_rounding(rounding)
    xf = np.array(_as_float32(x, "x"), dtype=np.float32, copy=True)  # contiguous, keeps 0-d shape
    u = xf.view(np.uint32).astype(np.int64)

    sign = (u >> 31) & 1
    exp_field = (u >> 23) & 0xFF
    frac_field = u & 0x7FFFFF

    is_nan = (exp_field == _EXP_INF) & (frac_field != 0)
    is_inf = (exp_field == _EXP_INF) & (frac_field == 0)
    is_zero = exp_field == 0  # zero or subnormal (DAZ)
    is_normal = ~(is_nan | is_inf | is_zero)

    drop = _MAX_BITS - bits
    magnitude = u & 0x7FFFFFFF  # exponent and fraction fields together
    if rounding == "rne" and drop > 0:
        # Round the magnitude bit pattern at bit position `drop`: add just
        # under one half, plus one if the kept lsb is odd (ties to even).
        # A carry out of the fraction field flows into the exponent field.
        half_minus_one = (1 << (drop - 1)) - 1
        lsb = (magnitude >> drop) & 1
        kept = (magnitude + half_minus_one + lsb) >> drop
    else:
        kept = magnitude >> drop  # truncate (or M = 23: nothing to drop)
    new_exp = kept >> bits
    new_idx = kept & ((1 << bits) - 1)

    # A normal value whose rounding carried into exponent 255 is now inf.
    rounded_to_inf = is_normal & (new_exp == _EXP_INF)
    is_inf = is_inf | rounded_to_inf
    is_normal = is_normal & ~rounded_to_inf

    kind = np.full(u.shape, KIND_NORMAL, dtype=np.int64)
    kind[is_zero] = KIND_ZERO
    kind[is_inf] = KIND_INF
    kind[is_nan] = KIND_NAN

    exponent = np.where(is_normal, new_exp, np.where(is_zero, 0, _EXP_INF)).astype(np.int64)
    mantissa_index = np.where(is_normal, new_idx, 0).astype(np.int64)
    return sign.astype(np.int64), exponent, mantissa_index, kind


# ---------------------------------------------------------------------------
# one approximate product (docs/numerics.md 2.2 - 2.4)
# ---------------------------------------------------------------------------

def _multiply_prepared(a, b, t32, carry, frac, bits, rounding, mode):
    """Elementwise a ⊗ b with an already validated table (see approx_multiply)."""
    sa, ea, ia, ka = split_float32(a, bits, rounding)
    sb, eb, ib, kb = split_float32(b, bits, rounding)
    sa, ea, ia, ka, sb, eb, ib, kb = np.broadcast_arrays(sa, ea, ia, ka, sb, eb, ib, kb)
    sign = sa ^ sb
    normal = (ka == KIND_NORMAL) & (kb == KIND_NORMAL)

    if mode == "ieee":
        # value = (-1)^sign * LUT[i, j] * 2^(ea + eb), ea/eb unbiased.
        # Computed in float64, where it is exact: a float32 table entry has
        # at most 24 significant bits and is 0 or of magnitude in [2^-149, 2^128);
        # the scale 2^(ea+eb) lies in [2^-252, 2^254], so the scaled value
        # stays inside float64's normal range [2^-1022, 2^1024) and
        # np.ldexp loses nothing. Hence the range decisions below are made
        # on the exact real value, and in the normal range the final cast to
        # float32 is exact (the value has <= 24 significant bits).
        entry = t32[ia, ib].astype(np.float64)
        scale = (ea - _EXP_BIAS) + (eb - _EXP_BIAS)
        value = np.ldexp(entry, scale.astype(np.int32))
        value = np.where(sign == 1, -value, value)
        magnitude = np.abs(value)
        # Flush to zero (never subnormal); sign = sign(a) xor sign(b) * sign(entry).
        value = np.where(magnitude < _SMALLEST_NORMAL, np.copysign(0.0, value), value)
        # Overflow: the result is the first value that is not a finite float32.
        value = np.where(magnitude >= _OVERFLOW, np.copysign(np.inf, value), value)
        normal_result = value.astype(np.float32)  # exact: value is a float32 or 0/inf
    else:
        # ApproxTrain byte semantics, assembled as a float32 bit pattern:
        # entry = (1 + f/2^M) * 2^c; biased exponent Ea + Eb - 127 + c;
        # +0 (sign lost) whenever Ea + Eb <= 127 (before adding c).
        # Overflow (exponent >= 255) is IEEE: ±inf ("IEEE at the edges").
        c = carry[ia, ib]
        f = frac[ia, ib]
        exp_sum = ea + eb
        res_exp = exp_sum - _EXP_BIAS + c
        pattern = (sign << 31) | (np.clip(res_exp, 0, _EXP_INF) << 23) | (f << (_MAX_BITS - bits))
        overflow = res_exp >= _EXP_INF
        pattern = np.where(overflow, (sign << 31) | (_EXP_INF << 23), pattern)
        pattern = np.where(exp_sum <= _EXP_BIAS, 0, pattern)
        normal_result = pattern.astype(np.uint32).view(np.float32)

    # Special operands (docs/numerics.md 2.2), IEEE-consistent in both modes.
    signed_zero = np.where(sign == 1, np.float32(-0.0), np.float32(0.0))
    signed_inf = np.where(sign == 1, np.float32(-np.inf), np.float32(np.inf))
    any_nan = (ka == KIND_NAN) | (kb == KIND_NAN)
    any_inf = (ka == KIND_INF) | (kb == KIND_INF)
    any_zero = (ka == KIND_ZERO) | (kb == KIND_ZERO)

    result = np.where(normal, normal_result, np.float32(0.0))
    result = np.where(any_zero, signed_zero, result)
    result = np.where(any_inf, signed_inf, result)
    result = np.where(any_nan | (any_inf & any_zero), np.float32(np.nan), result)
    return result.astype(np.float32, copy=False)


def approx_multiply(a, b, table, bits, *, rounding="truncate", mode="ieee"):
    """Elementwise approximate float32 product a ⊗ b (docs/numerics.md section 2).

    Parameters
    ----------
    a, b : array_like
        Operands, broadcast against each other. Converted to float32 first
        (non-float32 input is rounded to nearest float32 by that cast).
    table : array_like, shape (2**bits, 2**bits)
        Significand products: ``table[i, j]`` is the multiplier's value for
        ``(1 + i/2**M) * (1 + j/2**M)``; row = ``a``'s mantissa index, column
        = ``b``'s. float32 or float64 (any real dtype is accepted). Entries
        may be zero, below 1, or 4 and above, but must be finite as float32.
        A float64 entry with more than 24 significant bits is rounded to the
        nearest float32 (ties to even) before use; since the scaling by a
        power of two is exact, that is the same as rounding the real product
        to nearest in the normal range.
    bits : int
        M, the number of fraction bits of the operands, 0 <= M <= 23.
    rounding : {"truncate", "rne"}, optional
        Operand conversion, see :func:`split_float32`.
    mode : {"ieee", "approxtrain"}, optional
        ``"ieee"`` (default): for normal operands the result is
        ``sa*sb * 2**(ea+eb) * table[i, j]``; a magnitude >= 2**128 gives
        ±inf, a magnitude below 2**-126 gives ±0 (sign = sign(a) xor
        sign(b); subnormals are never produced); otherwise the result is
        exact. The range decisions are made on the actual value, so an
        entry below 1 or >= 2 can move a result into or out of range.

        ``"approxtrain"``: ApproxTrain's simulator in the normal range, bit
        for bit, IEEE at the edges. Operands are truncated (``rounding``
        must be ``"truncate"``); each entry must be ``(1 + f/2**M) * 2**c``
        with integer ``f`` in [0, 2**M) and carry ``c`` in {0, 1}; the
        biased result exponent is ``Ea + Eb - 127 + c``; the result is +0
        (sign lost) whenever ``Ea + Eb <= 127`` (biased, before adding c).
        A result exponent >= 255 gives ±inf.

        In both modes zero/subnormal operands, inf and NaN follow docs/numerics.md
        2.2: zero (or subnormal, DAZ) times finite gives ±0 with sign
        sign(a) xor sign(b); NaN anywhere or 0 × inf gives NaN; inf times
        nonzero finite or inf gives ±inf.

    Returns
    -------
    ndarray of float32
        The broadcast shape of ``a`` and ``b``.

    Raises
    ------
    ValueError
        If ``bits`` is out of range, the table shape is not
        ``(2**bits, 2**bits)``, an entry is not finite, ``rounding`` or
        ``mode`` is unknown, or (approxtrain) an entry is not representable
        as ``(1 + f/2**M) * 2**c`` or ``rounding`` is not ``"truncate"``.
    """
    bits = _check_bits(bits)
    rounding = _check_rounding(rounding)
    mode = _check_mode(mode, rounding)
    t32, carry, frac = _prepare_table(table, bits, mode)
    a = _as_float32(a, "a")
    b = _as_float32(b, "b")
    np.broadcast_shapes(a.shape, b.shape)  # raises ValueError if incompatible
    return _multiply_prepared(a, b, t32, carry, frac, bits, rounding, mode)


# ---------------------------------------------------------------------------
# the approximate GEMM (docs/numerics.md 3)
# ---------------------------------------------------------------------------

def approx_matmul(a, b, table, bits, *, rounding="truncate", mode="ieee"):
    """Approximate GEMM: ``C[i, j] = sum_k a[i, k] ⊗ b[k, j]`` (docs/numerics.md 3).

    Each product is :func:`approx_multiply` of the two float32 entries (``a``
    is the left operand: its mantissa selects the table row). The products
    are accumulated in float32 with ordinary IEEE round-to-nearest adds, in
    this reference order::

        acc = +0.0f
        for k in 0, 1, ..., K-1:  acc = fl32(acc + (a[i, k] ⊗ b[k, j]))

    Accumulation order is not part of the cross-backend contract: other
    backends may add in another order (and then agree only to a tolerance
    derived from K and float32 epsilon); this function defines the reference
    order. Starting from +0.0 means a sum whose products are all -0 is +0,
    as in a C loop ``float acc = 0.f; acc += p;``. No fused multiply-add is
    used: each approximate product is rounded to float32 (it is exact in the
    normal range) before it is added. NaN and inf propagate as IEEE addition
    says (e.g. inf + (-inf) = NaN).

    Parameters
    ----------
    a : array_like, shape (m, K)
    b : array_like, shape (K, n)
        Converted to float32 first.
    table, bits, rounding, mode
        As in :func:`approx_multiply`.

    Returns
    -------
    ndarray of float32, shape (m, n)
        Zeros when K = 0.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not 2-D, the inner dimensions differ, or for any
        reason :func:`approx_multiply` raises.
    """
    bits = _check_bits(bits)
    rounding = _check_rounding(rounding)
    mode = _check_mode(mode, rounding)
    a = _as_float32(a, "a")
    b = _as_float32(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"approx_matmul needs 2-D operands, got a with shape {a.shape} "
            f"and b with shape {b.shape}"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"approx_matmul inner dimensions differ: a has shape {a.shape}, "
            f"b has shape {b.shape} ({a.shape[1]} != {b.shape[0]})"
        )
    t32, carry, frac = _prepare_table(table, bits, mode)
    m, k_dim = a.shape
    n = b.shape[1]
    acc = np.zeros((m, n), dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(k_dim):
            product = _multiply_prepared(
                a[:, k:k + 1], b[k:k + 1, :], t32, carry, frac, bits, rounding, mode
            )
            acc = (acc + product).astype(np.float32, copy=False)  # float32 IEEE add
    return acc
