"""The bundled CUDA backend: compiled on every run; executed and compared with the CPU where a GPU exists."""

import ctypes
import shutil

import numpy as np
import pytest

from amsim import gemm
from amsim.gemm import cuda, engine
from amsim.gemm.conv import conv_geometry

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not cuda.Path("/usr/local/cuda/bin/nvcc").exists(),
                                reason="no CUDA toolkit (nvcc) on this machine")
needs_gpu = pytest.mark.skipif(not cuda.available(), reason="no CUDA GPU on this machine")

WANTED = range(70, 91)  # sm_70 .. sm_90


@needs_nvcc
def test_kernels_compile_for_every_architecture_from_sm70_to_sm90_this_nvcc_supports(tmp_path):
    archs = [a for a in cuda.supported_archs() if a in WANTED]
    assert archs, "this nvcc supports none of sm_70..sm_90"
    library = cuda.build(archs, cache=tmp_path)  # a fresh folder: really compiles, every run
    assert library.exists() and library.stat().st_size > 0
    symbols = library.read_bytes()
    for name in (b"amsim_cuda_gemm", b"amsim_cuda_split", b"amsim_cuda_im2col", b"amsim_cuda_col2im",
                 b"amsim_cuda_transpose"):
        assert name in symbols


@needs_nvcc
def test_unsupported_architecture_is_refused_with_the_supported_list():
    with pytest.raises(cuda.CudaError, match=r"cannot compile for sm_50 \(it supports .*sm_80"):
        cuda.build([50])


def test_missing_toolkit_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(cuda.Path, "exists", lambda self: False)
    with pytest.raises(cuda.CudaError, match="no CUDA toolkit found"):
        cuda.nvcc()


@pytest.mark.skipif(cuda.available(), reason="a GPU is present")
def test_cuda_backend_without_a_gpu_says_so():
    with pytest.raises(cuda.CudaError, match="no CUDA GPU"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), "mitchell", bits=7, backend="cuda")


def _bits_equal(x, y):
    return bool(np.all((x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))))


@needs_gpu
@pytest.mark.parametrize("name,m", [("mitchell", 7), ("at_mbm", 7), ("drum", 5), ("mitchell", 10)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (65, 17, 129), (128, 300, 64), (3, 0, 5), (200, 64, 1)])
@pytest.mark.parametrize("rounding", ["truncate", "rne"])
def test_cuda_equals_cpu_bit_for_bit(name, m, shape, rounding):
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape[:2]).astype(np.float32)
    b = rng.standard_normal(shape[1:]).astype(np.float32)
    if a.size > 4:
        a.flat[:4] = [0.0, np.inf, np.nan, 1e-40]
    mult = gemm.resolve(name, m)
    assert _bits_equal(gemm.matmul(a, b, mult, backend="cuda", rounding=rounding),
                       gemm.matmul(a, b, mult, backend="cpu", rounding=rounding))


@needs_gpu
def test_cuda_extreme_exponents_use_the_exact_rules():
    rng = np.random.default_rng(1)
    a = np.ldexp(rng.uniform(1, 2, (40, 50)), rng.integers(-126, 128, (40, 50))).astype(np.float32)
    b = np.ldexp(rng.uniform(1, 2, (50, 30)), rng.integers(-126, 128, (50, 30))).astype(np.float32)
    mult = gemm.resolve("mitchell", 7)
    assert _bits_equal(gemm.matmul(a, b, mult, backend="cuda"), gemm.matmul(a, b, mult, backend="cpu"))


@needs_gpu
def test_cuda_approxtrain_mode_equals_cpu():
    rng = np.random.default_rng(2)
    a = np.ldexp(rng.uniform(1, 2, (33, 40)), rng.integers(-70, -50, (33, 40))).astype(np.float32)
    b = np.ldexp(rng.uniform(1, 2, (40, 21)), rng.integers(-70, -50, (40, 21))).astype(np.float32)
    mult = gemm.resolve("at_mbm", 7)
    assert _bits_equal(gemm.matmul(a, b, mult, backend="cuda", mode="approxtrain"),
                       gemm.matmul(a, b, mult, backend="cpu", mode="approxtrain"))


