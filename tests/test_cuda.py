"""The bundled CUDA kernels: compiled by nvcc on every run, executed and compared with the CPU engine bit
for bit on a GPU, or on the CPU emulation of the same sources (AMSIM_CUDA_EMULATION=1, which the README's
test command sets on a machine without a GPU)."""

import ctypes
import shutil

import numpy as np
import pytest

from amsim import gemm
from amsim.gemm import cuda, engine
from amsim.gemm.conv import conv_geometry
from cuda_device import Device, bits_equal

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not cuda.Path("/usr/local/cuda/bin/nvcc").exists(),
                                reason="no CUDA toolkit (nvcc) on this machine")
needs_cuda = pytest.mark.skipif(not cuda.available(), reason=f"backend='cuda' cannot run: {cuda.unavailable_reason()}")
needs_emulation = pytest.mark.skipif(not (cuda.emulated() and cuda.available()),
                                     reason="the CPU emulation of the CUDA kernels is not in use "
                                            f"(AMSIM_CUDA_EMULATION=1; {cuda.unavailable_reason() or 'a GPU is used'})")

WANTED = range(70, 91)  # sm_70 .. sm_90
i64 = ctypes.c_int64

# Operand values that take every rule of the product: zeros of both signs, infinities, NaN,
# subnormals (flushed), the largest finite numbers (overflow), the smallest normals (underflow).
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-45, 3.4e38, -3.4e38, 1.2e-38, 1.0, -1.5],
                    np.float32)


def _operands(shape, seed, specials=True):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape[:2]).astype(np.float32)
    b = rng.standard_normal(shape[1:]).astype(np.float32)
    if specials:
        for x in (a, b):
            count = min(x.size, len(SPECIALS)) // 2
            x.flat[rng.choice(x.size, count, replace=False)] = rng.choice(SPECIALS, count)
    return a, b


def _matmul_matches(a, b, mult, **kwargs) -> bool:
    return bits_equal(gemm.matmul(a, b, mult, backend="cuda", **kwargs), gemm.matmul(a, b, mult, backend="cpu", **kwargs))


# ---- building ---------------------------------------------------------------------------------------

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
    assert b"amsim_emu_" not in symbols, "the emulator's probes never reach a GPU build"


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


def test_cuda_backend_without_a_gpu_or_the_emulation_says_so(monkeypatch):
    monkeypatch.delenv("AMSIM_CUDA_EMULATION", raising=False)
    monkeypatch.setattr(cuda, "device_present", lambda: False)
    cuda.unavailable_reason.cache_clear()
    try:
        with pytest.raises(cuda.CudaError, match="no CUDA GPU on this machine .AMSIM_CUDA_EMULATION=1"):
            gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), "mitchell", bits=7, backend="cuda")
    finally:
        monkeypatch.undo()
        cuda.unavailable_reason.cache_clear()


def test_emulation_without_a_compiler_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-x")
    with pytest.raises(cuda.CudaError, match="needs a C\\+\\+ compiler: no-such-compiler-x not found"):
        cuda.build_emulated(cache=tmp_path)


def test_emulated_build_refuses_an_unknown_mutant(tmp_path):
    with pytest.raises(cuda.CudaError, match="unknown mutant 'typo'; choose from dropped_sync"):
        cuda.build_emulated(cache=tmp_path, mutant="typo")


# ---- the GEMM: every multiplier, rounding, mode, shape and layout ------------------------------------

# Every built-in design at M = 7, two whose LUTs hold zeros (no fast path), and the table sizes that
# leave shared memory (M = 8, 10, 12: the LUT is read through the read-only cache).
MULTIPLIERS = [("mitchell", 7, None), ("mbm", 7, None), ("drum", 7, {"k": 4}), ("alm_soa", 7, None),
               ("ilm", 7, None), ("at_mbm", 7, None), ("at_mitchell", 7, None), ("bf16_rne", 7, None),
               ("bf16_trunc", 7, None), ("exact", 7, None), ("bam", 7, {"h": 2, "v": 6}), ("exact_int", 7, None),
               ("drum", 5, None), ("mitchell", 8, None), ("mitchell", 10, None), ("exact", 12, None)]


