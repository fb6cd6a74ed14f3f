"""Training studies: the same network trained with several multipliers, fairly, and what it would save.

A *run* trains one architecture on one dataset with one multiplier from given
initial weights (:mod:`.runner`); a *study* is many runs that share initial
weights and data order, one per multiplier and seed (:mod:`.study`), in this
process or on a Dask cluster. :mod:`.datasets` reads the datasets from their
distribution files, :mod:`.architectures` builds the networks,
:mod:`.multipliers` parses what the user names as multipliers, and
:mod:`.energy` counts the multiplications a network performs and prices them
with each multiplier's published cost. :mod:`.evaluate` quantizes one trained
model after training with each of several 8-bit circuits, training nothing.

Importing this package does not import TensorFlow; the modules that need it
import it when they run.
"""

from amsim.errors import AmsimError

__all__ = ["ExperimentError"]


class ExperimentError(AmsimError, ValueError):
    """Bad input to a training study: unknown dataset or architecture, an occupied run folder, ..."""
