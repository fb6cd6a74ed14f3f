"""``amsim train`` refuses bad input in one line and loses nothing, however it ends.

Bad flags, damaged dataset files, model files that are no model (or do not fit the data), a tampered
embedded LUT, a study folder another process is writing, a full disk and an unreachable Dask
scheduler each end the command with one line on stderr: exit 2 for a usage error, 1 otherwise.
Nothing is half-written: a refused study leaves its folder as it was, earlier complete runs
included. A signal mid-epoch ends the command promptly (130 for SIGINT, 143 for SIGTERM) with the
last complete epoch's checkpoint intact, and ``--resume`` then ends with the weights an
uninterrupted run ends with.
"""

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

from amsim import lut  # noqa: E402
from amsim.experiments import multipliers  # noqa: E402
from amsim.experiments.datasets import load_dataset  # noqa: E402
from amsim.experiments.study import LOCK_FILE, SCHEDULER_CONNECT_TIMEOUT_S  # noqa: E402
from cli_run import run  # noqa: E402
from test_experiments_data import cifar_batch, idx_bytes, write_cifar, write_idx_set  # noqa: E402

BIN = Path(sys.executable).parent
QUICK = ["--dataset", "digits", "--arch", "mlp", "--limit-train", "64", "--limit-test", "32", "--epochs", "1",
         "--no-plots", "--quiet"]
USAGE, FAILED = 2, 1


def train(out, capsys, *args):
    """``amsim train`` on a slice of digits in this process (later flags override QUICK's): (status, out, err)."""
    return run(["train", *QUICK, "--out", str(out), *args], capsys)


def refused(rc, err, status) -> str:
    """The one line a refused command printed (asserting its status and that it printed only that)."""
    assert rc == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(("amsim: error: ", "amsim train: error: ")), lines[0]  # ours, argparse's
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its sha256: what must not change when a command is refused."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_epoch(run_folder: Path) -> int:
    with np.load(run_folder / "checkpoint.npz", allow_pickle=False) as z:
        return json.loads(bytes(z["meta"]).decode())["epoch"]


def temporary_files(folder: Path) -> list:
    return sorted(str(p) for p in folder.rglob("*.tmp*"))


