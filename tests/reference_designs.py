"""Reference implementations of the built-in multiplier designs.

Written straight from ``docs/designs.md``, independently of the C models in
``c_models/``, and as plainly as possible: the tests compare the two.

Integer references take arrays of unsigned n-bit operands (any integer or
object dtype) and return ``uint64`` arrays.  Real-valued formulas are
evaluated in float64, which is exact here: for n <= 32 every intermediate is
a dyadic rational with at most 34 significant bits and the scaled result is
below 2^64, so ``floor`` and the conversion to an integer lose nothing.

Float references return significand-product tables: entry ``[i, j]`` is the
value the design returns for the significands ``(1 + i/2^M) * (1 + j/2^M)``
(row = operand A, column = operand B).
"""

import numpy as np

#: MBM's correction constant, 0.0001010 in binary (the 7-bit hardware value).
MBM_C = 0.078125


# ---------------------------------------------------------------- helpers

def _as_int_array(v):
    """Operands as an int64 array (n <= 32, so every value fits)."""
    return np.asarray(v).astype(np.int64)


def _msb(v):
    """Index of the leading one of each v > 0 (0 for v = 0)."""
    v = np.asarray(v, dtype=np.uint64)
    k = np.zeros(v.shape, dtype=np.int64)
    for i in range(1, 64):
        k += (v >> np.uint64(i)) != 0
    return k


def _floor_to_uint64(x):
    """Exact floor of nonnegative float64 values below 2^64, as uint64."""
    x = np.floor(np.asarray(x, dtype=np.float64))
    return np.array([int(e) for e in x.ravel()], dtype=np.uint64).reshape(x.shape)


def _split(v):
    """Write v >= 1 as 2^k (1 + x): return (k, x) as arrays (x float64, exact)."""
    k = _msb(v)
    x = (v - 2.0 ** k) / 2.0 ** k
    return k, x


def _bit(v, i):
    """Bit i of each element of v, as 0/1 int64."""
    return (np.asarray(v, dtype=np.int64) >> i) & 1


# ------------------------------------------------------- integer designs

def exact_int(a, b, n):
    """Exact product a * b."""
    a, b = _as_int_array(a), _as_int_array(b)
    return a.astype(np.uint64) * b.astype(np.uint64)


def mitchell(a, b, n):
    """Mitchell (1962): add the logs k + x, take the antilog linearly.

    s = x1 + x2; P' = 2^(k1+k2) (1 + s) if s < 1, else 2^(k1+k2+1) s.
    The result is an exact integer, so nothing is rounded.
    """
    a, b = _as_int_array(a), _as_int_array(b)
    nz = (a > 0) & (b > 0)
    aa, bb = np.where(nz, a, 1), np.where(nz, b, 1)
    k1, x1 = _split(aa)
    k2, x2 = _split(bb)
    s = x1 + x2
    p = np.where(s < 1, 2.0 ** (k1 + k2) * (1 + s), 2.0 ** (k1 + k2 + 1) * s)
    return np.where(nz, _floor_to_uint64(p), np.uint64(0))