@needs_cuda
@pytest.mark.parametrize("name,m,params", MULTIPLIERS, ids=lambda v: str(v))
@pytest.mark.parametrize("rounding", ["truncate", "rne"])
def test_every_multiplier_and_rounding_equals_cpu_bit_for_bit(name, m, params, rounding):
    a, b = _operands((37, 70, 45), seed=m)
    assert _matmul_matches(a, b, gemm.resolve(name, m, params=params), rounding=rounding)


@needs_cuda
def test_a_lut_with_zero_or_subnormal_entries_takes_every_rule_without_the_fast_path():
    table = gemm.resolve("mitchell", 7).table.copy()
    table[3, 5], table[3, 9] = 0.0, 1e-39   # a zero and a subnormal entry
    mult = gemm.resolve(table, 7)
    assert not mult.expandable
    a, b = _operands((40, 128, 30), seed=11)
    a[:, :64] = 1 + 3 / 128   # mantissa index 3 of A meets every index of B in k < 64
    assert _matmul_matches(a, b, mult) and _matmul_matches(a, b, mult, rounding="rne")


# Tiny, odd, and every relation to the 64 x 64 x 16 tile: below, at, one past.
SHAPES = [(1, 1, 1), (2, 3, 1), (1, 17, 1), (3, 0, 5), (0, 4, 2), (5, 7, 0), (15, 16, 17), (63, 65, 64),
          (64, 64, 64), (65, 17, 129), (128, 300, 64), (200, 64, 1), (1, 300, 1), (257, 257, 257)]


@needs_cuda
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_from_1_to_257_equal_cpu(shape):
    a, b = _operands(shape, seed=sum(shape))
    mult = gemm.resolve("mitchell", 7)
    assert _matmul_matches(a, b, mult) and _matmul_matches(a, b, mult, rounding="rne")


@needs_cuda
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, True), (True, False), (True, True)])
def test_transposed_operands_read_through_strides_equal_cpu(transpose_a, transpose_b):
    a, b = _operands((33, 70, 21), seed=7)
    a = np.asfortranarray(a.T).T if not transpose_a else np.ascontiguousarray(a.T)
    b = np.asfortranarray(b.T).T if not transpose_b else np.ascontiguousarray(b.T)
    mult = gemm.resolve("drum", 7, params={"k": 4})
    kwargs = dict(transpose_a=transpose_a, transpose_b=transpose_b)
    assert bits_equal(gemm.matmul(a, b, mult, backend="cuda", **kwargs), gemm.matmul(a, b, mult, backend="cpu", **kwargs))


@needs_cuda
def test_non_contiguous_and_batched_operands_equal_cpu():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 40, 90)).astype(np.float32)[:, ::2, 1::3]   # strided views
    b = rng.standard_normal((1, 30, 50)).astype(np.float32)[..., ::2]       # broadcast batch
    mult = gemm.resolve("mitchell", 7)
    assert _matmul_matches(a, b, mult)


@needs_cuda
@pytest.mark.parametrize("lo, hi", [(-126, 127), (-126, -100), (100, 127), (-70, -50)])
def test_extreme_exponents_use_the_exact_rules(lo, hi):
    rng = np.random.default_rng(lo + 300)
    a = np.ldexp(rng.uniform(1, 2, (40, 50)), rng.integers(lo, hi + 1, (40, 50))).astype(np.float32)
    b = np.ldexp(rng.uniform(1, 2, (50, 30)), rng.integers(lo, hi + 1, (50, 30))).astype(np.float32)
    mult = gemm.resolve("mitchell", 7)
    assert _matmul_matches(a, b, mult) and _matmul_matches(a, b, mult, rounding="rne")


@needs_cuda
@pytest.mark.parametrize("lo, hi", [(-70, -50), (-10, 10)])
def test_approxtrain_mode_equals_cpu(lo, hi):
    rng = np.random.default_rng(2)
    a = np.ldexp(rng.uniform(-2, 2, (33, 40)), rng.integers(lo, hi, (33, 40))).astype(np.float32)
    b = np.ldexp(rng.uniform(-2, 2, (40, 21)), rng.integers(lo, hi, (40, 21))).astype(np.float32)
    mult = gemm.resolve("at_mbm", 7)
    assert _matmul_matches(a, b, mult, mode="approxtrain")