@pytest.fixture(autouse=True)
def empty_keras_cache(tmp_path, monkeypatch):
    """No test reads the machine's Keras cache, and none sees another's dataset."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


@pytest.fixture(scope="module")
def complete_study(tmp_path_factory):
    """A finished float32 study, for the refused commands to leave intact."""
    from amsim import cli

    out = tmp_path_factory.mktemp("complete") / "study"
    assert cli.main(["train", *QUICK, "--out", str(out)]) == 0
    return out


# ==============================================================================================
# 1. Flags out of range: argparse's one line, exit 2, nothing created
# ==============================================================================================


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "expected a positive integer, got 0"),
    ("--batch-size", "-1", "expected a positive integer, got -1"),
    ("--learning-rate", "nan", "expected a positive, finite number, got 'nan'"),
    ("--learning-rate", "inf", "expected a positive, finite number, got 'inf'"),
    ("--learning-rate", "-1", "expected a positive, finite number, got '-1'"),
    ("--learning-rate", "abc", "expected a positive number, got 'abc'"),
    ("--seeds", "", "seeds must be distinct non-negative integers"),
    ("--seeds", "1,1", "seeds must be distinct non-negative integers"),
    ("--seeds", "-1", "seeds must be distinct non-negative integers"),
    ("--seeds", "a", "seeds are integers separated by commas"),
    ("--threads", "0", "expected a positive integer, got 0"),
    ("--workers", "-1", "expected an integer >= 0, got -1"),
    ("--limit-train", "0", "expected a positive integer, got 0"),
    ("--limit-test", "x", "expected a positive integer, got 'x'"),
    ("--validation", "-5", "expected an integer >= 0, got -5"),
])
def test_a_train_flag_out_of_range_is_a_usage_error(flag, value, message, tmp_path, capsys):
    rc, _, err = train(tmp_path / "out", capsys, f"{flag}={value}")
    line = refused(rc, err, USAGE)
    assert f"argument {flag}: {message}" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--validation", "1437"], "validation=1437 must lie in 0..1436 for digits"),
    (["--validation", "5000", "--limit-train", "10"], "validation=5000 must lie in 0..1436"),
    (["--validation", "1400", "--limit-train", "64"],
     "limit_train=64 must lie in 1..37: digits has 37 training images after validation=1400"),
    (["--limit-train", "1294"], "limit_train=1294 must lie in 1..1293"),
    (["--limit-test", "361"], "limit_test=361 must lie in 1..360"),
])
def test_a_split_larger_than_the_data_is_a_usage_error_before_anything_is_written(args, message, tmp_path, capsys):
    rc, _, err = train(tmp_path / "out", capsys, *args)
    assert message in refused(rc, err, USAGE)
    assert not (tmp_path / "out").exists()


# ==============================================================================================
# 2. Damaged dataset files: one line naming the file and what is wrong
# ==============================================================================================


def mnist_folder(folder: Path, *, packed: bool) -> Path:
    """The four IDX files in ``folder``, as distributed (.gz) or unpacked."""
    arrays = write_idx_set(folder)
    if not packed:
        for name in arrays:
            (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((folder / name).read_bytes()))
            (folder / name).unlink()
    return folder


def test_unpacked_idx_files_are_read_like_the_distributed_gzip_ones(tmp_path):
    packed = load_dataset("mnist", mnist_folder(tmp_path / "gz", packed=True), validation=5)
    unpacked = load_dataset("mnist", mnist_folder(tmp_path / "raw", packed=False), validation=5)
    np.testing.assert_array_equal(unpacked.x_train, packed.x_train)
    np.testing.assert_array_equal(unpacked.y_test, packed.y_test)


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


@pytest.mark.parametrize("packed, file, damage, reason", [
    (True, TRAIN_IMAGES, lambda raw: gzip.compress(raw)[:-30], "not a complete gzip file"),
    (True, TRAIN_IMAGES, lambda raw: b"not gzip at all", "not a complete gzip file"),
    (True, TRAIN_IMAGES, lambda raw: gzip.compress(raw[:-100]), "the file holds 23420; it is truncated"),
    (False, TRAIN_IMAGES, lambda raw: raw[:-100], "it is truncated"),
    (False, TRAIN_IMAGES, lambda raw: raw[:10], "too short for an IDX header"),
    (False, TRAIN_IMAGES, lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "not an IDX file"),
])
def test_a_damaged_idx_file_is_named_with_what_is_wrong(packed, file, damage, reason, tmp_path, capsys):
    folder = mnist_folder(tmp_path / "mnist", packed=packed)
    path = folder / (file + ".gz" if packed else file)
    raw = gzip.decompress(path.read_bytes()) if packed else path.read_bytes()
    path.write_bytes(damage(raw))
    rc, _, err = train(tmp_path / "out", capsys, "--dataset", "mnist", "--data-dir", str(folder),
                       "--validation", "5", "--limit-train", "8", "--limit-test", "4")
    line = refused(rc, err, FAILED)
    assert line.startswith(f"amsim: error: {path}: ") and reason in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels, reason", [
    (lambda raw: raw[:8] + bytes([11]) + raw[9:], "training labels: labels must lie in 0..9"),
    (lambda raw: idx_bytes(np.zeros(7, np.uint8)), "training images (uint8 (30, 28, 28)) and labels (uint8 (7,)) "
                                                   "do not match"),
])
def test_idx_labels_that_do_not_fit_their_images_are_refused_naming_the_dataset_folder(labels, reason, tmp_path,
                                                                                      capsys):
    folder = mnist_folder(tmp_path / "mnist", packed=False)
    path = folder / TRAIN_LABELS
    path.write_bytes(labels(path.read_bytes()))
    rc, _, err = train(tmp_path / "out", capsys, "--dataset", "mnist", "--data-dir", str(folder),
                       "--validation", "5", "--limit-train", "8", "--limit-test", "4")
    line = refused(rc, err, FAILED)
    assert line.startswith(f"amsim: error: mnist in {folder}: ") and reason in line
    assert not (tmp_path / "out").exists()


class RunsCommand:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def replacing(key: bytes, value):
    """A damage: the batch with ``key`` set to ``value``."""
    def damage(batch):
        return pickle.dumps({**batch, key: value}, protocol=2)
    return damage


@pytest.mark.parametrize("damage, reason", [
    (lambda batch: pickle.dumps(batch, protocol=2)[:500], "it may be truncated"),
    (lambda batch: b"these are not the images you are looking for\n", "not a CIFAR-10 python batch"),
    (lambda batch: pickle.dumps([1, 2, 3], protocol=2), "holds a list, not a dict"),
    (lambda batch: pickle.dumps({b"pixels": batch[b"data"]}, protocol=2), "needs 'data' and 'labels'"),
    (replacing(b"data", np.zeros((4, 100), np.uint8)), "'data' must be an N x 3072 uint8 array, not (4, 100)"),
    (replacing(b"data", np.zeros((4, 3072), np.float32)), "not (4, 3072) float32"),
    (replacing(b"labels", [0, 1, 2]), "4 images but 3 labels"),
    (replacing(b"labels", [0, 1, 2, 10]), "labels must lie in 0..9, found 0..10"),
    (replacing(b"labels", ["cat", "dog", "cat", "cat"]), "'labels' must be a list of integers"),
])
def test_a_damaged_cifar_batch_is_named_with_what_is_wrong(damage, reason, tmp_path, capsys):
    folder = tmp_path / "cifar"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes(damage(cifar_batch(4, 2)))
    rc, _, err = train(tmp_path / "out", capsys, "--dataset", "cifar10", "--data-dir", str(folder),
                       "--validation", "2", "--limit-train", "4", "--limit-test", "4")
    line = refused(rc, err, FAILED)
    assert line.startswith(f"amsim: error: {folder / 'data_batch_3'}: ") and reason in line
    assert not (tmp_path / "out").exists()


def test_a_cifar_batch_that_would_run_a_command_is_refused_and_the_command_never_runs(tmp_path, capsys):
    folder, marker = tmp_path / "cifar", tmp_path / "pwned"
    write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": RunsCommand(marker), b"labels": [0]}, protocol=2))
    rc, _, err = train(tmp_path / "out", capsys, "--dataset", "cifar10", "--data-dir", str(folder),
                       "--validation", "2")
    line = refused(rc, err, FAILED)
    assert line.startswith(f"amsim: error: {folder / 'test_batch'}: ") and "refusing to load posix.system" in line
    assert not marker.exists()


# ==============================================================================================
# 3. and 4. Model files: not a model, nothing to approximate, does not fit, tampered LUT
# ==============================================================================================


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Files given as --model-file: no Keras model at all, Keras models that do not suit digits, and one
    that suits it but has nothing to approximate."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    layers = keras.layers
    models = {
        "no-multiplying-layer": [keras.Input((8, 8, 1)), layers.Cropping2D(((3, 3), (1, 2))), layers.Flatten(),
                                 layers.BatchNormalization(), layers.Softmax()],
        "mnist-sized": [keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10, activation="softmax")],
        "five-classes": [keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(5, activation="softmax")],
    }
    paths = {}
    for name, stack in models.items():
        paths[name] = folder / f"{name}.keras"
        keras.Sequential(stack).save(paths[name])
    (folder / "notes.keras").write_text("a text file with a model's name\n")
    with zipfile.ZipFile(folder / "archive.keras", "w") as z:
        z.writestr("readme.txt", "a zip archive, but no Keras model")
    (folder / "notes.txt").write_text("text\n")
    (folder / "a-folder.keras").mkdir()
    return folder


@pytest.mark.parametrize("name, message", [
    ("missing.keras", "missing.keras: no such file"),
    ("a-folder.keras", "a-folder.keras: a folder, not a file"),
    ("notes.txt", "notes.txt: not a Keras model file (.keras, or the legacy .h5)"),
    ("notes.keras", "notes.keras: not a .keras archive (not a zip file)"),
    ("archive.keras", "archive.keras: a zip file but not a .keras archive (no config.json)"),
    ("mnist-sized.keras", "the model takes inputs (28, 28, 1); digits has images (8, 8, 1)"),
    ("five-classes.keras", "the model outputs (5,); digits needs one score per class, (10,)"),
])
def test_a_model_file_that_is_no_model_for_the_data_is_refused_in_one_line(name, message, model_files, tmp_path,
                                                                           capsys):
    rc, _, err = train(tmp_path / "out", capsys, "--model-file", str(model_files / name))
    line = refused(rc, err, FAILED)
    assert f"--model-file {model_files / name}" in line and message in line
    assert not (tmp_path / "out").exists()


def test_a_model_with_nothing_to_approximate_refuses_approximate_multipliers(model_files, tmp_path, capsys):
    model = str(model_files / "no-multiplying-layer.keras")
    rc, _, err = train(tmp_path / "approximate", capsys, "--model-file", model, "--multipliers", "float32,mbm:7")
    line = refused(rc, err, FAILED)
    assert "has no layer that multiplies" in line and "mbm:7 would have nothing to approximate" in line
    assert not (tmp_path / "approximate").exists()
    rc, _, err = train(tmp_path / "float32", capsys, "--model-file", model, "--multipliers", "float32")
    assert rc == 0, err
    assert (tmp_path / "float32" / "float32" / "seed0" / "result.json").is_file()


def rewrite_member(path: Path, member: str, edit) -> None:
    """Replace one member of a zip archive by ``edit(its bytes)``."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members[member] = edit(members[member])
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def break_embedded_checksum(config: bytes) -> bytes:
    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("lut"), dict):
                digest = node["lut"]["sha256"]
                node["lut"]["sha256"] = ("0" if digest[0] != "0" else "1") + digest[1:]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    tree = json.loads(config)
    walk(tree)
    return json.dumps(tree).encode()


