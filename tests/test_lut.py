"""Tests of the LUT formats in ``amsim.lut``: the native ``.npz`` format, ApproxTrain's
``NAME_M.bin`` files (the peers' 8-bit integer tables: tests/test_lut_interop.py).

The ApproxTrain tests compare amsim's exports with the bytes computed by the
independent reference in ``reference_designs.py`` (written from docs/designs.md).
"""

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import amsim
from amsim import cli
from amsim.errors import LUTError
from amsim.generate import integer_lut, mantissa_lut
from amsim.lut import (LUT, from_approxtrain, load, load_approxtrain, lut_filename, save, save_approxtrain,
                       to_approxtrain)

import reference_designs as ref

REPO = Path(__file__).resolve().parent.parent

#: Monte Carlo size for the ``full`` statistics that every mantissa LUT carries; small keeps tests fast.
SAMPLES = 20000


@functools.lru_cache(maxsize=None)
def built_mantissa_lut(name, m, **params):
    """The M-bit mantissa LUT of a built-in model (cached per session)."""
    return mantissa_lut(amsim.find_model(name), m, params or None, samples=SAMPLES, seed=1)


@functools.lru_cache(maxsize=None)
def built_integer_lut(name, n, **params):
    """The n-bit integer product table of a built-in model (cached per session)."""
    return integer_lut(amsim.find_model(name), n, params or None)


