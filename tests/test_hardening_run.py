"""A ``generate-lut`` run ends cleanly however it is ended, and a model that never returns cannot hang it.

Signals: SIGINT, SIGTERM and SIGHUP to the parent end the whole run (workers stopped, no
temporary file, a non-zero status); SIGKILL, which no handler sees, still takes the workers with
it (Linux). Time limits: a model past ``--timeout`` is stopped and reported by name, like a crash.

The hanging model prints its process id on its stdout (the pipe the test reads) before it spins,
so the test knows a worker is busy in C code without sleeping; the pipe reaches end-of-file only
once every process holding it, workers included, has ended.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amsim import generate
from amsim.errors import ModelTimedOut, RangeError

BIN = Path(sys.executable).parent

HANG = """\
/* @amsim
 * name: hang
 * kind: int
 * bits: 2..8
 * description: says which process it runs in, then never returns
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

uint64_t hang(uint64_t a, uint64_t b)
{
    static int told;
    if (!told) {
        told = 1;
        dprintf(1, "%d\\n", (int)getpid());
    }
    for (volatile uint64_t spin = 0;; ++spin) {
    }
    return a * b;
}
"""


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hang-models")
    (folder / "hang.c").write_text(HANG)
    return folder


def start_run(models_dir, out, *extra):
    """Start ``generate-lut`` with the hanging model and wait until a worker is inside it: (process, worker pid)."""
    proc = subprocess.Popen([str(BIN / "generate-lut"), "--bits", "2", "--models-dir", str(models_dir),
                             "--model", "hang", "--out", str(out), "--samples", "1000", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out.parent)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        pytest.fail(f"the hanging model did not start: {line!r} {proc.communicate()[1]}")
    return proc, int(line)


def is_running(pid) -> bool:
    """True while ``pid`` exists and is not a zombie (one waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_to_generate_lut_ends_the_run_with_its_workers(sig, models_dir, tmp_path):
    out = tmp_path / "out"
    proc, worker = start_run(models_dir, out)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)  # end-of-file on stdout: the worker has ended too
    except subprocess.TimeoutExpired:
        os.kill(worker, signal.SIGKILL)
        proc.kill()
        pytest.fail(f"{sig.name} left the worker {worker} running")
    assert proc.returncode != 0
    assert not is_running(worker)
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []  # no LUT, no temporary file


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_do_not_outlive_a_killed_generate_lut(models_dir, tmp_path):
    out = tmp_path / "out"
    proc, worker = start_run(models_dir, out)
    proc.kill()  # SIGKILL: no handler runs in the parent; the kernel ends the worker
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"the worker {worker} outlived its killed parent")
    assert proc.returncode == -signal.SIGKILL


def test_model_past_the_timeout_is_reported_by_name_and_the_others_are_written(models_dir, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "generate-lut"), "--bits", "2", "--models-dir", str(models_dir),
                             "--model", "hang", "--model", "exact_int", "--out", str(out), "--samples", "1000",
                             "--timeout", "2", "--jobs", "1"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hang" in lines[0] and "timed out" in lines[0], result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["exact_int_m2.npz"]
    assert "wrote 1 file(s)" in result.stdout


def _forever():
    while True:
        pass


def _answer():
    return 42


def test_run_batch_stops_a_job_past_its_timeout_and_keeps_the_others():
    (_, slow), (_, fast) = generate.run_batch([("slow", _forever, (), {}), ("fast", _answer, (), {})],
                                              max_parallel=2, timeout=0.5)
    assert isinstance(slow, ModelTimedOut) and "slow" in str(slow) and "timed out" in str(slow)
    assert fast == 42


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "1", True])
def test_run_batch_refuses_a_timeout_that_is_not_a_positive_number(timeout):
    with pytest.raises(RangeError, match="timeout"):
        generate.run_batch([("x", _answer, (), {})], timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_a_lut_is_written_leaves_no_temporary_file(sig, tmp_path):
    out = tmp_path / "out"
    # In a process of its own: without the handlers, the signal would end the test run itself.
    code = textwrap.dedent(f"""\
        import os, signal, sys
        from amsim import cli

        def fsync_then_signal(fd):  # the signal arrives while the temporary file exists
            os.kill(os.getpid(), signal.{sig.name})

        os.fsync = fsync_then_signal
        sys.exit(cli.main(["generate-lut", "--bits", "2", "--model", "exact_int", "--out", {str(out)!r},
                           "--samples", "1000"]))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 128 + sig, result.stderr
    assert list(out.iterdir()) == []
    assert f"ended by {sig.name}" in result.stderr and "Traceback" not in result.stderr
