"""Build the TensorFlow op library (``amsim/csrc/tf/*.cc``) on first use, and load it once.

The ops are compiled with g++ against the installed TensorFlow (its ``tf.sysconfig``
flags, the C++ ABI define among them) and linked to the engine's shared library, which
``amsim.gemm`` loads too: the dynamic loader maps that file once per process, so the ops
and ``amsim.gemm`` share one thread pool and one set of planner costs. The op library
finds the engine through its rpath.

When TensorFlow is a CUDA build and nvcc is found, the library also holds the GPU kernels of
the matmul and conv2d ops (``gpu.cc``, compiled with ``-DGOOGLE_CUDA=1`` against the CUDA
headers) and links the bundled CUDA kernels (:func:`amsim.gemm.cuda.build`); otherwise it is
the CPU ops alone, without a word.

The result is cached under :func:`amsim.cbuild.cache_dir` with a name keyed by everything
that changes it: TensorFlow's version and flags, the op sources, ``amsim_gemm.h``, the
engine library's contents and the compiler's version, and for the GPU part ``gpu.cc``,
``amsim_cuda.h``, the CUDA kernels library's contents and nvcc's version. It is written
under a temporary name and renamed into place, so concurrent processes see no file or the
whole file; within a process a lock makes loading happen once, whatever the threads.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

from .. import cbuild
from ..errors import AmsimError

__all__ = ["OpBuildError", "load", "library_path", "sources", "gpu_sources", "gpu_compile_command"]

_SOURCES = Path(__file__).resolve().parent.parent / "csrc" / "tf"
_GPU_SOURCE = _SOURCES / "gpu.cc"
_CUDA_HEADER = _SOURCES.parent / "cuda" / "amsim_cuda.h"
# No -march=native: the ops only move data and call the engine (which is built for the CPU), and
# TensorFlow's Eigen headers do not compile with every instruction set g++ can enable (AVX512-FP16).
_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-Wno-deprecated-declarations"]
# gpu.cc's TensorFlow configuration: the GPU kernel registrations and Eigen's GpuDevice.
_GPU_FLAGS = ["-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU"]
_LOCK = threading.Lock()
_MODULE = None


class OpBuildError(AmsimError, RuntimeError):
    """The TensorFlow ops cannot be built or loaded: no compiler, no TensorFlow headers, or a
    compiler or loader failure (``output`` holds its full diagnostics)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def sources() -> list[Path]:
    """The op library's C++ sources and headers (the CPU ops; :func:`gpu_sources` adds the GPU kernels)."""
    return sorted(p for p in _SOURCES.iterdir() if p.suffix in (".cc", ".h") and p != _GPU_SOURCE)


def gpu_sources() -> list[Path]:
    """The GPU kernels' source and the CUDA kernels' C ABI header it includes."""
    return [_GPU_SOURCE, _CUDA_HEADER]


def load():
    """The op library as ``tf.load_op_library`` returns it, built first when needed."""
    global _MODULE
    if _MODULE is None:
        with _LOCK:
            if _MODULE is None:
                import tensorflow as tf

                path = library_path()
                # The engine as amsim.gemm loads it, with the planner's costs for this machine set:
                # the op library then binds to that same copy of the engine.
                from ..gemm import engine

                engine.load()
                try:
                    _MODULE = tf.load_op_library(str(path))
                except Exception as exc:  # tf.errors.NotFoundError for an unresolved symbol or a missing file
                    raise OpBuildError(f"amsim.keras: loading the TensorFlow ops from {path} failed: "
                                       f"{str(exc).strip().splitlines()[-1]}", str(exc)) from None
    return _MODULE


