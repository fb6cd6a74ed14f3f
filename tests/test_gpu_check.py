"""The prepared GPU check (scripts/gpu_check.sh) and its benchmark (scripts/bench_cuda.py): the parts
that need no GPU. On a GPU machine the check builds the kernels, runs the CUDA tests and times amsim
against cuBLAS; here its arguments, its plan, its refusal without a GPU and the benchmark's JSON are
checked, and the benchmark's calls of the integer GEMM run on the CPU emulation of the kernels."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amsim.gemm import cuda

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
STEPS = ["gpu", "environment", "setup", "build", "tests", "bench"]

sys.path.insert(0, str(SCRIPTS))
import bench_cuda  # noqa: E402
import benchenv  # noqa: E402


def gpu_check(*args, cwd=ROOT, **env):
    """Runs the check with ``env`` added to the environment (a value of None removes the variable)."""
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args], capture_output=True, text=True,
                          cwd=cwd, env=environ, timeout=120)


def planned_steps(stdout: str) -> dict[str, int]:
    """{step: at most so many seconds} from a dry run's plan, in order."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^step (\w+) +at most +(\d+) s", stdout, re.M)}


def fake_command(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return folder


# ---- scripts/gpu_check.sh: arguments and plan -----------------------------------------------------


def test_help_describes_every_option_and_exits_0():
    result = gpu_check("--help")
    assert result.returncode == 0
    for option in ("--out", "--budget", "--python", "--quick", "--skip-tests", "--skip-bench", "--dry-run",
                   "--prepare", "--python-version"):
        assert option in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--budget", "soon"], "--budget must be a whole number of seconds"),
    (["--out"], "--out needs a value"),
    (["--out", "--quick"], "--out needs a value"),
    (["--python-version", "3.12"], "--python-version applies to --prepare only"),
    (["--prepare", "--python-version", "3"], "--python-version must read like 3.12"),
    (["--python", "/nonexistent/python"], "'/nonexistent/python' is not a command"),
    (["positional"], "unknown argument 'positional'"),
])
def test_a_bad_argument_is_one_line_on_stderr_and_exit_2(args, message):
    result = gpu_check(*args, "--dry-run")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gpu_check: ")
    assert message in result.stderr


def test_dry_run_plans_every_step_in_order_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    result = gpu_check("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert list(planned_steps(result.stdout)) == STEPS
    assert f"output: {out} " in result.stdout
    assert "pytest" in result.stdout and "tests/test_cuda.py" in result.stdout
    assert "tests/test_cuda_int.py" in result.stdout  # every tests/test_cuda*.py, the integer GEMM's too
    assert "scripts/bench_cuda.py --budget" in result.stdout
    assert not out.exists()


def test_dry_run_leaves_out_the_skipped_steps_and_passes_quick_to_the_benchmark():
    result = gpu_check("--dry-run", "--skip-tests", "--quick")
    assert result.returncode == 0, result.stderr
    assert list(planned_steps(result.stdout)) == ["gpu", "environment", "setup", "build", "bench"]
    assert "step tests: skipped (--skip-tests)" in result.stdout
    assert re.search(r"bench_cuda\.py --budget \S+ --quick", result.stdout)
    assert "bench" not in planned_steps(gpu_check("--dry-run", "--skip-bench").stdout)


def test_output_goes_to_OUT_when_set_else_to_gpu_check_in_the_working_directory(tmp_path):
    assert f"output: {tmp_path / 'o'} " in gpu_check("--dry-run", OUT=str(tmp_path / "o")).stdout
    assert f"output: {tmp_path / 'gpu-check'} " in gpu_check("--dry-run", cwd=tmp_path, OUT=None).stdout
    assert f"output: {tmp_path / 'x'} " in gpu_check("--dry-run", "--out", "x", cwd=tmp_path, OUT="/elsewhere").stdout


def test_the_budget_is_shared_and_must_cover_the_minimum_of_every_step_chosen():
    refused = gpu_check("--dry-run", "--budget", "1")
    need = int(re.search(r"need at least (\d+) s", refused.stderr)[1])
    assert refused.returncode == 2
    assert gpu_check("--dry-run", "--budget", str(need - 1)).returncode == 2
    plan = planned_steps(gpu_check("--dry-run", "--budget", str(need)).stdout)
    assert list(plan) == STEPS and all(0 < seconds <= need for seconds in plan.values())
    fewer = gpu_check("--dry-run", "--budget", "1", "--skip-tests", "--skip-bench").stderr
    assert int(re.search(r"need at least (\d+) s", fewer)[1]) < need


@pytest.mark.parametrize("version", [None, "3.11"])
def test_prepare_downloads_binary_wheels_for_the_gpu_machines_python_into_whl(version):
    result = gpu_check("--prepare", "--dry-run", *(["--python-version", version] if version else []))
    assert result.returncode == 0, result.stderr
    command = result.stdout.splitlines()[-1]
    assert f"--python-version {version or '3.12'}" in command
    assert "--only-binary=:all:" in command and "--no-deps" in command and "-d .whl" in command
    # hypothesis, which tests/test_cuda_int.py draws its cases with, and its one dependency
    for package in ("cffi==", "pycparser==", "platformdirs==", "setuptools==", "hypothesis==", "sortedcontainers=="):
        assert package in command


# ---- scripts/gpu_check.sh: without a GPU ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_driver_it_says_so_exits_3_and_records_the_step(tmp_path):
    result = gpu_check("--out", str(tmp_path))
    assert result.returncode == 3
    assert "no NVIDIA GPU: nvidia-smi is not on PATH" in result.stderr
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["result"] == "no gpu" and summary["exit_code"] == 3
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("gpu", "failed")]
    assert summary["environment"] is None and summary["bench"] is None


