"""Tests of the command line (``amsim``, ``generate-lut``).

Most tests call :func:`amsim.cli.main` in-process; the console scripts run as
real processes only where a process matters: their exit status, a model that
kills its process with a segmentation fault, and the compiled-model cache (a
fresh process has nothing in memory, so only the disk cache can spare a build).
"""

import json
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from amsim.lut import load
from amsim.models import EVOAPPROX_EXACT_PDK45
from cli_run import run

import reference_designs as ref

BIN = Path(sys.executable).parent

#: Monte Carlo size for the ``full`` statistics: small keeps tests fast.
SAMPLES = "20000"

#: Every built-in model: kind, widths as listed, parameters as listed (name=default[lo..hi]).
BUILTINS = {
    "exact": ("float", "1..23", "-"),
    "bf16_trunc": ("float", "1..23", "-"),
    "bf16_rne": ("float", "1..23", "-"),
    "at_mbm": ("float", "1, 3, 5, 7", "-"),
    "at_mitchell": ("float", "1..23", "-"),
    "exact_int": ("int", "1..32", "-"),
    "mitchell": ("int", "2..32", "-"),
    "mbm": ("int", "2..32", "t=0[0..31]"),
    "drum": ("int", "2..32", "k=6[2..32]"),
    "ilm": ("int", "2..32", "stages=1[0..3]"),
    "alm_soa": ("int", "2..32", "w=4[0..31]"),
    "bam": ("int", "1..32", "h=0[0..64] v=0[0..64]"),
    "mul8s_exact": ("int signed", "8", "-"),
    "mul8s_trunc": ("int signed", "8", "k=6[0..15]"),
    "mul8s_bam": ("int signed", "8", "h=2[0..8] v=6[0..15]"),
    "mul8s_log": ("int signed", "8", "-"),
}

#: The built-ins that lift to mantissa multipliers: every one but the signed integer circuits.
LIFTABLE = [name for name, (kind, _, _) in BUILTINS.items() if kind != "int signed"]

EVO_UNSIGNED = """\
/***
* This code is a part of EvoApproxLib library (ehw.fit.vutbr.cz/approxlib) distributed under The MIT License.
* When used, please cite the following article(s): V. Mrazek et al., a test circuit.
***/
// MAE% = 0.00 %
// MAE = 0
// WCE% = 0.00 %
// WCE = 0
// WCRE% = 0.00 %
// EP% = 0.00 %
// MRE% = 0.00 %
// MSE = 0
// PDK45_PWR = 0.391 mW
// PDK45_AREA = 709.5 um2
// PDK45_DELAY = 1.43 ns

#include <stdint.h>
#include <stdlib.h>

uint16_t mul8u_TEST(uint8_t A, uint8_t B) { return A * B; }
"""

EVO_SIGNED = """\
// MAE% = 0.00 %
// PDK45_PWR = 0.425 mW
// PDK45_AREA = 725.1 um2
// PDK45_DELAY = 1.38 ns
#include <stdint.h>

int16_t mul8s_T(int8_t A, int8_t B) { return A * B; }
"""

CRASHER = """\
/* @amsim
 * name: crasher
 * kind: int
 * bits: 2..16
 * description: exact, except that it writes through a NULL pointer for one operand
 */
#include <stdint.h>

uint64_t crasher(uint64_t a, uint64_t b)
{
    if (a == 131) {             /* reached when lifted to M = 7: operands are 128..255 */
        volatile uint64_t *p = 0;
        *p = b;
    }
    return a * b;
}
"""


def script(name, *args, cwd):
    """Run a console script as a real process in ``cwd`` (a temporary folder: a crash may leave a core)."""
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_one_line_error(rc, err):
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error" in lines[0]
    return lines[0]


def write_model(folder, filename, source):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(source)
    return path


# ==============================================================================================
# amsim models
# ==============================================================================================


