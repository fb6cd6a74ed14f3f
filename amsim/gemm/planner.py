"""The planner's cost model: fitted on the machine that runs it, cached, and handed to the engine.

The planner itself runs in C (``amsim/csrc/cpu/planner.c``): for each GEMM it
counts what every candidate plan (kernel, orientation, threading) does on its
busiest thread and weighs the counts by costs in nanoseconds
(``struct amsim_costs``). Those costs depend on the CPU, so they are fitted
here, on this machine, once per CPU and engine build, and cached as JSON in
:func:`amsim.cbuild.cache_dir` beside the compiled engine:

* at the engine's first load, a quick fit (a few seconds: a handful of GEMM
  shapes timed on one thread, pulled towards the engine's start values where
  the timings say little);
* ``scripts/bench_gemm.py --calibrate``: a thorough fit over many shapes, which
  replaces the cache entry.

``AMSIM_GEMM_COSTS=start`` skips the fit and keeps the engine's start values.
The costs only choose among plans that give the same bits.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time

import numpy as np

from .. import cbuild

#: The cost items, in struct amsim_costs' order (docs/gemm-internals.md says what each counts).
ITEMS = ("build", "build_op", "fma", "row_k", "row_vec", "lookup", "lookup_group", "lookup_op", "prep", "prep_t",
         "out", "split", "split_t", "threads", "threads_awake")
_FIT_VERSION = 1

KERNEL_CODES = {"direct": 0, "expand": 1, "lookup": 2}
SPLIT_CODES = {"rows": 1, "tiles": 0}  # struct amsim_plan's by_rows; anything else: -1, the kernel's preference


# ----------------------------------------------------------------------------------------------
# The C planner's choices and counts, for the binding, tests and tools
# ----------------------------------------------------------------------------------------------


def _plan_tuple(plan) -> tuple[str, bool, bool | str]:
    """(kernel, swap, parallel) of a struct amsim_plan: parallel False (one thread), "rows",
    "tiles", or True (several threads, split as the kernel prefers)."""
    parallel = False if plan.threads <= 1 else {1: "rows", 0: "tiles"}.get(plan.by_rows, True)
    return {1: "expand", 2: "lookup"}.get(plan.kernel, "direct"), bool(plan.swap), parallel


def c_plan(ffi, lib, lut, args, awake: bool) -> tuple[str, bool, bool | str]:
    """The plan amsim_gemm chooses for ``args`` (a ``struct amsim_gemm_args *``) with an awake
    worker or not, as (kernel, swap, parallel); the binding's ready GEMMs hold one per state."""
    out = ffi.new("struct amsim_plan *")
    if lib.amsim_plan(lut, args, int(awake), out):
        raise ValueError("amsim_plan refused the GEMM's arguments")
    return _plan_tuple(out)


#: Where the binding asks for the plans of the fast kernels: the C planner's, or a fixed plan that
#: a test puts in its place (every plan gives the same bits).
plan = c_plan


def fast_plan(m_rows: int, k: int, n: int, bits: int, method: str = "auto", threads: int = 1, awake: bool = False,
              a_t: bool = False, b_t: bool = False, dp: bool = False) -> tuple[str, bool, bool | str]:
    """The C planner's fast plan for A (m_rows x k) times B (k x n) with a ``bits``-bit LUT, as
    (kernel, swap, parallel): ``method`` "auto" or the kernel forced, ``threads`` available,
    ``awake``: a worker is awake, ``a_t``/``b_t``: an operand is a transposed view, ``dp``: the
    LUT takes bfloat16 dot products (the second cost table)."""
    from . import engine

    ffi, lib = engine.load()
    out = ffi.new("struct amsim_plan *")
    lib.amsim_fast_plan(m_rows, k, n, bits, engine.KERNELS[method], threads, int(awake), int(a_t), int(b_t),
                        int(dp), out)
    return _plan_tuple(out)


def plan_features(method: str, rows: int, k: int, cols: int, bits: int, threads: int = 1, y_t: bool = False,
                  by_rows: bool | None = None, lib=None, ffi=None) -> dict:
    """What one fast plan does on its busiest thread, as counts of the cost items (the C planner's
    amsim_plan_counts; items it does not use are left out)."""
    if lib is None:
        from . import engine

        ffi, lib = engine.load()
    counts = ffi.new("struct amsim_costs *")
    lib.amsim_plan_counts(KERNEL_CODES[method], rows, k, cols, bits, threads, int(y_t),
                          -1 if by_rows is None else int(by_rows), counts)
    return {item: getattr(counts, item) for item in ITEMS if getattr(counts, item)}


