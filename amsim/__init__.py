"""amsim: approximate multipliers, from C behavioural model to trained network.

The pipeline runs one way: :mod:`amsim.models` (C models, compiled with cffi)
-> :mod:`amsim.sweep` (Numba sweeps) -> :mod:`amsim.lut` and :mod:`amsim.stats`.
"""

__version__ = "0.1.0"

from .errors import AmsimError, CompileError, LUTError, ModelCrashed, ModelError, RangeError, UnknownModelError
from .models import CompiledModel, Model, find_model, list_models, load_model

__all__ = [
    "__version__", "AmsimError", "CompileError", "LUTError", "ModelCrashed", "ModelError", "RangeError",
    "UnknownModelError", "CompiledModel", "Model", "find_model", "list_models", "load_model",
]
