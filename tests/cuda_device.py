"""What the tests of the CUDA kernels share (a GPU, or the CPU emulation of the same sources)."""

import numpy as np

from amsim.gemm.cuda import Device  # noqa: F401  (device memory freed at the end of a with block)


def bits_equal(x, y) -> bool:
    """Same shape and the same float32 bits everywhere, NaN compared as NaN (any payload)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return x.shape == y.shape and bool(np.all((x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))))