@needs_cuda
def test_specials_only_operands_equal_cpu():
    grid = np.array(np.meshgrid(SPECIALS, SPECIALS)).reshape(2, -1).astype(np.float32)
    a, b = grid[0][:, None], grid[1][None, :]   # every pair as one product (K = 1)
    mult = gemm.resolve("mitchell", 7)
    assert _matmul_matches(a, b, mult) and _matmul_matches(a, b, mult, rounding="rne")


# ---- split, im2col, col2im, transpose called through the C ABI ---------------------------------------

def _split_on_device(lib, x, m, rounding, strides=None):
    rows, cols = x.shape
    memory, rs, cs = (x, cols, 1) if strides is None else strides
    scale, idx, ranges = np.empty(rows * cols, np.float32), np.empty(rows * cols, np.uint16), np.empty(2, np.int32)
    with Device(lib) as dev:
        d_x, d_s, d_i, d_r = dev.upload(memory), dev.empty(scale.nbytes), dev.empty(idx.nbytes), dev.empty(8)
        dev.check(lib.amsim_cuda_split(d_x, rows, cols, rs, cs, m, int(rounding == "rne"), d_s, d_i, d_r, None),
                  "amsim_cuda_split")
        dev.download(d_s, scale), dev.download(d_i, idx), dev.download(d_r, ranges)
    lo, hi = ranges
    return scale.reshape(rows, cols), idx.reshape(rows, cols), None if lo > hi else (int(lo), int(hi))


def _split_matches(lib, x, m=7, rounding="truncate", strides=None) -> bool:
    ffi, cpu = engine.load()
    expected = engine.split(ffi, cpu, x, m, rounding)
    scale, idx, exponents = _split_on_device(lib, x, m, rounding, strides)
    return (bits_equal(scale, expected.scale) and np.array_equal(idx, expected.idx)
            and exponents == expected.exponents)


def _range_probe(size, position, seed):
    """Values whose smallest and largest exponents sit at one position each (a warp lane, a block)."""
    x = np.random.default_rng(seed).uniform(1, 2, size).astype(np.float32)
    x[position % size] = 2.0 ** -100
    x[(position * 7 + 3) % size] = 2.0 ** 100
    return x.reshape(1, size)


@needs_cuda
@pytest.mark.parametrize("rounding", ["truncate", "rne"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 64), (300, 257)])
def test_split_gives_the_cpu_scales_indices_and_exponent_range(shape, rounding):
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    x.flat[: min(x.size, len(SPECIALS))] = SPECIALS[: min(x.size, len(SPECIALS))]
    assert _split_matches(cuda.library(), x, 7, rounding)
    assert _split_matches(cuda.library(), x, 12, rounding)


@needs_cuda
def test_split_reads_transposed_memory_through_strides():
    x = np.random.default_rng(10).standard_normal((45, 70)).astype(np.float32)
    assert _split_matches(cuda.library(), x, strides=(np.ascontiguousarray(x.T), 1, 45))


@needs_cuda
@pytest.mark.parametrize("position", [0, 5, 20, 31, 32, 255, 256, 999])
def test_split_exponent_range_is_reduced_over_every_lane_and_block(position):
    assert _split_matches(cuda.library(), _range_probe(1000, position, seed=position))


@needs_cuda
def test_split_without_a_range_buffer_splits_alone():
    lib = cuda.library()
    x = np.random.default_rng(12).standard_normal((20, 30)).astype(np.float32)
    scale, idx = np.empty(x.size, np.float32), np.empty(x.size, np.uint16)
    with Device(lib) as dev:
        d_x, d_s, d_i = dev.upload(x), dev.empty(scale.nbytes), dev.empty(idx.nbytes)
        dev.check(lib.amsim_cuda_split(d_x, 20, 30, 30, 1, 7, 0, d_s, d_i, None, None), "amsim_cuda_split")
        dev.download(d_s, scale), dev.download(d_i, idx)
    ffi, cpu = engine.load()
    expected = engine.split(ffi, cpu, x, 7, "truncate")
    assert bits_equal(scale.reshape(x.shape), expected.scale) and np.array_equal(idx.reshape(x.shape), expected.idx)