def test_a_driver_that_fails_is_reported_in_nvidia_smis_words(tmp_path):
    bin_dir = fake_command(tmp_path / "bin", "nvidia-smi",
                           "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
                           "exit 9\n")
    result = gpu_check("--out", str(tmp_path / "out"), PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 3
    assert "no usable NVIDIA GPU: nvidia-smi failed (9): NVIDIA-SMI has failed" in result.stderr
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [{k: step[k] for k in ("name", "status", "exit_code", "log")} for step in summary["steps"]] == \
        [{"name": "gpu", "status": "failed", "exit_code": 9, "log": "gpu_check.log"}]
    assert "NVIDIA-SMI has failed" in (tmp_path / "out" / "gpu_check.log").read_text()


# ---- scripts/bench_cuda.py ------------------------------------------------------------------------


def rows(*ratios_by_shape):
    return [bench_cuda.result_row(shape, 4096, 4096, 4096, False, False, cublas_ms=2.0, amsim_ms=2.0 * ratio,
                                  gemm_ms=1.5 * ratio) for shape, ratio in ratios_by_shape]


def test_result_row_gives_device_times_ratios_and_throughput():
    row = bench_cuda.result_row("lenet5 fc1 forward", 64, 400, 120, False, True, cublas_ms=0.01, amsim_ms=0.05,
                                gemm_ms=0.03)
    assert row["ratio"] == pytest.approx(5.0) and row["gemm_ratio"] == pytest.approx(3.0)
    assert row["amsim_gmac_per_s"] == pytest.approx(64 * 400 * 120 / 0.05e-3 / 1e9)
    assert (row["M"], row["K"], row["N"], row["transpose_a"], row["transpose_b"]) == (64, 400, 120, False, True)


@pytest.mark.parametrize("ratio, met", [(1.5, True), (2.0, True), (7.9, False)])
def test_the_goal_is_judged_on_the_full_path_at_4096_cubed(ratio, met):
    report = bench_cuda.report({"gpu": "x"}, rows(("4096^3", ratio), ("1024^3", 30.0)), multiplier="mitchell M=7",
                               check={"passed": True})
    assert report["goal"]["shape"] == "4096^3" and report["goal"]["max_ratio"] == 2.0
    assert report["goal"]["ratio"] == pytest.approx(ratio) and report["goal"]["met"] is met
    assert report["max_ratio"] == pytest.approx(30.0)
    assert ("not met" in bench_cuda.goal_line(report)) is not met


def test_a_goal_shape_left_untimed_leaves_the_goal_open():
    report = bench_cuda.report({}, rows(("1024^3", 3.0)), multiplier="mitchell M=7", check=None,
                               not_timed=["4096^3"], error="4096^3: RuntimeError: out of memory")
    assert report["goal"]["met"] is None and report["goal"]["ratio"] is None
    assert report["not_timed"] == ["4096^3"] and report["error"].startswith("4096^3")
    assert "not timed" in bench_cuda.goal_line(report)
    assert bench_cuda.report({}, [], multiplier="m", check=None)["geomean_ratio"] is None


def test_the_report_is_plain_json_with_the_environment_anchors_and_results():
    env = {"gpu": {"gpus": [{"name": "NVIDIA H100"}], "driver": "580", "cuda_driver": "13.0"}}
    report = bench_cuda.report(env, rows(("4096^3", 3.0)), multiplier="mitchell M=7", check={"passed": True})
    assert json.loads(json.dumps(report)) == report
    assert report["benchmark"] == "gemm-cuda" and report["environment"] == env
    assert set(report["anchors"]) == {"ApproxTrain", "TFApprox"}
    assert report["results"][0]["shape"] == "4096^3" and report["check"] == {"passed": True}


def test_the_int_gemm_row_gives_its_time_ratio_and_throughput():
    row = bench_cuda.int_result_row(4096, 4096, 4096, bits=8, signed=True, accumulator="int32", cublas_ms=2.0,
                                    int_ms=5.0)
    assert row["ratio"] == pytest.approx(2.5) and row["shape"] == "4096x4096x4096"
    assert row["int_gmac_per_s"] == pytest.approx(4096**3 / 5e-3 / 1e9)
    assert (row["bits"], row["signed"], row["accumulator"]) == (8, True, "int32")


def test_the_report_carries_the_int_gemm_part_and_its_line_says_how_it_went():
    row = bench_cuda.int_result_row(4096, 4096, 4096, bits=8, signed=True, accumulator="int32", cublas_ms=2.0,
                                    int_ms=5.0)
    part = {"bits": 8, "signed": True, "check": {"passed": True}, "result": row, "error": None}
    report = bench_cuda.report({}, rows(("4096^3", 3.0)), multiplier="m", check=None, int_gemm=part)
    assert json.loads(json.dumps(report)) == report and report["int_gemm"] == part
    assert bench_cuda.int_line(report) == "int GEMM (8-bit signed, int32 sums) at 4096x4096x4096: 5.000 ms, " \
                                          "2.50x cuBLAS SGEMM"
    failed = {**part, "result": None, "error": "CudaError: amsim_cuda_int_gemm: CUDA error 1"}
    assert bench_cuda.int_line({**report, "int_gemm": failed}) == \
        "int GEMM: not timed (CudaError: amsim_cuda_int_gemm: CUDA error 1)"
    assert bench_cuda.report({}, [], multiplier="m", check=None)["int_gemm"] is None


class EmulatedDevice:
    """The benchmark's device interface (CupyDevice's) over the CPU emulation of the kernels: arrays in its
    device memory, numpy in cuBLAS's place, and the host's clock in place of CUDA events."""

    stream_ptr = None

    def __init__(self, lib):
        self.memory = cuda.Device(lib)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.memory.__exit__(*exc)

    def upload(self, host):
        host = np.ascontiguousarray(host)
        return self.memory.upload(host), host.shape, host.dtype

    def empty(self, shape, dtype):
        shape, dtype = ((shape,) if isinstance(shape, int) else tuple(shape)), np.dtype(dtype)
        return self.memory.empty(int(np.prod(shape)) * dtype.itemsize), shape, dtype

    def download(self, x):
        ptr, shape, dtype = x
        return self.memory.download(ptr, np.empty(shape, dtype))

    @staticmethod
    def ptr(x):
        return x[0]

    def matmul(self, a, b, out):
        result = np.ascontiguousarray(self.download(a) @ self.download(b), out[2])
        self.memory.check(self.memory.lib.amsim_cuda_to_device(out[0], result.ctypes.data, result.nbytes),
                          "amsim_cuda_to_device")

    def elapsed_ms(self, fn, calls):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) * 1e3


