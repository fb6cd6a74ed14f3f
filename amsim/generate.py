"""From a model to a verified LUT and its statistics; batch runs that survive crashing models.

:func:`mantissa_lut` builds the M-bit mantissa LUT of a float model, or of an
integer model lifted to width M + 1 (docs/numerics.md section 4), with statistics
against both float references. :func:`characterise` computes statistics for
the ``stats`` command. :func:`run_isolated` runs one such job in a forked
child process, so that a segmentation fault in user C code costs only that
model: the parent reports it by name and carries on. :func:`run_batch` also
stops a model past its time limit, and lets no child outlive the run. A
:class:`Sandbox` keeps one such child for many calls of one model (``amsim check``).
:func:`cached_mantissa_lut` is the table a model multiplies with, swept in
such a child once and then read from amsim's cache.
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path

from . import cbuild, errors, stats, sweep
from . import lut as lutmod
from .errors import AmsimError, LUTError, ModelCrashed, ModelTimedOut, RangeError
from .lut import LUT
from .models import format_widths

__all__ = ["MAX_LUT_BITS", "mantissa_width", "compile_for_mantissa", "mantissa_lut", "cached_mantissa_lut",
           "lut_cache_path", "integer_lut", "characterise", "run_isolated", "run_batch", "Sandbox"]

#: Largest M with a stored LUT: 2^24 entries (64 MiB as float32). Beyond it, statistics only.
MAX_LUT_BITS = 12


def mantissa_width(model, m: int) -> int:
    """Width to compile ``model`` at to get an M-bit mantissa multiplier, or raise RangeError.

    Float models: M. Unsigned integer models are lifted (docs/numerics.md section 4): M + 1.
    """
    if model.kind == "float":
        return model.check_bits(m)
    if model.signed:
        raise RangeError(f"model {model.name!r} is signed; lifting to a mantissa multiplier needs an "
                         "unsigned integer model")
    if m + 1 not in model.bits:
        raise RangeError(f"integer model {model.name!r} lifted to M={m} needs operand width {m + 1}, "
                         f"but it supports widths {format_widths(model.bits)}")
    return m + 1


def compile_for_mantissa(model, m: int, params=None):
    """Compile ``model`` as an M-bit mantissa multiplier: float models at M, integer models lifted."""
    return model.compile(mantissa_width(model, m), params)


def _describe(model) -> dict:
    return {"description": model.description, "citation": model.citation, "kind": model.kind,
            "source": str(model.path)}


def mantissa_lut(model, m: int, params=None, *, rounding="truncate", samples=None, seed=0,
                 zeros_as_exact=False, threads=None, progress=None, statistics=True) -> LUT:
    """Build the M-bit mantissa LUT of ``model`` with statistics for both references.

    Parameters
    ----------
    model : amsim.models.Model
    m : int
        Mantissa fraction bits, 1..12.
    params : dict, optional
        Model parameters (defaults filled in, ranges checked).
    rounding : {"truncate", "rne"}
        Operand conversion the LUT is meant for; used for the ``full`` statistics.
    samples, seed : int
        Monte Carlo size and seed of the ``full`` statistics.
    statistics : bool
        False builds the table alone (what the GEMM engine needs), with empty ``stats``.
    """
    _check_lut_width(m)
    params = model.resolve_params(params)
    cm = compile_for_mantissa(model, m, params)
    label = None if progress is None else f"{model.name} M={m}"
    table = sweep.significand_table(cm, m, threads=threads, progress=label)
    common = dict(table=table, zeros_as_exact=zeros_as_exact, threads=threads, progress=label)
    result = {} if not statistics else {
        "truncated": stats.mantissa_stats(m, reference="truncated", **common),
        "full": stats.mantissa_stats(m, reference="full", rounding=rounding, samples=samples, seed=seed,
                                     **common),
    }
    meta = _describe(model)
    if model.kind == "int":
        meta.update(lifted=True, int_bits=m + 1)
    meta["zeros_as_exact"] = bool(zeros_as_exact)
    return LUT(table=table, bits=m, kind="mantissa", model=model.name, params=params, rounding=rounding,
               source_sha256=model.source_sha256, stats=result, meta=meta)


def _check_lut_width(m) -> None:
    if not 1 <= errors.check_integer(m, "the mantissa width M") <= MAX_LUT_BITS:
        raise RangeError(f"LUTs are generated for M = 1..{MAX_LUT_BITS} (2^(2M) entries); M={m} has none. "
                         "Use `amsim stats` for wider mantissas")


#: Bumped whenever the table a sweep makes of a model changes (the sweep, the lifting rule), so that
#: LUTs cached by an older amsim are swept again.
_TABLE_VERSION = "1"


def lut_cache_path(cm, m: int) -> Path:
    """Where :func:`cached_mantissa_lut` keeps the M-bit mantissa LUT of the compiled model ``cm``.

    The key is the build's (:attr:`amsim.models.CompiledModel.key`: the C source, width, parameters,
    amsim's headers, the compiler and its flags) with M and the sweep's version: whatever changes the
    table changes the file, so an edited model is swept again and an unchanged one never is. The
    name starts as the LUT's own file name would, for people looking into the cache.
    """
    key = hashlib.sha256("\0".join([cm.key, str(m), _TABLE_VERSION]).encode()).hexdigest()[:24]
    stem = lutmod.lut_filename(cm.model.name, cm.params, m).removesuffix(".npz")
    return cbuild.cache_dir() / "luts" / f"{stem}-{key}.npz"


def cached_mantissa_lut(model, m: int, params=None, *, timeout=None) -> LUT:
    """The M-bit mantissa LUT of ``model`` without statistics: the table a multiplier multiplies with.

    It is swept on first use and written to amsim's cache (:func:`lut_cache_path`, atomically);
    later calls, in this process or any other, read it from there. The model is compiled here, so a
    compile error is raised with its file and line; the sweep runs in a child process
    (:func:`run_isolated`), so a model that crashes, or runs past ``timeout`` seconds, raises
    :class:`~amsim.errors.ModelCrashed` or :class:`~amsim.errors.ModelTimedOut` and this process
    carries on. A cached file that does not verify is swept again.
    """
    _check_lut_width(m)
    params = model.resolve_params(params)
    path = lut_cache_path(compile_for_mantissa(model, m, params), m)
    if path.is_file():
        try:
            return lutmod.load(path, bits=m, kind="mantissa")
        except LUTError:  # damaged (a full disk, an edit): sweep it again
            pass
    lut = run_isolated(model.name, mantissa_lut, model, m, params, statistics=False, timeout=timeout)
    lutmod.save(lut, path)
    return lut


def integer_lut(model, n: int, params=None, *, zeros_as_exact=False, threads=None, progress=None) -> LUT:
    """Full n-bit product table of an integer model (n <= 12), with its integer statistics."""
    if model.kind != "int":
        raise RangeError(f"model {model.name!r} is a float model; an integer table needs an integer model")
    if errors.check_integer(n, "the operand width n") > MAX_LUT_BITS:
        raise RangeError(f"integer tables are generated up to {MAX_LUT_BITS}-bit operands, not {n}")
    params = model.resolve_params(params)
    cm = model.compile(n, params)
    label = None if progress is None else f"{model.name} {n}-bit"
    table = sweep.integer_table(cm, threads=threads, progress=label)
    result = {"integer": stats.int_stats(cm, zeros_as_exact=zeros_as_exact, threads=threads, progress=label)}
    meta = _describe(model)
    meta["signed"] = model.signed
    return LUT(table=table, bits=n, kind="integer", model=model.name, params=params,
               source_sha256=model.source_sha256, stats=result, meta=meta)


def characterise(model, bits: int, params=None, *, as_float=False, reference="truncated",
                 rounding="truncate", samples=None, seed=0, zeros_as_exact=False, threads=None,
                 progress=None) -> dict:
    """Statistics of one model configuration, as ``amsim stats`` prints them.

    A float model, or an integer model with ``as_float``, is characterised as an
    M-bit mantissa multiplier (M = ``bits``) against ``reference``. An integer
    model otherwise gets integer statistics at operand width ``bits``.

    The statistics are exhaustive wherever every pair can be swept: integer
    models up to :data:`amsim.stats.MAX_EXHAUSTIVE_INT_BITS` bits, and the truncated
    reference up to M = :data:`MAX_LUT_BITS` (from the LUT). ``samples`` and
    ``seed`` set the Monte Carlo run used everywhere else (the full reference,
    wider operands); the result's ``exhaustive`` key says which it was.
    """
    params = model.resolve_params(params)
    sweep.check_sampling(samples, seed)
    label = None if progress is None else model.name
    if model.kind == "int" and not as_float:
        cm = model.compile(bits, params)
        sampled = bits > stats.MAX_EXHAUSTIVE_INT_BITS
        result = stats.int_stats(cm, samples=samples if sampled else None, seed=seed, zeros_as_exact=zeros_as_exact,
                                 threads=threads, progress=label)
        reference = "integer"
    else:
        cm = compile_for_mantissa(model, bits, params)
        # A LUT serves the exhaustive truncated reference, and is the cheap way to sample small M;
        # without one (M > 12) mantissa_stats calls the model on seeded samples.
        exhaustive = reference == "truncated" and bits <= MAX_LUT_BITS
        wants_table = exhaustive or bits <= 8
        table = sweep.significand_table(cm, bits, threads=threads, progress=label) if wants_table else None
        result = stats.mantissa_stats(bits, table=table, cm=cm, reference=reference, rounding=rounding,
                                      samples=None if exhaustive else samples, seed=seed,
                                      zeros_as_exact=zeros_as_exact, threads=threads, progress=label)
        if reference == "full":
            result["rounding"] = rounding
    head = {"model": model.name, "parameters": params, "bits": bits, "reference": reference}
    if model.kind == "int" and as_float:
        head["lifted_from_bits"] = bits + 1
    if zeros_as_exact:
        head["zeros_as_exact"] = True
    return {**head, **result}


# ----------------------------------------------------------------------------------------------
# Crash isolation
# ----------------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Make this forked child end when its parent does, however the parent ends (even SIGKILL).

    Linux's PR_SET_PDEATHSIG does this in the kernel; elsewhere the parent's cleanup in
    :func:`run_batch` is all there is. The parent may have died before the call: check after it.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _become_child(parent_pid: int) -> None:
    """What a forked child of :func:`run_batch` or :class:`Sandbox` does first."""
    # The parent ends the run on these signals and stops its children itself; a child that inherited
    # the parent's handlers would instead raise into the model's caller and try to report back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    # The parent reports a crash by the model's name, in one line; a fault handler inherited from it
    # (pytest's, PYTHONFAULTHANDLER's) would add this child's Python stack, which says nothing about C code.
    faulthandler.disable()
    _die_with_parent(parent_pid)


def _outcome(fn, *args, **kwargs):
    """What a child sends its parent: ``("ok", result)``, or ``("error", class name, message)``,
    which :func:`_rebuild` turns back into the exception."""
    try:
        return ("ok", fn(*args, **kwargs))
    except AmsimError as exc:
        return ("error", type(exc).__name__, str(exc))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent, never hang it
        return ("error", "AmsimError", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


def _child(conn, parent_pid, fn, args, kwargs):
    _become_child(parent_pid)
    try:
        conn.send(_outcome(fn, *args, **kwargs))
    finally:
        conn.close()
        os._exit(0)  # skip atexit handlers inherited from the parent


def _rebuild(kind, message):
    cls = getattr(errors, kind, AmsimError)
    if cls is errors.CompileError:
        return cls(message, path="")
    return cls(message)


def _describe_exit(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode} without a result"


def run_batch(jobs, *, max_parallel=1, isolate=True, timeout=None):
    """Run ``jobs`` = [(name, fn, args, kwargs), ...] each in a forked child process.

    Returns a list, in job order, of (name, result or exception). A child that
    dies (a segfault in C code, say) yields :class:`~amsim.errors.ModelCrashed`
    naming the job; one still running ``timeout`` seconds after it started is
    killed and yields :class:`~amsim.errors.ModelTimedOut`; the others are
    unaffected. However this function is left (an exception, a signal turned
    into one), no child outlives it; on Linux none outlives this process either.
    Requires the ``fork`` start method (Linux, macOS). ``isolate=False`` runs
    the jobs in this process instead (errors are still collected, crashes are
    not survived, ``timeout`` does not apply).
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < math.inf):
        raise RangeError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    if not isolate:
        results = []
        for name, fn, args, kwargs in jobs:
            try:
                results.append((name, fn(*args, **kwargs)))
            except AmsimError as exc:
                results.append((name, exc))
        return results
    ctx = multiprocessing.get_context("fork")
    results = [None] * len(jobs)
    pending = list(enumerate(jobs))
    running = {}  # conn -> (index, process, deadline)
    try:
        while pending or running:
            while pending and len(running) < max(1, max_parallel):
                index, (name, fn, args, kwargs) = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send, os.getpid(), fn, args, kwargs), daemon=True)
                proc.start()
                send.close()
                running[recv] = (index, proc, None if timeout is None else time.monotonic() + timeout)
            deadlines = [d for _, _, d in running.values() if d is not None]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for conn in wait(list(running), wait_s):
                index, proc, _ = running.pop(conn)
                name = jobs[index][0]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    message = None
                conn.close()
                proc.join()
                if message is None:
                    results[index] = (name, ModelCrashed(f"model {name} crashed ({_describe_exit(proc.exitcode)}); "
                                                          "nothing was written for it"))
                elif message[0] == "ok":
                    results[index] = (name, message[1])
                else:
                    results[index] = (name, _rebuild(message[1], message[2]))
            now = time.monotonic()
            for conn, (index, proc, deadline) in list(running.items()):
                if deadline is not None and now >= deadline and not conn.poll():  # a result that came in time wins
                    del running[conn]
                    _stop(proc, conn)
                    results[index] = (jobs[index][0], ModelTimedOut(
                        f"model {jobs[index][0]} timed out: still running after {timeout:g} s (--timeout); "
                        "it was stopped and nothing was written for it"))
    finally:
        for conn, (_, proc, _) in running.items():  # left early: an exception, SIGINT, SIGTERM, SIGHUP
            _stop(proc, conn)
    return results