@needs_cuda
def test_split_of_operands_without_normal_values_reports_an_empty_range():
    x = np.array([[0.0, -0.0, np.inf, np.nan, 1e-40]], np.float32)
    assert _split_on_device(cuda.library(), x, 7, "truncate")[2] is None


CONV_CASES = [
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "SAME", 1),
    ((1, 11, 10, 2), (3, 2, 2, 5), (2, 3), "SAME", 1),
    ((1, 12, 12, 2), (3, 3, 2, 3), 1, "VALID", (2, 2)),
    ((2, 7, 9, 1), (5, 5, 1, 6), 2, ((2, 1), (0, 3)), 1),
    ((3, 28, 28, 1), (5, 5, 1, 6), 1, "VALID", 1),   # LeNet-5's conv1
]


@needs_cuda
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
def test_conv2d_and_its_gradients_equal_cpu(x_shape, w_shape, strides, padding, dilations):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    mult = gemm.resolve("mitchell", 7)
    geometry = dict(strides=strides, padding=padding, dilations=dilations)
    y = gemm.conv2d(x, w, mult, backend="cuda", **geometry)
    assert bits_equal(y, gemm.conv2d(x, w, mult, backend="cpu", **geometry))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for fn, args in ((gemm.conv2d_backprop_input, (x.shape, w, dy)), (gemm.conv2d_backprop_filter, (x, w.shape, dy))):
        assert bits_equal(fn(*args, mult, backend="cuda", **geometry), fn(*args, mult, backend="cpu", **geometry))


def _patch_kernel(name, src, g, out):
    """Runs amsim_cuda_im2col or amsim_cuda_col2im (``name``) from src into out, which it returns."""
    lib = cuda.library()
    geometry = (g.n, g.h, g.w, g.c, g.kh, g.kw, *g.strides, *g.dilations, g.pads[0], g.pads[2], g.oh, g.ow)
    with Device(lib) as dev:
        d_src, d_out = dev.upload(src), dev.empty(out.nbytes)
        dev.check(getattr(lib, name)(d_src, *geometry, d_out, None), name)
        return dev.download(d_out, out)


@needs_cuda
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
def test_im2col_copies_the_cpu_patches(x_shape, w_shape, strides, padding, dilations):
    g = conv_geometry(x_shape, w_shape, strides, padding, dilations)
    x = np.random.default_rng(4).standard_normal(x_shape).astype(np.float32)
    cols = _patch_kernel("amsim_cuda_im2col", x, g, np.empty((g.n * g.oh * g.ow, g.kh * g.kw * g.c), np.float32))
    assert bits_equal(cols, engine.im2col(x, g))


@needs_cuda
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
def test_col2im_adds_in_the_cpu_order_bit_for_bit(x_shape, w_shape, strides, padding, dilations):
    g = conv_geometry(x_shape, w_shape, strides, padding, dilations)
    rng = np.random.default_rng(4)
    # magnitudes far apart, so that another order of additions would round differently
    shape = (g.n * g.oh * g.ow, g.kh * g.kw * g.c)
    cols = np.ldexp(rng.standard_normal(shape), rng.integers(-20, 20, shape)).astype(np.float32)
    dx = _patch_kernel("amsim_cuda_col2im", cols, g, np.empty((g.n, g.h, g.w, g.c), np.float32))
    assert bits_equal(dx, engine.col2im(cols, g))


@needs_cuda
@pytest.mark.parametrize("rows, cols, block", [(5, 3, 1), (7, 4, 3), (1, 6, 2), (0, 3, 2), (70, 40, 5)])
def test_transpose_moves_blocks_exactly(rows, cols, block):
    src = np.random.default_rng(5).standard_normal((rows, cols, block)).astype(np.float32)
    dst = np.empty((cols, rows, block), np.float32)
    lib = cuda.library()
    with Device(lib) as dev:
        d_src, d_dst = dev.upload(src), dev.empty(dst.nbytes)
        dev.check(lib.amsim_cuda_transpose(d_src, i64(rows), i64(cols), i64(block), d_dst, None),
                  "amsim_cuda_transpose")
        dev.download(d_dst, dst)
    assert bits_equal(dst, src.transpose(1, 0, 2))