def saved_am_model(path: Path, multiplier, **kwargs) -> Path:
    """A small digits classifier whose Dense layer 'fc' is approximated, saved in ``path``."""
    keras = pytest.importorskip("keras")
    approximate = pytest.importorskip("amsim.keras").approximate
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    approximate(model, multiplier, **kwargs).save(path)
    return path


def assert_tampered_model_refused(path: Path, message: str, study: Path, capsys) -> None:
    """``path`` with its embedded table's checksum broken is refused in one line naming the layer and
    ``message``, and --force replaces nothing of ``study`` before the input is checked."""
    rewrite_member(path, "config.json", break_embedded_checksum)
    before = snapshot(study)
    rc, _, err = train(study, capsys, "--model-file", str(path), "--force")
    line = refused(rc, err, FAILED)
    assert f"--model-file {path}: layer 'fc'" in line
    assert message in line
    assert snapshot(study) == before, "--force replaces nothing before the input is checked"


def test_a_tampered_embedded_lut_is_refused_with_the_checksum_error_in_one_line(tmp_path, capsys, complete_study):
    path = saved_am_model(tmp_path / "tampered.keras", "mbm", bits=3)
    assert_tampered_model_refused(path, "embedded LUT for M=3 does not match its checksum", complete_study, capsys)


