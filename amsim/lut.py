"""Lookup tables: the native amsim format and ApproxTrain's ``NAME_M.bin``.

A *mantissa* LUT (docs/numerics.md section 1) holds, for every pair of M-bit
mantissas (i, j), the significand product the multiplier returns for
(1 + i/2^M) x (1 + j/2^M): row = operand A, column = operand B, never
transposed. It is float32 when every entry is exact in float32, float64
otherwise. An *integer* LUT holds the full product table of an n-bit integer
model (the peers' 8-bit formats are :mod:`amsim.lutformats`).

Native files are ``.npz`` archives with two members: ``table`` and ``meta``
(UTF-8 JSON: format tag, model, parameters, M, rounding, sha256 of the C
source, amsim version, creation time, sha256 of the table, statistics).
Writes are atomic (temporary file + rename). Loading verifies the checksum,
the shape and the width, and refuses a mismatch with the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import LUTError

__all__ = ["LUT", "save", "load", "load_any", "names_lut_file", "LUT_SUFFIXES", "to_approxtrain",
           "from_approxtrain", "save_approxtrain", "load_approxtrain", "lut_filename", "atomic_write_bytes"]

FORMAT_TAG = "amsim-lut"
FORMAT_VERSION = 1


@dataclasses.dataclass(eq=False)
class LUT:
    """A lookup table and what produced it.

    Attributes
    ----------
    table : ndarray
        (2^bits, 2^bits). Mantissa LUTs: float32 or float64 significand
        products. Integer LUTs: int64 products, indexed by the operands' n-bit
        patterns.
    bits : int
        M for a mantissa LUT, the operand width n for an integer LUT.
    kind : {"mantissa", "integer"}
    model : str
    params : dict
    rounding : {"truncate", "rne"}
        Operand conversion the table is meant to be used with (docs/numerics.md 2.1).
    source_sha256 : str
        sha256 of the model's C source ("" when unknown, e.g. imported files).
    stats : dict
        Error statistics keyed by reference (``truncated``, ``full``).
    meta : dict
        Anything else (lifting, integer width, import origin, ...).
    """

    table: np.ndarray
    bits: int
    kind: str = "mantissa"
    model: str = ""
    params: dict = dataclasses.field(default_factory=dict)
    rounding: str = "truncate"
    source_sha256: str = ""
    stats: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)
    created: str = ""
    amsim_version: str = ""

    def __post_init__(self):
        self.table = np.ascontiguousarray(self.table)
        if self.kind not in ("mantissa", "integer"):
            raise LUTError(f"LUT kind must be 'mantissa' or 'integer', not {self.kind!r}")
        top = MAX_BITS[self.kind]
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= top:
            what = "M" if self.kind == "mantissa" else "n"
            raise LUTError(f"a {self.kind} LUT's bits ({what}) must be an integer 1..{top}, not {self.bits!r}")
        self.bits = int(self.bits)
        allowed = (np.float32, np.float64) if self.kind == "mantissa" else (np.int64,)
        if self.table.dtype.type not in allowed:
            raise LUTError(f"a {self.kind} LUT must be {' or '.join(np.dtype(t).name for t in allowed)}, "
                           f"not {self.table.dtype}")
        _check_shape(self.table.shape, self.bits, self.kind)
        if not isinstance(self.meta, dict) or not isinstance(self.params, dict):
            raise LUTError(f"a LUT's meta and params must be dicts, not {type(self.meta).__name__} and "
                           f"{type(self.params).__name__}")
        _check_values(self.table, self.kind, signed=bool(self.meta.get("signed")))
        if self.rounding not in ("truncate", "rne"):
            raise LUTError(f"rounding must be 'truncate' or 'rne', not {self.rounding!r}")
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.amsim_version:
            from . import __version__

            self.amsim_version = __version__

    @property
    def checksum(self) -> str:
        return table_checksum(self.table)

    def same_table(self, other: LUT) -> bool:
        """True when both tables hold identical values at identical widths."""
        return (self.bits == other.bits and self.kind == other.kind
                and np.array_equal(self.table, other.table))

    def metadata(self) -> dict:
        return {
            "format": FORMAT_TAG, "format_version": FORMAT_VERSION, "kind": self.kind, "model": self.model,
            "params": self.params, "bits": self.bits, "rounding": self.rounding,
            "source_sha256": self.source_sha256, "amsim_version": self.amsim_version, "created": self.created,
            "dtype": self.table.dtype.name, "shape": list(self.table.shape), "table_sha256": self.checksum,
            "stats": self.stats, "meta": self.meta,
        }


def table_checksum(table: np.ndarray) -> str:
    """sha256 over dtype, shape and the little-endian bytes of the table."""
    t = np.ascontiguousarray(table)
    h = hashlib.sha256(f"{t.dtype.name}:{t.shape}:".encode())
    h.update(t.astype(t.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


#: Widest LUT of each kind: M of a float32 mantissa; operand width n of an integer model.
MAX_BITS = {"mantissa": 23, "integer": 32}


def _check_values(table, kind, *, signed):
    """Mantissa LUTs hold significand products: finite and >= 0. Integer LUTs of unsigned models:
    >= 0. A negative entry would make a product of two positive numbers negative."""
    if kind == "mantissa":
        bad = ~(table >= 0) | ~np.isfinite(table)  # NaN fails both comparisons
        rule = "a mantissa LUT holds significand products: finite numbers >= 0"
    elif not signed:
        bad = table < 0
        rule = "an unsigned integer LUT holds products >= 0 (meta signed=True for a signed model)"
    else:
        return
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise LUTError(f"entry ({i}, {j}) = {table[i, j].item()!r} is not allowed: {rule} "
                       f"({int(bad.sum())} such entries)")


def _check_shape(shape, bits, kind):
    n = 1 << int(bits)
    if tuple(shape) != (n, n):
        what = "M" if kind == "mantissa" else "n"
        raise LUTError(f"table shape {tuple(shape)} does not match {what}={bits} (expected {n}x{n})")


def lut_filename(model: str, params: dict, bits: int, fmt: str = "amsim", approxtrain_stem: str = "") -> str:
    """Default file name: ``drum_k6_m7.npz``, ``MBM_7.bin`` (ApproxTrain), ``mul8u_x_k6.bin`` (TFApprox;
    the other integer formats of :mod:`amsim.lutformats` with their own suffix)."""
    suffix = "".join(f"_{k}{v}" for k, v in sorted(params.items()))
    if fmt == "amsim":
        return f"{model}{suffix}_m{bits}.npz"
    if fmt == "approxtrain":
        # ApproxTrain reads M from the last "_M" of the name.
        return f"{approxtrain_stem or model.upper()}{suffix.upper()}_{bits}.bin"
    from .lutformats import SUFFIXES

    if fmt in SUFFIXES:
        return f"{model}{suffix}{SUFFIXES[fmt]}"
    raise LUTError(f"unknown LUT format {fmt!r}; use amsim, approxtrain or {', '.join(SUFFIXES)}")


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    ``path`` holds its old content or the new one, never a part: the temporary file is flushed to
    disk before it replaces ``path``, and removed when anything fails (a full disk, a signal). An
    OSError raised by the write names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the permissions of an ordinary new file.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    _fsync_folder(path.parent)
    return path


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows: setting it to read it
    would, for that instant, give files that other threads create the wrong permissions."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync_folder(folder: Path) -> None:
    """Put a rename in ``folder`` on disk (a crash could otherwise undo it); a no-op where folders
    cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Native format