def write_npz(path, table, meta):
    """Write an npz with the native members, with whatever table and metadata the test wants."""
    with open(path, "wb") as f:
        np.savez(f, table=table, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def read_npz(path):
    with np.load(path) as z:
        return z["table"].copy(), json.loads(z["meta"].tobytes().decode())


def tamper(path, *, table=None, **meta_changes):
    """Rewrite a saved LUT with a different table and/or changed metadata fields."""
    old_table, meta = read_npz(path)
    meta.update(meta_changes)
    write_npz(path, old_table if table is None else table, meta)


def lut_of(table, bits, **kw):
    return LUT(table=np.asarray(table), bits=bits, **kw)


def dir_listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ==============================================================================================
# Native format: round trip
# ==============================================================================================


def assert_same_lut(loaded, original):
    assert loaded.table.dtype == original.table.dtype
    assert np.array_equal(loaded.table, original.table)
    assert loaded.metadata() == original.metadata()


def test_native_round_trip_keeps_a_generated_float32_mantissa_lut_and_its_metadata(tmp_path):
    original = built_mantissa_lut("drum", 7, k=5)
    assert original.table.dtype == np.float32
    loaded = load(save(original, tmp_path / "drum.npz"))
    assert_same_lut(loaded, original)


def test_native_round_trip_keeps_a_float64_mantissa_table(tmp_path):
    # Entries that float32 cannot hold: 1 + 2^-40 needs 41 significant bits.
    table = np.full((4, 4), 1.0 + 2.0 ** -40)
    table[3, 2] = 3.999999999999
    original = lut_of(table, 2, model="wide", params={"p": 3}, rounding="rne", source_sha256="ab" * 32,
                      stats={"truncated": {"mean_re": 0.5}}, meta={"note": "x"})
    loaded = load(save(original, tmp_path / "wide.npz"))
    assert_same_lut(loaded, original)


def test_native_round_trip_keeps_a_generated_integer_table(tmp_path):
    original = built_integer_lut("mitchell", 6)
    assert original.kind == "integer" and original.table.dtype == np.int64
    loaded = load(save(original, tmp_path / "mitchell_int.npz"))
    assert_same_lut(loaded, original)


def test_native_metadata_names_model_params_width_rounding_and_statistics(tmp_path):
    loaded = load(save(built_mantissa_lut("drum", 7, k=5), tmp_path / "drum.npz"))
    assert loaded.kind == "mantissa"
    assert loaded.model == "drum"
    assert loaded.params == {"k": 5}
    assert loaded.bits == 7
    assert loaded.rounding == "truncate"
    assert set(loaded.stats) == {"truncated", "full"}
    assert loaded.stats["truncated"]["pairs"] == 1 << 14 and loaded.stats["truncated"]["exhaustive"] is True
    assert loaded.stats["full"]["samples"] == SAMPLES and loaded.stats["full"]["seed"] == 1


def test_native_metadata_records_the_sha256_of_the_model_source(tmp_path):
    loaded = load(save(built_mantissa_lut("drum", 7, k=5), tmp_path / "drum.npz"))
    assert loaded.source_sha256 == hashlib.sha256((REPO / "c_models" / "drum.c").read_bytes()).hexdigest()


def test_native_metadata_records_amsim_version_and_creation_time(tmp_path):
    _, meta = read_npz(save(built_mantissa_lut("drum", 7, k=5), tmp_path / "drum.npz"))
    assert meta["amsim_version"] == amsim.__version__
    assert meta["created"].startswith("20") and "T" in meta["created"]


def test_native_metadata_records_the_table_checksum(tmp_path):
    lut = built_mantissa_lut("drum", 7, k=5)
    _, meta = read_npz(save(lut, tmp_path / "drum.npz"))
    assert meta["table_sha256"] == lut.checksum
    assert len(meta["table_sha256"]) == 64


def test_table_checksum_changes_when_one_entry_changes():
    table = np.ones((4, 4), np.float32)
    other = table.copy()
    other[2, 1] = np.nextafter(np.float32(1), np.float32(2))
    assert lut_of(table, 2).checksum != lut_of(other, 2).checksum


# ==============================================================================================
# Native format: refusals
# ==============================================================================================


@pytest.fixture
def saved(tmp_path):
    """A valid native M=3 mantissa LUT file."""
    table = (1.0 + np.arange(64, dtype=np.float32).reshape(8, 8) / 32.0).astype(np.float32)
    return save(lut_of(table, 3, model="toy"), tmp_path / "toy_m3.npz")


def test_load_refuses_a_missing_file(tmp_path):
    path = tmp_path / "nothing.npz"
    with pytest.raises(LUTError, match="no such LUT file") as info:
        load(path)
    assert str(path) in str(info.value)


def test_load_refuses_a_file_that_is_not_a_zip_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("this is not a LUT\n")
    with pytest.raises(LUTError, match="not an amsim LUT file") as info:
        load(path)
    assert str(path) in str(info.value)


def test_load_refuses_a_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(LUTError, match="corrupt"):
        load(saved)


def test_load_refuses_an_npz_without_table_and_meta_members(tmp_path):
    path = tmp_path / "other.npz"
    with open(path, "wb") as f:
        np.savez(f, weights=np.zeros(3))
    with pytest.raises(LUTError, match=r"not an amsim LUT file.*weights.*expected table and meta"):
        load(path)


def test_load_refuses_an_npz_whose_meta_is_not_amsims(tmp_path):
    path = tmp_path / "foreign.npz"
    write_npz(path, np.ones((2, 2), np.float32), {"format": "something-else"})
    with pytest.raises(LUTError, match="not an amsim LUT file"):
        load(path)


def test_load_refuses_a_table_with_a_flipped_byte_by_checksum(saved):
    table, _ = read_npz(saved)
    table.reshape(-1).view(np.uint8)[17] ^= 0x01  # one bit of one entry
    tamper(saved, table=table)
    with pytest.raises(LUTError, match="checksum mismatch"):
        load(saved)


def test_load_refuses_a_table_whose_shape_does_not_match_m(saved):
    tamper(saved, bits=4)
    with pytest.raises(LUTError, match=r"shape \(8, 8\) does not match M=4"):
        load(saved)


def test_load_refuses_a_file_for_another_width_than_requested(saved):
    assert load(saved, bits=3).bits == 3
    with pytest.raises(LUTError, match="M=3, not M=7"):
        load(saved, bits=7)


def test_load_refuses_a_file_of_another_kind_than_requested(saved):
    assert load(saved, kind="mantissa").kind == "mantissa"
    with pytest.raises(LUTError, match="mantissa table, not a.* integer table"):
        load(saved, kind="integer")


def test_load_refuses_an_unknown_format_version(saved):
    tamper(saved, format_version=99)
    with pytest.raises(LUTError, match="format version 99 is not supported"):
        load(saved)


# ==============================================================================================
# Native format: atomic writes
# ==============================================================================================


def test_save_leaves_only_the_target_file_behind(tmp_path):
    save(lut_of(np.ones((2, 2), np.float32), 1), tmp_path / "one.npz")
    assert dir_listing(tmp_path) == ["one.npz"]


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "x.npz"
    save(lut_of(np.ones((2, 2), np.float32), 1), path)
    save(lut_of(np.full((2, 2), 1.5, np.float32), 1), path)
    assert np.all(load(path).table == 1.5)


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    before = lut_of(np.ones((2, 2), np.float32), 1, model="before")
    save(before, path)
    content = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        save(lut_of(np.full((2, 2), 1.5, np.float32), 1, model="after"), path)
    monkeypatch.undo()
    assert path.read_bytes() == content
    assert load(path).model == "before"
    assert dir_listing(tmp_path) == ["x.npz"]


def test_saved_file_gets_the_permissions_of_an_ordinary_new_file(tmp_path):
    # A LUT is a data file for other tools and users: the umask decides, as for open(path, "w").
    umask = os.umask(0o022)
    try:
        path = save(lut_of(np.ones((2, 2), np.float32), 1), tmp_path / "shared.npz")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# ==============================================================================================
# ApproxTrain
# ==============================================================================================

#: (model, ApproxTrain stem, M, the reference table).
APPROXTRAIN_FILES = (
    [("at_mbm", "MBM", m, ref.at_mbm_table) for m in (1, 3, 5, 7)]
    + [("at_mitchell", "MIT", m, ref.at_mitchell_table) for m in (1, 3, 5, 7)]
    + [("bf16_trunc", "ACC", 7, ref.bf16_trunc_table)]
)
AT_IDS = [f"{stem}_{m}" for _, stem, m, _ in APPROXTRAIN_FILES]


def reference_bytes(table_fn, m):
    """ApproxTrain's shipped file content, from the independent reference."""
    return np.asarray(ref.approxtrain_bytes(table_fn(m), m), dtype=np.uint8).ravel().tobytes()


@pytest.mark.parametrize("name, stem, m, table_fn", APPROXTRAIN_FILES, ids=AT_IDS)
def test_approxtrain_export_reproduces_the_shipped_file_byte_for_byte(name, stem, m, table_fn):
    data = to_approxtrain(built_mantissa_lut(name, m))
    assert len(data) == 1 << (2 * m)
    assert data == reference_bytes(table_fn, m)


@pytest.fixture(scope="module")
def approxtrain_cli_dir(tmp_path_factory):
    """``generate-lut --format approxtrain`` run for every width ApproxTrain ships."""
    out = tmp_path_factory.mktemp("approxtrain")
    runs = [(1, ["at_mbm", "at_mitchell"]), (3, ["at_mbm", "at_mitchell"]), (5, ["at_mbm", "at_mitchell"]),
            (7, ["at_mbm", "at_mitchell", "bf16_trunc"])]
    for m, models in runs:
        argv = ["generate-lut", "--format", "approxtrain", "--bits", str(m), "--out", str(out),
                "--samples", str(SAMPLES)]
        for name in models:
            argv += ["--model", name]
        assert cli.main(argv) == 0
    return out


def test_generate_lut_names_approxtrain_files_as_approxtrain_does(approxtrain_cli_dir, capsys):
    assert dir_listing(approxtrain_cli_dir) == sorted(
        ["MBM_1.bin", "MBM_3.bin", "MBM_5.bin", "MBM_7.bin",
         "MIT_1.bin", "MIT_3.bin", "MIT_5.bin", "MIT_7.bin", "ACC_7.bin"])


@pytest.mark.parametrize("name, stem, m, table_fn", APPROXTRAIN_FILES, ids=AT_IDS)
def test_generate_lut_approxtrain_file_equals_the_shipped_bytes(approxtrain_cli_dir, name, stem, m, table_fn):
    assert (approxtrain_cli_dir / f"{stem}_{m}.bin").read_bytes() == reference_bytes(table_fn, m)


def test_approxtrain_mbm7_rows_2k_and_2k_plus_1_are_equal():
    rows = np.frombuffer(to_approxtrain(built_mantissa_lut("at_mbm", 7)), np.uint8).reshape(128, 128)
    assert np.array_equal(rows[0::2], rows[1::2])
    assert not np.array_equal(rows[0::2][:-1], rows[0::2][1:])  # but only pairs of rows repeat


def test_approxtrain_mbm1_multiplies_every_pair_by_exactly_two():
    data = to_approxtrain(built_mantissa_lut("at_mbm", 1))
    assert data == b"\x80" * 4
    assert np.all(built_mantissa_lut("at_mbm", 1).table == 2.0)


@pytest.mark.parametrize("name, stem, m, table_fn", APPROXTRAIN_FILES, ids=AT_IDS)
def test_approxtrain_file_round_trip_gives_the_identical_table(tmp_path, name, stem, m, table_fn):
    original = built_mantissa_lut(name, m)
    path = save_approxtrain(original, tmp_path / f"{stem}_{m}.bin")
    loaded = load_approxtrain(path)
    assert loaded.bits == m and loaded.kind == "mantissa"
    assert np.array_equal(loaded.table, original.table)


def test_approxtrain_import_decodes_carry_and_mantissa():
    # index (i << M) | j; bit 7 = carry (x2), low M bits = mantissa
    lut = from_approxtrain(bytes([0x00, 0x01, 0x80, 0x81]), 1)
    assert lut.table.tolist() == [[1.0, 1.5], [2.0, 3.0]]


def test_approxtrain_export_puts_row_a_column_b_at_index_i_shl_m_or_j():
    table = np.ones((2, 2), np.float32)
    table[0, 1] = 1.5  # asymmetric: A's mantissa 0, B's mantissa 1
    table[1, 0] = 2.0
    assert to_approxtrain(lut_of(table, 1)) == bytes([0x00, 0x01, 0x80, 0x00])


def test_approxtrain_export_refuses_exact_products_that_need_more_than_m_bits():
    with pytest.raises(LUTError, match="cannot represent"):
        to_approxtrain(built_mantissa_lut("exact", 7))


@pytest.mark.parametrize("value", [0.5, 0.0, 4.0, 5.0, float("inf"), float("nan")])
def test_approxtrain_export_refuses_values_outside_one_to_four(value):
    table = np.full((4, 4), 1.5, np.float32)
    table[1, 2] = value
    with pytest.raises(LUTError, match=r"entry \(1, 2\)"):
        to_approxtrain(lut_of(table, 2))


def test_approxtrain_export_refuses_m_above_7():
    with pytest.raises(LUTError, match="M <= 7"):
        to_approxtrain(lut_of(np.ones((256, 256), np.float32), 8))


def test_approxtrain_export_refuses_an_integer_table():
    with pytest.raises(LUTError, match="mantissa"):
        to_approxtrain(built_integer_lut("exact_int", 4))


def test_approxtrain_save_refuses_a_name_that_gives_another_m(tmp_path):
    with pytest.raises(LUTError, match=r"_7\.bin"):
        save_approxtrain(built_mantissa_lut("at_mbm", 7), tmp_path / "MBM_5.bin")
    assert dir_listing(tmp_path) == []


def test_approxtrain_import_refuses_a_file_of_the_wrong_size(tmp_path):
    path = tmp_path / "MBM_7.bin"
    path.write_bytes(b"\x80" * 4096)
    with pytest.raises(LUTError, match="4096 bytes, but M=7 needs 16384"):
        load_approxtrain(path)


def test_approxtrain_import_refuses_a_name_without_m(tmp_path):
    path = tmp_path / "MBM.bin"
    path.write_bytes(b"\x80" * 16384)
    with pytest.raises(LUTError, match="_M.bin"):
        load_approxtrain(path)


# ==============================================================================================
# File names
# ==============================================================================================


@pytest.mark.parametrize("args, expected", [
    (("drum", {"k": 6}, 7), "drum_k6_m7.npz"),
    (("mitchell", {}, 7), "mitchell_m7.npz"),
    (("bam", {"v": 3, "h": 0}, 5), "bam_h0_v3_m5.npz"),
    (("at_mbm", {}, 5, "approxtrain", "MBM"), "MBM_5.bin"),
    (("bf16_trunc", {}, 7, "approxtrain", "ACC"), "ACC_7.bin"),
    (("mitchell", {}, 3, "approxtrain"), "MITCHELL_3.bin"),
    (("mul8u_x", {"k": 6}, 8, "tfapprox"), "mul8u_x_k6.bin"),
    (("exact_int", {}, 8, "tfapprox"), "exact_int.bin"),
])
def test_lut_filename(args, expected):
    assert lut_filename(*args) == expected


def test_lut_filename_for_approxtrain_ends_in_the_m_approxtrain_reads():
    assert lut_filename("mbm", {"t": 2}, 7, "approxtrain", "MBM").endswith("_7.bin")


def test_lut_filename_refuses_an_unknown_format():
    with pytest.raises(LUTError, match="unknown LUT format"):
        lut_filename("x", {}, 7, "onnx")