def mbm(a, b, n, t=0):
    """MBM (Saadat et al. 2018), with optional operand truncation MBM-t.

    Fractions are taken in F = n - 1 bits (the operand's bits after the
    leading one).  Truncation t > 0 zeroes the t low fraction bits and sets
    the lowest kept bit (bit t) to 1; t = 0 means no truncation (plain MBM,
    nothing forced); t >= n is clamped to t = F, where every fraction bit is
    dropped and the lowest kept bit is the leading one itself, so x = 0.

    c = 0.078125 and c/2 are held in F fraction bits, floored (exact for
    n >= 8).  s = x1 + x2.  s < 1: f = s + c, e = k1 + k2 (f may reach 1 and
    simply carries).  Else f = (s - 1) + c/2, e = k1 + k2 + 1, and if f >= 1
    the correction is dropped.  P' = floor(2^e (1 + f)).
    """
    F = n - 1
    t = min(t, F)
    ulp = 2.0 ** -F
    c = np.floor(MBM_C / ulp) * ulp
    c_half = np.floor(MBM_C / 2 / ulp) * ulp

    a, b = _as_int_array(a), _as_int_array(b)
    nz = (a > 0) & (b > 0)
    k1, x1 = _split(np.where(nz, a, 1))
    k2, x2 = _split(np.where(nz, b, 1))
    if t == F:
        x1, x2 = np.zeros_like(x1), np.zeros_like(x2)
    elif t > 0:
        u = 2.0 ** -(F - t)                   # weight of the lowest kept bit
        # keep the bits above it, then set it: floor to a multiple of 2u, + u
        x1 = np.floor(x1 / (2 * u)) * (2 * u) + u
        x2 = np.floor(x2 / (2 * u)) * (2 * u) + u

    s = x1 + x2
    no_carry = s < 1
    f_carry = (s - 1) + c_half
    f_carry = np.where(f_carry >= 1, s - 1, f_carry)
    f = np.where(no_carry, s + c, f_carry)
    e = np.where(no_carry, k1 + k2, k1 + k2 + 1)
    p = 2.0 ** e * (1 + f)
    return np.where(nz, _floor_to_uint64(p), np.uint64(0))


def drum(a, b, n, k=6):
    """DRUM-k (Hashemi et al. 2015).

    An operand v < 2^k is used exactly.  Otherwise the k bits starting at
    its leading one form a window whose lowest bit is forced to 1, shifted
    down by msb(v) - k + 1.  P' = (wa * wb) << (sa + sb).
    """
    def window(v):
        v = v.astype(np.uint64)
        shift = np.where(v < 2 ** k, 0, _msb(v) - k + 1).astype(np.uint64)
        w = v >> shift
        w = np.where(shift > 0, w | np.uint64(1), w)
        return w, shift

    a, b = _as_int_array(a), _as_int_array(b)
    wa, sa = window(a)
    wb, sb = window(b)
    return (wa * wb) << (sa + sb)


def ilm(a, b, n, stages=1):
    """Iterative logarithmic multiplier (Babic et al. 2011).

    Basic block, for x, y >= 1 with kx = msb(x), ky = msb(y):
    (x << ky) + ((y - 2^ky) << kx), which is x*y minus rx*ry (r = v - 2^k).
    Each of the `stages` corrections adds the block of the residues; a zero
    operand (or residue) contributes 0 and ends the iteration.
    """
    x = _as_int_array(a).astype(np.uint64)
    y = _as_int_array(b).astype(np.uint64)
    p = np.zeros(np.broadcast(x, y).shape, dtype=np.uint64)
    for _ in range(stages + 1):
        live = (x > 0) & (y > 0)
        kx = np.where(live, _msb(x), 0).astype(np.uint64)
        ky = np.where(live, _msb(y), 0).astype(np.uint64)
        rx = x - (np.uint64(1) << kx)
        ry = y - (np.uint64(1) << ky)
        block = (x << ky) + (ry << kx)
        p = p + np.where(live, block, np.uint64(0))
        x = np.where(live, rx, np.uint64(0))
        y = np.where(live, ry, np.uint64(0))
    return p


def alm_soa(a, b, n, w=4):
    """ALM-SOA (Liu et al. 2018): Mitchell with a set-one fraction adder.

    The fractions are F = n - 1 bit integers.  The adder ignores the w low
    bits of both addends, its carry into bit w is the AND of their bits
    w - 1, and the w low bits of the sum are forced to 1 (w is clamped to
    F; w = 0 is Mitchell).  Then Mitchell's two cases, and the result is
    floored to an integer (the forced ones can lie below 2^0).
    """
    F = n - 1
    w = min(w, F)
    a, b = _as_int_array(a), _as_int_array(b)
    nz = (a > 0) & (b > 0)
    aa, bb = np.where(nz, a, 1), np.where(nz, b, 1)
    k1, k2 = _msb(aa), _msb(bb)
    xf1 = (aa - 2 ** k1) * 2 ** (F - k1)      # fraction as an F-bit integer
    xf2 = (bb - 2 ** k2) * 2 ** (F - k2)

    if w == 0:
        sf = xf1 + xf2
    else:
        carry_in = _bit(xf1, w - 1) & _bit(xf2, w - 1)
        high = (xf1 >> w) + (xf2 >> w) + carry_in
        sf = high * 2 ** w + (2 ** w - 1)
    s = sf / 2.0 ** F
    p = np.where(s < 1, 2.0 ** (k1 + k2) * (1 + s), 2.0 ** (k1 + k2 + 1) * s)
    return np.where(nz, _floor_to_uint64(p), np.uint64(0))