def test_a_quantized_model_file_loads_and_a_tampered_circuit_is_refused_in_one_line(tmp_path, capsys,
                                                                                    complete_study):
    path = saved_am_model(tmp_path / "quantized.keras", "uint8:exact_int")
    rc, _, err = train(tmp_path / "study", capsys, "--model-file", str(path))
    assert rc == 0, err
    assert_tampered_model_refused(path, "embedded circuit does not match its checksum", complete_study, capsys)


def name_an_unknown_circuit(config: bytes) -> bytes:
    """The AM layer 'fc' with its embedded circuit replaced by the name of none."""
    tree = json.loads(config)
    layer = next(node for node in tree["config"]["layers"] if node["config"].get("name") == "fc")
    layer["config"]["lut"] = "no_such_circuit"
    return json.dumps(tree).encode()


def test_an_am_layer_naming_an_unknown_circuit_is_refused_with_the_layers_own_error(tmp_path):
    """In a fresh process (amsim.keras not imported yet, as in a shell), a model file whose AM layer names
    its table instead of embedding it is refused with that layer's error, not Keras' "could not locate
    class" with every enclosing config."""
    path = saved_am_model(tmp_path / "named.keras", "uint8:exact_int")
    rewrite_member(path, "config.json", name_an_unknown_circuit)
    done = subprocess.run([str(BIN / "amsim"), "train", *QUICK, "--out", str(tmp_path / "out"), "--model-file",
                           str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    line = refused(done.returncode, done.stderr, FAILED)
    assert f"--model-file {path}: Keras cannot load it (AMDense 'fc': unknown model 'no_such_circuit'" in line
    assert not (tmp_path / "out").exists()


# ==============================================================================================
# 6. One process per study folder
# ==============================================================================================


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``path``'s flock (and writing its pid into it, as amsim train does)."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_train_on_a_locked_study_folder_is_refused_at_once(tmp_path, capsys, monkeypatch):
    out = tmp_path / "study"
    out.mkdir()
    holder = hold_lock(out / LOCK_FILE)
    try:
        monkeypatch.setattr(multipliers, "parse_multipliers", lambda *a, **k: pytest.fail("worked before refusing"))
        rc, _, err = train(out, capsys, "--multipliers", "mbm:7")
        line = refused(rc, err, FAILED)
        assert f"{out} is in use: process {holder.pid} is training into it" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_does_not_block_the_next_study(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    holder = hold_lock(out / LOCK_FILE)
    holder.kill()  # SIGKILL: no clean-up ran, the lock file stays; the kernel dropped its flock
    holder.wait()
    rc, _, err = train(out, capsys)
    assert rc == 0, err
    assert (out / "float32" / "seed0" / "result.json").is_file()


# ==============================================================================================
# 7. A full disk: one line, the last checkpoint intact, --resume continues once there is room
# ==============================================================================================


def test_atomic_write_keeps_the_old_file_and_names_the_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"epoch 1")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lut.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*checkpoint.npz'") as err:
        lut.atomic_write_bytes(path, b"epoch 2, never complete")
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"epoch 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_a_full_disk_mid_training_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "study"
    fsync, checkpoints = os.fsync, []

    def fills_at_the_second_checkpoint(fd):
        if ".checkpoint.npz." in os.readlink(f"/proc/self/fd/{fd}"):
            checkpoints.append(fd)
            if len(checkpoints) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("names the file being written through /proc")
    monkeypatch.setattr(lut.os, "fsync", fills_at_the_second_checkpoint)
    rc, _, err = train(out, capsys, "--epochs", "3")
    line = refused(rc, err, FAILED)
    folder = out / "float32" / "seed0"
    assert f"No space left on device: '{folder / 'checkpoint.npz'}'" in line
    assert checkpoint_epoch(folder) == 1
    assert len(json.loads((folder / "history.json").read_text())) == 1
    assert not (folder / "result.json").exists() and not (out / "summary.json").exists()
    assert temporary_files(out) == []

    monkeypatch.setattr(lut.os, "fsync", fsync)  # room again
    rc, _, err = train(out, capsys, "--epochs", "3", "--resume")
    assert rc == 0, err
    assert [row["epoch"] for row in json.loads((folder / "history.json").read_text())] == [1, 2, 3]


# ==============================================================================================
# 8. An unreachable Dask scheduler
# ==============================================================================================


def test_an_unreachable_scheduler_is_reported_after_the_connect_timeout_with_nothing_written(tmp_path, capsys,
                                                                                         complete_study):
    pytest.importorskip("distributed")
    rc, _, err = train(tmp_path / "out", capsys, "--scheduler", "tcp://127.0.0.1:1")
    line = refused(rc, err, FAILED)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in line
    assert f"after {SCHEDULER_CONNECT_TIMEOUT_S} s" in line, "its own connect timeout, not Dask's 30 s"
    assert not (tmp_path / "out").exists()

    before = snapshot(complete_study)
    rc, _, err = train(complete_study, capsys, "--scheduler", "tcp://127.0.0.1:1", "--force")
    assert "cannot reach the Dask scheduler" in refused(rc, err, FAILED)
    assert snapshot(complete_study) == before


def test_a_refused_resume_or_force_leaves_a_complete_study_as_it_was(complete_study, capsys):
    before = snapshot(complete_study)
    for args, status in ((["--validation", "1437", "--force"], USAGE),
                         (["--limit-train", "2000", "--resume"], USAGE),
                         (["--model-file", "missing.keras", "--force"], FAILED)):
        rc, _, err = train(complete_study, capsys, *args)
        refused(rc, err, status)
    assert snapshot(complete_study) == before


# ==============================================================================================
# 5. Signals mid-epoch (real processes)
# ==============================================================================================

#: Epochs long enough (one image per step) that the command, stopped once its first checkpoint
#: exists, is still early in the second epoch.
SLOW_EPOCHS = ["--dataset", "digits", "--arch", "mlp", "--epochs", "3", "--batch-size", "1", "--limit-train", "600",
               "--limit-test", "32", "--threads", "1", "--no-plots", "--quiet"]


def start_train(out: Path, *extra) -> subprocess.Popen:
    """``amsim train`` in a process group of its own, as a terminal starts a command (its pid is the group's)."""
    return subprocess.Popen([str(BIN / "amsim"), "train", *SLOW_EPOCHS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out.parent,
                            start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"amsim train did not end: {proc.communicate()}")
    return proc.returncode, out, err


@contextlib.contextmanager
def held_at_first_checkpoint(proc: subprocess.Popen, run_folder: Path):
    """Stop the command's process group as soon as the run folder holds a checkpoint (written whole,
    by a rename), i.e. early in the second epoch; let it go on when the block ends.

    While it is stopped (SIGSTOP) the command cannot train on, so what the block does (a refused
    second study, a signal) happens mid-epoch however slow the test machine is. A signal sent to a
    stopped process waits and is delivered when it continues (SIGCONT).
    """
    while not (run_folder / "checkpoint.npz").exists():
        if proc.poll() is not None:
            pytest.fail(f"amsim train ended before its first checkpoint: {proc.communicate()}")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def final_weights(out: Path) -> str:
    return json.loads((out / "float32" / "seed0" / "result.json").read_text())["final_weights_sha256"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "study"
    rc, _, err = finish(start_train(out))
    assert rc == 0, err
    return final_weights(out)


@pytest.mark.slow
def test_sigint_mid_epoch_stops_at_once_keeps_the_last_epoch_and_resumes_to_the_same_weights(uninterrupted,
                                                                                              tmp_path, capsys):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored here, and so in the processes started from here")
    out = tmp_path / "study"
    folder = out / "float32" / "seed0"
    proc = start_train(out)
    with held_at_first_checkpoint(proc, folder):
        # While it trains, the study folder is its own: a second train is refused.
        rc, _, err = train(out, capsys)
        assert f"process {proc.pid} is training into it" in refused(rc, err, FAILED)
        proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130
    assert [line for line in err.splitlines() if line.strip()] == ["amsim: ended by SIGINT; stopped"]
    epoch = checkpoint_epoch(folder)
    assert 1 <= epoch < 3 and not (folder / "result.json").exists()
    assert len(json.loads((folder / "history.json").read_text())) == epoch
    assert temporary_files(out) == []

    rc, _, err = finish(start_train(out, "--resume"))
    assert rc == 0, err
    assert final_weights(out) == uninterrupted


def descendants(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).children(recursive=True)


def gone(process) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_the_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM to amsim", "Ctrl-C in a terminal: SIGINT to every process of the job"])
def test_a_signal_ends_a_dask_study_with_its_workers_and_keeps_the_last_epoch(sig, to_the_group, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "study"
    folder = out / "float32" / "seed0"
    proc = start_train(out, "--workers", "1")
    with held_at_first_checkpoint(proc, folder):
        workers = descendants(proc.pid)
        assert workers, "the LocalCluster's processes are the command's children"
        if to_the_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    rc, _, err = finish(proc)
    assert rc == 128 + sig
    assert [line for line in err.splitlines() if line.strip()] == [f"amsim: ended by {sig.name}; stopped"]
    deadline = time.monotonic() + 60
    while not all(gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [w.pid for w in workers if not gone(w)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], "Dask's processes outlived amsim train"
    assert 1 <= checkpoint_epoch(folder) < 3 and not (folder / "result.json").exists()
    assert temporary_files(out) == []
    # The lock went with the process: the next study may take the folder.
    fd = os.open(out / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