def library_path() -> Path:
    """The op library for this TensorFlow, compiler and engine, compiled when not cached."""
    import tensorflow as tf

    cxx = _compiler()
    compile_flags, link_flags = list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())
    _check_headers(compile_flags)
    engine_lib = _engine_library()
    gpu = _gpu_part(tf)
    key = hashlib.sha256()
    parts = [tf.__version__, *compile_flags, *link_flags, *_FLAGS, *cxx, _compiler_version(cxx), str(engine_lib)]
    files = [*sources(), cbuild.include_dir() / "amsim_gemm.h", engine_lib]
    if gpu is not None:
        parts += [*_GPU_FLAGS, gpu.nvcc_version, str(gpu.include_dir), str(gpu.kernels)]
        files += [*gpu_sources(), gpu.kernels]
    for part in parts:
        key.update(part.encode() + b"\0")
    for path in files:
        key.update(path.name.encode() + b"\0" + path.read_bytes())
    so_path = cbuild.cache_dir() / f"amsim_tf_ops-{key.hexdigest()[:24]}.so"
    if not so_path.exists():
        _build(so_path, cxx, compile_flags, link_flags, engine_lib, gpu)
    return so_path


class _Gpu(NamedTuple):
    nvcc_version: str
    include_dir: Path  # the CUDA toolkit's headers (cuda_runtime.h), which Eigen's GPU device needs
    kernels: Path      # the bundled CUDA kernels' shared library


def _gpu_part(tf) -> _Gpu | None:
    """What the GPU kernels need, or None (CPU ops only) when TensorFlow is not a CUDA build or
    no CUDA toolkit is found."""
    if not tf.test.is_built_with_cuda():
        return None
    toolkit = _cuda_toolkit()
    if toolkit is None:
        return None
    from ..gemm import cuda

    # The kernels for this machine's GPU; without one (a build machine), for the oldest
    # architecture this nvcc supports, whose PTX any newer GPU compiles when it loads.
    try:
        if cuda.device_present():  # a real GPU: the CPU emulation never goes into the op library
            kernels = cuda.gpu_library_path()
        elif cuda.supported_archs():
            kernels = cuda.build([min(cuda.supported_archs())])
        else:
            return None  # an nvcc that lists no architecture cannot build the kernels
    except cuda.CudaError as exc:
        raise OpBuildError(f"amsim.keras: building the CUDA kernels for the GPU ops failed: {exc}") from None
    return _Gpu(toolkit[1], toolkit[0], kernels)


def _cuda_toolkit() -> tuple[Path, str] | None:
    """The CUDA toolkit's include directory and nvcc's version, or None without nvcc or headers."""
    from ..gemm import cuda

    try:
        nvcc = cuda.nvcc()
    except cuda.CudaError:
        return None
    # nvcc names its installation on its dry run's "TOP=" line (nvcc may be a wrapper script).
    dry = subprocess.run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True)
    tops = [line.split("TOP=", 1)[1].strip() for line in (dry.stdout + dry.stderr).splitlines() if "TOP=" in line]
    for root in (*tops, Path(nvcc).resolve().parent.parent):
        include = Path(root).resolve() / "include"
        if (include / "cuda_runtime.h").is_file():
            version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
            return include, version
    return None


def gpu_compile_command(obj: Path) -> list[str]:
    """The command that compiles ``gpu.cc`` into the object file ``obj``, as :func:`library_path`
    runs it for a CUDA build of TensorFlow (also usable against a CPU build: it only compiles).

    Raises :class:`OpBuildError` without a C++ compiler, TensorFlow's headers, nvcc or the CUDA headers.
    """
    import tensorflow as tf

    toolkit = _cuda_toolkit()
    if toolkit is None:
        raise OpBuildError("amsim.keras: the GPU ops need the CUDA toolkit: no nvcc with cuda_runtime.h found "
                           "(install the CUDA toolkit or set CUDA_HOME)")
    compile_flags = list(tf.sysconfig.get_compile_flags())
    _check_headers(compile_flags)
    return _gpu_compile(_compiler(), compile_flags, toolkit[0], obj)


