"""A C file works wherever a multiplier is named, and its LUT is swept once.

One resolution (``amsim.gemm.resolve``, with ``amsim.models.find_model`` deciding what a model
argument means) serves ``gemm``, the Keras layers and ``approximate()``, and ``amsim train``; the
characterisation commands (``stats``, ``plot``, ``report``) take the same ``--model`` argument. The
LUT a model multiplies with is swept in a child process on first use and cached on disk
(``amsim.generate.cached_mantissa_lut``).
"""

import json
import os
import re

import numpy as np
import pytest

from amsim import cli, generate, gemm
from amsim.errors import CompileError, ModelCrashed, ModelError, ModelTimedOut
from amsim.experiments.energy import relative_power
from amsim.experiments.multipliers import parse_multiplier, parse_multipliers
from amsim.models import builtin_models_dir, load_model

# An integer model in the style of c_models/: the exact product with its lowest bit cleared,
# lifted to an M-bit mantissa multiplier. Its cost figure is made up, for the energy table.
HALFBIT = """\
/* @amsim
 * name: halfbit
 * kind: int
 * bits: 2..16
 * signed: no
 * param: keep default=1 range=0..1 "1: clear the product's lowest bit; 0: exact"
 * description: exact product with its lowest bit cleared
 * cost: power=0.5 source="made up for the tests" bits=8
 */
#include <amsim_model.h>

#ifndef KEEP
#define KEEP 1
#endif

uint64_t halfbit(uint64_t a, uint64_t b)
{
    return KEEP ? (a * b) & ~(uint64_t)1 : a * b;
}
"""

BROKEN = HALFBIT.replace("name: halfbit", "name: broken").replace("halfbit(", "broken(").replace(
    "return KEEP", "return KEEP +")
CRASHER = HALFBIT.replace("name: halfbit", "name: crasher").replace("halfbit(", "crasher(").replace(
    "{\n    return", "{\n    if (a == 200 && b == 200) *(volatile int *)0 = 1;\n    return")
SPINNER = HALFBIT.replace("name: halfbit", "name: spinner").replace("halfbit(", "spinner(").replace(
    "{\n    return", "{\n    for (volatile int spin = 1; spin;) {}\n    return")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

QUICK_TRAIN = ["--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
               "--quiet", "--no-plots"]


def write(folder, name, source=HALFBIT):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    return path


def expected_table(path, m=7, params=None):
    """The LUT swept in this process, without any cache: what every route must give."""
    return generate.mantissa_lut(load_model(path), m, params, statistics=False).table


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh amsim cache: what is found there was put there by the test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("AMSIM_CACHE_DIR", str(folder))
    return folder


def one_line_error(rc, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------------------------
# One resolution: names, files, folders
# ----------------------------------------------------------------------------------------------


def test_resolve_takes_a_c_file_as_it_takes_a_model_name(tmp_path):
    path = write(tmp_path / "models", "halfbit.c")
    mult = gemm.resolve(str(path), 7)
    assert (mult.name, mult.bits) == ("halfbit", 7)
    np.testing.assert_array_equal(mult.table, expected_table(path))
    assert gemm.resolve(path, 7) is mult, "a Path, and a second call, give the same multiplier"
    assert gemm.resolve("halfbit", 7, models_dirs=[tmp_path / "models"]) is mult, "found by name in a folder"
    exact = gemm.resolve(str(path), 7, params={"keep": 0})
    assert not np.array_equal(exact.table, mult.table), "parameters reach the C file's macros"
    assert gemm.resolve(str(builtin_models_dir() / "mbm.c"), 7) is gemm.resolve("mbm", 7), "a built-in by its file"


def test_a_c_file_multiplies_in_the_gemm(tmp_path):
    path = write(tmp_path, "halfbit.c")
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 5), np.float32) + 0.5, rng.random((5, 2), np.float32) + 0.5
    np.testing.assert_array_equal(gemm.matmul(a, b, str(path), bits=7),
                                  gemm.matmul(a, b, expected_table(path)))


def test_an_edited_c_file_is_resolved_anew(tmp_path):
    path = write(tmp_path, "halfbit.c")
    before = gemm.resolve(str(path), 7)
    path.write_text(HALFBIT.replace("default=1", "default=0"))
    after = gemm.resolve(str(path), 7)
    assert after is not before and not np.array_equal(after.table, before.table)


# ----------------------------------------------------------------------------------------------
# The LUT cache
# ----------------------------------------------------------------------------------------------


