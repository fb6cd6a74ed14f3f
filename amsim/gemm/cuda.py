"""The bundled CUDA backend: build the kernels on first use, call them with ctypes.

The CUDA sources ship inside the package (``amsim/csrc/cuda/*.cu``) and share
``amsim_product.h`` with the CPU kernels. :func:`build` compiles them into a
shared library with nvcc, cached under a hash of the sources and the GPU
architecture; :func:`library` loads the one for the current GPU. The library's
C-ABI entry points take device pointers and a stream, so TensorFlow ops, CuPy
and numba-cuda can call them directly (see ``amsim_cuda.h``); :func:`matmul_2d`
is the numpy-in, numpy-out path used by :func:`amsim.gemm.matmul`, and
:func:`int_matmul_2d` the one :func:`amsim.gemm.int_matmul` uses.

With ``AMSIM_CUDA_EMULATION=1`` the same sources are compiled with the C++
compiler against amsim's CPU emulation of CUDA (:func:`build_emulated`,
``amsim/csrc/cuda/emulation``): :func:`available` is then true without a GPU and
``backend="cuda"`` runs the kernels on the CPU, for verification
(docs/cuda.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .. import cbuild
from ..errors import AmsimError

__all__ = ["CudaError", "ToolMissing", "MUTANTS", "CONV_PASSES", "Arith", "Geometry", "Device", "nvcc",
           "supported_archs", "build", "build_emulated", "emulated", "device_present", "available",
           "unavailable_reason", "check", "library", "library_path", "gpu_library_path", "load", "matmul_2d",
           "conv2d_pass", "int_matmul_2d"]

_CUDA_DIR = Path(__file__).resolve().parent.parent / "csrc" / "cuda"
_EMULATION_DIR = _CUDA_DIR / "emulation"

#: The deliberately broken kernel variants an emulated build can hold (launch.h), for the tests
#: that prove the comparison with the CPU catches each kind of bug.
MUTANTS = ("dropped_sync", "reversed_sum", "shuffle_offset", "tile_bound")


class CudaError(AmsimError, RuntimeError):
    """No CUDA toolkit, no GPU, or a CUDA call failed."""


class ToolMissing(CudaError):
    """A tool a build needs is not installed (nvcc, a C++ compiler, Boost.Context); other build
    errors are the sources' and raise :class:`CudaError` itself."""


def nvcc() -> str:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, then ``nvcc`` on PATH; a clear error when absent."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if not found:
        raise ToolMissing("no CUDA toolkit found: nvcc is not on PATH and CUDA_HOME is not set; "
                          "install the CUDA toolkit or use backend='cpu'")
    return str(found)


@functools.lru_cache(maxsize=1)
def supported_archs() -> tuple[int, ...]:
    """Compute capabilities this nvcc can compile for (e.g. (75, 80, 86, 89, 90, ...))."""
    out = subprocess.run([nvcc(), "--list-gpu-arch"], capture_output=True, text=True)
    archs = []
    for line in out.stdout.split():
        if line.startswith("compute_") and line[8:].isdigit():
            archs.append(int(line[8:]))
    return tuple(sorted(archs))


def _sources() -> list[Path]:
    """The CUDA sources: every ``.cu`` file of ``amsim/csrc/cuda``, compiled into one library."""
    return sorted(_CUDA_DIR.glob("*.cu"))