needs_emulation = pytest.mark.skipif(not (cuda.emulated() and cuda.available()),
                                     reason="the CPU emulation of the CUDA kernels is not in use "
                                            "(AMSIM_CUDA_EMULATION=1)")


@needs_emulation
def test_the_int_gemm_part_calls_the_kernel_as_int_matmul_does_and_times_it():
    lib = cuda.library()
    with EmulatedDevice(lib) as dev:
        check = bench_cuda.int_spot_check(lib, dev, 8, True)
        row = bench_cuda.time_int_gemm(lib, dev, 8, True, rounds=1, size=64)
    assert check["passed"] and {case["accumulator"] for case in check["cases"]} == {"int32", "int64"}
    assert (row["M"], row["accumulator"]) == (64, "int32") and row["int_gemm_ms"] > 0 and row["cublas_ms"] > 0


@needs_emulation
def test_the_int_gemm_check_fails_when_the_kernel_leaves_its_output_unwritten(monkeypatch):
    lib = cuda.library()
    with EmulatedDevice(lib) as dev:
        assert bench_cuda.int_spot_check(lib, dev, 8, True)["passed"]  # the same results, left in freed memory
        monkeypatch.setattr(bench_cuda.AmsimIntGemm, "__call__", lambda self: None)
        assert not bench_cuda.int_spot_check(lib, dev, 8, True)["passed"]