# ----------------------------------------------------------------------------------------------


def save(lut: LUT, path) -> Path:
    """Write ``lut`` in the native format, atomically."""
    buf = io.BytesIO()
    meta = json.dumps(lut.metadata(), indent=1, sort_keys=True, allow_nan=False)
    np.savez(buf, table=lut.table, meta=np.frombuffer(meta.encode(), np.uint8))
    return atomic_write_bytes(path, buf.getvalue())


def load(path, *, bits: int | None = None, kind: str | None = None) -> LUT:
    """Read and verify a native LUT file.

    Parameters
    ----------
    path : str or Path
    bits : int, optional
        Refuse the file unless it is for this width.
    kind : {"mantissa", "integer"}, optional
        Refuse the file unless it is of this kind.

    Raises
    ------
    LUTError
        Naming the file and what is wrong: unreadable, not an amsim LUT,
        corrupt, checksum mismatch, wrong shape, wrong width.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if not {"table", "meta"} <= names:
                raise LUTError(f"{path}: not an amsim LUT file (members {sorted(names)}, expected table and meta)")
            table = z["table"]
            meta = json.loads(z["meta"].tobytes().decode())
    except LUTError:
        raise
    except FileNotFoundError:
        raise LUTError(f"{path}: no such LUT file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, KeyError) as exc:
        raise LUTError(f"{path}: corrupt or not an amsim LUT file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
        raise LUTError(f"{path}: not an amsim LUT file (format tag {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise LUTError(f"{path}: LUT format version {meta.get('format_version')} is not supported "
                       f"(this amsim reads version {FORMAT_VERSION})")
    kind_, bits_ = meta.get("kind"), meta.get("bits")
    if (kind_ not in MAX_BITS or isinstance(bits_, bool) or not isinstance(bits_, int)
            or not 1 <= bits_ <= MAX_BITS[kind_]):
        raise LUTError(f"{path}: corrupt metadata: kind {kind_!r} with bits {bits_!r} (expected mantissa 1..23 "
                       "or integer 1..32)")
    try:
        _check_shape(table.shape, bits_, kind_)
    except LUTError as exc:
        raise LUTError(f"{path}: {exc}") from None
    if table.dtype.name != meta.get("dtype"):
        raise LUTError(f"{path}: table dtype {table.dtype} does not match the recorded {meta.get('dtype')}")
    actual = table_checksum(table)
    if actual != meta.get("table_sha256"):
        raise LUTError(f"{path}: checksum mismatch (table sha256 {actual[:16]}..., recorded "
                       f"{str(meta.get('table_sha256'))[:16]}...): the file is corrupt or was edited")
    if bits is not None and int(meta["bits"]) != int(bits):
        what = "M" if meta["kind"] == "mantissa" else "n"
        raise LUTError(f"{path}: LUT is for {what}={meta['bits']}, not {what}={bits}")
    if kind is not None and meta["kind"] != kind:
        raise LUTError(f"{path}: LUT is a {meta['kind']} table, not a {kind} table")
    try:
        return LUT(table=table, bits=int(meta["bits"]), kind=meta["kind"], model=meta.get("model", ""),
                   params=meta.get("params", {}), rounding=meta.get("rounding", "truncate"),
                   source_sha256=meta.get("source_sha256", ""), stats=meta.get("stats", {}),
                   meta=meta.get("meta", {}), created=meta.get("created", ""),
                   amsim_version=meta.get("amsim_version", ""))
    except LUTError as exc:
        raise LUTError(f"{path}: {exc}") from None


#: File name suffixes of mantissa LUT files: amsim's own, ApproxTrain's.
LUT_SUFFIXES = (".npz", ".bin")


def names_lut_file(text) -> bool:
    """True when ``text``, given where a multiplier is named, is a LUT file rather than a C model.

    The rule: a LUT suffix (a missing file is then reported as a missing LUT), or any existing file
    other than C source. Everything else is a model, by name or by its ``.c`` file
    (:func:`amsim.models.find_model`).
    """
    path = Path(text)
    return path.suffix in LUT_SUFFIXES or (path.suffix != ".c" and path.is_file())


def load_any(path, *, bits: int | None = None) -> LUT:
    """Load a native ``.npz`` LUT or an ApproxTrain ``NAME_M.bin`` file by its extension."""
    path = Path(path)
    lut = load_approxtrain(path) if path.suffix == ".bin" else load(path)
    if bits is not None and lut.bits != int(bits):
        raise LUTError(f"{path}: LUT is for M={lut.bits}, not M={bits}")
    return lut


# ----------------------------------------------------------------------------------------------
# ApproxTrain: raw uint8, index (i << M) | j, bit 7 = carry (product >= 2), low M bits = mantissa
# ----------------------------------------------------------------------------------------------

_AT_NAME_RE = re.compile(r"_(\d+)\.bin$")


def to_approxtrain(lut: LUT) -> bytes:
    """Encode a mantissa LUT as ApproxTrain's byte table, or refuse with the reason.

    Each entry must be (1 + f/2^M) * 2^c with an M-bit integer f and c in {0, 1},
    i.e. a value in [1, 4) on the M-bit grid of its binade, and M <= 7.
    """
    m = lut.bits
    if lut.kind != "mantissa":
        raise LUTError("ApproxTrain stores mantissa LUTs only; this is an integer table")
    if m > 7:
        raise LUTError(f"ApproxTrain's format holds M <= 7 (one byte per entry), not M={m}")
    t = lut.table.astype(np.float64)
    carry = t >= 2.0
    frac = (np.where(carry, t / 2.0, t) - 1.0) * (1 << m)
    bad = (t < 1.0) | (t >= 4.0) | (frac != np.floor(frac)) | ~np.isfinite(t)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise LUTError(
            f"ApproxTrain's format cannot represent this table: entry ({i}, {j}) = {t[i, j]!r} is not "
            f"(1 + f/2^{m}) x 2^c with an {m}-bit f and c in {{0, 1}} ({int(bad.sum())} such entries); "
            "it stores one carry bit and a truncated M-bit mantissa")
    return (carry.astype(np.uint8) << 7 | frac.astype(np.uint8)).tobytes()


def from_approxtrain(data: bytes, m: int, *, name: str = "") -> LUT:
    """Decode ApproxTrain's byte table for mantissa width ``m``."""
    if not 1 <= m <= 7:
        raise LUTError(f"{name or 'ApproxTrain table'}: M={m} is outside ApproxTrain's 1..7")
    n = 1 << m
    if len(data) != n * n:
        raise LUTError(f"{name or 'ApproxTrain table'}: {len(data)} bytes, but M={m} needs {n * n} "
                       f"(2^(2M)); the file is truncated or its name gives the wrong M")
    raw = np.frombuffer(data, np.uint8).reshape(n, n)
    stray = raw & np.uint8(0x7F & ~(n - 1))
    if stray.any():
        i, j = map(int, np.argwhere(stray)[0])
        raise LUTError(f"{name or 'ApproxTrain table'}: entry ({i}, {j}) = {raw[i, j]:#04x} sets bits "
                       f"between the {m}-bit mantissa and the carry bit; not an M={m} ApproxTrain table")
    table = ((1.0 + (raw & (n - 1)) / n) * np.where(raw >> 7, 2.0, 1.0)).astype(np.float32)
    return LUT(table=table, bits=m, model=Path(name).stem.rsplit("_", 1)[0] if name else "",
               meta={"imported_from": "approxtrain", "file": str(name)})


def save_approxtrain(lut: LUT, path) -> Path:
    """Write ApproxTrain's ``NAME_M.bin`` (the name must end in ``_M.bin``), atomically."""
    path = Path(path)
    match = _AT_NAME_RE.search(path.name)
    if not match or int(match.group(1)) != lut.bits:
        raise LUTError(f"{path.name}: ApproxTrain reads M from the file name; it must end in _{lut.bits}.bin")
    return atomic_write_bytes(path, to_approxtrain(lut))


def load_approxtrain(path) -> LUT:
    """Read ApproxTrain's ``NAME_M.bin``; M comes from the file name, as in ApproxTrain."""
    path = Path(path)
    match = _AT_NAME_RE.search(path.name)
    if not match:
        raise LUTError(f"{path}: ApproxTrain LUT names end in _M.bin (e.g. MBM_7.bin); cannot tell M")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LUTError(f"{path}: cannot read: {exc.strerror}") from None
    return from_approxtrain(data, int(match.group(1)), name=str(path))