# ---- the emulator: its own rules, and proof that the comparison catches broken kernels ---------------

@needs_emulation
def test_a_gemm_with_more_row_tiles_than_the_grid_loops_over_them(monkeypatch):
    # CUDA caps a grid's y at 65535 blocks; a build with a cap of 2 runs the same loop on small shapes.
    monkeypatch.setattr(cuda, "library", lambda: cuda.load(cuda.build_emulated(grid_y_max=2)))
    for shape in [(300, 70, 40), (129, 20, 5), (64, 1, 1)]:
        a, b = _operands(shape, seed=shape[0])
        assert _matmul_matches(a, b, gemm.resolve("mitchell", 7))


def _probe(lib, grid, block, shared_bytes=0):
    threads = int(np.prod(grid)) * int(np.prod(block))
    out = np.empty(threads, np.int32)
    with Device(lib) as dev:
        d_out = dev.empty(out.nbytes)
        dev.check(lib.amsim_emu_probe_launch(*grid, *block, ctypes.c_size_t(shared_bytes), d_out),
                  "amsim_emu_probe_launch")
        dev.download(d_out, out)
    return out


@needs_emulation
@pytest.mark.parametrize("grid, block", [((1, 1, 1), (1, 1, 1)), ((3, 2, 2), (4, 3, 2)), ((2, 1, 1), (1024, 1, 1)),
                                         ((1, 2, 3), (8, 8, 16))])
def test_emulated_threads_see_cuda_indices_and_their_block_shared_memory(grid, block):
    threads = int(np.prod(block))
    out = _probe(cuda.library(), grid, block, shared_bytes=4 * threads)
    blocks = np.arange(int(np.prod(grid)))[:, None] * threads
    assert np.array_equal(out, (blocks + (threads - 1 - np.arange(threads))[None, :]).ravel())


@needs_emulation
@pytest.mark.parametrize("grid, block, code, text", [
    ((1, 1, 1), (1025, 1, 1), 9, "invalid configuration argument"),     # more than 1024 threads
    ((1, 1, 1), (32, 32, 2), 9, "invalid configuration argument"),
    ((1, 1, 1), (1, 1, 65), 9, "invalid configuration argument"),       # block z above 64
    ((0, 1, 1), (32, 1, 1), 9, "invalid configuration argument"),       # an empty grid
    ((1, 65536, 1), (32, 1, 1), 9, "invalid configuration argument"),   # grid y above 65535
])
def test_launches_that_cuda_refuses_raise_its_error_naming_the_call(grid, block, code, text):
    with pytest.raises(cuda.CudaError, match=rf"amsim_emu_probe_launch: CUDA error {code} \({text}\)"):
        _probe(cuda.library(), grid, block)


@needs_emulation
def test_dynamic_shared_memory_is_limited_as_on_the_device():
    lib = cuda.library()
    with pytest.raises(cuda.CudaError, match=r"CUDA error 1 \(invalid argument\).*49153 bytes of dynamic shared"):
        _probe(lib, (1, 1, 1), (32, 1, 1), shared_bytes=48 * 1024 + 1)
    assert lib.amsim_emu_probe_set_shared_limit(163 * 1024 + 1) == 1       # above the device's opt-in limit
    assert lib.amsim_emu_probe_set_shared_limit(100 * 1024) == 0
    assert _probe(lib, (1, 1, 1), (32, 1, 1), shared_bytes=100 * 1024).size == 32


@needs_emulation
@pytest.mark.parametrize("exit_thread", [0, 37, 255])
def test_a_barrier_that_a_thread_never_reaches_fails_the_launch_instead_of_hanging(exit_thread):
    lib = cuda.library()
    with pytest.raises(cuda.CudaError, match=r"CUDA error 719 \(unspecified launch failure\).*probe_divergent_barrier"
                                             r".*255 of 256 threads wait at __syncthreads\(\), 1 have exited"):
        cuda.check(lib, lib.amsim_emu_probe_divergent_barrier(256, exit_thread), "amsim_emu_probe_divergent_barrier")


