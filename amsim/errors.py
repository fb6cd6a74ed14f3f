"""Exceptions raised by amsim, and the integer check that numeric arguments go through.

Every error a user can cause derives from :class:`AmsimError`, so the command
line can print one clear message and exit non-zero without a traceback.
"""

import numbers


class AmsimError(Exception):
    """Base class of every error caused by bad input."""


class ModelError(AmsimError, ValueError):
    """A C model is malformed: bad metadata block, missing function, wrong prototype."""


class CompileError(ModelError):
    """The C compiler rejected a model.

    Attributes
    ----------
    path : str
        The model file.
    line : int or None
        Line of the first error in that file, when the compiler named one.
    compiler_output : str
        The compiler's full diagnostic text.
    """

    def __init__(self, message, *, path, line=None, compiler_output=""):
        super().__init__(message)
        self.path = path
        self.line = line
        self.compiler_output = compiler_output


class UnknownModelError(AmsimError, KeyError):
    """No model of that name is known; the message lists the known ones."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class RangeError(AmsimError, ValueError):
    """A width or parameter lies outside what the model declares."""


def check_integer(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int when it is an integer in [lo, hi], else :class:`RangeError` naming ``name``.

    Floats are refused, not truncated (``1.5`` is no width), and so are bools (``True`` is no count).
    """
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value  # the common case, without the numbers.Integral check (a third of a microsecond)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (lo is not None and value < lo) \
            or (hi is not None and value > hi):
        allowed = ("an integer" if lo is None and hi is None else f"an integer >= {lo}" if hi is None
                   else f"an integer <= {hi}" if lo is None else f"an integer in {lo}..{hi}")
        raise RangeError(f"{name} must be {allowed}, not {value!r}")
    return int(value)


class LUTError(AmsimError, ValueError):
    """A LUT file is corrupt, mismatched, or cannot be represented in a format."""


class ModelCrashed(AmsimError, RuntimeError):
    """A model's C code crashed (e.g. a segmentation fault) while it was evaluated."""


class ModelTimedOut(ModelCrashed):
    """A model ran past its time limit (``--timeout``) and was stopped; nothing was written for it."""


class ResultRangeError(ModelError):
    """A model returned a value that no multiplier of its declared width and signedness can return."""


class Interrupted(KeyboardInterrupt):
    """The run was ended by SIGTERM or SIGHUP; raised in the main thread so that cleanup runs.

    A KeyboardInterrupt, like the SIGINT it stands beside: ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self):
        import signal

        return f"ended by {signal.Signals(self.signum).name}"
