"""The 8-bit integer product tables of the peer tools: TFApprox, TorchApprox, AdaPT/TransAxx, ApproxTorch.

Each peer keeps the 256 x 256 table of an 8x8-bit multiplier (EvoApproxLib's ``mul8u_*``/``mul8s_*``
and the like) in a file of its own: a raw binary, a numpy array, a C header, a text matrix. The files
agree on the operand order (row = the layer's input, column = the weight, as amsim's integer LUTs)
and disagree on the rest: the element type, and for signed multipliers the index order, either the
operands' two's-complement bit patterns (0..127, -128..-1: TFApprox, TorchApprox, AdaPT) or their
values (-128..127: ApproxTorch). docs/lut-formats.md lists each convention and where it was read.

In amsim an integer LUT is indexed by the operands' bit patterns (``table[a & 0xFF, b & 0xFF]``), its
``meta["signed"]`` says how to read them, and an 8x8-bit multiplier's products are 16-bit numbers.

Reading verifies a file as :func:`amsim.lut.load` verifies amsim's own: the size, the element type,
the value range of a 16-bit product of the declared signedness, and the layout. Only the C header says
whether a table is signed (its element type) and no file says its index order, so the layout is
checked against the products themselves: the same numbers, read as an unsigned
table, a signed one in bit-pattern order or a signed one in value order, are compared with the exact
products of each reading (``sum |table - exact| / sum |exact|``). A file is refused when another
reading is strictly closer to a multiplier than the declared one: a signed table declared unsigned,
a table in another tool's order. An all-zero table is as close every way: it is accepted as declared.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np

from .errors import LUTError
from .lut import LUT, atomic_write_bytes

__all__ = ["FORMATS", "SUFFIXES", "TFAPPROX_BYTES", "encode", "decode", "save", "load", "save_tfapprox",
           "load_tfapprox", "save_torchapprox", "load_torchapprox", "save_adapt", "load_adapt",
           "save_approxtorch", "load_approxtorch"]

#: Operand width of every peer table, and the width of its products.
BITS = 8
OUTPUT_BITS = 2 * BITS
_N = 1 << BITS
_HALF = _N // 2
#: Size of a TFApprox table: 256 x 256 16-bit words.
TFAPPROX_BYTES = 2 * _N * _N


@dataclasses.dataclass(frozen=True)
class _Format:
    title: str
    suffix: str
    signed_order: str  # "pattern" (0..127, -128..-1) or "value" (-128..127): where a signed operand's row is
    wraps: bool  # the file holds 16-bit words whose signedness only the reader knows (TFApprox)


_FORMATS = {
    "tfapprox": _Format("TFApprox", ".bin", "pattern", wraps=True),
    "torchapprox": _Format("TorchApprox", ".npy", "pattern", wraps=False),
    "adapt": _Format("AdaPT/TransAxx", ".h", "pattern", wraps=False),
    "approxtorch": _Format("ApproxTorch", ".txt", "value", wraps=False),
}

#: The peer formats, by the name the command line uses.
FORMATS = tuple(_FORMATS)
#: Each format's file name suffix (what ``amsim lut-info`` recognises a file by).
SUFFIXES = {name: f.suffix for name, f in _FORMATS.items()}


def _format(fmt: str) -> _Format:
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise LUTError(f"unknown integer LUT format {fmt!r}; use one of {', '.join(FORMATS)}") from None


# ----------------------------------------------------------------------------------------------
# Index orders and value ranges
# ----------------------------------------------------------------------------------------------


def _reorder(table: np.ndarray, order: str) -> np.ndarray:
    """Between amsim's bit-pattern order and ``order``; its own inverse.

    In value order row i is operand i - 128, whose bit pattern is (i + 128) mod 256: a half turn of
    both axes.
    """
    return table if order == "pattern" else np.roll(table, _HALF, axis=(0, 1))


def _range(signed: bool) -> tuple[int, int]:
    return (-(1 << (OUTPUT_BITS - 1)), (1 << (OUTPUT_BITS - 1)) - 1) if signed else (0, (1 << OUTPUT_BITS) - 1)


def _kind(signed: bool) -> str:
    return "signed" if signed else "unsigned"


def _first_outside(table: np.ndarray, signed: bool):
    lo, hi = _range(signed)
    bad = (table < lo) | (table > hi)
    return tuple(map(int, np.argwhere(bad)[0])) if bad.any() else None


def _exact(signed: bool) -> np.ndarray:
    """The exact products in amsim's order: row = operand a's bit pattern, column = b's."""
    values = np.arange(_N, dtype=np.int64)
    if signed:
        values = np.where(values >= _HALF, values - _N, values)
    return np.multiply.outer(values, values)