def bam(a, b, n, h=0, v=0):
    """Broken-array multiplier (Mahdiani et al. 2010).

    P' = sum of a_i * b_j * 2^(i+j) over the partial-product bits with
    j >= h and i + j >= v; column truncation is h = 0, v = t.
    """
    a, b = _as_int_array(a), _as_int_array(b)
    p = np.zeros(np.broadcast(a, b).shape, dtype=np.uint64)
    for i in range(n):
        for j in range(n):
            if j >= h and i + j >= v:
                pp = (_bit(a, i) & _bit(b, j)).astype(np.uint64)
                p += pp << np.uint64(i + j)
    return p


# --------------------------------------------------- signed 8-bit circuits
# Signed references take int8 values (-128..127) and return int64 products.

def _signed_bits(v):
    """The two's-complement bit pattern of each 8-bit value, as 0..255."""
    return _as_int_array(v) & 0xFF


def mul8s_bam(a, b, h=0, v=0):
    """Signed broken array: the exact product less the partial-product bits the array drops.

    With a = -a_7 2^7 + sum_{i<7} a_i 2^i (b likewise), a b is the sum of a_i b_j 2^(i+j) weighted -1
    where exactly one of i, j is 7; the array drops the bits of rows j < h and of columns i + j < v.
    """
    ua, ub = _signed_bits(a), _signed_bits(b)
    p = _as_int_array(a) * _as_int_array(b)
    for i in range(8):
        for j in range(8):
            if j < h or i + j < v:
                weight = -1 if (i == 7) != (j == 7) else 1
                p = p - weight * ((_bit(ua, i) & _bit(ub, j)) << (i + j))
    return p


def mul8s_trunc(a, b, k=6):
    """Signed array with its k lowest columns dropped: the broken array with h = 0, v = k."""
    return mul8s_bam(a, b, h=0, v=k)


def mul8s_log(a, b):
    """Mitchell's product of the magnitudes (9-bit: |-128| = 2^7 needs the 8th bit), with the product's sign."""
    a, b = _as_int_array(a), _as_int_array(b)
    magnitude = mitchell(np.abs(a), np.abs(b), 9).astype(np.int64)
    return np.sign(a * b) * magnitude


def mul8s_exact(a, b):
    return _as_int_array(a) * _as_int_array(b)


# ---------------------------------------------- float significand tables

def _sig_grid(M):
    """Index grids (i, j) of shape (2^M, 2^M), row = operand A."""
    r = np.arange(2 ** M, dtype=np.int64)
    return np.meshgrid(r, r, indexing="ij")


def exact_table(M):
    """(1 + i/2^M)(1 + j/2^M), exact in float64 for M <= 25."""
    i, j = _sig_grid(M)
    return (1 + i / 2.0 ** M) * (1 + j / 2.0 ** M)


def bf16_trunc_table(M):
    """Exact product truncated to M fraction bits after normalisation."""
    p = exact_table(M)
    scale = np.where(p >= 2, 2.0, 1.0)        # a carry normalises by one bit
    return scale * np.floor(p / scale * 2 ** M) / 2 ** M


def bf16_rne_table(M):
    """Exact product rounded to M fraction bits, ties to even.

    np.rint rounds half to even; a rounding carry gives the next power of
    two, which is already the renormalised value.
    """
    p = exact_table(M)
    scale = np.where(p >= 2, 2.0, 1.0)
    return scale * np.rint(p / scale * 2 ** M) / 2 ** M


