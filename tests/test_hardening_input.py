"""Bad input gets one clear line, never a traceback, a silent overwrite or a wrong result.

Model names become file names; two models must not write one file; an unsigned model's results
must fit its width; LUT arrays must hold products; every count (threads, samples, seed, time limit)
is checked; and ``stats --samples`` leaves exhaustive statistics exhaustive.
"""

import json
import textwrap

import numpy as np
import pytest

import amsim
from amsim import generate, stats, sweep
from amsim.errors import LUTError, ModelError, RangeError, ResultRangeError
from amsim.lut import LUT
from amsim.models import builtin_models_dir
from cli_run import run

SAMPLES = "2000"


def one_line_error(rc, err) -> str:
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error" in lines[0]
    return lines[0]


def int_model(folder, filename, *, name, body="return a * b;", extra=""):
    """Write an unsigned integer model; ``extra`` adds lines to its @amsim block."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(textwrap.dedent(f"""\
        /* @amsim
         * name: {name}
         * function: mul
         * kind: int
         * bits: 2..8
        {extra} */
        #include <stdint.h>
        uint64_t mul(uint64_t a, uint64_t b) {{ {body} }}
        """))
    return path


# ==============================================================================================
# Model names are file names
# ==============================================================================================


@pytest.mark.parametrize("name", ["../x", "a/b", "x.y", "9lives", "drüm", "a b"])
def test_model_name_that_is_not_an_identifier_is_refused_with_file_and_line(name, tmp_path):
    path = int_model(tmp_path, "bad.c", name=name)
    with pytest.raises(ModelError, match=rf"{path}:2: name .* must be an identifier"):
        amsim.load_model(path)


def test_approxtrain_stem_that_is_not_an_identifier_is_refused_with_file_and_line(tmp_path):
    path = int_model(tmp_path, "bad.c", name="fine", extra=" * approxtrain: ../../MBM\n")
    with pytest.raises(ModelError, match=rf"{path}:6: approxtrain"):
        amsim.load_model(path)


def test_generate_lut_writes_nothing_outside_out_for_a_model_named_like_a_path(tmp_path, capsys):
    int_model(tmp_path / "models", "evil.c", name="../evil")
    rc, _, err = run(["generate-lut", "--bits", "3", "--models-dir", str(tmp_path / "models"),
                      "--out", str(tmp_path / "out"), "--samples", SAMPLES], capsys)
    assert "must be an identifier" in one_line_error(rc, err)
    assert list(tmp_path.glob("*evil*")) == []


# ==============================================================================================
# Two models, one file name
# ==============================================================================================


def test_the_same_model_selected_twice_is_refused(tmp_path, capsys):
    rc, _, err = run(["generate-lut", "--bits", "3", "--model", "drum", "--model", "drum",
                      "--out", str(tmp_path)], capsys)
    assert "selected twice" in one_line_error(rc, err)


def test_two_models_that_would_write_one_file_are_refused_before_any_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generate, "run_batch", lambda *a, **k: pytest.fail("swept despite the clash"))
    mine = int_model(tmp_path / "models", "my_drum.c", name="drum", extra=" * param: k default=6 range=2..8\n")
    rc, _, err = run(["generate-lut", "--bits", "3", "--model", "drum", "--model", str(mine),
                      "--out", str(tmp_path / "out")], capsys)
    line = one_line_error(rc, err)
    assert "both write" in line and "drum_k6_m3.npz" in line
    assert not (tmp_path / "out").exists()


def test_outputs_that_differ_only_in_case_are_refused(tmp_path, capsys):
    int_model(tmp_path / "models", "lower.c", name="twin")
    int_model(tmp_path / "models", "upper.c", name="TWIN")
    rc, _, err = run(["generate-lut", "--bits", "3", "--models-dir", str(tmp_path / "models"), "--model", "twin",
                      "--model", "TWIN", "--out", str(tmp_path / "out")], capsys)
    assert "both write" in one_line_error(rc, err)


def test_user_model_hiding_a_builtin_is_warned_about_and_listed(tmp_path, capsys):
    int_model(tmp_path / "models", "mine.c", name="mitchell")
    rc, out, err = run(["models", "--models-dir", str(tmp_path / "models")], capsys)
    assert rc == 0
    assert "warning" in err and "mitchell" in err and "mine.c" in err
    assert "hides" in out and "mine.c" in out
    rc, out, _ = run(["models", "--json", "--models-dir", str(tmp_path / "models")], capsys)
    listed = {m["name"]: m for m in json.loads(out)}
    assert listed["mitchell"]["path"].endswith("mine.c")
    assert listed["mitchell"]["shadows"] == [str(builtin_models_dir().resolve() / "mitchell.c")]
    assert listed["drum"]["shadows"] == []


def test_generate_lut_warns_when_the_selected_model_hides_a_builtin(tmp_path, capsys):
    int_model(tmp_path / "models", "mine.c", name="mitchell")
    rc, _, err = run(["generate-lut", "--bits", "2", "--models-dir", str(tmp_path / "models"), "--model",
                      "mitchell", "--out", str(tmp_path / "out"), "--samples", SAMPLES], capsys)
    assert rc == 0
    assert "warning" in err and "hides" in err


# ==============================================================================================
# Results an unsigned n-bit multiplier cannot return
# ==============================================================================================


@pytest.mark.parametrize("body, value", [("return a == 5 && b == 6 ? UINT64_MAX : a * b;", "18446744073709551615"),
                                         ("return a == 5 && b == 6 ? (uint64_t)1 << 6 : a * b;", "64")])
def test_unsigned_result_beyond_2n_bits_is_refused_with_the_operands(body, value, tmp_path):
    cm = amsim.load_model(int_model(tmp_path, "wild.c", name="wild", body=body)).compile(3)
    with pytest.raises(ResultRangeError, match=rf"'wild' .*returned {value} for operands \(5, 6\)"):
        sweep.integer_table(cm)


def test_lifted_lut_of_an_unsigned_model_with_a_wild_result_is_refused(tmp_path):
    model = amsim.load_model(int_model(tmp_path, "wild.c", name="wild",
                                       body="return a == 5 && b == 6 ? UINT64_MAX : a * b;"))
    with pytest.raises(ResultRangeError, match=r"operands \(5, 6\)"):
        generate.mantissa_lut(model, 2, samples=1000)


def test_generate_lut_reports_a_wild_result_by_model_name(tmp_path, capsys):
    int_model(tmp_path / "models", "wild.c", name="wild", body="return a == 5 && b == 6 ? UINT64_MAX : a * b;")
    rc, _, err = run(["generate-lut", "--bits", "2", "--models-dir", str(tmp_path / "models"), "--model", "wild",
                      "--model", "exact_int", "--out", str(tmp_path / "out"), "--samples", SAMPLES], capsys)
    assert "wild" in one_line_error(rc, err) and "(5, 6)" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["exact_int_m2.npz"]


@pytest.mark.parametrize("samples", [None, 5000])
def test_integer_statistics_of_an_unsigned_model_with_a_wild_result_are_refused(samples, tmp_path):
    cm = amsim.load_model(int_model(tmp_path, "wild.c", name="wild",
                                    body="return a == 5 ? UINT64_MAX : a * b;")).compile(3)
    with pytest.raises(ResultRangeError, match=r"returned 18446744073709551615 for operands \(5, \d\)"):
        stats.int_stats(cm, samples=samples, seed=1)


def test_stats_reports_a_wild_result_in_one_line(tmp_path, capsys):
    path = int_model(tmp_path, "wild.c", name="wild", body="return a == 5 && b == 6 ? UINT64_MAX : a * b;")
    rc, _, err = run(["stats", "--model", str(path), "--bits", "4"], capsys)
    assert "returned 18446744073709551615 for operands (5, 6)" in one_line_error(rc, err)


def test_a_model_declared_signed_may_return_negative_values(tmp_path):
    path = int_model(tmp_path, "neg.c", name="neg", extra=" * signed: yes\n", body="return (uint64_t)-1;")
    table = sweep.integer_table(amsim.load_model(path).compile(3))
    assert (table == -1).all()


# ==============================================================================================
# LUT arrays hold products
# ==============================================================================================


@pytest.mark.parametrize("table, bits, match", [
    (np.zeros((0, 0), np.float32), 0, "bits"),
    (np.ones((2, 2), np.float32), -1, "bits"),
    (np.ones((2, 2), np.float32), 1.5, "bits"),
    (np.full((2, 2), -1.5, np.float32), 1, r"entry \(0, 0\) = -1.5"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), 1, r"entry \(0, 1\)"),
    (np.array([[1.0, 1.0], [np.inf, 1.0]]), 1, r"entry \(1, 0\)"),
    (np.array([["1", "2"], ["3", "4"]]), 1, "float32 or float64"),
    (np.array([[1, 2], [3, 4]], dtype=object), 1, "float32 or float64"),
])
def test_mantissa_lut_array_that_is_not_a_table_of_products_is_refused(table, bits, match):
    with pytest.raises(LUTError, match=match):
        LUT(table=table, bits=bits)


def test_unsigned_integer_lut_with_a_negative_entry_is_refused():
    table = np.ones((4, 4), np.int64)
    table[2, 3] = -1
    with pytest.raises(LUTError, match=r"entry \(2, 3\)"):
        LUT(table=table, bits=2, kind="integer")
    assert LUT(table=table, bits=2, kind="integer", meta={"signed": True}).table[2, 3] == -1


# ==============================================================================================
# Counts: threads, samples, seed
# ==============================================================================================


@pytest.fixture(scope="module")
def mitchell4():
    return amsim.find_model("mitchell").compile(4)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_that_are_not_a_positive_integer_are_refused(threads, mitchell4):
    for call in (lambda: sweep.integer_table(mitchell4, threads=threads),
                 lambda: stats.int_stats(mitchell4, threads=threads),
                 lambda: stats.mantissa_stats(3, cm=mitchell4, samples=100, threads=threads)):
        with pytest.raises(RangeError, match="threads"):
            call()


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_amsim_num_threads_that_is_not_a_positive_integer_is_refused(value, monkeypatch, mitchell4):
    monkeypatch.setenv("AMSIM_NUM_THREADS", value)
    with pytest.raises(RangeError, match="AMSIM_NUM_THREADS"):
        sweep.integer_table(mitchell4)


@pytest.mark.parametrize("kwargs, name", [({"samples": 0}, "samples"), ({"samples": -5}, "samples"),
                                          ({"samples": 10, "seed": -1}, "seed"),
                                          ({"samples": 10, "seed": 1.5}, "seed")])
def test_sample_count_and_seed_are_checked(kwargs, name, mitchell4):
    with pytest.raises(RangeError, match=name):
        stats.int_stats(mitchell4, **kwargs)


# ==============================================================================================
# The command line: one line for each
# ==============================================================================================


@pytest.mark.parametrize("argv, message", [
    (["stats", "--model", "mitchell", "--bits", "4", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["stats", "--model", "mitchell", "--bits", "abc"], "--bits: expected a positive integer, got 'abc'"),
    (["stats", "--model", "mitchell", "--bits", "0"], "--bits: expected a positive integer, got 0"),
    (["generate-lut", "--bits", "3", "--samples", "x"], "--samples: expected a positive integer"),
    (["generate-lut", "--bits", "3", "--timeout", "0"], "--timeout: expected a positive, finite number, got '0'"),
    (["generate-lut", "--bits", "3", "--timeout", "soon"], "--timeout: expected a positive number, got 'soon'"),
    (["stats", "--model", "drum", "--bits", "4", "--param", "k=3", "--param", "k=4"], "--param k is given twice"),
    (["generate-lut", "--bits", "3", "--model", "drum", "--param", "k=3", "--param", "k=4"],
     "--param k is given twice"),
])
def test_bad_command_line_values_get_one_line(argv, message, capsys):
    rc, _, err = run(argv, capsys)
    assert message in one_line_error(rc, err)


def test_the_same_parameter_value_given_twice_is_accepted(capsys):
    rc, out, _ = run(["stats", "--model", "drum", "--bits", "4", "--param", "k=3", "--param", "k=3", "--json"],
                     capsys)
    assert rc == 0 and json.loads(out)["parameters"] == {"k": 3}


def test_unwritable_out_is_refused_before_any_model_is_swept(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generate, "run_batch", lambda *a, **k: pytest.fail("swept before checking --out"))
    (tmp_path / "file").write_text("")
    rc, _, err = run(["generate-lut", "--bits", "3", "--out", str(tmp_path / "file" / "luts")], capsys)
    assert "cannot be written: Not a directory" in one_line_error(rc, err)


def test_out_on_a_file_system_that_refuses_it_is_refused_before_any_model_is_swept(capsys, monkeypatch):
    monkeypatch.setattr(generate, "run_batch", lambda *a, **k: pytest.fail("swept before checking --out"))
    rc, _, err = run(["generate-lut", "--bits", "3", "--out", "/proc/amsim-luts"], capsys)
    assert "--out /proc/amsim-luts cannot be written" in one_line_error(rc, err)


def test_width_beyond_the_largest_lut_is_refused_before_any_model_is_swept(capsys, monkeypatch):
    monkeypatch.setattr(generate, "run_batch", lambda *a, **k: pytest.fail("swept a width without LUTs"))
    rc, _, err = run(["generate-lut", "--bits", "13"], capsys)
    assert "M = 1..12" in one_line_error(rc, err)


# ==============================================================================================
# stats --samples samples only what is sampled
# ==============================================================================================


def stats_run(argv, capsys):
    rc, out, err = run(["stats", *argv, "--json"], capsys)
    assert rc == 0, err
    return json.loads(out), err


@pytest.mark.parametrize("argv, pairs", [(["--model", "mbm", "--bits", "8"], 1 << 16),
                                         (["--model", "mitchell", "--bits", "6", "--float"], 1 << 12),
                                         (["--model", "at_mitchell", "--bits", "7"], 1 << 14)])
def test_stats_samples_leaves_exhaustive_statistics_exhaustive_and_says_so(argv, pairs, capsys):
    result, err = stats_run([*argv, "--samples", SAMPLES, "--seed", "3"], capsys)
    assert result["exhaustive"] is True and result["pairs"] == pairs
    assert "samples" not in result and "seed" not in result
    assert "note" in err and "--samples" in err


@pytest.mark.parametrize("argv", [["--model", "at_mitchell", "--bits", "7", "--reference", "full"],
                                  ["--model", "at_mitchell", "--bits", "14"],
                                  ["--model", "mbm", "--bits", "20"]])
def test_stats_samples_sets_the_monte_carlo_size_where_statistics_are_sampled(argv, capsys):
    result, err = stats_run([*argv, "--samples", SAMPLES, "--seed", "3"], capsys)
    assert result["exhaustive"] is False
    assert result["pairs"] == result["samples"] == int(SAMPLES) and result["seed"] == 3
    assert "note" not in err


# ==============================================================================================
# The Python API: AmsimError for every bad argument, floats refused rather than truncated
# ==============================================================================================


@pytest.mark.parametrize("call, match", [
    (lambda: amsim.find_model("mitchell").compile("abc"), "must be an integer"),
    (lambda: amsim.find_model("mitchell").compile(4.5), "must be an integer"),
    (lambda: amsim.find_model("mbm").compile(4, {"t": 1.5}), "must be an integer"),
    (lambda: amsim.find_model("mbm").compile(4, {"t": True}), "must be an integer"),
    (lambda: generate.mantissa_lut(amsim.find_model("at_mitchell"), "x"), "M must be an integer"),
    (lambda: generate.mantissa_lut(amsim.find_model("at_mitchell"), 2.5), "M must be an integer"),
    (lambda: generate.integer_lut(amsim.find_model("mitchell"), 4.0), "n must be an integer"),
    (lambda: generate.characterise(amsim.find_model("at_mitchell"), 3, reference="nope"), "reference"),
    (lambda: generate.mantissa_lut(amsim.find_model("at_mitchell"), 3, rounding="up", samples=100), "rounding"),
    (lambda: stats.int_stats(amsim.find_model("at_mitchell").compile(3)), "float model"),
    (lambda: stats.mantissa_stats(3, table=np.ones((4, 4))), r"shape \(8, 8\)"),
    (lambda: stats.mantissa_stats(0, table=np.ones((1, 1))), "M must be an integer in 1..23"),
])
def test_bad_api_argument_raises_an_amsim_error_naming_it(call, match):
    with pytest.raises(RangeError, match=match):
        call()


def test_a_parameter_given_as_an_integer_string_is_accepted():
    assert amsim.find_model("mbm").resolve_params({"t": "3"}) == {"t": 3}
