"""Image classification datasets, read from their standard distribution files.

* ``digits``: scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download);
  the first 1437 images train, the last 360 test.
* ``mnist`` and ``fashion-mnist``: the four IDX files as distributed (``train-images-idx3-ubyte.gz``,
  ...) or unpacked (``train-images-idx3-ubyte``, or ``train-images.idx3-ubyte`` as some mirrors name
  them); for ``mnist`` also Keras's ``mnist.npz``.
* ``cifar10``: the python version's pickle batches (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``) in ``cifar-10-batches-py/``.

Files are looked for in ``data_dir`` (and its subfolder named like Keras's), then in Keras's cache
folder ``~/.keras/datasets`` (``KERAS_HOME`` moves it), where ``keras.datasets`` leaves them. When
they are missing, the error says which files to put where. Every file is checked against its
format (magic numbers, sizes, label ranges, counts), so a truncated download is refused with the
file's name and the reason instead of training on garbage.

Validation follows the reference study: the *first* ``validation`` training images (5000 for
CIFAR-10 as there) are held out, the rest train. Pixels are scaled to [0, 1]; labels are int32.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import RangeError
from . import ExperimentError

__all__ = ["Dataset", "DatasetError", "DatasetSplitError", "DATASETS", "load_dataset", "keras_cache_dir",
           "standardize_per_image", "read_idx", "read_cifar_batch"]


class DatasetError(ExperimentError):
    """A dataset's files are missing, corrupt or inconsistent."""


class DatasetSplitError(DatasetError, RangeError):
    """``validation``, ``limit_train`` or ``limit_test`` asks for more images than the dataset has: a
    value out of range (the command line's usage error), not a damaged file."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays of one dataset, split into training, validation and test sets (NHWC float32, int32 labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    source: str  # where the data came from: files with their sha256, or the package

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.x_train), "validation": len(self.x_val),
                "test": len(self.x_test), "input_shape": list(self.input_shape), "classes": self.classes,
                "source": self.source}


def keras_cache_dir() -> Path:
    """Keras's dataset cache: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home) if home else Path.home() / ".keras") / "datasets"


# ----------------------------------------------------------------------------------------------
# File formats
# ----------------------------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8}


def _read_gzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream is EOFError
        raise DatasetError(f"{path}: not a complete gzip file ({exc}); download it again") from None


