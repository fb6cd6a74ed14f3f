"""Tests of ``amsim.lutformats``: the 8-bit integer product tables of TFApprox, TorchApprox,
AdaPT/TransAxx and ApproxTorch, each in its own operand order, index order and element type.

Tables "by hand" are written here the way each peer writes or reads them (docs/lut-formats.md names the
peer's file and line), never through amsim's writers, so that a convention mistaken in both directions
cannot pass.
"""

import functools
import io
import re

import numpy as np
import pytest

import amsim
from amsim.errors import LUTError
from amsim.generate import integer_lut, mantissa_lut
from amsim.lut import LUT, save as save_native
from amsim.lutformats import (FORMATS, encode, load, load_adapt, load_approxtorch, load_tfapprox,
                              load_torchapprox, save, save_tfapprox)
from cli_run import run

import reference_designs as ref

#: The operand pairs every hand-written table is checked at: the corners and both sides of the sign
#: boundary (and of the unsigned half-way point, where a signed reading would turn negative).
SIGNED_PROBES = (-128, -1, 0, 127)
UNSIGNED_PROBES = (0, 255, 127, 128)

SIGNED_C_MODEL = """#include <stdint.h>
int16_t mul8s_sgn(int8_t A, int8_t B)
{
    return A * B;
}
"""


def operands(signed):
    """Every 8-bit operand in amsim's index order: row/column p is the operand whose bit pattern is p."""
    p = np.arange(256)
    return np.where(p >= 128, p - 256, p) if signed else p


def asymmetric(a, b):
    """A stand-in multiplier with a * b + a: row and column cannot be swapped unnoticed."""
    return np.asarray(a) * np.asarray(b) + np.asarray(a)


def peer_table(signed):
    """asymmetric() over every pair, rows = a, columns = b, in amsim's (bit-pattern) order."""
    x = operands(signed)
    return asymmetric(x[:, None], x[None, :]).astype(np.int64)


def integer(table, signed):
    return LUT(table=np.asarray(table, np.int64), bits=8, kind="integer", meta={"signed": signed})


@functools.lru_cache(maxsize=None)
def exact_unsigned():
    """amsim's exact 8-bit unsigned integer table (the exact_int model)."""
    return integer_lut(amsim.find_model("exact_int"), 8)


@pytest.fixture(scope="module")
def exact_signed(tmp_path_factory):
    """amsim's exact 8-bit signed table, from a two's-complement C model."""
    source = tmp_path_factory.mktemp("models") / "mul8s_sgn.c"
    source.write_text(SIGNED_C_MODEL)
    lut = integer_lut(amsim.load_model(source), 8)
    assert lut.meta["signed"]
    return lut


def probes(signed):
    return [(a, b) for a in (SIGNED_PROBES if signed else UNSIGNED_PROBES)
            for b in (SIGNED_PROBES if signed else UNSIGNED_PROBES)]


def assert_reads_peer_products(lut, signed):
    """``lut`` holds asymmetric(a, b) at [a's pattern, b's pattern], checked pair by pair at the probes,
    then everywhere."""
    assert lut.kind == "integer" and lut.bits == 8 and lut.meta["signed"] is signed
    for a, b in probes(signed):
        assert lut.table[a & 0xFF, b & 0xFF] == a * b + a, (a, b)
    assert np.array_equal(lut.table, peer_table(signed))


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ==============================================================================================
# Hand-written tables in each peer's layout
# ==============================================================================================


def tfapprox_by_hand(path, signed):
    """TFApprox's README generator: for a in 0..255, for b in 0..255, fwrite the 16-bit result of the
    circuit called on a and b (a signed circuit's int8_t parameters take a's bit pattern)."""
    words = []
    for a in range(256):
        for b in range(256):
            x, y = (a - 256 if signed and a >= 128 else a), (b - 256 if signed and b >= 128 else b)
            words.append((x * y + x) & 0xFFFF)
    path.write_bytes(np.array(words, "<u2").tobytes())


def torchapprox_by_hand(path, signed):
    """TorchApprox's evoapprox.lut(): x = arange(256), x[x >= 128] -= 256 for signed circuits, the
    products over meshgrid(x, x, indexing="ij"), and its layers' int32."""
    x = np.arange(256)
    if signed:
        x[x >= 128] -= 256
    xx, yy = np.meshgrid(x, x, indexing="ij")
    np.save(path, (xx * yy + xx).astype(np.int32))