def test_a_models_lut_is_swept_once_then_read_from_the_cache(tmp_path, cache, monkeypatch):
    model = load_model(write(tmp_path, "halfbit.c"))
    first = generate.cached_mantissa_lut(model, 7)
    (cached,) = (cache / "luts").glob("halfbit_keep1_m7-*.npz")
    assert cached == generate.lut_cache_path(model.compile(8, {}), 7)
    stamp = cached.stat().st_mtime_ns

    def no_sweep(*args, **kwargs):
        raise AssertionError("swept again")

    monkeypatch.setattr(generate, "run_isolated", no_sweep)
    again = generate.cached_mantissa_lut(model, 7)
    np.testing.assert_array_equal(again.table, first.table)
    assert cached.stat().st_mtime_ns == stamp, "read, not rewritten"
    assert not list((cache / "luts").glob(".*")), "no temporary file left behind"


def test_what_changes_the_table_changes_the_cache_entry(tmp_path, cache):
    model = load_model(write(tmp_path, "halfbit.c"))
    generate.cached_mantissa_lut(model, 7)
    generate.cached_mantissa_lut(model, 6)
    generate.cached_mantissa_lut(model, 7, {"keep": 0})
    edited = load_model(write(tmp_path, "halfbit.c", HALFBIT.replace("signed: no", "signed: no\n * citation: x")))
    generate.cached_mantissa_lut(edited, 7)
    assert len(list((cache / "luts").glob("*.npz"))) == 4


def test_a_damaged_cache_entry_is_swept_again(tmp_path, cache):
    model = load_model(write(tmp_path, "halfbit.c"))
    first = generate.cached_mantissa_lut(model, 7)
    (cached,) = (cache / "luts").glob("*.npz")
    cached.write_bytes(b"not a LUT")
    np.testing.assert_array_equal(generate.cached_mantissa_lut(model, 7).table, first.table)
    np.testing.assert_array_equal(np.load(cached)["table"], first.table)


# ----------------------------------------------------------------------------------------------
# Bad C files: one error naming the file or the model, and this process carries on
# ----------------------------------------------------------------------------------------------


def test_a_c_file_that_does_not_compile_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "broken.c", BROKEN)
    with pytest.raises(CompileError, match=rf"{path}:\d+"):
        gemm.resolve(str(path), 7)


def test_a_c_file_that_crashes_is_reported_and_this_process_survives(tmp_path):
    with pytest.raises(ModelCrashed, match="crasher crashed .*SIGSEGV"):
        gemm.resolve(str(write(tmp_path, "crasher.c", CRASHER)), 7)


def test_a_c_file_that_hangs_is_stopped_at_its_timeout(tmp_path):
    model = load_model(write(tmp_path, "spinner.c", SPINNER))
    with pytest.raises(ModelTimedOut, match="spinner timed out"):
        generate.cached_mantissa_lut(model, 7, timeout=0.5)


def test_a_missing_c_file_is_named_as_a_file(tmp_path):
    with pytest.raises(ModelError, match="cannot read model file .*nosuch.c"):
        gemm.resolve(str(tmp_path / "nosuch.c"), 7)


# ----------------------------------------------------------------------------------------------
# amsim train's multiplier specifications
# ----------------------------------------------------------------------------------------------


def test_a_c_file_is_a_training_multiplier_with_width_and_parameters(tmp_path, monkeypatch):
    path = write(tmp_path, "halfbit.c")
    monkeypatch.chdir(tmp_path)
    spec = parse_multiplier("./halfbit.c:6:keep=0")
    assert (spec.kind, spec.name, spec.bits, spec.params) == ("model", "halfbit", 6, (("keep", 0),))
    assert spec.label == "halfbit-M6-keep0" and spec.source == str(path.resolve())
    assert spec.layer_arguments() == {"lut": str(path.resolve()), "bits": 6, "params": {"keep": 0}}
    assert parse_multiplier(spec.text) == spec, "its text, with the absolute path, parses back to it"
    assert parse_multiplier(spec.text).to_dict() == spec.to_dict() and spec.to_dict()["source"] == spec.source
    assert parse_multiplier("halfbit.c", default_bits=5).bits == 5


def test_a_model_in_a_models_dir_is_a_training_multiplier_by_name(tmp_path):
    path = write(tmp_path / "models", "halfbit.c")
    spec = parse_multiplier("halfbit:7", models_dirs=[tmp_path / "models"])
    assert spec.source == str(path.resolve()), "workers find it without the folder"
    assert spec.to_dict()["text"] == f"{path.resolve()}:7"


def test_a_built_in_named_by_its_file_is_the_built_in():
    by_file, by_name = parse_multipliers([str(builtin_models_dir() / "mbm.c") + ":7", "mbm:6"])
    assert by_file == parse_multiplier("mbm:7") and by_file.source == ""
    assert "source" not in by_name.to_dict(), "the records of built-in runs are unchanged"


def test_a_c_files_cost_prices_its_energy_as_a_built_ins_does(tmp_path):
    figure = relative_power(parse_multiplier(f"{write(tmp_path, 'halfbit.c')}:7"))
    assert figure.power == 0.5 and "made up for the tests" in figure.source