def models_rows(out):
    """The ``amsim models`` table as {name: {column title: cell}}, cut at the header's column starts."""
    lines = out.splitlines()
    titles = ["model", "kind", "bits", "parameters", "cost (vs exact)", "description"]
    starts = [lines[0].index(t) for t in titles]
    assert starts == sorted(starts), lines[0]
    rows = {}
    for line in lines[2:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = dict(zip(titles, cells))
    return rows


def test_models_lists_every_builtin_once(capsys):
    rc, out, _ = run(["models"], capsys)
    assert rc == 0
    assert sorted(models_rows(out)) == sorted(BUILTINS)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_models_row_shows_kind_widths_and_parameters(name, capsys):
    _, out, _ = run(["models"], capsys)
    row = models_rows(out)[name]
    assert (row["kind"], row["bits"], row["parameters"]) == BUILTINS[name]
    assert row["description"]


@pytest.mark.parametrize("name, cost", [
    ("mbm", "power 0.61 area 0.65 @bits=8,t=0"),
    ("mbm", "power 0.26 area 0.36 @bits=16,t=0"),
    ("mbm", "power 0.157 area 0.25 @bits=16,t=8"),
    ("drum", "power 0.3 area 0.3 @bits=16,k=6"),
    ("exact", "power 1 area 1 delay 1"),
])
def test_models_row_shows_published_cost(name, cost, capsys):
    _, out, _ = run(["models"], capsys)
    assert cost in models_rows(out)[name]["cost (vs exact)"].split("; ")


@pytest.mark.parametrize("name", ["mitchell", "ilm", "alm_soa", "bam", "at_mbm", "at_mitchell", "bf16_rne"])
def test_models_row_shows_no_cost_where_none_is_published(name, capsys):
    _, out, _ = run(["models"], capsys)
    assert models_rows(out)[name]["cost (vs exact)"] == "-"


def test_models_json_parses_and_describes_every_builtin(capsys):
    rc, out, _ = run(["models", "--json"], capsys)
    assert rc == 0
    entries = {m["name"]: m for m in json.loads(out)}
    assert sorted(entries) == sorted(BUILTINS)
    for name, m in entries.items():
        assert set(m) >= {"name", "kind", "bits", "signed", "params", "description", "citation", "path", "costs"}
        assert m["kind"] + (" signed" if m["signed"] else "") == BUILTINS[name][0]
        assert m["signed"] is name.startswith("mul8s_")
        assert m["description"] and m["citation"]


def test_models_json_gives_parameter_default_and_range(capsys):
    _, out, _ = run(["models", "--json"], capsys)
    drum = {m["name"]: m for m in json.loads(out)}["drum"]
    assert drum["bits"] == list(range(2, 33))
    assert drum["params"]["k"]["default"] == 6
    assert drum["params"]["k"]["range"] == [2, 32]


def test_models_json_gives_cost_with_node_source_and_conditions(capsys):
    _, out, _ = run(["models", "--json"], capsys)
    mbm = {m["name"]: m for m in json.loads(out)}["mbm"]
    eight = [c for c in mbm["costs"] if c["conditions"] == {"bits": 8, "t": 0}]
    assert len(eight) == 1
    assert eight[0]["power"] == 0.61 and eight[0]["area"] == 0.65 and eight[0]["delay"] is None
    assert eight[0]["node"] == "TSMC 45 nm" and "Saadat" in eight[0]["source"]


# ==============================================================================================
# generate-lut
# ==============================================================================================


def table_rows(out):
    """(model label, reference) of every row of the statistics table printed by generate-lut."""
    lines = out.splitlines()
    head = [i for i, line in enumerate(lines) if line.split()[:1] == ["model"]]
    assert len(head) == 1, "expected exactly one statistics table"
    rows = []
    for line in lines[head[0] + 2:]:
        if not line.strip():
            break
        words = line.split()
        ref_index = next(i for i, w in enumerate(words) if w in ("truncated", "full"))
        rows.append((words[0], words[ref_index]))
    return rows


def test_generate_lut_writes_one_npz_per_builtin_and_one_table_with_both_references(tmp_path, capsys):
    rc, out, err = run(["generate-lut", "--bits", "7", "--out", str(tmp_path), "--samples", SAMPLES], capsys)
    assert rc == 0, err
    # names carry the resolved default parameters
    defaults = {"mbm": "_t0", "drum": "_k6", "ilm": "_stages1", "alm_soa": "_w4", "bam": "_h0_v0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}{defaults.get(name, '')}_m7.npz" for name in LIFTABLE)
    assert {load(p, bits=7).model for p in tmp_path.iterdir()} == set(LIFTABLE)
    rows = table_rows(out)
    assert sorted(rows) == sorted((name, r) for name in LIFTABLE for r in ("truncated", "full"))


def test_generate_lut_with_a_parameter_names_the_file_after_it(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "7", "--model", "drum", "--param", "k=6", "--out", str(tmp_path),
                      "--samples", SAMPLES], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drum_k6_m7.npz"]


def test_generate_lut_records_the_parameter_and_the_lifting(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "7", "--model", "drum", "--param", "k=6", "--out", str(tmp_path),
                      "--samples", SAMPLES], capsys)
    assert rc == 0, err
    lut = load(tmp_path / "drum_k6_m7.npz", bits=7, kind="mantissa")
    assert lut.model == "drum" and lut.params == {"k": 6}
    assert lut.meta["lifted"] is True and lut.meta["int_bits"] == 8


