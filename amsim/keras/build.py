"""Build the TensorFlow op library (``amsim/csrc/tf/*.cc``) on first use, and load it once.

The ops are compiled with g++ against the installed TensorFlow (its ``tf.sysconfig``
flags, the C++ ABI define among them) and linked to the engine's shared library, which
``amsim.gemm`` loads too: the dynamic loader maps that file once per process, so the ops
and ``amsim.gemm`` share one thread pool and one set of planner costs. The op library
finds the engine through its rpath.

The result is cached under :func:`amsim.cbuild.cache_dir` with a name keyed by everything
that changes it: TensorFlow's version and flags, the op sources, ``amsim_gemm.h``, the
engine library's contents and the compiler's version. It is written under a temporary name
and renamed into place, so concurrent processes see no file or the whole file; within a
process a lock makes loading happen once, whatever the threads.
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

from .. import cbuild
from ..errors import AmsimError

__all__ = ["OpBuildError", "load", "library_path", "sources"]

_SOURCES = Path(__file__).resolve().parent.parent / "csrc" / "tf"
# No -march=native: the ops only move data and call the engine (which is built for the CPU), and
# TensorFlow's Eigen headers do not compile with every instruction set g++ can enable (AVX512-FP16).
_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-Wno-deprecated-declarations"]
_LOCK = threading.Lock()
_MODULE = None


class OpBuildError(AmsimError, RuntimeError):
    """The TensorFlow ops cannot be built or loaded: no compiler, no TensorFlow headers, or a
    compiler or loader failure (``output`` holds its full diagnostics)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def sources() -> list[Path]:
    """The op library's C++ sources and headers."""
    return sorted(p for p in _SOURCES.iterdir() if p.suffix in (".cc", ".h"))


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
    key = hashlib.sha256()
    for part in (tf.__version__, *compile_flags, *link_flags, *_FLAGS, *cxx, _compiler_version(cxx),
                 str(engine_lib)):
        key.update(part.encode() + b"\0")
    for path in (*sources(), cbuild.include_dir() / "amsim_gemm.h", engine_lib):
        key.update(path.name.encode() + b"\0" + path.read_bytes())
    so_path = cbuild.cache_dir() / f"amsim_tf_ops-{key.hexdigest()[:24]}.so"
    if not so_path.exists():
        _build(so_path, cxx, compile_flags, link_flags, engine_lib)
    return so_path


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


def _build(so_path: Path, cxx, compile_flags, link_flags, engine_lib: Path) -> None:
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
        _check(subprocess.run([*cxx, *_FLAGS, *includes, *compile_flags, "-shared", str(unity), "-o", str(tmp_so),
                               *link_flags, f"-L{engine_dir}", f"-l:{engine_lib.name}", f"-Wl,-rpath,{engine_dir}"],
                              capture_output=True, text=True, env=env))
        os.replace(tmp_so, so_path)  # atomic: a concurrent process sees no file or the whole file


def _check(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        output = proc.stderr + proc.stdout
        first = next((line for line in output.splitlines() if "error" in line), output.strip()[:300])
        raise OpBuildError(f"amsim.keras: compiling the TensorFlow ops failed: {first}", output)