def _approxtrain_finish(W, M):
    """ApproxTrain's common last step: normalise W, cut the mantissa."""
    norm = W >= 2 ** 24
    W = np.where(norm, W >> 1, W)
    mantissa = (W & 0x7FFFFF) >> (23 - M)
    return (1 + mantissa / 2.0 ** M) * np.where(norm, 2.0, 1.0)


def at_mbm_table(M):
    """ApproxTrain's MBM, in the 23-bit fraction field (M in 1, 3, 5, 7)."""
    if M not in (1, 3, 5, 7):
        raise ValueError("ApproxTrain's MBM exists for M = 1, 3, 5, 7 only")
    i, j = _sig_grid(M)
    A, B = i << (23 - M), j << (23 - M)
    mask = (2 ** M - 1) << (23 - M)
    setbit = 1 << (23 - M)
    a = (A & mask) | setbit
    b = (B & mask) | setbit
    S = a + b
    carry = (S >= 2 ** 23).astype(np.int64)
    if M == 7:
        correction = 0xA0000 >> carry
    elif M == 5:
        correction = (0xA0000 >> carry) & mask
    else:
        correction = 0 * carry
    Sc = S % 2 ** 23 + correction
    Sc = np.where((carry == 1) & (Sc >= 2 ** 23), S % 2 ** 23, Sc)
    W = (2 ** 23 + Sc) << carry
    return _approxtrain_finish(W, M)


def at_mitchell_table(M):
    """ApproxTrain's Mitchell, in the 23-bit fraction field (any M <= 23)."""
    i, j = _sig_grid(M)
    mask = (2 ** M - 1) << (23 - M)
    S = ((i << (23 - M)) & mask) + ((j << (23 - M)) & mask)
    carry = (S >= 2 ** 23).astype(np.int64)
    W = (2 ** 23 + S % 2 ** 23) << carry
    return _approxtrain_finish(W, M)


def mitchell_float_table(M):
    """Mitchell's float form straight from the formula: 1 + s or 2 s."""
    i, j = _sig_grid(M)
    s = i / 2.0 ** M + j / 2.0 ** M
    return np.where(s < 1, 1 + s, 2 * s)


def approxtrain_bytes(table, M):
    """ApproxTrain's LUT file content for a significand-product table.

    Raw uint8, 2^(2M) bytes, index (i << M) | j; bit 7 is the carry
    (product >= 2, normalised by one bit) and the low M bits the mantissa.
    Only values (1 + f/2^M) * 2^c with c in {0, 1} are representable.
    """
    if not 1 <= M <= 7:
        raise ValueError("ApproxTrain's format holds M <= 7")
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (2 ** M, 2 ** M):
        raise ValueError("table must have shape (2^M, 2^M)")
    carry = table >= 2
    frac = (table / np.where(carry, 2.0, 1.0) - 1) * 2 ** M
    mantissa = np.round(frac).astype(np.int64)
    if (np.any(frac != mantissa) or np.any(mantissa < 0)
            or np.any(mantissa >= 2 ** M) or np.any(table >= 4)):
        raise ValueError("table holds values ApproxTrain's format cannot store")
    return ((carry.astype(np.int64) << 7) | mantissa).astype(np.uint8).ravel()


INT_REFERENCES = {
    "exact_int": exact_int,
    "mitchell": mitchell,
    "mbm": mbm,
    "drum": drum,
    "ilm": ilm,
    "alm_soa": alm_soa,
    "bam": bam,
}

SIGNED_REFERENCES = {
    "mul8s_exact": mul8s_exact,
    "mul8s_trunc": mul8s_trunc,
    "mul8s_bam": mul8s_bam,
    "mul8s_log": mul8s_log,
}

FLOAT_TABLES = {
    "exact": exact_table,
    "bf16_trunc": bf16_trunc_table,
    "bf16_rne": bf16_rne_table,
    "at_mbm": at_mbm_table,
    "at_mitchell": at_mitchell_table,
}