def test_generate_lut_lifted_table_is_the_8bit_model_scaled(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "7", "--model", "drum", "--param", "k=4", "--out", str(tmp_path),
                      "--samples", SAMPLES], capsys)
    assert rc == 0, err
    i, j = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    expected = ref.drum(128 + i, 128 + j, 8, k=4).astype(np.float64) / 2 ** 14
    assert np.array_equal(load(tmp_path / "drum_k4_m7.npz").table, expected)


def test_generate_lut_prints_the_files_it_wrote(tmp_path, capsys):
    _, out, _ = run(["generate-lut", "--bits", "5", "--model", "exact", "--out", str(tmp_path),
                     "--samples", SAMPLES], capsys)
    assert f"wrote 1 file(s) to {tmp_path}" in out


def test_generate_lut_console_script_writes_the_same_lut_as_amsim_generate_lut(tmp_path):
    args = ["--bits", "6", "--model", "mitchell", "--samples", SAMPLES, "--seed", "3"]
    a = script("amsim", "generate-lut", *args, "--out", tmp_path / "a", cwd=tmp_path)
    b = script("generate-lut", *args, "--out", tmp_path / "b", cwd=tmp_path)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout.replace(str(tmp_path / "a"), "OUT") == b.stdout.replace(str(tmp_path / "b"), "OUT")
    lut_a, lut_b = load(tmp_path / "a" / "mitchell_m6.npz"), load(tmp_path / "b" / "mitchell_m6.npz")
    assert lut_a.same_table(lut_b) and lut_a.stats == lut_b.stats


def test_generate_lut_console_script_refuses_bad_input_as_amsim_generate_lut(tmp_path):
    out = tmp_path / "out"
    args = ["--bits", "6", "--model", "mitchell", "--model", "at_mbm", "--out", out]  # at_mbm has no M = 6
    a = script("amsim", "generate-lut", *args, cwd=tmp_path)
    b = script("generate-lut", *args, cwd=tmp_path)
    assert a.returncode == b.returncode != 0
    line_a = assert_one_line_error(a.returncode, a.stderr)
    line_b = assert_one_line_error(b.returncode, b.stderr)
    assert line_a.split("error:", 1)[1] == line_b.split("error:", 1)[1]
    assert "at_mbm" in line_b and "1, 3, 5, 7" in line_b
    assert not out.exists()  # refused before any work


# ==============================================================================================
# amsim stats
# ==============================================================================================


def stats_json(argv, capsys):
    rc, out, err = run(["stats", *argv, "--json"], capsys)
    assert rc == 0, err
    return json.loads(out)