def read_idx(path, *, ndim: int) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    data = _read_gzip(path) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype not in _IDX_TYPES or dims != ndim:
        raise DatasetError(f"{path}: not an IDX file of {ndim}-dimensional unsigned bytes "
                           f"(magic {data[:4].hex()}, expected 000008{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    expected = math.prod(shape)  # exact: three 32-bit sizes can overflow numpy's int64
    if len(body) != expected:
        raise DatasetError(f"{path}: header says {'x'.join(map(str, shape))} = {expected} bytes of data, "
                           f"the file holds {len(body)}; it is {'truncated' if len(body) < expected else 'corrupt'}")
    return np.frombuffer(body, np.uint8).reshape(shape)


class _Refused(pickle.UnpicklingError):
    """The pickle names something other than numpy arrays."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a pickle names code to run, and a dataset
    file has no business running any."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise _Refused(f"refusing to load {module}.{name}, which a dataset has no use for")
        if module.startswith("numpy.core"):  # NumPy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: (N, 32, 32, 3) uint8 images and (N,) labels."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            batch = _ArraysOnly(f, encoding="bytes").load()
        except _Refused as exc:
            raise DatasetError(f"{path}: not a CIFAR-10 python batch: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever a damaged pickle makes the unpickler raise
            raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
                               "it may be truncated: download it again") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels'; it has "
                           f"{sorted(map(str, batch))}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DatasetError(f"{path}: 'data' must be an N x 3072 uint8 array, not {shape}")
    try:
        labels = np.asarray(batch["labels"])
    except ValueError as exc:  # ragged nesting
        raise DatasetError(f"{path}: 'labels' must be a list of integers ({exc})") from None
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DatasetError(f"{path}: 'labels' must be a list of integers, not {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {labels.size} labels")
    _check_labels(labels, 10, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def _check_labels(labels, classes, where):
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetError(f"{where}: labels must lie in 0..{classes - 1}, found {labels.min()}..{labels.max()}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source(paths) -> str:
    return "; ".join(f"{p} (sha256 {_sha256(p)[:16]})" for p in paths)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

#: name -> (subfolder Keras uses, files, where to get them, default validation size)
_FILES = {
    "mnist": ("mnist", _IDX_FILES, "https://yann.lecun.com/exdb/mnist/ (or Keras's mnist.npz)", 5000),
    "fashion-mnist": ("fashion-mnist", _IDX_FILES, "https://github.com/zalandoresearch/fashion-mnist", 5000),
    "cifar10": ("cifar-10-batches-py", _CIFAR_FILES,
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked", 5000),
}
DATASETS = ("digits", *_FILES)
_DIGITS_TRAIN = 1437
_DIGITS_VALIDATION = 144


def _candidates(name: str, data_dir) -> list[Path]:
    sub = _FILES[name][0]
    out = []
    if data_dir is not None:
        out += [Path(data_dir), Path(data_dir) / sub]
    out.append(keras_cache_dir() / sub)
    if name == "mnist":
        out.append(keras_cache_dir())
    return out


def _present(folder: Path, file: str) -> Path | None:
    """``folder/file``, or for a gzip file as distributed the same file unpacked, when it is there.
    An IDX file may also be named with a dot before its type (``train-images.idx3-ubyte``), as
    widely used mirrors of MNIST name them."""
    unpacked = file.removesuffix(".gz")
    names = dict.fromkeys((file, unpacked, re.sub(r"-(idx\d-ubyte)", r".\1", unpacked)))
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _find(name: str, data_dir) -> tuple[Path, list[Path]]:
    """The folder holding all of ``name``'s files (or Keras's mnist.npz) and their paths, else a
    DatasetError saying where to put them."""
    _sub, files, origin, _val = _FILES[name]
    for folder in _candidates(name, data_dir):
        paths = [_present(folder, f) for f in files]
        if None not in paths:
            return folder, paths
        if name == "mnist" and (folder / "mnist.npz").is_file():
            return folder, [folder / "mnist.npz"]
    places = " or ".join(str(p) for p in _candidates(name, data_dir))
    unpacked = " (or unpacked)" if any(f.endswith(".gz") for f in files) else ""
    raise DatasetError(f"{name}: files not found; put {', '.join(files)}{unpacked} into {places} "
                       f"(from {origin}), or name their folder with --data-dir")


def _read_mnist_npz(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: not a complete mnist.npz ({type(exc).__name__}: {exc})") from None


def _load_idx(name, data_dir):
    folder, paths = _find(name, data_dir)
    if paths[0].name == "mnist.npz":
        arrays = _read_mnist_npz(paths[0])
        where = str(paths[0])
    else:
        arrays = [read_idx(p, ndim=3 if "images" in p.name else 1) for p in paths]
        where = f"{name} in {folder}"
    x_train, y_train, x_test, y_test = arrays
    for x, y, which in ((x_train, y_train, "training"), (x_test, y_test, "test")):
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y) \
                or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"{where}: {which} images ({x.dtype} {x.shape}) and labels ({y.dtype} {y.shape}) do "
                               "not match: expected N images of uint8 pixels and N integer labels")
        _check_labels(y, 10, f"{where}: {which} labels")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{where}: training images are {'x'.join(map(str, x_train.shape[1:]))}, test images "
                           f"{'x'.join(map(str, x_test.shape[1:]))}")
    return (x_train[..., None], y_train, x_test[..., None], y_test), 255.0, _source(paths)


def _load_cifar(name, data_dir):
    _folder, paths = _find(name, data_dir)
    parts = [read_cifar_batch(p) for p in paths]
    x_train = np.concatenate([x for x, _ in parts[:5]])
    y_train = np.concatenate([y for _, y in parts[:5]])
    return (x_train, y_train, *parts[5]), 255.0, _source(paths)


def _load_digits(name, data_dir):
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[..., None]
    y = bunch.target
    n = _DIGITS_TRAIN
    return (x[:n], y[:n], x[n:], y[n:]), 16.0, f"scikit-learn {sklearn.__version__} load_digits()"


_LOADERS = {"digits": _load_digits, "mnist": _load_idx, "fashion-mnist": _load_idx, "cifar10": _load_cifar}


def default_validation(name: str) -> int:
    return _DIGITS_VALIDATION if name == "digits" else _FILES[name][3]


@functools.lru_cache(maxsize=4)
def load_dataset(name: str = "digits", data_dir=None, *, validation: int | None = None,
                 limit_train: int | None = None, limit_test: int | None = None) -> Dataset:
    """Load ``name`` and split it.

    Parameters
    ----------
    validation : int, optional
        The first ``validation`` training images become the validation set (default: 5000 for
        mnist, fashion-mnist and cifar10 as in the reference study, 144 of digits' 1437).
    limit_train, limit_test : int, optional
        Keep only the first so many training (after the validation split) and test images, for
        quick runs.

    The result is cached per process (the arrays are read-only), so the runs of a study share it.
    """
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    folder = None if data_dir is None else str(data_dir)
    (x_train, y_train, x_test, y_test), scale, source = _LOADERS[name](name, folder)
    if not len(x_test):
        raise DatasetError(f"{name}: the test set holds no images ({source})")
    validation = default_validation(name) if validation is None else int(validation)
    if not 0 <= validation < len(x_train):
        raise DatasetSplitError(f"validation={validation} must lie in 0..{len(x_train) - 1} for {name} "
                                f"({len(x_train)} training images; at least one must train)")
    # A limit beyond the images there are would silently train or test on fewer than asked for.
    for what, value, available, of in (
            ("limit_train", limit_train, len(x_train) - validation,
             f"training images after validation={validation}"),
            ("limit_test", limit_test, len(x_test), "test images")):
        if value is not None and not 1 <= int(value) <= available:
            raise DatasetSplitError(f"{what}={value} must lie in 1..{available}: {name} has {available} {of}")

    def prepare(x, y, limit=None):
        x, y = x[:limit], y[:limit]
        x = (np.asarray(x, np.float32) / np.float32(scale))
        y = np.asarray(y, np.int32)
        x.setflags(write=False)
        y.setflags(write=False)
        return x, y

    x_val, y_val = prepare(x_train[:validation], y_train[:validation])
    x_tr, y_tr = prepare(x_train[validation:], y_train[validation:], limit_train)
    x_te, y_te = prepare(x_test, y_test, limit_test)
    classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_tr, y_tr, x_val, y_val, x_te, y_te, classes, source)


def standardize_per_image(x: np.ndarray) -> np.ndarray:
    """Each image to mean 0 and standard deviation 1, as ``tf.image.per_image_standardization``
    (the reference study's preprocessing): (x - mean) / max(std, 1 / sqrt(pixels))."""
    x = np.asarray(x, np.float32)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(np.prod(x.shape[1:])))
    return ((x - mean) / np.maximum(std, floor)).astype(np.float32)