def costs(dp: bool = False) -> dict:
    """The cost table the engine uses now (dp: for LUTs taken with bfloat16 dot products)."""
    from . import engine

    ffi, lib = engine.load()
    out = ffi.new("struct amsim_costs *")
    lib.amsim_get_costs(int(dp), out)
    return {item: getattr(out, item) for item in ITEMS}


# ----------------------------------------------------------------------------------------------
# The fit and its cache
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cache_path(variant: str):
    """Where the costs fitted for this CPU and this build of the engine are cached."""
    from . import engine

    key = hashlib.sha256("\0".join([_cpu_model(), engine.cpu_flags(), engine.library_path(variant).name,
                                    str(_FIT_VERSION)]).encode()).hexdigest()[:24]
    return cbuild.cache_dir() / f"planner-costs-{key}.json"


def install_costs(ffi, lib, variant: str) -> None:
    """Set the engine's costs: the cached fit for this CPU and build, or a quick fit now (cached)."""
    if os.environ.get("AMSIM_GEMM_COSTS") == "start":
        return
    path = cache_path(variant)
    try:
        fitted = json.loads(path.read_text())
        tables = [fitted["plain"], fitted.get("dp")]
    except (OSError, ValueError, KeyError):
        fitted = fit(ffi, lib, thorough=False)
        write_cache(path, fitted)
        tables = [fitted["plain"], fitted.get("dp")]
    set_costs(ffi, lib, *tables)


def set_costs(ffi, lib, plain: dict | None, dp: dict | None) -> None:
    """amsim_set_costs with dicts of ITEMS (None: the engine's start values)."""
    structs = []
    for table in (plain, dp):
        if table is None:
            structs.append(ffi.NULL)
            continue
        s = ffi.new("struct amsim_costs *")
        for item in ITEMS:
            setattr(s, item, float(table[item]))
        structs.append(s)
    lib.amsim_set_costs(*structs)