def _key(compiler: list[str], flags, *, emulated: bool) -> str:
    """Hash of everything a build depends on: sources, headers (the emulator's for an emulated
    build), flags and the compiler's version."""
    h = hashlib.sha256()
    emulator = sorted(_EMULATION_DIR.glob("*")) if emulated else []
    for path in sorted([*_CUDA_DIR.glob("*.cu"), *_CUDA_DIR.glob("*.h")]) + emulator:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(cbuild.headers_digest().encode())
    h.update("\0".join(flags).encode())
    h.update(subprocess.run([*compiler, "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:24]


def _compile(cmd: list[str], target: Path, folder: Path, what: str) -> None:
    """Runs ``cmd`` (whose output path is the placeholder ``{out}``) and renames its result into place."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        try:
            proc = subprocess.run([str(out) if part == "{out}" else part for part in cmd], capture_output=True,
                                  text=True, env={**os.environ, "LC_ALL": "C"})
        except OSError as exc:
            raise ToolMissing(f"{what}: cannot run {cmd[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            output = (proc.stderr + proc.stdout).strip()
            if "boost/context/fiber.hpp: No such file" in output or "cannot find -lboost_context" in output:
                raise ToolMissing("the CUDA emulation needs Boost.Context: install it (Debian: "
                                  "apt-get install libboost-context-dev)")
            raise CudaError(f"{what} failed:\n{output}")
        os.replace(out, target)


def build(archs, *, cache=None) -> Path:
    """Compile the CUDA kernels for the compute capabilities ``archs`` (e.g. ``[80, 90]``), cached.

    One shared library holds code for every architecture asked for (SASS, plus
    PTX for the newest so that later GPUs can JIT it). Returns its path.

    Raises
    ------
    CudaError
        Without nvcc, for an architecture this nvcc does not support, or with
        nvcc's message when compilation fails.
    """
    archs = sorted({int(a) for a in archs})
    unsupported = [a for a in archs if a not in supported_archs()]
    if unsupported:
        raise CudaError(f"this nvcc cannot compile for {', '.join(f'sm_{a}' for a in unsupported)} "
                        f"(it supports {', '.join(f'sm_{a}' for a in supported_archs())})")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    flags = ["-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", *gencode]
    folder = Path(cache) if cache else cbuild.cache_dir()
    target = folder / f"_amsim_cuda_{'_'.join(map(str, archs))}_{_key([nvcc()], flags, emulated=False)}.so"
    if not target.exists():
        _compile([nvcc(), *flags, f"-I{cbuild.include_dir()}", *map(str, _sources()), "-o", "{out}"], target, folder,
                 f"nvcc for {', '.join(f'sm_{a}' for a in archs)}")
    return target


def _cxx() -> list[str]:
    return shlex.split(os.environ.get("CXX") or "g++")


def build_emulated(*, cache=None, mutant: str | None = None, grid_y_max: int | None = None,
                   shared_max: int | None = None) -> Path:
    """Compile the CUDA sources with the C++ compiler against amsim's CPU emulation, cached.

    The same ``.cu`` files as :func:`build`, with ``emulation/cuda_runtime.h`` in
    place of the toolkit's and the emulator linked in (``emulation/runtime.cc``,
    Boost.Context fibers; ``probes.cc``, kernels that test the emulator itself).
    Float contraction is off, so every product and sum rounds as the GPU's
    ``__fmul_rn``/``__fadd_rn`` do.

    Parameters
    ----------
    mutant : str, optional
        One of :data:`MUTANTS`: a deliberately broken variant of the kernels, for
        tests that prove the comparison with the CPU catches that kind of bug.
    grid_y_max : int, optional
        A smaller cap on the GEMM grid's y dimension (CUDA's is 65535), so that
        the kernel's loop over row tiles runs on small shapes.
    shared_max : int, optional
        A cap in bytes on the shared memory per block the kernels plan with
        (the device's opt-in limit otherwise), so that the integer GEMM's path
        for devices whose shared memory cannot hold its table runs.

    Raises
    ------
    ToolMissing
        Without a C++ compiler or Boost.Context (the message says what to install).
    CudaError
        With the compiler's message when the sources do not compile.
    """
    if mutant is not None and mutant not in MUTANTS:
        raise CudaError(f"unknown mutant {mutant!r}; choose from {', '.join(MUTANTS)}")
    if grid_y_max is not None and not (isinstance(grid_y_max, int) and 1 <= grid_y_max <= 65535):
        raise CudaError(f"grid_y_max must be an integer in [1, 65535], got {grid_y_max!r}")
    if shared_max is not None and not (isinstance(shared_max, int) and 0 <= shared_max < 1 << 30):
        raise CudaError(f"shared_max must be a number of bytes in [0, 2^30), got {shared_max!r}")
    cxx = _cxx()
    if shutil.which(cxx[0]) is None:
        raise ToolMissing(f"the CUDA emulation needs a C++ compiler: {cxx[0]} not found (set CXX)")
    flags = ["-O2", "-std=c++17", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-Wno-unknown-pragmas",
             "-Wl,-Bsymbolic"]
    if mutant:
        flags.append(f"-DAMSIM_CUDA_MUTANT=AMSIM_MUTANT_{mutant.upper()}")
    if grid_y_max:
        flags.append(f"-DAMSIM_CUDA_GRID_Y_MAX={grid_y_max}")
    if shared_max is not None:
        flags.append(f"-DAMSIM_CUDA_SHARED_MAX={shared_max}")
    folder = Path(cache) if cache else cbuild.cache_dir()
    target = folder / f"_amsim_cuda_emulated_{_key(cxx, flags, emulated=True)}.so"
    if not target.exists():
        _compile([*cxx, *flags, f"-I{_EMULATION_DIR}", f"-I{cbuild.include_dir()}", f"-I{_CUDA_DIR}",
                  "-x", "c++", *map(str, _sources()), "-x", "none", *map(str, sorted(_EMULATION_DIR.glob("*.cc"))),
                  "-o", "{out}", "-lboost_context"], target, folder, "the emulated CUDA build")
    return target


@functools.lru_cache(maxsize=1)
def _cudart():
    names = [ctypes.util.find_library("cudart"), "libcudart.so", "/usr/local/cuda/lib64/libcudart.so"]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def emulated() -> bool:
    """True when ``AMSIM_CUDA_EMULATION`` asks for the CPU emulation of the CUDA kernels."""
    return os.environ.get("AMSIM_CUDA_EMULATION", "").strip() not in ("", "0")


@functools.lru_cache(maxsize=1)
def device_present() -> bool:
    """True when a real CUDA GPU can be used (a runtime, a driver and at least one device)."""
    if os.environ.get("AMSIM_DISABLE_CUDA"):
        return False
    rt = _cudart()
    if rt is None:
        return False
    count = ctypes.c_int(0)
    try:
        return rt.cudaGetDeviceCount(ctypes.byref(count)) == 0 and count.value > 0
    except (AttributeError, OSError):  # pragma: no cover
        return False


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why ``backend="cuda"`` cannot run here, or None when it can (a GPU, or the emulation built).

    A missing tool is a reason; sources that do not compile raise :class:`CudaError`.
    """
    if os.environ.get("AMSIM_DISABLE_CUDA"):
        return "AMSIM_DISABLE_CUDA is set"
    if emulated():
        try:
            build_emulated()
        except ToolMissing as exc:
            return f"AMSIM_CUDA_EMULATION=1, but {exc}"
        return None
    if not device_present():
        return "no CUDA GPU on this machine (AMSIM_CUDA_EMULATION=1 runs the kernels on the CPU)"
    return None


def available() -> bool:
    """True when ``backend="cuda"`` can run: a CUDA GPU, or the CPU emulation when asked for."""
    return unavailable_reason() is None


def library_path() -> Path:
    """The kernels' shared library: the emulated build, or the one for the current GPU (built when
    not cached)."""
    reason = unavailable_reason()
    if reason:
        raise CudaError(f"backend='cuda' cannot run: {reason}; use backend='cpu'")
    return build_emulated() if emulated() else gpu_library_path()


def gpu_library_path() -> Path:
    """The kernels built with nvcc for the current GPU (compiled when not cached)."""
    if not device_present():
        raise CudaError("no CUDA GPU is available (backend='cuda'); use backend='cpu'")
    rt = _cudart()
    dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    rt.cudaGetDevice(ctypes.byref(dev))
    rt.cudaDeviceGetAttribute(ctypes.byref(major), 75, dev)  # cudaDevAttrComputeCapabilityMajor
    rt.cudaDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # cudaDevAttrComputeCapabilityMinor
    arch = major.value * 10 + minor.value
    candidates = [a for a in supported_archs() if a <= arch]
    if not candidates:
        raise CudaError(f"this nvcc cannot compile for the GPU's sm_{arch}")
    return build([arch if arch in candidates else max(candidates)])


def library():
    """The kernels for the current GPU (or the emulation), loaded with ctypes."""
    return load(library_path())


class Arith(ctypes.Structure):
    """``struct amsim_cuda_arith``: a device LUT and the arithmetic of an op's products."""

    _fields_ = [("lut", ctypes.c_void_p), ("m", ctypes.c_int), ("fast", ctypes.c_int), ("v_lo", ctypes.c_int),
                ("v_hi", ctypes.c_int), ("rounding", ctypes.c_int), ("mode", ctypes.c_int)]

    @classmethod
    def of(cls, mult, lut, rounding: str = "truncate", mode: str = "ieee") -> "Arith":
        """The fields of ``mult``'s ``struct amsim_lut`` (as gpu.cc fills them), with ``lut`` the device
        address of its table."""
        if mult.table is None:
            raise CudaError("the CUDA backend needs a LUT (M <= 12); model mode runs on the CPU only")
        v_lo, v_hi = mult.table_exponents if mult.expandable else (1, 0)
        return cls(lut, mult.bits, int(mult.expandable), v_lo, v_hi, int(rounding == "rne"),
                   int(mode == "approxtrain"))


class Geometry(ctypes.Structure):
    """``struct amsim_conv_geometry`` (amsim_gemm.h)."""

    _fields_ = [(name, ctypes.c_int64) for name in ("n", "h", "w", "c", "kh", "kw", "sh", "sw", "dh", "dw",
                                                    "pad_top", "pad_left", "oh", "ow")]

    @classmethod
    def of(cls, g) -> "Geometry":
        """From a :class:`amsim.gemm.conv.ConvGeometry`."""
        (sh, sw), (dh, dw), pads = g.strides, g.dilations, g.pads
        return cls(g.n, g.h, g.w, g.c, g.kh, g.kw, sh, sw, dh, dw, pads[0], pads[2], g.oh, g.ow)


#: enum amsim_cuda_conv_pass
CONV_PASSES = {"forward": 0, "backprop_input": 1, "backprop_filter": 2}


@functools.lru_cache(maxsize=None)
def load(path) -> ctypes.CDLL:
    """A kernels library (:func:`build` or :func:`build_emulated`), loaded with its argument types."""
    lib = ctypes.CDLL(str(path))
    i64, ptr, c_int, size_t = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    p_i64, p_size, p_arith, p_geometry = (ctypes.POINTER(t) for t in (i64, size_t, Arith, Geometry))
    lib.amsim_cuda_split.argtypes = [ptr, i64, i64, i64, i64, c_int, c_int, ptr, ptr, ptr, ptr]
    lib.amsim_cuda_gemm.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, c_int, c_int, c_int, c_int,
                                    c_int, ptr, i64, ptr]
    lib.amsim_cuda_matmul_workspace.argtypes = [i64, i64, i64, p_size]
    lib.amsim_cuda_matmul.argtypes = [i64, i64, i64, ptr, i64, i64, ptr, i64, i64, i64, p_i64, p_i64, ptr, p_arith,
                                      ptr, size_t, ptr]
    lib.amsim_cuda_conv2d_workspace.argtypes = [c_int, c_int, p_geometry, i64, p_size]
    lib.amsim_cuda_conv2d.argtypes = [c_int, c_int, p_geometry, i64, ptr, ptr, ptr, ptr, p_arith, ptr, size_t, ptr]
    lib.amsim_cuda_int_gemm.argtypes = [ptr, c_int, c_int, i64, i64, i64, ptr, ptr, ptr, c_int, ptr]
    lib.amsim_cuda_malloc.argtypes = [ctypes.POINTER(ptr), size_t]
    lib.amsim_cuda_free.argtypes = [ptr]
    lib.amsim_cuda_to_device.argtypes = [ptr, ptr, size_t]
    lib.amsim_cuda_to_host.argtypes = [ptr, ptr, size_t]
    lib.amsim_cuda_error_string.restype = ctypes.c_char_p
    if hasattr(lib, "amsim_emu_error_detail"):
        lib.amsim_emu_error_detail.restype = ctypes.c_char_p
    return lib


def check(lib, code: int, call: str) -> None:
    """Raises :class:`CudaError` naming ``call`` when ``code`` is not cudaSuccess.

    An emulated library adds its account of the error (which kernel, which check).
    """
    if code != 0:
        message = f"{call}: CUDA error {code} ({lib.amsim_cuda_error_string(code).decode()})"
        detail = getattr(lib, "amsim_emu_error_detail", None)  # an emulated library's account
        if detail is not None:
            message += f": {detail().decode()}"
        raise CudaError(message)


class Device:
    """Device memory of a kernels library for one piece of work, freed when the ``with`` block ends.

    >>> with Device(library()) as dev:
    ...     d_x, d_y = dev.upload(x), dev.empty(y.nbytes)
    ...     dev.check(dev.lib.amsim_cuda_transpose(d_x, rows, cols, 1, d_y, None), "amsim_cuda_transpose")
    ...     dev.download(d_y, y)
    """

    def __init__(self, lib):
        self.lib = lib
        self._pointers: list[ctypes.c_void_p] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for ptr in self._pointers:
            self.lib.amsim_cuda_free(ptr)
        self._pointers.clear()
        return False

    def check(self, code: int, call: str) -> None:
        check(self.lib, code, call)

    def empty(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self.check(self.lib.amsim_cuda_malloc(ctypes.byref(ptr), max(int(nbytes), 1)), "amsim_cuda_malloc")
        self._pointers.append(ptr)
        return ptr

    def upload(self, array: np.ndarray) -> ctypes.c_void_p:
        array = np.ascontiguousarray(array)
        ptr = self.empty(array.nbytes)
        self.check(self.lib.amsim_cuda_to_device(ptr, array.ctypes.data, array.nbytes), "amsim_cuda_to_device")
        return ptr

    def download(self, ptr: ctypes.c_void_p, out: np.ndarray) -> np.ndarray:
        """Waits for the device, then copies the buffer into the C-contiguous ``out``."""
        self.check(self.lib.amsim_cuda_synchronize(), "amsim_cuda_synchronize")
        self.check(self.lib.amsim_cuda_to_host(out.ctypes.data, ptr, out.nbytes), "amsim_cuda_to_host")
        return out

    def arith(self, mult, rounding: str = "truncate", mode: str = "ieee") -> Arith:
        """The multiplier's LUT on the device, with the fields of its ``struct amsim_lut``."""
        if mult.table is None:
            return Arith.of(mult, None)  # refused there, before anything is uploaded
        return Arith.of(mult, self.upload(mult.table).value, rounding, mode)


def _operand(a: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The memory to upload for a 2-D operand and its element strides (rows, columns).

    A transposed view (Fortran order) goes up as it lies in memory and the split
    kernel reads it through swapped strides, as the TensorFlow ops pass their
    transposes; any other layout is copied to C order first.
    """
    if a.flags.c_contiguous:
        return a, a.shape[1], 1
    if a.flags.f_contiguous:
        return a.T, 1, a.shape[0]
    return np.ascontiguousarray(a), a.shape[1], 1


def matmul_2d(a, b, mult, *, rounding="truncate", mode="ieee") -> np.ndarray:
    """C = a (x) b on the GPU for numpy float32 operands; equals the CPU backend bit for bit.

    The TensorFlow op's sequence (``amsim_cuda_matmul``: split A, split B, GEMM):
    the split kernels reduce each operand's exponent range on the device and the
    GEMM kernel tests the exactness window there, so nothing but the result comes
    back to the host.
    """
    m_rows, k = a.shape
    n = b.shape[1]
    out = np.zeros((m_rows, n), np.float32)
    if m_rows == 0 or n == 0:
        return out  # K = 0 goes to the kernels, whose sums start at +0
    lib = library()
    (mem_a, ars, acs), (mem_b, brs, bcs) = _operand(a), _operand(b)
    bytes_ = ctypes.c_size_t()
    check(lib, lib.amsim_cuda_matmul_workspace(m_rows, n, k, ctypes.byref(bytes_)), "amsim_cuda_matmul_workspace")
    offset = (ctypes.c_int64 * 1)(0)
    with Device(lib) as dev:
        arith = dev.arith(mult, rounding, mode)
        d_c = dev.empty(out.nbytes)
        check(lib, lib.amsim_cuda_matmul(m_rows, n, k, dev.upload(mem_a), ars, acs, dev.upload(mem_b), brs, bcs, 1,
                                         offset, offset, d_c, ctypes.byref(arith), dev.empty(bytes_.value),
                                         bytes_.value, None), "amsim_cuda_matmul")
        return dev.download(d_c, out)


def conv2d_pass(pass_: str, g, q: int, mult, *, x=None, w=None, dy=None, depthwise=False, rounding="truncate",
                mode="ieee") -> np.ndarray:
    """One pass of conv2d (or of the depthwise conv2d) on the GPU, the TensorFlow op's sequence.

    ``amsim_cuda_conv2d``: patches by im2col on the device, the pass's GEMMs, and
    col2im's sums for the input gradient; equals the CPU backend bit for bit.

    Parameters
    ----------
    pass_ : {"forward", "backprop_input", "backprop_filter"}
        Reads (x, w), (w, dy) or (x, dy) and returns y, dx or dw.
    g : amsim.gemm.conv.ConvGeometry
    q : int
        The filter's last dimension (output channels, or the depthwise multiplier).
    """
    geometry = Geometry.of(g)
    outputs = {"forward": (g.n, g.oh, g.ow, g.c * q if depthwise else q), "backprop_input": (g.n, g.h, g.w, g.c),
               "backprop_filter": (g.kh, g.kw, g.c, q)}
    out = np.zeros(outputs[pass_], np.float32)
    if out.size == 0:
        return out
    lib = library()
    code, depthwise = CONV_PASSES[pass_], int(bool(depthwise))
    bytes_ = ctypes.c_size_t()
    check(lib, lib.amsim_cuda_conv2d_workspace(code, depthwise, ctypes.byref(geometry), q, ctypes.byref(bytes_)),
          "amsim_cuda_conv2d_workspace")
    with Device(lib) as dev:
        arith = dev.arith(mult, rounding, mode)
        d_x, d_w, d_dy = (None if v is None else dev.upload(np.asarray(v, np.float32)) for v in (x, w, dy))
        d_out = dev.empty(out.nbytes)
        check(lib, lib.amsim_cuda_conv2d(code, depthwise, ctypes.byref(geometry), q, d_x, d_w, d_dy, d_out,
                                         ctypes.byref(arith), dev.empty(bytes_.value), bytes_.value, None),
              "amsim_cuda_conv2d")
        return dev.download(d_out, out)


def int_matmul_2d(pa: np.ndarray, pb: np.ndarray, table: np.ndarray, *, bits: int, signed: bool,
                  dtype) -> np.ndarray:
    """The integer LUT GEMM on the GPU (``amsim_cuda_int_gemm``) for numpy operands; the CPU's integers.

    The device side of :func:`amsim.gemm.int_matmul` (``backend="cuda"``), which checks the
    arguments and calls it: ``C[i, j] = sum over k of table[pa[i, k], pb[k, j]]``, exactly.

    Args:
        pa: uint8 array (M, K) of A's n-bit patterns, the table's row operand.
        pb: uint8 array (K, N) of B's n-bit patterns.
        table: the (2^bits, 2^bits) product table, 16-bit circuit outputs (int16 values when
            ``signed``, uint16 ones otherwise).
        bits: the operand width n, 1..8.
        signed: the circuit's signedness, which says how its 16-bit outputs extend.
        dtype: the accumulator, int32 or int64, wide enough that no sum overflows it.

    Returns:
        An array (M, N) of ``dtype``.
    """
    dtype = np.dtype(dtype)
    m_rows, k = pa.shape
    n = pb.shape[1]
    out = np.empty((m_rows, n), dtype)
    if out.size == 0:
        return out
    lib = library()
    with Device(lib) as dev:
        d_lut = dev.upload(np.ascontiguousarray(table, np.int32))
        d_a, d_b = (dev.upload(np.ascontiguousarray(x, np.uint8)) for x in (pa, pb))
        d_c = dev.empty(out.nbytes)
        check(lib, lib.amsim_cuda_int_gemm(d_lut, bits, int(bool(signed)), m_rows, n, k, d_a, d_b, d_c,
                                           int(dtype == np.int64), None), "amsim_cuda_int_gemm")
        return dev.download(d_c, out)