def adapt_by_hand(path, signed):
    """AdaPT's LUT_convert notebook: rows i < 128 are operand i, rows i >= 128 operand -(256 - i),
    likewise columns; one row per line, ``{...},`` after each but the last, ``}};`` at the end."""
    def value(i):
        return i if i < 128 or not signed else -(256 - i)

    with open(path, "w") as f:
        f.write("#include <stdint.h>\n\n")
        f.write(f"const {'int16_t' if signed else 'uint16_t'} lut [256][256] = {{")
        for i in range(256):
            f.write("{" + ", ".join(str(value(i) * value(j) + value(i)) for j in range(256)) + "}")
            f.write(",\n" if i != 255 else "}};\n")


def transaxx_by_hand(path):
    """TransAxx's CUDA headers: an include guard and ``const __device__ short lut [256][256]``."""
    table = peer_table(True)
    rows = ",\n".join("{" + ", ".join(map(str, row)) + "}" for row in table)
    path.write_text(f"#ifndef _MUL8S_X_H\n  #define _MUL8S_X_H\n\nconst __device__ short lut [256][256] = "
                    f"{{{rows}}};\n\n#endif\n")


def approxtorch_by_hand(path, signed):
    """ApproxTorch's text: entry (i, j) is the product of A = i - 128 and B = j - 128 for int8, of i and
    j for uint8; 256 lines of 256 integers."""
    x = np.arange(256) - (128 if signed else 0)
    np.savetxt(path, x[:, None] * x[None, :] + x[:, None], fmt="%d")


BY_HAND = {"tfapprox": tfapprox_by_hand, "torchapprox": torchapprox_by_hand, "adapt": adapt_by_hand,
           "approxtorch": approxtorch_by_hand}
SUFFIX = {"tfapprox": ".bin", "torchapprox": ".npy", "adapt": ".h", "approxtorch": ".txt"}
LOADERS = {"tfapprox": load_tfapprox, "torchapprox": load_torchapprox, "adapt": load_adapt,
           "approxtorch": load_approxtorch}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_table_written_by_hand_in_the_peers_layout_reads_back_to_its_products(tmp_path, fmt, signed):
    path = tmp_path / f"mul8{'s' if signed else 'u'}_peer{SUFFIX[fmt]}"
    BY_HAND[fmt](path, signed)
    assert_reads_peer_products(LOADERS[fmt](path, signed=signed), signed)
    assert_reads_peer_products(LOADERS[fmt](path), signed)  # what the file and its numbers say


def test_a_transaxx_cuda_header_reads_back_to_its_products(tmp_path):
    path = tmp_path / "mul8s_x.h"
    transaxx_by_hand(path)
    assert_reads_peer_products(load_adapt(path), True)


# ==============================================================================================
# What amsim writes, read the way each peer reads it
# ==============================================================================================


def peer_reads(fmt, data, signed, a, b):
    """The product the peer takes for operands a, b out of the file ``data``."""
    if fmt == "tfapprox":  # lookupTable[(a << 8) | b] of 16-bit words
        words = np.frombuffer(data, "<i2" if signed else "<u2")
        return int(words[((a & 0xFF) << 8) | (b & 0xFF)])
    if fmt == "torchapprox":  # lut[uint8_t(a)][uint8_t(b)]
        return int(np.load(io.BytesIO(data))[a & 0xFF][b & 0xFF])
    if fmt == "adapt":  # lut[(uint8_t)a][(uint8_t)b] of the C array
        numbers = re.findall(r"-?\d+", data.decode().split("=", 1)[1])
        return int(np.array(numbers, np.int64).reshape(256, 256)[a & 0xFF][b & 0xFF])
    # ApproxTorch: loadtxt, then lut[(a + 128) * 256 + (b + 128)] for int8, lut[a * 256 + b] for uint8
    flat = np.array(data.decode().split(), np.int64)
    return int(flat[(a + 128) * 256 + (b + 128)] if signed else flat[a * 256 + b])


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_peer_finds_each_product_where_it_looks(fmt, signed):
    data = encode(integer(peer_table(signed), signed), fmt)
    for a, b in probes(signed):
        assert peer_reads(fmt, data, signed, a, b) == a * b + a, (a, b)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exact_unsigned_table_round_trips(tmp_path, fmt):
    original = exact_unsigned()
    loaded = load(save(original, tmp_path / f"exact_int{SUFFIX[fmt]}", fmt), fmt, signed=False)
    assert loaded.meta["signed"] is False and loaded.meta["imported_from"] == fmt
    assert np.array_equal(loaded.table, original.table)
    assert loaded.table[255, 255] == 255 * 255


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exact_signed_table_round_trips(tmp_path, fmt, exact_signed):
    loaded = load(save(exact_signed, tmp_path / f"mul8s_sgn{SUFFIX[fmt]}", fmt), fmt, signed=True)
    assert loaded.meta["signed"] is True
    assert np.array_equal(loaded.table, exact_signed.table)
    assert loaded.table[0x80, 0x80] == 128 * 128 and loaded.table[0xFF, 0x7F] == -127


