"""One training run: repeatable bit for bit, resumable exactly, fair by construction, careful with folders.

The runs train a small network with batch normalisation and dropout (so that the checkpoint must
carry statistics and random-generator state, not just weights) on a slice of scikit-learn's digits.
"""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
keras = pytest.importorskip("keras")

from amsim.experiments import ExperimentError  # noqa: E402
from amsim.experiments import runner  # noqa: E402
from amsim.experiments.runner import RunConfig, RunFolderError, read_run, run, weights_digest  # noqa: E402

TIMING = ("time_s", "train_time_s")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.Flatten(), keras.layers.Dropout(0.3), keras.layers.Dense(10, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def config(model_file):
    return RunConfig(model_file=model_file, epochs=3, batch_size=32, limit_train=160, limit_test=64)


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "uninterrupted"
    return folder, run(config, folder, tensorboard=False)


def curves(folder):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_run(folder)["history"]]


def test_a_run_folder_records_everything_about_the_run(uninterrupted, config):
    folder, result = uninterrupted
    record = read_run(folder)
    assert record["result"] == result and result["status"] == "complete" and result["epochs"] == 3
    assert [row["epoch"] for row in record["history"]] == [1, 2, 3]
    assert set(record["history"][0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "time_s"}
    assert (folder / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss")
    cfg = record["config"]
    assert cfg["run"]["batch_size"] == 32 and cfg["run"]["optimizer"] == "adam", "defaults are resolved"
    assert cfg["seeds"]["weights"] == 0 and "tensorflow" in cfg["environment"]
    assert cfg["multiplications"]["per_example"]["forward"] == 6 * 6 * 4 * 9 + 144 * 10
    assert set(result["test"]) == {"loss", "accuracy"}
    assert (folder / "checkpoint.npz").is_file() and (folder / "model.keras").is_file()


def test_a_repeated_run_gives_the_same_curves_bit_for_bit(uninterrupted, config, tmp_path):
    folder, result = uninterrupted
    again = run(config, tmp_path / "again", tensorboard=False, save_model=False)
    assert curves(tmp_path / "again") == curves(folder)
    assert again["final_weights_sha256"] == result["final_weights_sha256"]
    assert again["test"] == result["test"]


class Interrupt(keras.callbacks.Callback):
    """Stops training after the given number of epochs, as a Ctrl-C or a lost machine would."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_final_weights(uninterrupted, config, tmp_path):
    folder, result = uninterrupted
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "r", tensorboard=False, callbacks=[Interrupt(after=1)])
    assert len(read_run(tmp_path / "r")["history"]) == 1 and read_run(tmp_path / "r")["result"] is None
    resumed = run(config, tmp_path / "r", resume=True, tensorboard=False, save_model=False)
    assert resumed["final_weights_sha256"] == result["final_weights_sha256"]
    assert curves(tmp_path / "r") == curves(folder)
    assert run(config, tmp_path / "r", resume=True) == resumed, "a complete run is returned as it is"


def test_an_occupied_folder_is_refused_unless_resumed_or_forced(uninterrupted, config, tmp_path):
    folder, _ = uninterrupted
    with pytest.raises(RunFolderError, match="--resume continues it, --force replaces it"):
        run(config, folder)
    other = RunConfig(model_file=config.model_file, epochs=3, batch_size=16, limit_train=160)
    with pytest.raises(RunFolderError, match="batch_size: 32 there, 16 now"):
        run(other, folder, resume=True)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "junk").write_text("x")
    run(RunConfig(model_file=config.model_file, epochs=1, limit_train=32, limit_test=32), tmp_path / "f",
        force=True, tensorboard=False, save_model=False)
    assert not (tmp_path / "f" / "junk").exists()


def test_a_conversion_that_changes_the_initial_weights_is_refused_before_training(config, tmp_path, monkeypatch):
    def altering(model, spec, gradient):
        copy = keras.models.clone_model(model)
        copy.set_weights([w + 1e-7 for w in model.get_weights()])
        return copy

    monkeypatch.setattr(runner, "convert_model", altering)
    with pytest.raises(ExperimentError, match="initial weights differ"):
        run(config, tmp_path / "unfair", tensorboard=False)
    assert not (tmp_path / "unfair" / "history.json").exists()


def test_given_initial_weights_are_the_ones_trained_from(config, tmp_path):
    weights = runner.initial_weights(config)
    shifted = [np.asarray(w) + 0.01 for w in weights]
    result = run(RunConfig(model_file=config.model_file, epochs=1, limit_train=32, limit_test=32), tmp_path / "w",
                 initial=shifted, tensorboard=False, save_model=False)
    assert result["initial_weights_sha256"] == weights_digest(shifted)
    stored = json.loads((tmp_path / "w" / "config.json").read_text())
    assert stored["initial_weights_sha256"] == weights_digest(shifted)


@pytest.mark.parametrize("kwargs, match", [({"gradient": "fast"}, "gradient must be one of"),
                                           ({"epochs": 0}, "epochs must be at least 1"),
                                           ({"arch": "vgg"}, "unknown architecture 'vgg'")])
def test_bad_run_configurations_are_refused(kwargs, match):
    with pytest.raises(ExperimentError, match=match):
        RunConfig(**kwargs)


@pytest.mark.parametrize("gradient", ["approximate", "exact"])
def test_the_approximate_network_is_the_float32_one_with_the_multiplier_and_gradient_asked_for(gradient):
    pytest.importorskip("amsim.keras")
    from amsim.experiments.multipliers import parse_multiplier

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    converted = runner.convert_model(model, parse_multiplier("mbm:7"), gradient)
    assert weights_digest(converted.get_weights()) == weights_digest(model.get_weights())
    configs = [layer.get_config() for layer in converted.layers]
    assert [(c["lut"]["model"], c["bits"], c["gradient"]) for c in configs] == [("mbm", 7, gradient)] * 2