def write_cache(path, fitted: dict) -> None:
    """Write a fit atomically (a concurrent process sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(fitted, indent=1))
    os.replace(tmp, path)


#: How strongly the fit pulls each cost towards the engine's start value (relative error per unit
#: of relative timing error): the counts are correlated, and a 2-CPU virtual machine's timings
#: noisy, so that an unpulled fit trades one cost for another and misjudges the plans it was
#: not timed on.
PRIOR_WEIGHT = 0.5
#: Shapes (M, K, N) timed for the fit: the quick set covers every count (rows many and few,
#: columns in one vector and in several, K short and long) at up to a few million products each,
#: and small GEMMs, where handing half the work to an awake worker costs about what it saves.
QUICK_SHAPES = [(256, 128, 256), (16, 2000, 150), (150, 2000, 16), (4000, 32, 16), (16, 32, 4000),
                (64, 400, 120), (120, 400, 64), (6, 4000, 25), (64, 120, 84), (64, 84, 10)]
THOROUGH_SHAPES = [(1024, 256, 256), (256, 1024, 64), (64, 256, 1024), (25, 20000, 6), (6, 20000, 25),
                   (20000, 25, 6), (6, 25, 20000), (150, 4000, 16), (16, 4000, 150), (512, 64, 512),
                   (64, 400, 120), (120, 400, 64), (300, 300, 300), (40, 2000, 40), (2000, 40, 40),
                   (40, 40, 2000), (128, 128, 128), (4000, 150, 16), (20000, 6, 25), (4000, 16, 150),
                   (64, 120, 400), (512, 1024, 1024), (64, 84, 10), (64, 120, 84), (64, 256, 64)]


def _tables(thorough: bool) -> dict:
    """LUTs to fit on, by cost table: the exact product (entries that are not bfloat16 values) for
    the plain table, the same rounded to bfloat16 (which the kernels take with dot products, where
    the build has them) for the other. Computed here: no model needs compiling."""
    families = {}
    for key, bits_list in (("plain", (4, 6, 7, 8) if thorough else (7, 8)),
                           ("dp", (4, 6, 7) if thorough else (7,))):
        luts = []
        for bits in bits_list:
            f = 1 + np.arange(1 << bits, dtype=np.float64) / (1 << bits)
            table = np.outer(f, f).astype(np.float32)
            if key == "dp":
                table = (table.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
            luts.append((bits, table))
        families[key] = luts
    return families


def _best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class _Gemm:
    """One GEMM of random row-major operands, runnable with any plan through amsim_gemm_planned."""

    def __init__(self, ffi, lib, lut, m, k, n, rng):
        self.ffi, self.lib, self.lut = ffi, lib, lut
        self.a = rng.standard_normal((m, k)).astype(np.float32)
        self.b = rng.standard_normal((k, n)).astype(np.float32)
        self.c = np.empty((m, n), np.float32)
        g = self.args = ffi.new("struct amsim_gemm_args *")
        g.M, g.N, g.K = m, n, k
        g.a, g.ars, g.acs = ffi.from_buffer("float[]", self.a), k, 1
        g.b, g.brs, g.bcs = ffi.from_buffer("float[]", self.b), n, 1
        g.c, g.ldc = ffi.from_buffer("float[]", self.c), n
        g.kernel, g.threads = -1, 1
        self.plan = ffi.new("struct amsim_plan *")

    def time(self, kernel: str, swap: bool, threads: int, repeat: int, by_rows: int = -1) -> float:
        """Best time in ns of this GEMM with the given plan."""
        p = self.plan
        p.kernel, p.swap, p.threads, p.by_rows = KERNEL_CODES[kernel], int(swap), threads, by_rows
        self.args.threads = threads
        run = self.lib.amsim_gemm_planned
        return _best_of(lambda: run(self.lut, self.args, p), repeat) * 1e9


def _split_costs(ffi, lib, rng, repeat: int) -> dict:
    """ns per element of amsim_split_f32 on one thread, for a contiguous operand ("split") and a
    transposed view ("split_t"). Timed on their own: in a GEMM on one thread, splitting Y and
    preparing its columns for the lookups both grow with its size, and cannot be told apart."""
    from . import engine

    x = rng.standard_normal((512, 512)).astype(np.float32)
    scale, idx = np.empty(x.size, np.float32), np.empty(x.size, np.uint16)
    ps, pi, ranges = ffi.from_buffer("float[]", scale), ffi.from_buffer("uint16_t[]", idx), ffi.new("int32_t[2]")
    out = {}
    for name, view in (("split", x), ("split_t", x.T)):
        _, ptr, rs, cs = engine.strided(ffi, view)
        t = _best_of(lambda: lib.amsim_split_f32(ptr, 512, 512, rs, cs, 7, 0, 0, ps, pi, 0, 512, ranges), repeat)
        out[name] = t * 1e9 / x.size
    return out


def _fit_table(ffi, lib, luts, shapes, fixed, prior, weight, repeat, rng):
    """Least-squares fit of the items not in ``fixed`` to timings of every plan of ``shapes`` the
    planner chooses among (kernel, orientation, one thread or two split by rows or by tiles, run
    back to back so that the worker is awake: "threads_awake" is the two-thread plans' constant):
    relative errors, a per-call constant ("call"), rows pulling each item towards ``prior``
    (relative, by ``weight``), and no negative cost (an item fitted below zero is held at zero
    and the rest refitted). Returns (costs, worst slowdown of the fitted choice against the best
    timed plan, and where)."""
    from . import engine

    free = [item for item in ITEMS if item not in fixed and item != "threads"]
    rows, times, groups = [], [], []
    for bits, table in luts:
        lut = engine.Lut(ffi, lib, table, bits)
        for m, k, n in shapes:
            gemm = _Gemm(ffi, lib, lut.ptr, m, k, n, rng)
            for kernel in ("expand", "lookup"):
                for swap in (False, True):
                    r, c = (n, m) if swap else (m, n)
                    for threads, by_rows in ((1, -1), (2, 1), (2, 0)):
                        t = gemm.time(kernel, swap, threads, repeat, by_rows)
                        # row-major operands: the swapped plan's Y (A^T) is a transposed view
                        counts = plan_features(kernel, r, k, c, bits, threads, swap,
                                               None if by_rows < 0 else bool(by_rows), lib=lib, ffi=ffi)
                        if threads > 1:
                            counts["threads_awake"] = 1.0
                        rows.append(counts)
                        times.append(t)
                        groups.append((bits, m, k, n))
    y = np.array(times)
    x_free = np.array([[counts.get(item, 0.0) for item in free] + [1.0] for counts in rows])
    held = np.array([sum(fixed[item] * counts.get(item, 0.0) for item in fixed) for counts in rows])
    active = list(range(len(free) + 1))
    while True:
        a = x_free[:, active] / y[:, None]
        b = (y - held) / y
        reg_rows, reg_rhs = [], []
        for col, i in enumerate(active):
            if i < len(free):  # the prior: (c_i - prior_i) / prior_i small
                row = np.zeros(len(active))
                row[col] = weight / max(prior[free[i]], 1e-9)
                reg_rows.append(row)
                reg_rhs.append(weight)
        coef = np.linalg.lstsq(np.vstack([a, *reg_rows]), np.concatenate([b, reg_rhs]), rcond=None)[0]
        negative = [i for col, i in enumerate(active) if i < len(free) and coef[col] < 0]
        if not negative:
            break
        worst = min(negative, key=lambda i: coef[active.index(i)])
        active.remove(worst)
    fitted = dict.fromkeys(free, 0.0)
    for col, i in enumerate(active):
        if i < len(free):
            fitted[free[i]] = float(coef[col])

    def quality(table):
        """How much slower each timed GEMM ran with the plan the table picks than with the best."""
        predicted = [sum(table[item] * counts.get(item, 0.0) for item in table) for counts in rows]
        slowdowns = {}
        for group in sorted(set(groups)):
            members = [i for i, g in enumerate(groups) if g == group]
            chosen = min(members, key=lambda i: predicted[i])
            slowdowns[group] = times[chosen] / min(times[i] for i in members)
        worst = max(slowdowns, key=slowdowns.get)
        return {"max": round(slowdowns[worst], 3), "where": dict(zip(("bits", "m", "k", "n"), worst)),
                "geomean": round(float(np.exp(np.mean(np.log(list(slowdowns.values()))))), 3)}

    # On a busy machine a fit can weigh noise: it is kept where its choices, on the very timings
    # it was fitted to, are no worse than those of the start values (with the split timed here).
    result, start = {**fitted, **fixed}, {**{item: prior[item] for item in free}, **fixed}
    fit_quality, start_quality = quality(result), quality(start)
    if start_quality["geomean"] < fit_quality["geomean"]:
        return start, {**start_quality, "kept": "start values", "fit_geomean": fit_quality["geomean"]}
    return result, {**fit_quality, "kept": "fit", "start_geomean": start_quality["geomean"]}


def _pool_asleep(lib, samples: int) -> float:
    """"threads": the pool's cost for two parts after its workers slept (the median of
    amsim_pool_overhead_ns)."""
    asleep = []
    for _ in range(samples):
        time.sleep(0.005)
        asleep.append(lib.amsim_pool_overhead_ns(2, 50_000.0))
    return float(np.median(asleep))


def fit(ffi, lib, thorough: bool = False) -> dict:
    """Fit both cost tables on this machine (``thorough``: many shapes and repeats, for
    ``scripts/bench_gemm.py --calibrate``; else a few seconds' quick fit). Returns the cache's
    JSON object: "plain" and, where this build has dot products, "dp", plus how well each fit's
    choices did on the timed shapes."""
    rng = np.random.default_rng(0)
    repeat = 7 if thorough else 3
    fixed = _split_costs(ffi, lib, rng, repeat)
    shapes = THOROUGH_SHAPES if thorough else QUICK_SHAPES
    out = {"cpu": _cpu_model(), "fit": "thorough" if thorough else "quick",
           "date": datetime.date.today().isoformat()}
    families = _tables(thorough)
    if not lib.amsim_dot_products():
        families.pop("dp")
    for key, luts in families.items():
        prior = ffi.new("struct amsim_costs *")
        lib.amsim_default_costs(int(key == "dp"), prior)
        prior = {item: getattr(prior, item) for item in ITEMS}
        table, quality = _fit_table(ffi, lib, luts, shapes, fixed, prior, PRIOR_WEIGHT, repeat, rng)
        table["threads"] = _pool_asleep(lib, 50 if thorough else 8)
        out[key] = {item: round(table[item], 4) for item in ITEMS}
        out[key + "_choice_slowdown"] = quality
    return out