# ----------------------------------------------------------------------------------------------
# Verification: which reading of the stored numbers is a multiplier
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Reading:
    signed: bool
    order: str

    def describe(self) -> str:
        if not self.signed:
            return "an unsigned table"
        return ("a signed table in bit-pattern order (0..127, -128..-1)" if self.order == "pattern"
                else "a signed table in value order (-128..127)")


_READINGS = (_Reading(False, "pattern"), _Reading(True, "pattern"), _Reading(True, "value"))


def _read_as(stored: np.ndarray, reading: _Reading, wraps: bool):
    """The table ``stored`` is under ``reading``, in amsim's order; None where its numbers cannot be
    products of that signedness."""
    values = stored
    if wraps:  # 16-bit words: the reading decides the sign bit
        values = stored.astype(np.uint16).astype(np.int16 if reading.signed else np.uint16).astype(np.int64)
    elif _first_outside(stored, reading.signed) is not None:
        return None
    return _reorder(values, reading.order)


def _distance(table: np.ndarray, signed: bool) -> tuple[int, int]:
    """How far ``table`` is from the exact products, as the fraction (numerator, denominator): exact
    integers, so that comparisons between readings have no rounding ties."""
    exact = _exact(signed)
    return int(np.abs(table - exact).sum()), int(np.abs(exact).sum())


def _closer(d1, d2) -> bool:
    """d1 < d2 for fractions (n, d) with d > 0."""
    return d1[0] * d2[1] < d2[0] * d1[1]


def _verified(stored: np.ndarray, fmt: _Format, signed, name: str) -> tuple[np.ndarray, bool]:
    """The table in amsim's order and its signedness, or LUTError naming what is wrong.

    ``signed`` None: the file does not say and the caller did not either; the closer of the format's
    own two readings (unsigned, signed in its order) is taken, and a tie (an all-zero table, say) is
    refused. Then no other reading may be strictly closer to a multiplier than the one taken.
    """
    own = [_Reading(False, "pattern"), _Reading(True, fmt.signed_order)]
    tables = {r: _read_as(stored, r, fmt.wraps) for r in _READINGS}
    distances = {r: _distance(t, r.signed) for r, t in tables.items() if t is not None}
    if signed is None:
        candidates = [r for r in own if r in distances]
        if not candidates:
            raise LUTError(f"{name}: entries from {int(stored.min())} to {int(stored.max())}; no table of 16-bit "
                           "products holds both, signed (-32768..32767) or unsigned (0..65535)")
        if len(candidates) == 2:
            unsigned_d, signed_d = (distances[r] for r in candidates)
            if not _closer(unsigned_d, signed_d) and not _closer(signed_d, unsigned_d):
                raise LUTError(f"{name}: the table is as close to a signed multiplier as to an unsigned one; "
                               "declare which it is (signed=True/False, --signed/--unsigned)")
            candidates = [candidates[1] if _closer(signed_d, unsigned_d) else candidates[0]]
        declared = candidates[0]
    else:
        declared = own[bool(signed)]
        if declared not in distances:
            where = _first_outside(stored, declared.signed)
            lo, hi = _range(declared.signed)
            raise LUTError(f"{name}: entry {where} = {int(stored[where])} is outside {lo}..{hi}, the range of "
                           f"{'a signed' if declared.signed else 'an unsigned'} {OUTPUT_BITS}-bit product")
    for other, d in distances.items():
        if other != declared and _closer(d, distances[declared]):
            mine, theirs = (n / m for n, m in (distances[declared], d))
            raise LUTError(f"{name}: not {declared.describe()} in {fmt.title}'s layout: the numbers are closer to "
                           f"a multiplier read as {other.describe()} (distance to the exact products "
                           f"{theirs:.3g} against {mine:.3g})")
    return tables[declared], declared.signed


def _imported(table: np.ndarray, signed: bool, fmt: str, name: str) -> LUT:
    return LUT(table=table.astype(np.int64), bits=BITS, kind="integer", model=Path(name).stem if name else "",
               meta={"imported_from": fmt, "file": str(name), "signed": bool(signed)})


def _exportable(lut: LUT, fmt: _Format) -> tuple[np.ndarray, bool]:
    """The table in ``fmt``'s order and its signedness, or LUTError saying why it cannot go there."""
    if lut.kind != "integer" or lut.bits != BITS:
        raise LUTError(f"{fmt.title} files hold the {BITS}-bit integer product table; this is a {lut.kind} LUT "
                       f"at {lut.bits} bits (use --bits {BITS} with an integer model)")
    signed = bool(lut.meta.get("signed"))
    where = _first_outside(lut.table, signed)
    if where is not None:
        lo, hi = _range(signed)
        raise LUTError(f"{fmt.title} stores {OUTPUT_BITS}-bit products; entry {where} = {int(lut.table[where])} "
                       f"of this {_kind(signed)} table is outside {lo}..{hi}")
    return _reorder(lut.table, fmt.signed_order if signed else "pattern"), signed


