"""An integer circuit as quantized layers multiply with it: its complete 8-bit product table, checked.

:func:`resolve_circuit` is the one place that turns what a user passes as an integer multiplier
into a :class:`Circuit`: a C model by name or ``.c`` file (its table swept once per process and
configuration), an integer LUT file (amsim's ``.npz``, or a peer's table: TFApprox ``.bin``,
TorchApprox ``.npy``, AdaPT/TransAxx ``.h``, ApproxTorch ``.txt``, read and verified by
:mod:`amsim.lutformats`), an integer :class:`amsim.lut.LUT`, a (2^n, 2^n) integer array, or an
embedded config (:func:`circuit_to_config`). Every source is checked the same way: n-bit operands,
the signedness the caller needs (an unsigned circuit multiplies uint8 operands, a signed one
int8), and products that fit a 16-bit output (docs/quantized.md).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
import zlib
from pathlib import Path

import numpy as np

from ..errors import AmsimError, LUTError
from ..lut import LUT, table_checksum
from . import integer

__all__ = ["Circuit", "CircuitError", "resolve_circuit", "circuit_to_config", "circuit_from_config"]

EMBED_FORMAT = "amsim-embedded-circuit"
EMBED_VERSION = 1
#: Peer LUT files by suffix (amsim.lutformats' names); ``.npz`` is amsim's own LUT file.
_PEER_SUFFIXES = {".bin": "tfapprox", ".npy": "torchapprox", ".h": "adapt", ".txt": "approxtorch"}


class CircuitError(AmsimError, ValueError):
    """Something that cannot be an integer circuit of the width and signedness asked for."""


@dataclasses.dataclass(frozen=True, eq=False)
class Circuit:
    """An integer multiplier's complete product table, as the integer GEMM takes it.

    Attributes:
        name: the circuit's name (the C model's, or the file's stem).
        table: int32 array ``(2^bits, 2^bits)``; entry ``[p(a), p(b)]`` is the product of the
            operands whose n-bit patterns are p(a) and p(b) (two's complement when signed).
        bits: the operand width n.
        signed: two's-complement operands and products.
        params: the C model's parameters (empty for a table).
    """

    name: str
    table: np.ndarray
    bits: int
    signed: bool
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def checksum(self) -> str:
        return table_checksum(self.table)

    @property
    def label(self) -> str:
        """``name`` with its parameters, ``mul8u_trunc:k=4``: how runs and reports name it."""
        return ":".join([self.name, *(f"{k}={v}" for k, v in sorted(self.params.items()))])

    def __repr__(self) -> str:
        return f"Circuit({self.label!r}, {'signed' if self.signed else 'unsigned'} {self.bits}-bit)"


# Circuits swept from C models, by (source checksum, width, parameters): one sweep per process.
_SWEPT: dict[tuple, Circuit] = {}
_SWEPT_LOCK = threading.Lock()


def resolve_circuit(lut, *, signed: bool, bits: int = 8, params=None, models_dirs=()) -> Circuit:
    """The :class:`Circuit` of what a user passed as an integer multiplier, checked.

    Args:
        lut: a C model's name or ``.c`` file (an integer model), an integer LUT file, an integer
            :class:`amsim.lut.LUT`, a (2^bits, 2^bits) integer array, a :class:`Circuit`, or the
            dict :func:`circuit_to_config` makes.
        signed: the operands the caller multiplies: True for two's complement (int8), False for
            unsigned (uint8). A circuit of the other kind is refused.
        bits: the operand width n, 1..8.
        params: the C model's parameters.
        models_dirs: folders of C models searched by name after the built-ins.

    Raises:
        CircuitError: a float model, a table of another width or signedness, products that do
            not fit a 16-bit output.
        LUTError, ModelError: a file that cannot be read or a model that does not compile.
    """
    bits = integer.check_bits(bits)
    signed = bool(signed)
    if isinstance(lut, Circuit):
        circuit = lut
    elif isinstance(lut, dict):
        circuit = circuit_from_config(lut)
    elif isinstance(lut, LUT):
        circuit = _from_lut(lut, lut.model or "table")
    elif isinstance(lut, (str, Path)) and Path(lut).suffix in (".npz", *_PEER_SUFFIXES):
        circuit = _from_file(Path(lut), signed)
    elif isinstance(lut, (str, Path)):
        circuit = _from_model(str(lut), bits, params, models_dirs)
    elif isinstance(lut, np.ndarray):
        circuit = Circuit("table", lut, int(lut.shape[0]).bit_length() - 1 if lut.ndim == 2 else 0, signed)
    else:
        raise CircuitError(f"an integer circuit is a C model's name or .c file, an integer LUT file or LUT, or a "
                           f"(2^n, 2^n) integer array, not {type(lut).__name__}")
    if circuit.signed != signed:
        have, want = ("a signed", "unsigned") if circuit.signed else ("an unsigned", "signed")
        article = "an" if want == "unsigned" else "a"
        raise CircuitError(f"{circuit.label} is {have} circuit; {want} operands need {article} {want} one "
                           f"({'int8' if signed else 'uint8'} quantization multiplies with {want} circuits)")
    if circuit.bits != bits:
        raise CircuitError(f"{circuit.label} multiplies {circuit.bits}-bit operands, not {bits}-bit ones")
    try:
        table = integer.check_table(circuit.table, bits, signed)
    except AmsimError as exc:
        raise CircuitError(f"{circuit.label}: {exc}") from None
    if table is not circuit.table:
        circuit = dataclasses.replace(circuit, table=table)
    return circuit


def _from_model(name, bits, params, models_dirs) -> Circuit:
    from .. import generate
    from ..models import find_model

    model = find_model(name, models_dirs)
    if model.kind != "int":
        raise CircuitError(f"model {model.name!r} is a float model; quantized layers multiply with integer circuits "
                           "(kind: int)")
    resolved = model.resolve_params(params)
    key = (model.source_sha256, bits, tuple(sorted(resolved.items())))
    with _SWEPT_LOCK:
        circuit = _SWEPT.get(key)
    if circuit is None:
        lut = generate.integer_lut(model, bits, resolved)
        circuit = Circuit(model.name, np.asarray(lut.table), bits, bool(model.signed), dict(resolved))
        with _SWEPT_LOCK:
            _SWEPT[key] = circuit
    return circuit


def _from_lut(lut: LUT, name: str) -> Circuit:
    if lut.kind != "integer":
        raise CircuitError(f"{name}: a {lut.kind} LUT; quantized layers multiply with integer tables")
    return Circuit(name, np.asarray(lut.table), int(lut.bits), bool(lut.meta.get("signed")),
                   dict(lut.params or {}))


def _from_file(path: Path, signed: bool) -> Circuit:
    from .. import lut as lutmod
    from .. import lutformats

    if not path.is_file():
        raise LUTError(f"{path}: no such LUT file")
    if path.suffix == ".npz":
        return _from_lut(lutmod.load(path, kind="integer"), path.stem)
    # A peer's file does not always say its signedness: read it as the caller's, verified against
    # the exact products in that reading (a signed table read as unsigned does not verify).
    return _from_lut(lutformats.load(path, _PEER_SUFFIXES[path.suffix], signed=signed), path.stem)


# ----------------------------------------------------------------------------------------------
# A circuit in a layer's config
# ----------------------------------------------------------------------------------------------


def circuit_to_config(circuit: Circuit) -> dict:
    """The circuit as a JSON-serialisable dict: its table as 16-bit little-endian words, zlib and
    base64, with its checksum (a saved model multiplies with it where the C model is missing)."""
    words = np.ascontiguousarray(circuit.table, "<i2" if circuit.signed else "<u2")
    return {"format": EMBED_FORMAT, "version": EMBED_VERSION, "name": circuit.name, "bits": circuit.bits,
            "signed": circuit.signed, "params": dict(circuit.params), "sha256": circuit.checksum,
            "table": base64.b64encode(zlib.compress(words.tobytes(), 9)).decode("ascii")}


def circuit_from_config(config: dict) -> Circuit:
    """Decode :func:`circuit_to_config`'s dict, verifying the table against its checksum."""
    if config.get("format") != EMBED_FORMAT or config.get("version") != EMBED_VERSION:
        raise LUTError(f"not an embedded amsim circuit (format {config.get('format')!r}, version "
                       f"{config.get('version')!r}; expected {EMBED_FORMAT!r} version {EMBED_VERSION})")
    try:
        bits, signed = integer.check_bits(config["bits"]), config["signed"]
        words = zlib.decompress(base64.b64decode(config["table"], validate=True))
    except (KeyError, binascii.Error, zlib.error, ValueError, AmsimError) as exc:
        raise LUTError(f"embedded circuit is corrupt ({exc})") from None
    n = 1 << bits
    if not isinstance(signed, bool) or len(words) != 2 * n * n:
        raise LUTError(f"embedded circuit is corrupt: {len(words)} bytes for {bits}-bit operands")
    table = np.frombuffer(words, "<i2" if signed else "<u2").reshape(n, n).astype(np.int32)
    if table_checksum(table) != config.get("sha256"):
        raise LUTError("embedded circuit does not match its checksum: the saved config is corrupt")
    return Circuit(str(config.get("name", "table")), table, bits, signed, dict(config.get("params") or {}))