def test_stats_float_mitchell_at_7_bits_reproduces_the_published_mean_error(capsys):
    result = stats_json(["--model", "mitchell", "--bits", "7", "--float"], capsys)
    assert result["reference"] == "truncated"
    assert result["exhaustive"] is True and result["pairs"] == 1 << 14
    assert result["mean_abs_re"] == pytest.approx(0.038485, abs=1e-6)


def test_stats_float_mitchell_at_7_bits_peaks_at_minus_one_ninth(capsys):
    result = stats_json(["--model", "mitchell", "--bits", "7", "--float"], capsys)
    assert result["max_abs_re"] == pytest.approx(1 / 9, abs=1e-12)
    assert result["min_re"] == pytest.approx(-1 / 9, abs=1e-12)
    assert result["max_re"] <= 0.0


def test_stats_full_reference_reports_samples_and_seed(capsys):
    result = stats_json(["--model", "mitchell", "--bits", "7", "--float", "--reference", "full",
                         "--samples", SAMPLES, "--seed", "1"], capsys)
    assert result["reference"] == "full"
    assert result["exhaustive"] is False
    assert result["pairs"] == result["samples"] == 20000
    assert result["seed"] == 1


def test_stats_full_reference_is_reproducible_for_a_seed(capsys):
    argv = ["--model", "mitchell", "--bits", "7", "--float", "--reference", "full", "--samples", SAMPLES,
            "--seed", "1"]
    first = run(["stats", *argv, "--json"], capsys)
    second = run(["stats", *argv, "--json"], capsys)
    assert first[0] == 0 and first == second


def test_stats_full_reference_depends_on_the_seed(capsys):
    argv = ["--model", "mitchell", "--bits", "7", "--float", "--reference", "full", "--samples", SAMPLES]
    one = stats_json([*argv, "--seed", "1"], capsys)
    two = stats_json([*argv, "--seed", "2"], capsys)
    assert one["mean_abs_re"] != two["mean_abs_re"]


def test_stats_integer_model_is_exhaustive_over_all_8bit_pairs(capsys):
    result = stats_json(["--model", "mbm", "--bits", "8"], capsys)
    assert result["reference"] == "integer"
    assert result["exhaustive"] is True
    assert result["pairs"] == 65536
    assert result["nmed_denominator"] == 255.0 ** 2
    assert "samples" not in result


def test_stats_zeros_as_exact_scales_relative_metrics_by_the_nonzero_share(capsys):
    plain = stats_json(["--model", "mitchell", "--bits", "8"], capsys)
    zeros = stats_json(["--model", "mitchell", "--bits", "8", "--zeros-as-exact"], capsys)
    share = 255 * 255 / 65536  # pairs with a nonzero exact product
    assert zeros["mean_abs_re"] == pytest.approx(plain["mean_abs_re"] * share, rel=1e-12)
    assert zeros["mean_re"] == pytest.approx(plain["mean_re"] * share, rel=1e-12)
    assert zeros["max_abs_re"] == plain["max_abs_re"]
    assert zeros["mae"] == plain["mae"]  # absolute metrics are over all pairs either way


def test_stats_zeros_as_exact_is_reported(capsys):
    zeros = stats_json(["--model", "mitchell", "--bits", "8", "--zeros-as-exact"], capsys)
    assert zeros["zeros_as_exact"] is True


def test_stats_text_output_names_the_monte_carlo_set(capsys):
    rc, out, _ = run(["stats", "--model", "mitchell", "--bits", "7", "--float", "--reference", "full",
                      "--samples", SAMPLES, "--seed", "5"], capsys)
    assert rc == 0
    assert "20000 pairs, seed 5" in out


# ==============================================================================================
# Bad input: one line on stderr, non-zero exit, no traceback
# ==============================================================================================


def test_unknown_model_is_refused_with_the_known_ones(capsys):
    rc, _, err = run(["stats", "--model", "nosuch", "--bits", "8"], capsys)
    line = assert_one_line_error(rc, err)
    assert "nosuch" in line
    assert all(name in line for name in BUILTINS)