def float_check(lib, dev):
    from amsim import gemm

    mult = gemm.resolve("mitchell", 7)
    return bench_cuda.spot_check(lib, dev, mult, dev.upload(np.ascontiguousarray(mult.table, np.float32)))


@needs_emulation
def test_the_float_check_runs_both_paths_of_the_kernels_against_the_cpu_backend():
    lib = cuda.library()
    with EmulatedDevice(lib) as dev:
        check = float_check(lib, dev)
    assert check["passed"] and len(check["cases"]) == len(bench_cuda.CHECK_SHAPES)
    assert all(case["matmul_bits_equal"] and case["split_gemm_bits_equal"] for case in check["cases"])


@needs_emulation
@pytest.mark.parametrize("path, flag", [("__call__", "matmul_bits_equal"), ("gemm", "split_gemm_bits_equal")])
def test_the_float_check_fails_the_path_whose_kernel_leaves_its_output_unwritten(monkeypatch, path, flag):
    lib = cuda.library()
    with EmulatedDevice(lib) as dev:
        float_check(lib, dev)  # the same results, left in freed memory
        monkeypatch.setattr(bench_cuda.AmsimGemm, path, lambda self: None)
        check = float_check(lib, dev)
    assert not check["passed"] and not any(case[flag] for case in check["cases"])


def test_the_benchmark_without_a_gpu_says_so_in_one_line_and_exits_3():
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_cuda.py")], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "AMSIM_DISABLE_CUDA": "1"}, timeout=120)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == "bench_cuda: no CUDA GPU available: AMSIM_DISABLE_CUDA is set\n"


def test_the_environment_describes_the_gpu_and_toolkit_without_identifiers(tmp_path, monkeypatch):
    bin_dir = fake_command(tmp_path / "bin", "nvidia-smi", """case "$1" in
  --query-gpu=*) echo "NVIDIA H100 80GB HBM3, 580.159.04, 81559, 9.0" ;;
  *) echo "| NVIDIA-SMI 580.159.04      Driver Version: 580.159.04      CUDA Version: 13.0     |" ;;
esac
""")
    fake_command(tmp_path / "cuda" / "bin", "nvcc", 'echo "Cuda compilation tools, release 13.0, V13.0.88"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    gpu = benchenv.gpu_environment()
    assert gpu["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_capability": "9.0"}]
    assert (gpu["driver"], gpu["cuda_driver"], gpu["nvcc"], gpu["errors"]) == ("580.159.04", "13.0", "13.0.88", [])
    assert not re.search(r"uuid|serial|bus|host", json.dumps(gpu), re.I)


def test_the_environment_without_nvidia_smi_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    gpu = benchenv.gpu_environment()
    assert gpu["gpus"] == [] and gpu["driver"] is None
    assert "nvidia-smi not found" in gpu["errors"]


def test_bench_environment_prints_the_cpu_and_the_gpu_as_json():
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_cuda.py"), "--environment"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert {"cpu", "python", "gpu"} <= set(env) and "errors" in env["gpu"]
