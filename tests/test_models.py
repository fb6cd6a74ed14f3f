"""Loading, describing and compiling C models."""

import threading
import textwrap

import numpy as np
import pytest
from numba import njit

import amsim
from amsim import cbuild, models
from amsim.errors import CompileError, ModelError, RangeError, UnknownModelError

BUILTINS = {"exact", "bf16_trunc", "bf16_rne", "at_mbm", "at_mitchell", "mitchell", "mbm", "drum", "ilm",
            "alm_soa", "bam", "exact_int", "mul8s_exact", "mul8s_trunc", "mul8s_bam", "mul8s_log"}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


FULL_HEADER = """\
    /* @amsim
     * name:        trunc_demo
     * kind:        int
     * bits:        4..16
     * param:       t default=2 range=0..8 "low bits dropped
     *              from each operand"
     * description: Drops the T low bits of each operand.
     * citation:    Nobody, "A demo", 2026.
     * cost:        power=0.5 area=0.6 node="45 nm" source="made up for a test" bits=8
     * cost:        power=0.4 area=0.5 node="45 nm" source="made up for a test" bits=8 t=4
     */
    #include <stdint.h>
    #ifndef T
    #define T 2
    #endif
    uint64_t trunc_demo(uint64_t a, uint64_t b) { return ((a >> T) * (b >> T)) << (2 * T); }
    """


def test_builtin_models_are_all_present():
    assert BUILTINS <= set(amsim.list_models())


def test_metadata_block_is_parsed(tmp_path):
    m = amsim.load_model(write(tmp_path, "trunc_demo.c", FULL_HEADER))
    assert (m.name, m.kind, m.function, m.signed) == ("trunc_demo", "int", "trunc_demo", False)
    assert m.bits == tuple(range(4, 17))
    assert m.params["t"] == models.Param("t", 2, 0, 8, "low bits dropped from each operand")
    assert m.description == "Drops the T low bits of each operand."
    assert m.citation == 'Nobody, "A demo", 2026.'
    assert m.costs[0].power == 0.5 and m.costs[0].node == "45 nm" and m.costs[0].conditions == {"bits": 8}


def test_most_specific_cost_figure_applies(tmp_path):
    m = amsim.load_model(write(tmp_path, "trunc_demo.c", FULL_HEADER))
    assert m.cost_for(8, {"t": 4}).power == 0.4
    assert m.cost_for(8, {"t": 3}).power == 0.5
    assert m.cost_for(16) is None


def test_parameters_reach_the_compiler_as_upper_case_macros(tmp_path):
    m = amsim.load_model(write(tmp_path, "trunc_demo.c", FULL_HEADER))
    assert m.compile(8, {"t": 3}).evaluate(255, 255) == (255 >> 3) ** 2 << 6
    assert m.compile(8).evaluate(255, 255) == (255 >> 2) ** 2 << 4


def test_amsim_bits_macro_gives_the_width(tmp_path):
    src = """\
        /* @amsim
         * name: width
         * kind: int
         * bits: 2..12
         */
        #include <stdint.h>
        uint64_t width(uint64_t a, uint64_t b) { return AMSIM_BITS; }
        """
    m = amsim.load_model(write(tmp_path, "width.c", src))
    assert m.compile(5).evaluate(1, 1) == 5 and m.compile(11).evaluate(1, 1) == 11


@pytest.mark.parametrize("bits_text,expected", [("7", (7,)), ("1,3,5,7", (1, 3, 5, 7)), ("2..4, 9", (2, 3, 4, 9))])
def test_bits_accepts_numbers_lists_and_ranges(tmp_path, bits_text, expected):
    src = FULL_HEADER.replace("bits:        4..16", f"bits: {bits_text}")
    assert amsim.load_model(write(tmp_path, "trunc_demo.c", src)).bits == expected