def test_unknown_model_in_generate_lut_is_refused(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--model", "nosuch", "--out", str(tmp_path)], capsys)
    assert "nosuch" in assert_one_line_error(rc, err)


@pytest.mark.parametrize("command", [["stats"], ["generate-lut", "--out", "OUT"]])
def test_width_the_model_does_not_support_is_refused(command, tmp_path, capsys):
    argv = [w.replace("OUT", str(tmp_path)) for w in command] + ["--model", "at_mbm", "--bits", "4"]
    rc, _, err = run(argv, capsys)
    line = assert_one_line_error(rc, err)
    assert "at_mbm" in line and "4" in line and "1, 3, 5, 7" in line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["stats", "--bits", "8"], ["generate-lut", "--bits", "7", "--out", "OUT"]])
def test_parameter_out_of_range_is_refused_with_the_range(command, tmp_path, capsys):
    argv = [w.replace("OUT", str(tmp_path)) for w in command] + ["--model", "drum", "--param", "k=99"]
    rc, _, err = run(argv, capsys)
    line = assert_one_line_error(rc, err)
    assert "k=99" in line and "2..32" in line


@pytest.mark.parametrize("command", [["stats", "--bits", "8"], ["generate-lut", "--bits", "7", "--out", "OUT"]])
def test_unknown_parameter_name_is_refused(command, tmp_path, capsys):
    argv = [w.replace("OUT", str(tmp_path)) for w in command] + ["--model", "drum", "--param", "q=3"]
    rc, _, err = run(argv, capsys)
    assert "'q'" in assert_one_line_error(rc, err)


@pytest.mark.parametrize("param", ["k6", "k=", "=6", "k=six"])
def test_malformed_param_is_refused_in_one_line(param, capsys):
    rc, _, err = run(["stats", "--model", "drum", "--bits", "8", "--param", param], capsys)
    assert param in assert_one_line_error(rc, err)


def test_approxtrain_format_beyond_7_bits_is_refused(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--format", "approxtrain", "--bits", "8", "--out", str(tmp_path)], capsys)
    assert "M <= 7" in assert_one_line_error(rc, err)
    assert not any(tmp_path.iterdir())


def test_tfapprox_format_at_7_bits_is_refused(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--format", "tfapprox", "--bits", "7", "--out", str(tmp_path)], capsys)
    assert "--bits 8" in assert_one_line_error(rc, err)
    assert not any(tmp_path.iterdir())


def test_output_folder_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    rc, _, err = run(["generate-lut", "--bits", "5", "--model", "exact", "--out", str(not_a_folder),
                      "--samples", SAMPLES], capsys)
    assert str(not_a_folder) in assert_one_line_error(rc, err)


def test_c_model_with_a_syntax_error_is_refused_with_file_and_line(tmp_path, capsys):
    write_model(tmp_path / "models", "broken.c", """\
/* @amsim
 * name: broken
 * kind: int
 * bits: 2..16
 */
#include <stdint.h>

uint64_t broken(uint64_t a, uint64_t b)
{
    return a * b +;
}
""")
    rc, _, err = run(["stats", "--models-dir", str(tmp_path / "models"), "--model", "broken", "--bits", "8"],
                     capsys)
    assert "broken.c:10" in assert_one_line_error(rc, err)


def test_c_model_with_a_syntax_error_fails_generate_lut_by_name(tmp_path, capsys):
    write_model(tmp_path / "models", "broken.c",
                "/* @amsim\n * name: broken\n * kind: float\n */\nfloat broken(float a, float b) { return a * }\n")
    rc, _, err = run(["generate-lut", "--bits", "7", "--models-dir", str(tmp_path / "models"), "--model", "broken",
                      "--out", str(tmp_path / "out"), "--samples", SAMPLES], capsys)
    line = assert_one_line_error(rc, err)
    assert "broken.c:5" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind, definition, expected", [
    ("float", "double odd(double a, double b) { return a * b; }", "float odd(float a, float b)"),
    ("float", "float odd(float a) { return a; }", "float odd(float a, float b)"),
    ("int", "uint64_t odd(float a, float b) { return a * b; }", "uint64_t odd(uint64_t a, uint64_t b)"),
])
def test_model_with_the_wrong_prototype_is_refused_with_the_expected_one(kind, definition, expected, tmp_path,
                                                                         capsys):
    write_model(tmp_path, "odd.c", f"/* @amsim\n * name: odd\n * kind: {kind}\n */\n#include <stdint.h>\n"
                                   f"{definition}\n")
    rc, _, err = run(["stats", "--models-dir", str(tmp_path), "--model", "odd", "--bits", "7"], capsys)
    line = assert_one_line_error(rc, err)
    assert "odd.c" in line and expected in line


