"""TensorFlow's start-up noise, kept from the user of amsim's commands unless they ask for it.

Importing TensorFlow writes C++ log lines straight to file descriptor 2: the oneDNN notice (twice:
two of its libraries log it) and, on a machine without a GPU, the CUDA stub's and cuInit's
complaints when it looks for devices. They go through absl's logging before TensorFlow initialises
it, which ignores ``TF_CPP_MIN_LOG_LEVEL``, so setting that variable is not enough. Hence the rule:
unless the user asks for them (``--verbose``, or ``AMSIM_VERBOSE=1`` in the environment, which
processes started by a command inherit: Dask workers), the first import of ``tensorflow`` in the
process, and its search for devices, run with fd 2 held back in a temporary file. What they wrote
is dropped when they succeed (all of it: some messages run over several lines) and passed on when
they raise, since it may explain why. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 for what TensorFlow
logs later (errors only), unless the user set it. What the dropped lines had to say that matters
is said once, in amsim's words: a TensorFlow built for CUDA that finds no GPU runs on the CPU.

This module imports nothing heavy; :func:`quiet_tensorflow` only arranges for the import that
comes later.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

__all__ = ["VERBOSE_ENV", "verbose", "quiet_tensorflow"]

#: Set (to anything but "" or "0") to let TensorFlow's start-up messages through.
VERBOSE_ENV = "AMSIM_VERBOSE"


def verbose() -> bool:
    """True when the user asked for TensorFlow's messages (``AMSIM_VERBOSE``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_tensorflow(*, announce: bool = False) -> None:
    """Unless :func:`verbose`, keep TensorFlow's start-up logs off stderr (see the module docstring).

    Call it before TensorFlow is imported; once it is, or when called again, this does nothing.
    ``announce`` says what matters in amsim's words: for the command line's own process, not for
    every worker it starts.
    """
    if verbose() or "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _QuietFinder(announce))


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` through the other finders, once, and wraps its loader in :class:`_QuietLoader`."""

    def __init__(self, announce: bool):
        self.announce = announce

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):  # another thread removed it first
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.announce)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with fd 2 held back, followed by its search for devices."""

    def __init__(self, loader, announce: bool):
        self._loader, self._announce = loader, announce

    def __getattr__(self, name):  # anything else a loader offers (resource readers, ...) is the real one's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _stderr_held_back():
            self._loader.exec_module(module)
            gpus = module.config.list_physical_devices("GPU")  # cuInit and the CUDA stub log here
        if self._announce and not gpus and module.sysconfig.get_build_info().get("is_cuda_build"):
            print("amsim: note: TensorFlow is built for CUDA but finds no GPU; it runs on the CPU "
                  "(--verbose shows its messages)", file=sys.stderr)


@contextlib.contextmanager
def _stderr_held_back():
    """Hold back what is written to fd 2 meanwhile: dropped when the block succeeds, passed on when it raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            held.seek(0)
            os.write(2, held.read())
            raise
        _restore(saved)


def _restore(saved: int) -> None:
    sys.stderr.flush()  # Python's own writes meanwhile belong to the held back text
    os.dup2(saved, 2)
    os.close(saved)