# ----------------------------------------------------------------------------------------------
# TFApprox: 65536 little-endian 16-bit words, word (a << 8) | b (tf2/src/approx_ops_types.h)
# ----------------------------------------------------------------------------------------------


def _encode_tfapprox(table: np.ndarray, signed: bool) -> bytes:
    return table.astype("<i2" if signed else "<u2").tobytes()


def _decode_tfapprox(data: bytes, name: str):
    if len(data) != TFAPPROX_BYTES:
        raise LUTError(f"{name}: {len(data)} bytes; a TFApprox table is 256x256 16-bit words = {TFAPPROX_BYTES} "
                       "bytes")
    return np.frombuffer(data, "<u2").reshape(_N, _N).astype(np.int64), None


# ----------------------------------------------------------------------------------------------
# TorchApprox: a .npy 256x256 integer array, written int32 (what its layers take)
# ----------------------------------------------------------------------------------------------


def _encode_torchapprox(table: np.ndarray, signed: bool) -> bytes:
    buf = io.BytesIO()
    np.save(buf, table.astype(np.int32), allow_pickle=False)
    return buf.getvalue()


def _decode_torchapprox(data: bytes, name: str):
    if data.startswith(b"PK"):
        raise LUTError(f"{name}: an .npz archive, not the .npy array TorchApprox keeps a table in")
    if not data.startswith(b"\x93NUMPY"):
        raise LUTError(f"{name}: not a .npy file (it does not start with numpy's magic string)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LUTError(f"{name}: not a .npy array ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if array.dtype.kind not in "iu":
        raise LUTError(f"{name}: a {array.dtype} array; a TorchApprox table holds integers (int32)")
    if array.shape != (_N, _N):
        raise LUTError(f"{name}: array of shape {array.shape}; a TorchApprox table is 256x256")
    return array.astype(np.int64), None


# ----------------------------------------------------------------------------------------------
# AdaPT / TransAxx: a C header declaring `const int16_t lut [256][256] = {{...}, ...};`
# ----------------------------------------------------------------------------------------------

#: Element types of a header table and the signedness each declares (AdaPT writes int16_t,
#: TransAxx short; the unsigned ones are amsim's for unsigned multipliers).
_C_TYPES = {"int16_t": True, "short": True, "signed short": True, "short int": True,
            "uint16_t": False, "unsigned short": False, "unsigned short int": False}
_C_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_C_DECL_RE = re.compile(r"^\s*(?:static\s+)?(?:const\s+)?(?:__device__\s+|__constant__\s+)?"
                        r"((?:unsigned\s+|signed\s+)?[A-Za-z_]\w*(?:\s+int)?)\s+(\w+)\s*"
                        r"\[\s*(\d+)\s*\]\s*\[\s*(\d+)\s*\]\s*=\s*\{(.*)\}\s*;\s*$", re.S)
_C_ROW_RE = re.compile(r"\{([^{}]*)\}")


def _encode_adapt(table: np.ndarray, signed: bool) -> bytes:
    rows = ",\n".join("{" + ", ".join(map(str, row)) + "}" for row in table.tolist())
    ctype = "int16_t" if signed else "uint16_t"
    return f"#include <stdint.h>\n\nconst {ctype} lut [{_N}][{_N}] = {{{rows}}};\n".encode()


def _decode_adapt(data: bytes, name: str):
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise LUTError(f"{name}: not a C header (bytes that are not ASCII)") from None
    body = "\n".join(line for line in _C_COMMENT_RE.sub(" ", text).splitlines()
                     if not line.lstrip().startswith("#"))
    match = _C_DECL_RE.match(body)
    if not match:
        raise LUTError(f"{name}: no table declaration of the form `const int16_t lut [256][256] = {{...}};`")
    ctype, _, rows_n, cols_n = " ".join(match.group(1).split()), match.group(2), match.group(3), match.group(4)
    if ctype not in _C_TYPES:
        raise LUTError(f"{name}: element type {ctype!r}; a table of 16-bit products is int16_t or short "
                       "(signed), uint16_t or unsigned short (unsigned)")
    if (int(rows_n), int(cols_n)) != (_N, _N):
        raise LUTError(f"{name}: declared [{rows_n}][{cols_n}]; an 8-bit multiplier's table is [256][256]")
    rows = _C_ROW_RE.findall(match.group(5))
    if len(rows) != _N:
        raise LUTError(f"{name}: {len(rows)} rows in braces; the table has 256")
    try:
        values = [[int(v, 0) for v in row.replace(",", " ").split()] for row in rows]
    except ValueError as exc:
        raise LUTError(f"{name}: a table entry is not an integer ({exc})") from None
    short = next((i for i, row in enumerate(values) if len(row) != _N), None)
    if short is not None:
        raise LUTError(f"{name}: row {short} has {len(values[short])} entries; each row has 256")
    return np.array(values, dtype=np.int64), _C_TYPES[ctype]


# ----------------------------------------------------------------------------------------------
# ApproxTorch: text, 256 lines of 256 integers, row-major; '#' starts a comment (numpy.loadtxt)
# ----------------------------------------------------------------------------------------------


def _encode_approxtorch(table: np.ndarray, signed: bool) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in table.tolist()).encode()


