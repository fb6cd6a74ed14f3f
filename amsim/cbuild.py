"""Compile C through cffi's API mode, cached on disk by a hash of everything that affects the result.

cffi writes the extension's C source; we run the compiler ourselves so that
its diagnostics can be returned to the caller (who knows which user file they
are about), and move the shared object into the cache with an atomic rename,
so that concurrent processes never see a partial file. A second run with the
same inputs loads the cached object and compiles nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import io
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

__all__ = ["BuildFailed", "build_library", "cache_dir", "compiler", "include_dir", "load_cached"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


class BuildFailed(Exception):
    """The compiler rejected the source; ``output`` holds its diagnostics."""

    def __init__(self, output: str):
        super().__init__(output)
        self.output = output


def include_dir() -> Path:
    """amsim's C headers (``amsim_model.h``, ``amsim_product.h``), on every include path."""
    return _PACKAGE_DIR / "include"


def cache_dir() -> Path:
    """Where compiled objects are cached (``AMSIM_CACHE_DIR`` or the user cache directory)."""
    override = os.environ.get("AMSIM_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("amsim")) / "models"


def compiler() -> list[str]:
    """The C compiler command: ``$CC``, Python's own, or ``cc``."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def headers_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(include_dir().glob("*.h")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def load_cached(prefix: str, cdef: str, source: str, flags: list[str], *, key_parts=(), include_dirs=(),
                link_args=()):
    """Return the cffi module for ``source``, compiling it only when no cached build exists.

    Parameters
    ----------
    prefix : str
        Module name prefix; the cache key is appended.
    cdef, source : str
        cffi declarations and C source (``set_source``).
    flags : list of str
        Compiler flags (macros, optimisation); part of the cache key.
    key_parts : iterable of str
        Anything else that changes the result (e.g. the sha256 of an included file).
    include_dirs : iterable of path
        More include directories.
    link_args : iterable of str
        Linker arguments after the source (libraries: ``-l:name``, ``-L``, ``-Wl,-rpath,...``).

    Raises
    ------
    BuildFailed
        With the compiler's output.
    FileNotFoundError
        When no C compiler can be run.
    """
    import cffi

    cc = compiler()
    includes = [f"-I{sysconfig.get_paths()['include']}", f"-I{include_dir()}", *(f"-I{d}" for d in include_dirs)]
    key = hashlib.sha256("\0".join([
        cdef, source, *flags, *includes, *cc, *key_parts, *link_args, headers_digest(), sys.implementation.cache_tag,
        sysconfig.get_platform(), cffi.__version__,
    ]).encode()).hexdigest()[:24]
    modname = f"{prefix}_{key}"
    with _LOCK:
        module = _LOADED.get(modname)
        if module is None:
            so_path = cache_dir() / (modname + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            if not so_path.exists():
                _build(modname, cdef, source, [*flags, *includes], cc, so_path, list(link_args))
            module = _import_extension(modname, so_path)
            _LOADED[modname] = module
    return module


def _build(modname, cdef, source, flags, cc, so_path: Path, link_args=()) -> None:
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source(modname, source)
    so_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=so_path.parent, prefix=".build-") as tmp:
        c_file = Path(tmp) / f"{modname}.c"
        with contextlib.redirect_stdout(io.StringIO()):  # cffi announces "generating ..."
            ffi.emit_c_code(str(c_file))
        tmp_so = Path(tmp) / so_path.name
        cmd = [*cc, "-fPIC", "-shared", *flags, str(c_file), "-o", str(tmp_so), *link_args, "-lm"]
        # LC_ALL=C: plain ASCII quotes in diagnostics, whatever the user's locale.
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
        if proc.returncode != 0:
            raise BuildFailed(proc.stderr + proc.stdout)
        os.replace(tmp_so, so_path)  # atomic: a concurrent process sees no file or the whole file


def _import_extension(modname: str, so_path: Path):
    loader = importlib.machinery.ExtensionFileLoader(modname, str(so_path))
    spec = importlib.util.spec_from_file_location(modname, str(so_path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[modname] = module
    return module


def build_library(name: str, source: Path, flags: list[str], *, depends=(), include_dirs=(), key_parts=()) -> Path:
    """A plain shared library ``lib<name>-<key>.so`` in :func:`cache_dir`, compiled only when absent.

    For C that several extensions link, so that a process holds one copy of it (one thread pool,
    one set of caches): each links the returned path, and the library's soname is its file name.

    Parameters
    ----------
    source : Path
        The C file to compile (a unity file may include the others).
    flags : list of str
        Compiler flags; part of the key.
    depends : iterable of Path
        Every file the source includes (besides amsim's headers): their contents are part of the key.
    include_dirs : iterable of path
        More include directories.
    key_parts : iterable of str
        Anything else that changes the result (the CPU's instruction set for ``-march=native``).

    Raises
    ------
    BuildFailed
        With the compiler's output.
    """
    cc = compiler()
    includes = [f"-I{include_dir()}", *(f"-I{d}" for d in include_dirs)]
    h = hashlib.sha256("\0".join([*flags, *includes, *cc, *key_parts, headers_digest(), sysconfig.get_platform()])
                       .encode())
    for path in sorted({Path(source), *map(Path, depends)}):
        h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    filename = f"lib{name}-{h.hexdigest()[:24]}.so"
    so_path = cache_dir() / filename
    with _LOCK:
        if not so_path.exists():
            so_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=so_path.parent, prefix=".build-") as tmp:
                tmp_so = Path(tmp) / filename
                cmd = [*cc, "-fPIC", "-shared", *flags, *includes, str(source), "-o", str(tmp_so),
                       f"-Wl,-soname,{filename}", "-pthread", "-lm"]
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
                if proc.returncode != 0:
                    raise BuildFailed(proc.stderr + proc.stdout)
                os.replace(tmp_so, so_path)  # atomic: a concurrent process sees no file or the whole file
    return so_path