def test_tfapprox_export_of_mitchell_holds_the_models_products():
    a, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    words = np.frombuffer(encode(integer_lut(amsim.find_model("mitchell"), 8), "tfapprox"), "<u2")
    assert np.array_equal(words.reshape(256, 256), ref.mitchell(a, b, 8))


def test_an_all_zero_table_is_accepted_as_either_signedness_but_not_guessed(tmp_path):
    path = tmp_path / "zero.npy"
    np.save(path, np.zeros((256, 256), np.int32))
    assert load_torchapprox(path, signed=True).meta["signed"] is True
    assert load_torchapprox(path, signed=False).meta["signed"] is False
    with pytest.raises(LUTError) as exc:
        load_torchapprox(path)
    assert "declare" in one_line(exc)


# ==============================================================================================
# Files that are not what they are declared to be
# ==============================================================================================


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_signed_table_declared_unsigned_is_refused(tmp_path, fmt):
    path = tmp_path / f"mul8s_peer{SUFFIX[fmt]}"
    BY_HAND[fmt](path, True)
    with pytest.raises(LUTError) as exc:
        load(path, fmt, signed=False)
    assert str(path) in one_line(exc) and "signed" in str(exc.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unsigned_table_declared_signed_is_refused(tmp_path, fmt):
    path = tmp_path / f"mul8u_peer{SUFFIX[fmt]}"
    BY_HAND[fmt](path, False)
    with pytest.raises(LUTError) as exc:
        load(path, fmt, signed=True)
    assert "unsigned" in one_line(exc)


def write_as_stored(fmt, path, stored, signed):
    """``stored`` put in ``fmt``'s container as it is, row i of the matrix as the file's row i."""
    if fmt == "tfapprox":
        path.write_bytes((stored & 0xFFFF).astype("<u2").tobytes())
    elif fmt == "torchapprox":
        np.save(path, stored.astype(np.int32))
    elif fmt == "adapt":
        rows = ",\n".join("{" + ", ".join(map(str, row)) + "}" for row in stored)
        path.write_text(f"const {'int16_t' if signed else 'uint16_t'} lut [256][256] = {{{rows}}};\n")
    else:
        np.savetxt(path, stored, fmt="%d")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_signed_table_in_another_tools_index_order_is_refused(tmp_path, fmt):
    """ApproxTorch's value order (row i = operand i - 128) where the bit-pattern order of TFApprox,
    TorchApprox and AdaPT is due, and theirs in an ApproxTorch file."""
    pattern_order = peer_table(True)
    value_order = np.roll(pattern_order, 128, axis=(0, 1))
    assert value_order[0, 0] == asymmetric(-128, -128)
    path = tmp_path / f"mul8s_peer{SUFFIX[fmt]}"
    write_as_stored(fmt, path, pattern_order if fmt == "approxtorch" else value_order, True)
    for declared in (True, None):
        with pytest.raises(LUTError) as exc:
            load(path, fmt, signed=declared)
        assert "order" in one_line(exc)


def test_a_tfapprox_file_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(LUTError) as exc:
        load_tfapprox(path)
    assert "131072 bytes" in one_line(exc)


def test_a_torchapprox_array_of_the_wrong_shape_or_dtype_is_refused(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, peer_table(False)[:255].astype(np.int32))
    with pytest.raises(LUTError) as exc:
        load_torchapprox(path, signed=False)
    assert "(255, 256)" in one_line(exc)
    np.save(path, peer_table(False).astype(np.float32))
    with pytest.raises(LUTError) as exc:
        load_torchapprox(path, signed=False)
    assert "float32" in one_line(exc)


def test_a_file_that_is_no_npy_array_is_refused_as_a_torchapprox_table(tmp_path):
    path = tmp_path / "mitchell.npy"
    approxtorch_by_hand(path, False)  # a text table under the wrong suffix
    with pytest.raises(LUTError) as exc:
        load_torchapprox(path)
    assert "not a .npy file" in one_line(exc)


def test_a_header_with_a_row_missing_or_a_float_table_is_refused(tmp_path):
    path = tmp_path / "mul8s_peer.h"
    adapt_by_hand(path, True)
    text = path.read_text()
    path.write_text(re.sub(r"\{[^{}]*\},\n", "", text, count=1))  # the first row gone
    with pytest.raises(LUTError) as exc:
        load_adapt(path)
    assert "255 rows" in one_line(exc)
    path.write_text(text.replace("int16_t lut", "float lut"))
    with pytest.raises(LUTError) as exc:
        load_adapt(path)
    assert "'float'" in one_line(exc)


def test_a_header_declaring_one_signedness_read_as_the_other_is_refused(tmp_path):
    path = tmp_path / "mul8s_peer.h"
    adapt_by_hand(path, True)
    with pytest.raises(LUTError) as exc:
        load_adapt(path, signed=False)
    assert "element type makes it signed" in one_line(exc)


def test_a_text_table_with_a_short_line_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "t.txt"
    approxtorch_by_hand(path, True)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(" ", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LUTError) as exc:
        load_approxtorch(path, signed=True)
    assert "line 7 has 255 numbers" in one_line(exc)


def test_products_beyond_16_bits_are_refused(tmp_path):
    table = peer_table(False).astype(np.int32)
    table[3, 4] = 70000
    path = tmp_path / "wide.npy"
    np.save(path, table)
    with pytest.raises(LUTError) as exc:
        load_torchapprox(path, signed=False)
    assert "(3, 4) = 70000" in one_line(exc)


# ==============================================================================================
# Writing
# ==============================================================================================


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_table_a_format_cannot_hold_is_refused_and_nothing_is_written(tmp_path, fmt):
    wide = peer_table(False)
    wide[0, 0] = 1 << 16
    for lut, reason in [(integer(wide, False), "outside 0..65535"),
                        (integer_lut(amsim.find_model("exact_int"), 7), "8-bit"),
                        (mantissa_lut(amsim.find_model("at_mitchell"), 3, samples=1000, seed=1), "mantissa")]:
        with pytest.raises(LUTError) as exc:
            save(lut, tmp_path / f"refused{SUFFIX[fmt]}", fmt)
        assert reason in one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_leaves_the_old_file_as_it_was(tmp_path):
    path = save_tfapprox(exact_unsigned(), tmp_path / "kept.bin")
    before = path.read_bytes()
    with pytest.raises(LUTError):
        save_tfapprox(integer_lut(amsim.find_model("exact_int"), 7), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["kept.bin"]


# ==============================================================================================
# Command line
# ==============================================================================================


@pytest.mark.parametrize("fmt", FORMATS)
def test_generate_lut_writes_each_format_and_lut_info_recognises_it(tmp_path, capsys, fmt, exact_signed):
    source = tmp_path / "mul8s_sgn.c"
    source.write_text(SIGNED_C_MODEL)
    rc, out, err = run(["generate-lut", "--format", fmt, "--bits", "8", "--model", str(source),
                        "--out", str(tmp_path / "luts")], capsys)
    assert rc == 0, err
    path = tmp_path / "luts" / f"mul8s_sgn{SUFFIX[fmt]}"
    assert np.array_equal(load(path, fmt, signed=True).table, exact_signed.table)
    rc, out, err = run(["lut-info", str(path)], capsys)
    assert rc == 0, err
    assert f"verified ({fmt})" in out and re.search(r"signed\s+True", out)


def test_lut_info_refuses_a_signed_table_declared_unsigned_in_one_line(tmp_path, capsys):
    path = tmp_path / "mul8s_peer.bin"
    tfapprox_by_hand(path, True)
    rc, out, err = run(["lut-info", str(path), "--unsigned"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and "not an unsigned table" in lines[0]
    rc, out, err = run(["lut-info", str(path), "--format", "tfapprox", "--signed"], capsys)
    assert rc == 0 and re.search(r"signed\s+True", out)


def test_lut_info_refuses_a_signedness_for_a_format_that_records_its_own(tmp_path, capsys):
    path = save_native(exact_unsigned(), tmp_path / "exact_int_n8.npz")
    rc, out, err = run(["lut-info", str(path), "--signed"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and "integer formats" in lines[0]