def _gpu_compile(cxx, compile_flags, cuda_include: Path, obj: Path) -> list[str]:
    includes = [f"-I{_SOURCES}", f"-I{cbuild.include_dir()}", f"-I{_CUDA_HEADER.parent}", f"-I{cuda_include}"]
    return [*cxx, *_FLAGS, *_GPU_FLAGS, *includes, *compile_flags, "-c", str(_GPU_SOURCE), "-o", str(obj)]


def _engine_library() -> Path:
    """The engine's shared library (built by amsim.gemm when not cached; the variant that
    AMSIM_GEMM_VARIANT names)."""
    from ..gemm import engine

    return Path(engine.library_path())


def _compiler() -> list[str]:
    cxx = shlex.split(os.environ.get("CXX") or "g++")
    if not cxx or shutil.which(cxx[0]) is None:
        raise OpBuildError(f"amsim.keras: building the TensorFlow ops needs a C++17 compiler: "
                           f"{cxx[0] if cxx else 'CXX'!r} not found (install g++ or set CXX)")
    return cxx


def _compiler_version(cxx: list[str]) -> str:
    proc = subprocess.run([*cxx, "--version"], capture_output=True, text=True)
    return proc.stdout


def _check_headers(compile_flags: list[str]) -> None:
    includes = [f[2:] for f in compile_flags if f.startswith("-I")]
    if not any((Path(d) / "tensorflow" / "core" / "framework" / "op_kernel.h").is_file() for d in includes):
        raise OpBuildError("amsim.keras: building the TensorFlow ops needs TensorFlow's C++ headers: no "
                           f"tensorflow/core/framework/op_kernel.h under {' or '.join(includes) or 'any include path'}"
                           " (reinstall tensorflow)")


def _build(so_path: Path, cxx, compile_flags, link_flags, engine_lib: Path, gpu: _Gpu | None) -> None:
    so_path.parent.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{_SOURCES}", f"-I{cbuild.include_dir()}"]
    env = {**os.environ, "LC_ALL": "C"}  # plain ASCII quotes in diagnostics
    with tempfile.TemporaryDirectory(dir=so_path.parent, prefix=".build-") as tmp:
        # One translation unit: TensorFlow's headers are most of the compile time, so parsing
        # them once costs a quarter of compiling each source apart.
        unity = Path(tmp) / "amsim_tf_ops.cc"
        unity.write_text("".join(f'#include "{p}"\n' for p in sources() if p.suffix == ".cc"))
        tmp_so = Path(tmp) / so_path.name
        engine_dir = engine_lib.parent
        gpu_inputs: list[str] = []
        if gpu is not None:
            # Its own translation unit: GOOGLE_CUDA must not change how the CPU ops compile. It
            # calls the CUDA kernels only through their C ABI, so the kernels library (which
            # carries its own CUDA runtime) is all it links.
            gpu_obj = Path(tmp) / "gpu.o"
            _check(subprocess.run(_gpu_compile(cxx, compile_flags, gpu.include_dir, gpu_obj), capture_output=True,
                                  text=True, env=env))
            gpu_inputs = [str(gpu_obj), f"-L{gpu.kernels.parent}", f"-l:{gpu.kernels.name}",
                          f"-Wl,-rpath,{gpu.kernels.parent}"]
        _check(subprocess.run([*cxx, *_FLAGS, *includes, *compile_flags, "-shared", str(unity), *gpu_inputs, "-o",
                               str(tmp_so), *link_flags, f"-L{engine_dir}", f"-l:{engine_lib.name}",
                               f"-Wl,-rpath,{engine_dir}"],
                              capture_output=True, text=True, env=env))
        os.replace(tmp_so, so_path)  # atomic: a concurrent process sees no file or the whole file


def _check(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        output = proc.stderr + proc.stdout
        first = next((line for line in output.splitlines() if "error" in line), output.strip()[:300])
        raise OpBuildError(f"amsim.keras: compiling the TensorFlow ops failed: {first}", output)
