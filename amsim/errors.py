"""Exceptions raised by amsim.

Every error a user can cause derives from :class:`AmsimError`, so the command
line can print one clear message and exit non-zero without a traceback.
"""


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


class LUTError(AmsimError, ValueError):
    """A LUT file is corrupt, mismatched, or cannot be represented in a format."""


class ModelCrashed(AmsimError, RuntimeError):
    """A model's C code crashed (e.g. a segmentation fault) while it was evaluated."""
