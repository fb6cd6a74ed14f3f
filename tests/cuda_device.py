"""Device memory for the tests that call the CUDA kernels' C ABI directly (a GPU or the emulation)."""

import ctypes

import numpy as np

from amsim.gemm import cuda


def bits_equal(x, y) -> bool:
    """Same shape and the same float32 bits everywhere, NaN compared as NaN (any payload)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return x.shape == y.shape and bool(np.all((x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))))


class Device:
    """Buffers on the device of ``lib``, freed when the ``with`` block ends.

    >>> with Device(cuda.library()) as dev:
    ...     d_x = dev.upload(x); d_y = dev.empty(y.nbytes)
    ...     dev.check(lib.amsim_cuda_transpose(...), "amsim_cuda_transpose")
    ...     dev.download(d_y, y)
    """

    def __init__(self, lib):
        self.lib = lib
        self._pointers: list[ctypes.c_void_p] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for ptr in self._pointers:
            self.lib.amsim_cuda_free(ptr)
        return False

    def check(self, code, call: str) -> None:
        cuda.check(self.lib, code, call)

    def empty(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self.check(self.lib.amsim_cuda_malloc(ctypes.byref(ptr), max(int(nbytes), 1)), "amsim_cuda_malloc")
        self._pointers.append(ptr)
        return ptr

    def upload(self, array: np.ndarray) -> ctypes.c_void_p:
        array = np.ascontiguousarray(array)
        ptr = self.empty(array.nbytes)
        self.check(self.lib.amsim_cuda_to_device(ptr, array.ctypes.data, array.nbytes), "amsim_cuda_to_device")
        return ptr

    def download(self, ptr: ctypes.c_void_p, out: np.ndarray) -> np.ndarray:
        """Synchronizes, then copies the device buffer into the C-contiguous ``out``."""
        self.check(self.lib.amsim_cuda_synchronize(), "amsim_cuda_synchronize")
        self.check(self.lib.amsim_cuda_to_host(out.ctypes.data, ptr, out.nbytes), "amsim_cuda_to_host")
        return out