@needs_gpu
def test_cuda_conv2d_and_gradients_equal_cpu():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    mult = gemm.resolve("mitchell", 7)
    y = gemm.conv2d(x, w, mult, 1, "SAME", backend="cuda")
    assert _bits_equal(y, gemm.conv2d(x, w, mult, 1, "SAME", backend="cpu"))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for fn, args in ((gemm.conv2d_backprop_input, (x.shape, w, dy)), (gemm.conv2d_backprop_filter, (x, w.shape, dy))):
        assert _bits_equal(fn(*args, mult, 1, "SAME", backend="cuda"), fn(*args, mult, 1, "SAME", backend="cpu"))


@needs_gpu
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", [
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "SAME", 1),
    ((1, 11, 10, 2), (3, 2, 2, 5), (2, 3), "SAME", 1),
    ((1, 12, 12, 2), (3, 3, 2, 3), 1, "VALID", (2, 2)),
    ((2, 7, 9, 1), (5, 5, 1, 6), 2, ((2, 1), (0, 3)), 1),
])
def test_cuda_col2im_adds_in_the_cpu_order_bit_for_bit(x_shape, w_shape, strides, padding, dilations):
    g = conv_geometry(x_shape, w_shape, strides, padding, dilations)
    rng = np.random.default_rng(4)
    # magnitudes far apart, so that another order of additions would round differently
    cols = np.ldexp(rng.standard_normal((g.n * g.oh * g.ow, g.kh * g.kw * g.c)),
                    rng.integers(-20, 20, (g.n * g.oh * g.ow, g.kh * g.kw * g.c))).astype(np.float32)
    lib = cuda.library()
    dx = np.empty((g.n, g.h, g.w, g.c), np.float32)
    d_cols, d_dx = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.amsim_cuda_malloc(ctypes.byref(d_cols), cols.nbytes) == 0
    assert lib.amsim_cuda_malloc(ctypes.byref(d_dx), dx.nbytes) == 0
    try:
        assert lib.amsim_cuda_to_device(d_cols, cols.ctypes.data, cols.nbytes) == 0
        assert lib.amsim_cuda_col2im(d_cols, g.n, g.h, g.w, g.c, g.kh, g.kw, *g.strides, *g.dilations, g.pads[0],
                                     g.pads[2], g.oh, g.ow, d_dx, None) == 0
        assert lib.amsim_cuda_synchronize() == 0
        assert lib.amsim_cuda_to_host(dx.ctypes.data, d_dx, dx.nbytes) == 0
    finally:
        lib.amsim_cuda_free(d_cols)
        lib.amsim_cuda_free(d_dx)
    assert _bits_equal(dx, engine.col2im(cols, g))


@needs_gpu
@pytest.mark.parametrize("rows, cols, block", [(5, 3, 1), (7, 4, 3), (1, 6, 2), (0, 3, 2)])
def test_cuda_transpose_moves_blocks_exactly(rows, cols, block):
    src = np.random.default_rng(5).standard_normal((rows, cols, block)).astype(np.float32)
    dst = np.empty((cols, rows, block), np.float32)
    lib = cuda.library()
    d_src, d_dst = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.amsim_cuda_malloc(ctypes.byref(d_src), src.nbytes) == 0
    assert lib.amsim_cuda_malloc(ctypes.byref(d_dst), dst.nbytes) == 0
    try:
        assert lib.amsim_cuda_to_device(d_src, src.ctypes.data, src.nbytes) == 0
        i64 = ctypes.c_int64
        assert lib.amsim_cuda_transpose(d_src, i64(rows), i64(cols), i64(block), d_dst, None) == 0
        assert lib.amsim_cuda_synchronize() == 0
        assert lib.amsim_cuda_to_host(dst.ctypes.data, d_dst, dst.nbytes) == 0
    finally:
        lib.amsim_cuda_free(d_src)
        lib.amsim_cuda_free(d_dst)
    assert _bits_equal(dst, src.transpose(1, 0, 2))
