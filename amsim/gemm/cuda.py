"""The bundled CUDA backend: build the kernels with nvcc on first use, call them with ctypes.

The CUDA sources ship inside the package (``amsim/csrc/cuda/gemm_cuda.cu``) and share
``amsim_product.h`` with the CPU kernels. :func:`build` compiles them into a
shared library with nvcc, cached under a hash of the sources and the GPU
architecture; :func:`library` loads the one for the current GPU. The library's
C-ABI entry points take device pointers and a stream, so TensorFlow ops, CuPy
and numba-cuda can call them directly (see the .cu file); :func:`matmul_2d`
is the numpy-in, numpy-out path used by :func:`amsim.gemm.matmul`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .. import cbuild
from ..errors import AmsimError

__all__ = ["CudaError", "nvcc", "supported_archs", "build", "available", "library", "library_path", "matmul_2d"]

_SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "cuda" / "gemm_cuda.cu"
_HEADER = _SOURCE.with_name("amsim_cuda.h")  # the kernels' C ABI, included by the source


class CudaError(AmsimError, RuntimeError):
    """No CUDA toolkit, no GPU, or a CUDA call failed."""


def nvcc() -> str:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, then ``nvcc`` on PATH; a clear error when absent."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if not found:
        raise CudaError("no CUDA toolkit found: nvcc is not on PATH and CUDA_HOME is not set; "
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


def _key(archs) -> str:
    h = hashlib.sha256(_SOURCE.read_bytes() + b"\0" + _HEADER.read_bytes())
    h.update(cbuild.headers_digest().encode())
    h.update(",".join(f"sm_{a}" for a in archs).encode())
    h.update(subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:24]


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
    folder = Path(cache) if cache else cbuild.cache_dir()
    target = folder / f"_amsim_cuda_{'_'.join(map(str, archs))}_{_key(archs)}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        cmd = [nvcc(), "-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", *gencode,
               f"-I{cbuild.include_dir()}", str(_SOURCE), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
        if proc.returncode != 0:
            raise CudaError(f"nvcc failed for {', '.join(f'sm_{a}' for a in archs)}:\n"
                            f"{(proc.stderr + proc.stdout).strip()}")
        os.replace(out, target)
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


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when a CUDA GPU can be used (a runtime, a driver and at least one device)."""
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


def library_path() -> Path:
    """The kernels' shared library built for the current GPU (compiled when not cached)."""
    if not available():
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


@functools.lru_cache(maxsize=1)
def library():
    """The kernels built for the current GPU, loaded with ctypes."""
    lib = ctypes.CDLL(str(library_path()))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    c_int = ctypes.c_int
    lib.amsim_cuda_split.argtypes = [ptr, i64, i64, i64, i64, c_int, c_int, ptr, ptr, ptr, ptr]
    lib.amsim_cuda_gemm.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, c_int, c_int, c_int, c_int,
                                    c_int, ptr, i64, ptr]
    lib.amsim_cuda_malloc.argtypes = [ctypes.POINTER(ptr), ctypes.c_size_t]
    lib.amsim_cuda_free.argtypes = [ptr]
    lib.amsim_cuda_to_device.argtypes = [ptr, ptr, ctypes.c_size_t]
    lib.amsim_cuda_to_host.argtypes = [ptr, ptr, ctypes.c_size_t]
    lib.amsim_cuda_error_string.restype = ctypes.c_char_p
    return lib


class _DeviceBuffer:
    def __init__(self, lib, nbytes):
        self.lib = lib
        self.ptr = ctypes.c_void_p()
        _check(lib, lib.amsim_cuda_malloc(ctypes.byref(self.ptr), nbytes))

    def free(self):
        if self.ptr:
            self.lib.amsim_cuda_free(self.ptr)
            self.ptr = ctypes.c_void_p()


def _check(lib, code):
    if code != 0:
        raise CudaError(f"CUDA error {code}: {lib.amsim_cuda_error_string(code).decode()}")


def _upload(lib, array, buffers):
    array = np.ascontiguousarray(array)
    buf = _DeviceBuffer(lib, array.nbytes)
    buffers.append(buf)
    _check(lib, lib.amsim_cuda_to_device(buf.ptr, array.ctypes.data, array.nbytes))
    return buf


def matmul_2d(a, b, mult, *, rounding="truncate", mode="ieee") -> np.ndarray:
    """C = a (x) b on the GPU for numpy float32 operands; equals the CPU backend bit for bit.

    The split kernels reduce each operand's exponent range on the device and
    the GEMM kernel tests the exactness window there, so nothing but the
    result comes back to the host.
    """
    if mult.table is None:
        raise CudaError("the CUDA backend needs a LUT (M <= 12); model mode runs on the CPU only")
    lib = library()
    m_rows, k = a.shape
    n = b.shape[1]
    out = np.zeros((m_rows, n), np.float32)
    if m_rows == 0 or n == 0 or k == 0:
        return out
    buffers: list[_DeviceBuffer] = []
    try:
        da, db, dlut = (_upload(lib, x, buffers) for x in (a, b, mult.table))
        split = []
        for dx, (rows, cols) in ((da, a.shape), (db, b.shape)):
            scale, idx, exponents = (_DeviceBuffer(lib, size) for size in (rows * cols * 4, rows * cols * 2, 8))
            buffers += [scale, idx, exponents]
            _check(lib, lib.amsim_cuda_split(dx.ptr, rows, cols, cols, 1, mult.bits, int(rounding == "rne"),
                                             scale.ptr, idx.ptr, exponents.ptr, None))
            split.append((scale, idx, exponents))
        (sa, pa, ra), (sb, pb, rb) = split
        v_lo, v_hi = mult.table_exponents if mult.expandable else (1, 0)
        dc = _DeviceBuffer(lib, out.nbytes)
        buffers.append(dc)
        _check(lib, lib.amsim_cuda_gemm(m_rows, n, k, sa.ptr, pa.ptr, ra.ptr, sb.ptr, pb.ptr, rb.ptr, dlut.ptr,
                                        mult.bits, v_lo, v_hi, int(mode == "approxtrain"), int(mult.expandable),
                                        dc.ptr, n, None))
        _check(lib, lib.amsim_cuda_synchronize())
        _check(lib, lib.amsim_cuda_to_host(out.ctypes.data, dc.ptr, out.nbytes))
    finally:
        for buf in buffers:
            buf.free()
    return out