@pytest.mark.parametrize("source, error, match", [
    (BROKEN, CompileError, r"bad\.c:\d+"),
    (CRASHER, ModelCrashed, "crasher crashed"),
])
def test_a_bad_c_file_stops_a_study_before_it_trains(tmp_path, source, error, match):
    path = write(tmp_path, "bad.c", source)
    with pytest.raises(error, match=match):
        parse_multipliers(f"float32,{path}:7")


# ----------------------------------------------------------------------------------------------
# Keras: approximate() and saved models
# ----------------------------------------------------------------------------------------------


def test_approximate_takes_a_c_file_and_the_saved_model_carries_its_lut(tmp_path):
    keras = pytest.importorskip("keras")
    ak = pytest.importorskip("amsim.keras")
    path = write(tmp_path, "halfbit.c")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    am = ak.approximate(model, str(path), bits=7)
    np.testing.assert_array_equal(am.get_layer("fc").multiplier.table, expected_table(path))
    x = np.random.default_rng(1).random((2, 4), np.float32)
    y = np.asarray(am(x))
    am.save(tmp_path / "am.keras")
    path.unlink()  # the saved model needs neither the C file nor the cache
    loaded = keras.models.load_model(tmp_path / "am.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), y)
    assert loaded.get_layer("fc").multiplier.name == "halfbit"


def test_approximate_reports_a_crashing_c_file(tmp_path):
    keras = pytest.importorskip("keras")
    ak = pytest.importorskip("amsim.keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ModelCrashed, match=r"approximate\(\): model crasher crashed"):
        ak.approximate(model, str(write(tmp_path, "crasher.c", CRASHER)), bits=7)


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """`amsim train --multipliers ./halfbit.c:7`, from the C file's folder."""
    pytest.importorskip("amsim.keras")
    root = tmp_path_factory.mktemp("c-file-study")
    write(root, "halfbit.c")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli.main(["train", *QUICK_TRAIN, "--multipliers", "./halfbit.c:7", "--out", "study"]) == 0
    finally:
        os.chdir(cwd)
    return root / "study"


def test_train_trains_with_a_c_file_and_prices_it_with_its_cost(study):
    summary = json.loads((study / "summary.json").read_text())
    assert [r["multiplier"] for r in summary["rows"]] == ["halfbit-M7"] and summary["failures"] == {}
    assert summary["energy"][0]["relative_power"] == 0.5
    config = json.loads((study / "halfbit-M7" / "seed0" / "config.json").read_text())
    assert config["run"]["multiplier"]["source"] == str(study.parent / "halfbit.c")


def test_train_finds_c_models_in_a_models_dir(tmp_path, capsys):
    write(tmp_path / "models", "halfbit.c")
    rc, _, err = run(["train", *QUICK_TRAIN, "--models-dir", tmp_path / "models", "--multipliers", "halfbit:7:x=1",
                      "--out", tmp_path / "s"], capsys)
    assert "has no parameter 'x'" in one_line_error(rc, err), "found, then checked"


@pytest.mark.parametrize("name, source, extra, message", [
    ("broken.c", BROKEN, [], r"broken\.c:\d+:\d+: error"),
    ("crasher.c", CRASHER, [], r"model crasher crashed \(killed by SIGSEGV\)"),
    ("spinner.c", SPINNER, ["--timeout", "0.5"], "model spinner timed out"),
    ("nosuch.c", None, [], "cannot read model file"),
])
def test_train_refuses_a_bad_c_file_with_one_line(tmp_path, capsys, name, source, extra, message):
    path = write(tmp_path, name, source) if source else tmp_path / name
    rc, _, err = run(["train", *QUICK_TRAIN, "--multipliers", f"float32,{path}:7", *extra, "--out", tmp_path / "s"],
                     capsys)
    line = one_line_error(rc, err)
    assert line.startswith("amsim: error: ") and re.search(message, line), line
    assert not (tmp_path / "s").exists(), "nothing trained"


def test_stats_plot_and_report_take_a_c_file(study, tmp_path, capsys):
    path = study.parent / "halfbit.c"
    rc, out, _ = run(["stats", "--model", path, "--bits", "7", "--float", "--json"], capsys)
    assert rc == 0 and json.loads(out)["model"] == "halfbit"
    rc, out, _ = run(["plot", "distribution", "--model", path, "--bits", "7", "--out", tmp_path / "plots"], capsys)
    assert rc == 0 and sorted(p.rsplit(".")[-1] for p in out.split()) == ["png", "svg"] and "halfbit" in out
    rc, _, _ = run(["report", "--model", path, "--bits", "7", "--out", tmp_path / "report", "--runs", study], capsys)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rc == 0 and [m["label"] for m in report["models"]] == ["halfbit keep=1"]
    assert [r["multiplier"] for r in report["training"]["rows"]] == ["halfbit-M7"]
