"""Datasets read from their distribution formats, and multiplier specifications.

The loaders are tested on small files written here in the real formats (IDX ``.gz``, Keras's
``mnist.npz``, CIFAR-10's python pickle batches), and must refuse truncated or corrupt ones with the
reason. Nothing here needs TensorFlow.
"""

import gzip
import pickle
import struct

import numpy as np
import pytest

from amsim.errors import AmsimError, RangeError, UnknownModelError
from amsim.experiments import ExperimentError
from amsim.experiments.datasets import DatasetError, load_dataset, read_cifar_batch, read_idx, standardize_per_image
from amsim.experiments.multipliers import FLOAT32, MultiplierSpec, parse_multiplier, parse_multipliers


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder, n_train=30, n_test=10, *, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
    return arrays


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"test", b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def write_cifar(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = cifar_batch(n, i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    return batches


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache, so that the tests never read the machine's real one."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    load_dataset.cache_clear()
    yield tmp_path / "keras-home" / "datasets"
    load_dataset.cache_clear()


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def test_digits_is_embedded_and_split_train_validation_test(keras_home):
    data = load_dataset("digits")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1437 - 144, 144, 360)
    assert data.input_shape == (8, 8, 1) and data.classes == 10
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.y_train.dtype == np.int32
    assert not data.x_train.flags.writeable, "shared between runs, so read-only"


def test_mnist_idx_files_are_read_and_the_first_images_validate(tmp_path, keras_home):
    arrays = write_idx_set(tmp_path / "mnist")
    data = load_dataset("mnist", tmp_path, validation=5, limit_test=4)
    images = arrays["train-images-idx3-ubyte.gz"]
    np.testing.assert_array_equal(data.x_val[..., 0], images[:5] / np.float32(255))
    np.testing.assert_array_equal(data.x_train[..., 0], images[5:] / np.float32(255))
    np.testing.assert_array_equal(data.y_val, arrays["train-labels-idx1-ubyte.gz"][:5])
    assert data.x_test.shape == (4, 28, 28, 1)
    assert "sha256" in data.source


def test_unpacked_idx_files_may_be_named_with_a_dot_as_mirrors_do(tmp_path, keras_home):
    arrays = write_idx_set(tmp_path)
    for name in arrays:
        packed = tmp_path / name
        packed.with_name(name.removesuffix(".gz").replace("-idx", ".idx")).write_bytes(
            gzip.decompress(packed.read_bytes()))
        packed.unlink()
    data = load_dataset("mnist", tmp_path, validation=0)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte.gz"])


def test_the_keras_cache_folder_is_searched(keras_home):
    write_idx_set(keras_home / "fashion-mnist")
    assert len(load_dataset("fashion-mnist", validation=0).x_train) == 30


def test_kerass_mnist_npz_is_accepted(tmp_path, keras_home):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             y_train=np.arange(12) % 10, x_test=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
             y_test=np.arange(3))
    data = load_dataset("mnist", tmp_path, validation=2)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (10, 2, 3)


def test_missing_files_are_named_with_the_folders_to_put_them_in(tmp_path, keras_home):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert "data_batch_1" in message and "test_batch" in message
    assert str(tmp_path) in message and str(keras_home / "cifar-10-batches-py") in message


@pytest.mark.parametrize("damage, reason", [
    (lambda raw: gzip.compress(raw[:-100]), "truncated"),
    (lambda raw: gzip.compress(raw + b"xx"), "corrupt"),
    (lambda raw: gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]), "not an IDX file"),
    (lambda raw: gzip.compress(raw)[:-30], "not a complete gzip file"),
])
def test_a_damaged_idx_file_is_refused_with_the_reason(tmp_path, keras_home, damage, reason):
    arrays = write_idx_set(tmp_path)
    raw = idx_bytes(arrays["train-images-idx3-ubyte.gz"])
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(damage(raw))
    with pytest.raises(DatasetError, match=reason):
        load_dataset("mnist", tmp_path, validation=1)