@pytest.mark.parametrize("change,message", [
    (("name:        trunc_demo", "name:"), "needs 'name:'"),
    (("bits:        4..16", "bits: four"), "cannot read bits"),
    (('default=2 range=0..8', 'default=9 range=0..8'), "outside 0..8"),
    (("kind:        int", "kind: fixed"), "kind must be"),
    (("description:", "colour: red\n     * description:"), "unknown key 'colour'"),
    (("kind:        int", "kind: int\n     * kind: int"), "'kind' given twice"),
    (("cost:        power=0.5", "cost: power=cheap"), "must be numbers"),
])
def test_malformed_metadata_is_refused_with_the_reason(tmp_path, change, message):
    src = FULL_HEADER.replace(*change)
    with pytest.raises(ModelError, match=message) as info:
        amsim.load_model(write(tmp_path, "trunc_demo.c", src))
    assert "trunc_demo.c" in str(info.value)


def test_float_model_with_wrong_prototype_names_the_expected_one(tmp_path):
    src = """\
        /* @amsim
         * name: dbl
         * kind: float
         */
        double dbl(double a, double b) { return a * b; }
        """
    with pytest.raises(ModelError, match=r"expected 'float dbl\(float a, float b\)'"):
        amsim.load_model(write(tmp_path, "dbl.c", src))


def test_int_model_with_wrong_prototype_names_the_expected_one(tmp_path):
    src = """\
        /* @amsim
         * name: odd
         * kind: int
         */
        #include <stdint.h>
        uint64_t odd(uint64_t a, uint64_t b, uint64_t c) { return a * b; }
        """
    with pytest.raises(ModelError, match=r"uint64_t odd\(uint64_t a, uint64_t b\)"):
        amsim.load_model(write(tmp_path, "odd.c", src))


def test_kind_that_contradicts_the_prototype_is_refused(tmp_path):
    src = """\
        /* @amsim
         * name: liar
         * kind: int
         */
        float liar(float a, float b) { return a * b; }
        """
    with pytest.raises(ModelError, match="wrong prototype"):
        amsim.load_model(write(tmp_path, "liar.c", src))


def test_missing_function_is_refused(tmp_path):
    src = """\
        /* @amsim
         * name: ghost
         * kind: float
         */
        float other(float a, float b) { return a * b; }
        """
    with pytest.raises(ModelError, match=r"no function 'ghost'.*float ghost\(float a, float b\)"):
        amsim.load_model(write(tmp_path, "ghost.c", src))


def test_static_model_function_is_refused(tmp_path):
    src = "#include <stdint.h>\nstatic uint64_t hidden(uint64_t a, uint64_t b) { return a * b; }\n"
    with pytest.raises(ModelError):
        amsim.load_model(write(tmp_path, "hidden.c", src))


def test_compile_error_reports_model_file_and_line(tmp_path):
    src = """\
        /* @amsim
         * name: broken
         * kind: int
         * bits: 8
         */
        #include <stdint.h>
        uint64_t broken(uint64_t a, uint64_t b)
        {
            uint64_t p = a * b
            return p;
        }
        """
    m = amsim.load_model(write(tmp_path, "broken.c", src))
    with pytest.raises(CompileError) as info:
        m.compile(8)
    # gcc notices the missing ';' at the next token, on line 10.
    assert info.value.line == 10
    assert str(info.value).startswith(f"{tmp_path / 'broken.c'}:10:")
    assert "error: expected ',' or ';' before 'return'" in str(info.value)


def test_file_without_metadata_takes_name_kind_and_width_from_its_function(tmp_path):
    src = """\
        // MAE% = 0.00 %
        // WCE = 0
        // PDK45_PWR = 0.391 mW
        // PDK45_AREA = 709.5 um2
        // PDK45_DELAY = 1.43 ns
        #include <stdint.h>
        uint16_t mul8u_EXACT(uint8_t A, uint8_t B) { return (uint16_t)A * B; }
        """
    m = amsim.load_model(write(tmp_path, "mul8u_EXACT.c", src))
    assert (m.name, m.kind, m.bits, m.signed, m.has_header) == ("mul8u_EXACT", "int", (8,), False, False)
    assert m.evoapprox == {"MAE%": 0.0, "WCE": 0.0, "PDK45_PWR": 0.391, "PDK45_AREA": 709.5, "PDK45_DELAY": 1.43}
    assert m.costs[0].absolute == {"power_mw": 0.391, "area_um2": 709.5, "delay_ns": 1.43}
    assert m.compile(8).evaluate(200, 250) == 50000