def _stop(proc, conn) -> None:
    """End a child whatever it is doing (computing, spinning in C, blocked writing its result) and reap it."""
    proc.kill()
    proc.join()
    conn.close()


def run_isolated(name, fn, *args, timeout=None, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a forked child; return its result or raise its error.

    ``timeout`` is :func:`run_batch`'s (seconds; None: no limit), not an argument of ``fn``.
    """
    (_, outcome), = run_batch([(name, fn, args, kwargs)], timeout=timeout)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class Sandbox:
    """Calls of one compiled model, made in a persistent forked child so that its C code cannot end
    this process.

    ``call(fn, *args)`` runs ``fn(cm, progress, *args)`` in the child and returns its result. A crash
    there (a segmentation fault, an abort) raises :class:`~amsim.errors.ModelCrashed`, and a call
    that goes ``timeout`` seconds without progress is stopped and raises
    :class:`~amsim.errors.ModelTimedOut`; the next call starts a fresh child. ``fn`` may set
    ``progress.value`` to the index of the item it is working on: each change restarts the time
    limit, and the error carries the last value as ``index`` (-1: none), so that the caller can tell
    which operands were being evaluated. Use it as a context manager, or :meth:`close` it.
    """

    def __init__(self, cm, timeout: float):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise RangeError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.cm, self.timeout = cm, float(timeout)
        self._ctx = multiprocessing.get_context("fork")
        self._proc = self._conn = self._progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        self._progress = self._ctx.Value("q", -1, lock=False)  # shared memory, read while the child runs
        self._conn, child_end = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child_end, os.getpid(), self.cm, self._progress),
                                       daemon=True)
        self._proc.start()
        child_end.close()

    def call(self, fn, *args):
        if self._proc is None:
            self._start()
        self._progress.value = -1
        self._conn.send((fn, args))
        last, deadline = -1, time.monotonic() + self.timeout
        while not self._conn.poll(max(0.0, min(0.25, deadline - time.monotonic()))):
            seen = self._progress.value
            if seen != last:
                last, deadline = seen, time.monotonic() + self.timeout
            elif time.monotonic() >= deadline:
                self.close()
                error = ModelTimedOut(f"model {self.cm.model.name} gave no answer within {self.timeout:g} s")
                error.index = seen
                raise error
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            index = self._progress.value
            self._proc.join()
            error = ModelCrashed(f"model {self.cm.model.name} crashed ({_describe_exit(self._proc.exitcode)})")
            error.index = index
            self.close()
            raise error from None
        if reply[0] == "ok":
            return reply[1]
        raise _rebuild(reply[1], reply[2])

    def close(self):
        if self._proc is not None:
            _stop(self._proc, self._conn)
            self._proc = self._conn = None


def _serve(conn, parent_pid, cm, progress):
    """The sandbox's child: answer calls until the parent closes the pipe."""
    _become_child(parent_pid)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        conn.send(_outcome(fn, cm, progress, *args))