def _cuda_shuffle(kind, lane, arg, width):
    """CUDA's source lane for a shuffle (the CUDA C++ Programming Guide's rules)."""
    base, offset = lane - lane % width, lane % width
    if kind == 0:
        return lane + arg if offset + arg < width else lane
    if kind == 1:
        return lane - arg if offset - arg >= 0 else lane
    if kind == 2:
        return base + ((offset ^ arg) % width)
    return base + arg % width


@needs_emulation
@pytest.mark.parametrize("kind", [0, 1, 2, 3], ids=["down", "up", "xor", "idx"])
@pytest.mark.parametrize("arg, width", [(1, 32), (16, 32), (3, 8), (5, 16), (0, 4)])
def test_warp_shuffles_follow_cuda_on_32_lanes(kind, arg, width):
    lib = cuda.library()
    out = np.empty(32, np.int32)
    with Device(lib) as dev:
        d_out = dev.empty(out.nbytes)
        dev.check(lib.amsim_emu_probe_shuffle(kind, arg, width, ctypes.c_uint(0xFFFFFFFF), d_out),
                  "amsim_emu_probe_shuffle")
        dev.download(d_out, out)
    assert out.tolist() == [100 + _cuda_shuffle(kind, lane, arg, width) for lane in range(32)]


@needs_emulation
def test_a_shuffle_reading_a_lane_outside_its_mask_fails_the_launch():
    lib = cuda.library()
    with Device(lib) as dev:
        d_out = dev.empty(128)
        with pytest.raises(cuda.CudaError, match=r"CUDA error 719 .*reads lane 3[01], which the mask 0xffff does not name"):
            dev.check(lib.amsim_emu_probe_shuffle(0, 16, 32, ctypes.c_uint(0xFFFF), d_out), "amsim_emu_probe_shuffle")


@needs_emulation
def test_atomics_are_exact_across_blocks_running_on_several_threads():
    lib = cuda.library()
    out = np.array([0, 2**31 - 1, -(2**31)], np.int32)
    with Device(lib) as dev:
        d_out = dev.upload(out)
        dev.check(lib.amsim_emu_probe_atomics(200, 96, d_out), "amsim_emu_probe_atomics")
        dev.download(d_out, out)
    assert out.tolist() == [200 * 96, 0, 200 * 96 - 1]


@needs_emulation
def test_copies_outside_device_memory_are_refused():
    lib = cuda.library()
    host = np.zeros(4, np.float32)
    with Device(lib) as dev:
        d_x = dev.empty(8)
        with pytest.raises(cuda.CudaError, match=r"amsim_cuda_to_device: CUDA error 1 \(invalid argument\)"):
            dev.check(lib.amsim_cuda_to_device(d_x, host.ctypes.data, host.nbytes), "amsim_cuda_to_device")


def _comparison_battery() -> list[str]:
    """The checks above, in small: the names of those that find the kernels differ from the CPU."""
    lib = cuda.library()
    found = []
    for shape in [(65, 17, 129), (3, 40, 5), (128, 33, 64)]:
        a, b = _operands(shape, seed=sum(shape), specials=False)
        if not _matmul_matches(a, b, gemm.resolve("mitchell", 7)):
            found.append(f"gemm {shape}")
    for position in (5, 20, 999):
        if not _split_matches(lib, _range_probe(1000, position, seed=position)):
            found.append(f"split range {position}")
    return found


@needs_emulation
def test_the_shipped_kernels_pass_the_battery():
    assert _comparison_battery() == []


@needs_emulation
@pytest.mark.parametrize("mutant", cuda.MUTANTS)
def test_the_comparison_catches_each_deliberately_broken_kernel(mutant, monkeypatch):
    broken = cuda.load(cuda.build_emulated(mutant=mutant))
    monkeypatch.setattr(cuda, "library", lambda: broken)
    assert _comparison_battery(), f"the {mutant} variant passed every comparison"