def test_signed_result_held_in_unsigned_type_is_sign_extended(tmp_path):
    src = "#include <stdint.h>\nuint16_t mul8s_X(uint8_t A, uint8_t B) { return (uint16_t)((int8_t)A * (int8_t)B); }\n"
    cm = amsim.load_model(write(tmp_path, "mul8s_X.c", src)).compile(8)
    assert cm.signed
    a = np.arange(-128, 128)
    np.testing.assert_array_equal(cm.evaluate(a[:, None], a[None, :]), a[:, None] * a[None, :])


def test_signed_prototype_makes_a_signed_model(tmp_path):
    src = "#include <stdint.h>\nint16_t smul(int8_t A, int8_t B) { return A * B; }\n"
    cm = amsim.load_model(write(tmp_path, "smul.c", src)).compile(8)
    assert cm.evaluate(-128, 127) == -128 * 127


def test_several_candidate_functions_without_metadata_are_ambiguous(tmp_path):
    src = "#include <stdint.h>\nuint64_t f(uint64_t a, uint64_t b) { return a; }\nuint64_t g(uint64_t a, uint64_t b) { return b; }\n"
    with pytest.raises(ModelError, match="several candidate functions"):
        amsim.load_model(write(tmp_path, "two.c", src))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="known models: .*mitchell"):
        amsim.find_model("no_such_model")


def test_models_dir_adds_models_without_python_edits(tmp_path):
    write(tmp_path, "trunc_demo.c", FULL_HEADER)
    assert amsim.find_model("trunc_demo", [tmp_path]).name == "trunc_demo"


def test_width_outside_the_declared_range_is_refused():
    with pytest.raises(RangeError, match="supports 1, 3, 5, 7"):
        amsim.find_model("at_mbm").compile(4)


@pytest.mark.parametrize("params,message", [({"k": 99}, "outside its range 2..32"),
                                            ({"q": 1}, "no parameter 'q'"),
                                            ({"k": "six"}, "must be an integer")])
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(RangeError, match=message):
        amsim.find_model("drum").compile(8, params)


def test_operands_outside_the_width_are_refused():
    cm = amsim.find_model("exact_int").compile(8)
    with pytest.raises(RangeError, match=r"\[0, 256\)"):
        cm.evaluate(256, 1)


def test_thirty_two_bit_unsigned_products_use_all_64_bits():
    cm = amsim.find_model("exact_int").compile(32)
    big = np.uint64(2**32 - 1)
    assert cm.evaluate(np.array([2**32 - 1]), np.array([2**32 - 1]))[0] == big * big


def test_compiled_model_is_cached_across_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("AMSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cbuild, "_LOADED", {})
    model = amsim.find_model("mitchell")
    model.compile(8)
    built = list((tmp_path / "cache").glob("*.so"))
    assert len(built) == 1
    monkeypatch.setattr(cbuild, "_LOADED", {})
    monkeypatch.setattr(cbuild, "_build", lambda *a, **k: pytest.fail("compiled again"))
    model.compile(8)
    assert list((tmp_path / "cache").glob("*.so")) == built


def test_changing_the_source_invalidates_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AMSIM_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, "trunc_demo.c", FULL_HEADER)
    assert amsim.load_model(path).compile(8, {"t": 0}).evaluate(3, 3) == 9
    path.write_text(path.read_text().replace("<< (2 * T)", "<< (2 * T) | 1"))
    assert amsim.load_model(path).compile(8, {"t": 0}).evaluate(3, 3) == 9 | 1


def test_compiled_model_can_be_called_from_user_numba_code():
    cm = amsim.find_model("exact_int").compile(8)
    fn = cm.lib.amsim__model

    @njit
    def call(a, b):
        return fn(a, b)

    assert call(12, 13) == 156


def test_evaluate_is_safe_from_several_threads():
    cm = amsim.find_model("drum").compile(16)
    a = np.arange(1, 1 << 16, 7)
    expected = cm.evaluate(a, a[::-1])
    results = [None] * 4

    def work(k):
        results[k] = cm.evaluate(a, a[::-1])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)