def test_model_file_without_its_function_is_refused(tmp_path, capsys):
    write_model(tmp_path, "lonely.c", "/* @amsim\n * name: lonely\n * kind: int\n */\n#include <stdint.h>\n"
                                      "uint64_t other(uint64_t a, uint64_t b) { return a * b; }\n")
    rc, _, err = run(["stats", "--models-dir", str(tmp_path), "--model", "lonely", "--bits", "8"], capsys)
    line = assert_one_line_error(rc, err)
    assert "lonely.c" in line and "'lonely'" in line and "uint64_t lonely(uint64_t a, uint64_t b)" in line


def test_missing_models_dir_is_refused(tmp_path, capsys):
    rc, _, err = run(["models", "--models-dir", str(tmp_path / "absent")], capsys)
    assert "absent" in assert_one_line_error(rc, err)


# ==============================================================================================
# Crash isolation (a real process: the model really segfaults)
# ==============================================================================================


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    write_model(root / "models", "crasher.c", CRASHER)
    out = root / "out"
    result = script("generate-lut", "--bits", "7", "--models-dir", root / "models", "--model", "crasher",
                    "--model", "exact_int", "--out", out, "--samples", SAMPLES, cwd=root)
    return result, out


def test_crashing_model_makes_generate_lut_exit_nonzero(crash_run):
    result, _ = crash_run
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_crashing_model_is_reported_by_name(crash_run):
    result, _ = crash_run
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "crasher" in lines[0] and "crash" in lines[0].replace("crasher", "")


def test_crashing_model_does_not_stop_the_others(crash_run):
    result, out = crash_run
    lut = load(out / "exact_int_m7.npz", bits=7)
    assert np.array_equal(lut.table, ref.exact_table(7))
    assert "exact_int" in result.stdout


def test_crashing_model_leaves_no_file_behind(crash_run):
    _, out = crash_run
    assert sorted(p.name for p in out.iterdir()) == ["exact_int_m7.npz"]


# ==============================================================================================
# Compiled-model cache
# ==============================================================================================


def shared_objects(folder):
    return sorted(p.name for p in Path(folder).rglob("*" + sysconfig.get_config_var("EXT_SUFFIX")))


@pytest.fixture
def logged_compiler(tmp_path):
    """Environment for a fresh compiled-model cache, with a C compiler that logs each of its calls.

    Real processes, so that nothing survives in memory from one run to the next.
    """
    log = tmp_path / "compiler.log"
    real = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    wrapper = tmp_path / "cc-logged"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\nexec {shlex.join(real)} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "AMSIM_CACHE_DIR": str(tmp_path / "cache"), "CC": str(wrapper)}

    def compiler_calls():
        return len(log.read_text().splitlines()) if log.exists() else 0

    return env, tmp_path / "cache", compiler_calls