def test_labels_that_do_not_match_the_images_are_refused(tmp_path, keras_home):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset("mnist", tmp_path, validation=1)


def test_read_idx_reads_plain_files_too(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x-idx3-ubyte").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte", ndim=3), array)


def test_cifar_batches_become_nhwc_images_with_the_first_5000_style_validation(tmp_path, keras_home):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path, validation=3)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.x_val[0], first / np.float32(255))
    assert data.x_train.shape == (5 * 4 - 3, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(data.y_test, batches["test_batch"][b"labels"])


def test_a_truncated_cifar_batch_is_refused(tmp_path):
    raw = pickle.dumps(cifar_batch(4, 0), protocol=2)
    (tmp_path / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        read_cifar_batch(tmp_path / "data_batch_1")


def test_a_cifar_batch_with_wrong_contents_is_refused(tmp_path):
    batch = cifar_batch(4, 0)
    batch[b"data"] = batch[b"data"][:, :100]
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match="3072"):
        read_cifar_batch(tmp_path / "b")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": _RunsCode()}, protocol=2))
    with pytest.raises(DatasetError, match="refusing to load .*print"):
        read_cifar_batch(tmp_path / "b")
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, match", [({"validation": 5000}, "validation"), ({"limit_train": 0}, "limit_train")])
def test_bad_split_arguments_are_refused(keras_home, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("digits", **kwargs)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(DatasetError, match="digits, mnist, fashion-mnist, cifar10"):
        load_dataset("imagenet")


def test_per_image_standardization_gives_mean_0_and_std_1():
    x = np.random.default_rng(0).random((3, 4, 4, 3), dtype=np.float32)
    y = standardize_per_image(x)
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(y.std(axis=(1, 2, 3)), 1, atol=1e-5)
    assert not np.isnan(standardize_per_image(np.ones((1, 2, 2, 1), np.float32))).any(), "constant image"


# ----------------------------------------------------------------------------------------------
# Multiplier specifications
# ----------------------------------------------------------------------------------------------


def test_multiplier_specifications_and_their_labels():
    specs = parse_multipliers("float32,mbm:7,drum:6:k=4,at_mbm", default_bits=5)
    assert [s.label for s in specs] == ["float32", "mbm-M7", "drum-M6-k4", "at_mbm-M5"]
    assert specs[0] == MultiplierSpec(FLOAT32, FLOAT32) and not specs[0].approximate
    assert specs[2].layer_arguments() == {"lut": "drum", "bits": 6, "params": {"k": 4}}
    assert all(MultiplierSpec.from_dict(s.to_dict()) == s for s in specs)
    assert parse_multiplier(specs[2].text) == specs[2]


def test_a_lut_file_is_a_multiplier(tmp_path):
    from amsim import lut as lutmod

    table = np.ones((4, 4), np.float32)
    path = lutmod.save(lutmod.LUT(table=table, bits=2, model="mbm"), tmp_path / "mine.npz")
    spec = parse_multiplier(str(path))
    assert (spec.kind, spec.bits, spec.label) == ("lut", 2, "lut-mine")


@pytest.mark.parametrize("text, error, match", [
    ("nosuch:7", UnknownModelError, "unknown model 'nosuch'"),
    ("at_mbm:4", RangeError, "does not support"),
    ("drum:7:k=99", RangeError, "outside its range"),
    ("mbm:seven", ExperimentError, "must be an integer"),
    ("mbm:7:oops", ExperimentError, "cannot read"),
    ("float32,float32", ExperimentError, "more than once"),
    ("missing/file.npz", ExperimentError, "does not exist"),
    ("", ExperimentError, "empty multiplier"),
])
def test_bad_multipliers_are_refused_before_anything_trains(text, error, match):
    with pytest.raises(error, match=match) as err:
        parse_multipliers(text)
    assert isinstance(err.value, AmsimError)
