"""argparse value types shared by amsim's command lines (:mod:`amsim.cli`, :mod:`amsim.experiments.cli`).

Each turns one flag's text into a value or raises ``argparse.ArgumentTypeError``, which argparse
prints as one line naming the flag.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "non_negative_int", "positive_number", "model_param", "param_dict", "DEFAULT_TIMEOUT"]

#: Default --timeout (seconds per model): an hour, far beyond any exhaustive sweep; it exists to end a
#: model that never returns.
DEFAULT_TIMEOUT = 3600.0


def _integer(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "an integer >= 0")


def positive_number(text: str) -> float:
    """A positive, finite number (seconds, a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive, finite number, got {text!r}")
    return value


def model_param(text: str) -> tuple[str, int]:
    """``--param NAME=VALUE``: a model parameter (an integer)."""
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"parameter value must be an integer: {text!r}") from None


def param_dict(pairs) -> dict:
    """--param NAME=VALUE pairs as a dict; one name given two different values is refused."""
    from .errors import RangeError

    params = {}
    for name, value in pairs:
        if params.get(name, value) != value:
            raise RangeError(f"--param {name} is given twice, with {params[name]} and {value}; give it once")
        params[name] = value
    return params