def amsim_stats(env, *args):
    result = subprocess.run([str(BIN / "amsim"), "stats", *args, "--json"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_first_run_builds_one_shared_object_per_configuration(logged_compiler):
    env, cache, compiler_calls = logged_compiler
    amsim_stats(env, "--model", "drum", "--bits", "8", "--param", "k=3")
    assert len(shared_objects(cache)) == 1
    assert compiler_calls() >= 1


def test_second_identical_run_compiles_nothing(logged_compiler):
    env, cache, compiler_calls = logged_compiler
    first = amsim_stats(env, "--model", "drum", "--bits", "8", "--param", "k=3")
    built, calls = shared_objects(cache), compiler_calls()
    second = amsim_stats(env, "--model", "drum", "--bits", "8", "--param", "k=3")
    assert second == first
    assert compiler_calls() == calls
    assert shared_objects(cache) == built
    assert sorted(p.name for p in cache.iterdir()) == built  # no build folder left behind


def test_another_parameter_value_builds_another_shared_object(logged_compiler):
    env, cache, _ = logged_compiler
    amsim_stats(env, "--model", "drum", "--bits", "8", "--param", "k=3")
    amsim_stats(env, "--model", "drum", "--bits", "8", "--param", "k=4")
    assert len(shared_objects(cache)) == 2


# ==============================================================================================
# EvoApproxLib files without an @amsim block
# ==============================================================================================


@pytest.fixture
def evo_dir(tmp_path):
    folder = tmp_path / "evo"
    write_model(folder, "mul8u_TEST.c", EVO_UNSIGNED)
    write_model(folder, "mul8s_T.c", EVO_SIGNED)
    return folder


def evo_entries(evo_dir, capsys):
    rc, out, err = run(["models", "--models-dir", str(evo_dir), "--json"], capsys)
    assert rc == 0, err
    return {m["name"]: m for m in json.loads(out)}


def test_evoapprox_file_is_listed_as_an_unsigned_8bit_int_model(evo_dir, capsys):
    entry = evo_entries(evo_dir, capsys)["mul8u_TEST"]
    assert entry["kind"] == "int" and entry["bits"] == [8] and entry["signed"] is False
    assert entry["params"] == {}


def test_evoapprox_file_keeps_its_absolute_pdk45_figures(evo_dir, capsys):
    entry = evo_entries(evo_dir, capsys)["mul8u_TEST"]
    assert [c["absolute"] for c in entry["costs"]] == [{"power_mw": 0.391, "area_um2": 709.5, "delay_ns": 1.43}]
    assert "45" in entry["costs"][0]["node"]
    # Relative figures come from EvoApproxLib's own exact circuit's header (docs/designs.md), never a default.
    exact_power_mw = EVOAPPROX_EXACT_PDK45[(8, False)][1]
    assert entry["costs"][0]["power"] == pytest.approx(0.391 / exact_power_mw)


def test_evoapprox_signed_file_is_listed_as_signed(evo_dir, capsys):
    entry = evo_entries(evo_dir, capsys)["mul8s_T"]
    assert entry["kind"] == "int" and entry["bits"] == [8] and entry["signed"] is True


def test_evoapprox_file_lifts_into_the_exact_bfloat16_lut(evo_dir, tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "7", "--models-dir", str(evo_dir), "--model", "mul8u_TEST",
                      "--out", str(tmp_path / "out"), "--samples", SAMPLES], capsys)
    assert rc == 0, err
    lut = load(tmp_path / "out" / "mul8u_TEST_m7.npz", bits=7, kind="mantissa")
    assert np.array_equal(lut.table, ref.exact_table(7))
    assert lut.meta["lifted"] is True and lut.meta["int_bits"] == 8
    assert lut.stats["truncated"]["max_abs_re"] == 0.0


def test_evoapprox_signed_file_gets_signed_integer_statistics(evo_dir, capsys):
    result = stats_json(["--models-dir", str(evo_dir), "--model", "mul8s_T", "--bits", "8"], capsys)
    assert result["reference"] == "integer"
    assert result["exhaustive"] is True and result["pairs"] == 65536
    # A*B on int8 operands is exact only if the operands are read as signed.
    assert result["error_rate"] == 0.0 and result["wce"] == 0.0
    assert result["nmed_denominator"] == 2.0 ** 14  # largest signed 8x8 product magnitude


def test_evoapprox_signed_file_cannot_be_lifted_to_a_mantissa_lut(evo_dir, tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "7", "--models-dir", str(evo_dir), "--model", "mul8s_T",
                      "--out", str(tmp_path / "out")], capsys)
    assert "signed" in assert_one_line_error(rc, err)