def _decode_approxtorch(data: bytes, name: str):
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise LUTError(f"{name}: not a text table (bytes that are not ASCII)") from None
    lines = [(number, line.split("#", 1)[0].split()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, tokens) for number, tokens in lines if tokens]
    if len(lines) != _N:
        raise LUTError(f"{name}: {len(lines)} lines of numbers; an ApproxTorch table has 256 lines of 256")
    for number, tokens in lines:
        if len(tokens) != _N:
            raise LUTError(f"{name}: line {number} has {len(tokens)} numbers; each line has 256")
    try:
        return np.array([[int(t) for t in tokens] for _, tokens in lines], dtype=np.int64), None
    except ValueError as exc:
        raise LUTError(f"{name}: a table entry is not an integer ({exc})") from None


_CODECS = {
    "tfapprox": (_encode_tfapprox, _decode_tfapprox),
    "torchapprox": (_encode_torchapprox, _decode_torchapprox),
    "adapt": (_encode_adapt, _decode_adapt),
    "approxtorch": (_encode_approxtorch, _decode_approxtorch),
}


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------


def encode(lut: LUT, fmt: str) -> bytes:
    """The file ``fmt`` holds for an 8-bit integer LUT (signed or unsigned, as ``lut.meta["signed"]``).

    Raises LUTError for a mantissa LUT, another width, or a product outside 16 bits.
    """
    f = _format(fmt)
    table, signed = _exportable(lut, f)
    return _CODECS[fmt][0](table, signed)


def decode(data: bytes, fmt: str, *, signed: bool | None = None, name: str = "") -> LUT:
    """The integer LUT a ``fmt`` file holds, verified (see the module's docstring).

    Args:
        data: the file's bytes.
        fmt: one of :data:`FORMATS`.
        signed: the multiplier's signedness: True, False, or None to take it from the file (a C
            header's element type) or, where the file does not say, from the reading closest to a
            multiplier.
        name: the file's name, for messages and the LUT's model name.
    """
    f = _format(fmt)
    label = name or f"{f.title} table"
    stored, typed = _CODECS[fmt][1](data, label)
    if typed is not None and signed is not None and bool(signed) != typed:
        raise LUTError(f"{label}: declared {_kind(bool(signed))}, but the header's element type makes it "
                       f"{_kind(typed)}")
    table, is_signed = _verified(stored, f, typed if signed is None else signed, label)
    return _imported(table, is_signed, fmt, name)


def save(lut: LUT, path, fmt: str) -> Path:
    """Write ``lut`` as a ``fmt`` file, atomically: nothing is written when it is refused."""
    return atomic_write_bytes(path, encode(lut, fmt))


def load(path, fmt: str, *, signed: bool | None = None) -> LUT:
    """Read and verify a ``fmt`` file (:func:`decode`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LUTError(f"{path}: cannot read: {exc.strerror}") from None
    return decode(data, fmt, signed=signed, name=str(path))


def save_tfapprox(lut: LUT, path) -> Path:
    """TFApprox's ``.bin``: word (a << 8) | b of 65536 little-endian 16-bit words (int16 if signed)."""
    return save(lut, path, "tfapprox")


def load_tfapprox(path, *, signed: bool | None = None) -> LUT:
    return load(path, "tfapprox", signed=signed)


def save_torchapprox(lut: LUT, path) -> Path:
    """TorchApprox's ``.npy``: int32 [a][b], signed operands in bit-pattern order."""
    return save(lut, path, "torchapprox")


def load_torchapprox(path, *, signed: bool | None = None) -> LUT:
    return load(path, "torchapprox", signed=signed)


def save_adapt(lut: LUT, path) -> Path:
    """AdaPT's C header ``const int16_t lut [256][256]`` (uint16_t when unsigned), bit-pattern order."""
    return save(lut, path, "adapt")


def load_adapt(path, *, signed: bool | None = None) -> LUT:
    """An AdaPT or TransAxx header (``const __device__ short lut...`` and include guards are read too)."""
    return load(path, "adapt", signed=signed)


def save_approxtorch(lut: LUT, path) -> Path:
    """ApproxTorch's text matrix: line a, column b; signed operands in value order (row i = i - 128)."""
    return save(lut, path, "approxtorch")


def load_approxtorch(path, *, signed: bool | None = None) -> LUT:
    return load(path, "approxtorch", signed=signed)
