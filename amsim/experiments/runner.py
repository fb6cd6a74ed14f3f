"""One training run: an architecture, a dataset, a multiplier, a seed; its own folder.

Fairness and repeatability rest on three rules:

* **Initial weights are copied, never re-drawn.** The float32 network is built once from the
  seed; every multiplier's network is converted from it (:func:`amsim.keras.approximate` keeps
  the weights) and the run refuses to train when its weights differ from the ones it was given.
* **The data order is a function of (seed, epoch) alone**: epoch ``e`` visits the training set in
  the order ``numpy.random.default_rng([seed, e]).permutation(n)``. Every multiplier sees the same
  batches, and a resumed run sees the batches it would have seen.
* **Every piece of state is checkpointed after each epoch**: the model's variables (weights,
  batch-normalisation statistics and the dropout layers' random-generator states), the
  optimizer's variables and the metrics so far. ``resume=True`` restores them and continues with
  the next epoch, ending with the weights an uninterrupted run ends with. TensorFlow's op
  determinism is switched on, so a repeated run reproduces its curves bit for bit.

A run folder holds ``config.json`` (the resolved configuration, seeds, the initial weights'
digest, versions and machine), ``history.csv`` and ``history.json`` (per epoch: training and
validation loss and accuracy, seconds), ``checkpoint.npz``, ``tensorboard/``, and when the run
is complete ``result.json`` (final and best metrics, test metrics, timing) and ``model.keras``.
Every file is written whole or not at all (a temporary file renamed into place), so an interrupted
run leaves the checkpoint of its last complete epoch.

One file, past the usual size, because its parts are the three rules above: the network a run
trains (built, or read from a model file and checked against the dataset before anything is
written), its conversion to the multiplier, and the checkpoint and records that make it resumable
all turn on one :class:`RunConfig` and one folder layout.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import platform
import shutil
import socket
import tempfile
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import AmsimError
from ..lut import atomic_write_bytes
from ..tfquiet import quiet_tensorflow
from . import ExperimentError
from .architectures import build_model, get_architecture, make_optimizer
from .datasets import load_dataset, standardize_per_image
from .energy import board_energy_meter, count_multiplications
from .multipliers import FLOAT32, MultiplierSpec, parse_multiplier

__all__ = ["RunConfig", "run", "initial_weights", "weights_digest", "convert_model", "preflight", "read_run",
           "RunFolderError", "GRADIENTS", "environment", "network_weights", "model_from_file"]

GRADIENTS = ("approximate", "exact")
_LOSS = "sparse_categorical_crossentropy"
_HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "time_s", "train_time_s")
#: Keys of the configuration a resumed run must share with the checkpointed one.
_NOT_IDENTITY = ("data_dir",)


class RunFolderError(ExperimentError):
    """A run folder is occupied (and neither resume nor force was asked), or holds another run."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What defines a run. ``None`` settings take the architecture's defaults (see :meth:`resolved`)."""

    dataset: str = "digits"
    arch: str = "mlp"
    multiplier: MultiplierSpec = MultiplierSpec(FLOAT32, FLOAT32)
    seed: int = 0
    epochs: int = 5
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    gradient: str = "approximate"
    validation: int | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    data_dir: str | None = None
    model_file: str | None = None

    def __post_init__(self):
        if isinstance(self.multiplier, str):
            object.__setattr__(self, "multiplier", parse_multiplier(self.multiplier))
        if self.gradient not in GRADIENTS:
            raise ExperimentError(f"gradient must be one of {', '.join(GRADIENTS)}, not {self.gradient!r}")
        if int(self.epochs) < 1:
            raise ExperimentError(f"epochs must be at least 1, not {self.epochs}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ExperimentError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.model_file is None:
            get_architecture(self.arch)

    def resolved(self) -> RunConfig:
        """This configuration with the architecture's training settings filled in."""
        arch = get_architecture("mlp" if self.model_file else self.arch)
        return dataclasses.replace(
            self, batch_size=self.batch_size or arch.batch_size, optimizer=self.optimizer or arch.optimizer,
            learning_rate=self.learning_rate or arch.learning_rate)

    @property
    def preprocess(self) -> str:
        return "unit" if self.model_file else get_architecture(self.arch).preprocess

    @property
    def label(self) -> str:
        return f"{self.multiplier.label}/seed{self.seed}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["multiplier"] = self.multiplier.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        d["multiplier"] = MultiplierSpec.from_dict(d["multiplier"])
        return cls(**d)

    def identity(self) -> dict:
        d = self.resolved().to_dict()
        for key in _NOT_IDENTITY:
            d.pop(key)
        return d


# ----------------------------------------------------------------------------------------------
# TensorFlow set-up, data, models
# ----------------------------------------------------------------------------------------------

_configured: dict = {}


def _tensorflow(threads: int | None = None):
    """Import TensorFlow once, with op determinism on and (when asked before its first op) a thread count."""
    quiet_tensorflow()  # its start-up noise, in this process and in the workers of a study
    import tensorflow as tf

    if not _configured:
        tf.config.experimental.enable_op_determinism()
        _configured["determinism"] = True
    if threads and _configured.get("threads") != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
            _configured["threads"] = int(threads)
        except RuntimeError:  # TensorFlow already ran an op in this process: its pools are fixed
            pass
    return tf


def _dataset(config: RunConfig):
    return load_dataset(config.dataset, config.data_dir, validation=config.validation,
                        limit_train=config.limit_train, limit_test=config.limit_test)


def _data(config: RunConfig):
    """The dataset and its training, validation and test images as the network takes them."""
    data = _dataset(config)
    if config.preprocess == "per_image":
        return data, tuple(standardize_per_image(x) for x in (data.x_train, data.x_val, data.x_test))
    return data, (data.x_train, data.x_val, data.x_test)


def _base_model(config: RunConfig, data):
    import keras

    if not config.model_file:
        # In a fresh Keras session, the layers get the names a fresh process gives them (dense, dense_1,
        # ...), whatever ran before in this one: the names --assign patterns match.
        keras.backend.clear_session()
    keras.utils.set_random_seed(int(config.seed))  # weights and the dropout layers' random streams
    if not config.model_file:
        return build_model(config.arch, data.input_shape, data.classes)
    model = model_from_file(config.model_file, data)
    from amsim.keras import precise
    from amsim.keras.layers.base import Approximate

    if any(isinstance(layer, Approximate) for layer in _layers(model)):
        # A model saved with AM layers (an amsim train run's model.keras): its float32 network, from which
        # every multiplier of the study converts, float32 itself included.
        model = precise(model)
    return model


def model_from_file(path, data):
    """The Keras model saved in ``path``, checked to be an image classifier for ``data`` (a
    :class:`~amsim.experiments.datasets.Dataset`): one input of its images' shape, one score per class.

    Raises:
        ExperimentError: one line naming the file and what is wrong (no file, not a Keras model, a
            model Keras cannot load, or one that does not fit the dataset).
    """
    model = _load_model_file(Path(path))
    where = f"--model-file {path}"
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise ExperimentError(f"{where}: {type(model).__name__} {model.name!r} declares no inputs and outputs; "
                              "save a Sequential or functional model")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExperimentError(f"{where}: the model has {len(inputs)} input(s) and {len(outputs)} output(s); "
                              "an image classifier has one of each")
    takes, gives = tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])
    if len(takes) != len(data.input_shape) or any(t not in (None, d) for t, d in zip(takes, data.input_shape)):
        raise ExperimentError(f"{where}: the model takes inputs {takes}; {data.name} has images "
                              f"{data.input_shape}")
    if gives != (data.classes,):
        raise ExperimentError(f"{where}: the model outputs {gives}; {data.name} needs one score per class, "
                              f"({data.classes},)")
    return model


def _load_model_file(path: Path):
    """The Keras model in ``path``, or one line saying why there is none.

    Keras's own messages mislead here (a text file is "not found") or run to pages (a layer that fails
    to deserialize is reported with every enclosing config), so the file is checked first: it exists,
    a ``.keras`` file is a zip archive holding ``config.json``, and every LUT embedded in an AM layer
    matches its checksum.
    """
    import keras

    if not path.is_file():
        raise ExperimentError(f"--model-file {path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    if path.suffix not in (".keras", ".h5"):
        raise ExperimentError(f"--model-file {path}: not a Keras model file (.keras, or the legacy .h5)")
    if path.suffix == ".keras":
        _check_keras_archive(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises whatever the damaged part made it raise
        raise ExperimentError(f"--model-file {path}: Keras cannot load it ({_keras_reason(exc)})") from None


def _check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` file that is no Keras archive, or whose embedded LUTs fail their checksums."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except zipfile.BadZipFile:
        raise ExperimentError(f"--model-file {path}: not a .keras archive (not a zip file)") from None
    except KeyError:
        raise ExperimentError(f"--model-file {path}: a zip file but not a .keras archive (no config.json)") \
            from None
    except (OSError, ValueError, zlib.error) as exc:  # a damaged member; config.json that is not JSON
        raise ExperimentError(f"--model-file {path}: damaged .keras archive ({exc})") from None
    embedded = list(_embedded_luts(config))
    if not embedded and not _names_amsim_class(config):
        return
    try:
        # registers the AM layers: Keras finds a class it has not seen registered by no other means (an
        # AM layer whose table is not embedded, a tampered one, was "a class it could not locate")
        import amsim.keras  # noqa: F401
        from amsim.gemm.circuit import EMBED_FORMAT as CIRCUIT_FORMAT
        from amsim.gemm.circuit import circuit_from_config
        from amsim.keras.layers.base import lut_from_config
    except ImportError as exc:
        raise ExperimentError(f"--model-file {path} holds AM layers, which need amsim.keras: {exc}") from None
    for layer, lut in embedded:  # a float layer's mantissa LUT, or a quantized layer's integer circuit
        decode = circuit_from_config if lut.get("format") == CIRCUIT_FORMAT else lut_from_config
        try:
            decode(lut)
        except (AmsimError, KeyError, TypeError, ValueError) as exc:
            raise ExperimentError(f"--model-file {path}: layer {layer!r}: {exc}") from None


def _names_amsim_class(node) -> bool:
    """Whether a Keras model config names a class of amsim's (an AM layer), nested models too."""
    if isinstance(node, dict):
        if str(node.get("registered_name") or "").startswith("amsim>") or \
                str(node.get("module") or "").startswith("amsim."):
            return True
        return any(_names_amsim_class(value) for value in node.values())
    return isinstance(node, list) and any(_names_amsim_class(value) for value in node)


def _embedded_luts(node, layer=None):
    """(layer name, embedded LUT or circuit config) for every AM layer in a Keras model config, nested models
    too."""
    if isinstance(node, dict):
        if isinstance(node.get("lut"), dict):
            yield node.get("name", layer), node["lut"]
        for value in node.values():
            yield from _embedded_luts(value, node.get("name", layer))
    elif isinstance(node, list):
        for value in node:
            yield from _embedded_luts(value, layer)


def _keras_reason(exc: Exception) -> str:
    """The root of a Keras loading error in one line: Keras wraps a layer's own error in the message of
    each enclosing object ("... could not be deserialized ... Exception encountered: REASON")."""
    reason = str(exc).rsplit("Exception encountered:", 1)[-1].strip()
    return (reason.splitlines() or [type(exc).__name__])[0]


def initial_weights(config: RunConfig) -> list[np.ndarray]:
    """The initial weights of ``config``'s float32 network (drawn from its seed, or read from its model file)."""
    _tensorflow()
    return [np.array(w) for w in _base_model(config, _dataset(config)).get_weights()]


def weights_digest(weights) -> str:
    """sha256 over every array's dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype.str}{w.shape}".encode())
        h.update(w.tobytes())
    return h.hexdigest()


def convert_model(model, spec: MultiplierSpec, gradient: str = "approximate"):
    """A copy of the float32 ``model`` computing with ``spec``'s multiplier, holding the same weights."""
    import keras

    if not spec.approximate:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    try:
        from amsim.keras import ExactLayersWarning, approximate
        from amsim.keras.layers.base import APPROXIMATE, Approximate
    except ImportError as exc:
        raise ExperimentError(f"multiplier {spec.text} needs amsim.keras, which cannot be imported: {exc}") from None
    kwargs = spec.layer_arguments()
    if gradient != "approximate":
        kwargs["gradient"] = gradient
    with warnings.catch_warnings():
        # Layers left exact are the run's coverage (config.json), which the study's summary reports.
        warnings.simplefilter("ignore", ExactLayersWarning)
        copy = approximate(model, kwargs.pop("lut"), **kwargs)  # params stay in the layers' configs
    if not any(isinstance(layer, Approximate) for layer in _layers(copy)):
        raise ExperimentError(f"model {model.name!r} has no layer that multiplies (none of the {len(APPROXIMATE)} "
                              "layer types amsim.keras.approximate() replaces, such as Dense and Conv2D): "
                              f"multiplier {spec.text} would have nothing to approximate; train it with float32 only")
    return copy


def _coverage(model, spec: MultiplierSpec) -> dict:
    """The run model's coverage table (:func:`amsim.keras.coverage`) and the multiplier behind each of its
    labels (``pricing``), with which the study prices every layer's products on its own multiplier."""
    from amsim.keras.coverage import coverage

    pricing = {}
    if spec.approximate:
        from amsim.keras.layers.base import resolve_lut
        from amsim.keras.products import multiplier_label

        for each in spec.multipliers:
            params = dict(each.params) or None
            mult = _circuit(each) if each.quantize else resolve_lut(each.model, each.bits, params)
            pricing[multiplier_label(mult, params, each.quantize)] = each.to_dict()
    return {"coverage": coverage(model).to_dict(), "pricing": pricing}


def _circuit(spec: MultiplierSpec):
    """The integer circuit of a quantized multiplier, as its layers resolve it."""
    from amsim.gemm.circuit import resolve_circuit

    return resolve_circuit(spec.model, signed=spec.quantize == "int8", params=dict(spec.params) or None)


def network_weights(model) -> list:
    """The weights ``model`` shares with the float32 network it was converted from: all of them but the
    input ranges quantized layers observe (:class:`amsim.keras.quantization.RangeObserver`), which a
    converted copy starts observing afresh."""
    from amsim.keras.quantization import observed_variables

    observed = {id(v) for v in observed_variables(model)}
    return [np.array(w) for w in model.weights if id(w) not in observed]


def _layers(model):
    """Every layer of ``model``, those of nested models included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


def preflight(config: RunConfig, multipliers=()) -> None:
    """Refuse, before a study writes anything, what would stop every one of its runs: the dataset's
    files and split, a model file that does not load or does not fit the dataset, and approximate
    multipliers for a model with no layer to approximate (the layers do not depend on the multiplier,
    so the first approximate one is converted)."""
    data = _dataset(config)
    _tensorflow()
    base = _base_model(config, data)
    approximate = [spec for spec in multipliers if spec.approximate]
    if approximate:
        convert_model(base, approximate[0], config.gradient)


def _seed_states(model) -> list:
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _run_model(config: RunConfig, data, weights):
    """The run's compiled model (the float32 network with ``weights``, converted to the multiplier), the
    weights' digest, and the float32 network."""
    import keras

    base = _base_model(config, data)
    try:
        base.set_weights(weights)
    except ValueError as exc:
        raise ExperimentError(f"the initial weights do not fit {config.arch}: {exc}") from None
    keras.utils.set_random_seed(int(config.seed))
    model = convert_model(base, config.multiplier, config.gradient)
    # Both sides without quantized layers' input ranges (a model file may hold some): a copy observes anew.
    given, held = weights_digest(network_weights(base)), weights_digest(network_weights(model))
    if held != given:
        raise ExperimentError(f"{config.multiplier.text}: the converted model's initial weights differ from the "
                              "ones it was given; the comparison would not be fair")
    # Dropout masks: the same random stream for every multiplier.
    for mine, theirs in zip(_seed_states(model), _seed_states(base), strict=False):
        mine.assign(theirs.value)
    cfg = config.resolved()
    model.compile(optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate), loss=_LOSS, metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model, given, base


def _training_batches(x, y, *, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """tf.data batches of epochs first_epoch..epochs-1, each in its (seed, epoch) order."""
    tf = _tensorflow()
    n = len(x)
    orders = np.stack([np.random.default_rng([int(seed), e]).permutation(n) for e in range(first_epoch, epochs)])
    xs, ys = tf.constant(x), tf.constant(y)

    @tf.autograph.experimental.do_not_convert  # plain tensor code: nothing for AutoGraph to rewrite
    def epoch_batches(order):
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    @tf.autograph.experimental.do_not_convert
    def gather(indices):
        return tf.gather(xs, indices), tf.gather(ys, indices)

    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(epoch_batches).map(gather).prefetch(2)
    return batches, -(-n // batch_size)


def _batches(x, y, batch_size: int):
    """Evaluation batches in order (a tf.data pipeline like the training one, not Keras's numpy adapter)."""
    tf = _tensorflow()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(2)


# ----------------------------------------------------------------------------------------------
# Folder, checkpoint, records
# ----------------------------------------------------------------------------------------------


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def _write_history(folder: Path, history: list[dict]) -> None:
    _write_json(folder / "history.json", history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_HISTORY_FIELDS) + sorted(
        {k for row in history for k in row} - set(_HISTORY_FIELDS)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(folder / "history.csv", buf.getvalue().encode())


def _checkpoint_bytes(model, epoch: int, history: list[dict]) -> bytes:
    """The run's whole state after ``epoch`` epochs as an .npz archive (a snapshot: later training
    does not change it)."""
    arrays = {f"model/{i:04d}": np.asarray(v.value) for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer/{i:04d}": np.asarray(v.value) for i, v in enumerate(model.optimizer.variables)})
    meta = {"epoch": epoch, "history": history, "model_variables": [v.path for v in model.variables],
            "optimizer_variables": [v.path for v in model.optimizer.variables]}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buf.getvalue()


def _write_records(folder: Path, history: list[dict], checkpoint: bytes) -> None:
    # The checkpoint first: a write that fails between the two leaves the history one epoch behind
    # the checkpoint (a resume rewrites it from the checkpoint), never claiming an epoch not saved.
    atomic_write_bytes(folder / "checkpoint.npz", checkpoint)
    _write_history(folder, history)


def _save_model(model, path: Path) -> None:
    """``model.save(path)``, atomically: Keras writes the file in a temporary folder beside ``path``,
    and it replaces ``path`` once complete and on disk; an interrupted or failed save leaves no part."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp") as scratch:
        tmp = Path(scratch) / path.name
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _load_checkpoint(folder: Path, model) -> tuple[int, list[dict]]:
    path = folder / "checkpoint.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise RunFolderError(f"{path}: unreadable checkpoint ({exc}); rerun with --force") from None
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        stored = sorted(k for k in arrays if k.startswith(prefix + "/"))
        if len(stored) != len(variables):
            raise RunFolderError(f"{path}: holds {len(stored)} {prefix} variables, the run has {len(variables)}")
        for key, var in zip(stored, variables, strict=True):
            if tuple(arrays[key].shape) != tuple(var.shape):
                raise RunFolderError(f"{path}: {prefix} variable {var.path} is {arrays[key].shape}, "
                                     f"the run's is {tuple(var.shape)}")
            var.assign(arrays[key])
    return int(meta["epoch"]), list(meta["history"])


def _prepare_folder(folder: Path, config: RunConfig, *, resume: bool, force: bool) -> str:
    """'fresh', 'resume' or 'complete', after checking that the folder may be used."""
    if force and folder.exists():
        shutil.rmtree(folder)
    if not folder.exists() or not any(folder.iterdir()):
        folder.mkdir(parents=True, exist_ok=True)
        return "fresh"
    if not resume:
        raise RunFolderError(f"run folder {folder} is not empty; --resume continues it, --force replaces it")
    try:
        stored = RunConfig.from_dict(json.loads((folder / "config.json").read_text())["run"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{folder} holds no readable run config ({exc}); use --force to replace it") from None
    mine, theirs = config.identity(), stored.identity()
    if mine != theirs:
        diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in mine if mine[k] != theirs.get(k))
        raise RunFolderError(f"{folder} holds a different run ({diff}); use another --out or --force")
    if (folder / "result.json").is_file():
        return "complete"
    return "resume" if (folder / "checkpoint.npz").is_file() else "fresh"


def environment() -> dict:
    """Versions and machine: what shaped the numbers."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"amsim": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform(),
            "host": socket.gethostname(), "cpu": cpu, "cpus_available": len(os.sched_getaffinity(0)),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                           "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
            "op_determinism": True}


def read_run(folder) -> dict:
    """A run folder's records: ``config``, ``history`` and (when complete) ``result``."""
    folder = Path(folder)
    try:
        out = {"folder": str(folder), "config": json.loads((folder / "config.json").read_text()),
               "history": json.loads((folder / "history.json").read_text())
               if (folder / "history.json").is_file() else []}
        result = folder / "result.json"
        out["result"] = json.loads(result.read_text()) if result.is_file() else None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{folder} is not a readable run folder ({exc})") from None
    return out


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _recorder_class():
    import keras

    class Recorder(keras.callbacks.Callback):
        """Per epoch: times the epoch, appends its metrics, and has the history and the checkpoint written."""

        def __init__(self, folder, history, writer, meter=None):
            super().__init__()
            self.folder, self.history, self.writer, self.meter = folder, history, writer, meter
            self.written = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = self.t_test = time.perf_counter()
            self.tested = False
            if self.meter:
                self.meter.start()

        def on_test_begin(self, logs=None):
            if not self.tested:
                self.t_test, self.tested = time.perf_counter(), True

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            row = {"epoch": epoch + 1}
            for key in _HISTORY_FIELDS[1:5]:
                if logs and key in logs:
                    row[key] = float(logs[key])
            row["time_s"] = now - self.t0
            row["train_time_s"] = (self.t_test if self.tested else now) - self.t0
            if self.meter:
                row["board_energy_j"] = self.meter.stop()
            self.history.append(row)
            if self.written:
                self.written[-1].result()  # a full disk stops the run at the next epoch, not at its end
            snapshot = _checkpoint_bytes(self.model, epoch + 1, self.history)
            # Written (and fsync'ed) in the background, in order, while the next epoch trains.
            self.written.append(self.writer.submit(_write_records, self.folder, list(self.history), snapshot))

    return Recorder


def run(config: RunConfig, out, *, initial=None, resume: bool = False, force: bool = False, verbose=0,
        threads: int | None = None, callbacks=(), tensorboard: bool = True, save_model: bool = True,
        study: dict | None = None) -> dict:
    """Train one run into folder ``out`` and return its result (``result.json``'s content).

    Parameters
    ----------
    config : RunConfig
    initial : list of ndarray, optional
        The initial weights (a study passes the same ones to every multiplier); default: drawn
        from ``config.seed`` (or read from ``config.model_file``).
    resume : bool
        Continue from the folder's checkpoint (a complete run is returned as it is). Without it, a
        non-empty folder is refused.
    force : bool
        Delete whatever the folder holds first.
    verbose : 0, 1 or 2
        Keras's progress output (1: a progress bar per epoch).
    threads : int, optional
        TensorFlow's thread pools, when set before its first op in this process.
    callbacks : Keras callbacks called after the run's own (which checkpoint each epoch).
    study : dict, optional
        Recorded in config.json (the study a run belongs to).
    """
    folder = Path(out)
    state = _prepare_folder(folder, config, resume=resume, force=force)
    if state == "complete":
        return json.loads((folder / "result.json").read_text())
    _tensorflow(threads)
    import keras

    keras.backend.clear_session()  # a run in a long-lived process starts as in a fresh one
    cfg = config.resolved()
    tensorboard = tensorboard and importlib.util.find_spec("tensorboard") is not None
    data, (x_train, x_val, x_test) = _data(cfg)
    if initial is None:
        initial = [np.array(w) for w in _base_model(cfg, data).get_weights()]
    model, digest, base = _run_model(cfg, data, initial)
    counts = count_multiplications(base)
    products = _coverage(model, cfg.multiplier)

    history: list[dict] = []
    first_epoch = 0
    if state == "resume":
        first_epoch, history = _load_checkpoint(folder, model)
        stored = json.loads((folder / "config.json").read_text())
        if stored.get("initial_weights_sha256") != digest:
            raise RunFolderError(f"{folder} was started from other initial weights; use --force to restart it")
    else:
        _write_json(folder / "config.json", {
            "run": cfg.to_dict(), "label": cfg.label, "initial_weights_sha256": digest,
            "seeds": {"weights": cfg.seed, "data_order": f"numpy default_rng([{cfg.seed}, epoch])",
                      "dropout": cfg.seed},
            "dataset": data.describe(), "multiplications": counts.to_dict(), **products, "study": study or {},
            "tensorboard": "tensorboard/" if tensorboard else "not written (the tensorboard package is missing)",
            "environment": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    if first_epoch < cfg.epochs:
        batches, steps = _training_batches(x_train, data.y_train, batch_size=cfg.batch_size, seed=cfg.seed,
                                           first_epoch=first_epoch, epochs=cfg.epochs)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amsim-run-records")
        recorder = _recorder_class()(folder, history, writer, board_energy_meter())
        own = [recorder]
        if tensorboard:
            own.append(keras.callbacks.TensorBoard(str(folder / "tensorboard"), write_graph=False))
        validation = _batches(x_val, data.y_val, cfg.batch_size) if len(x_val) else None
        try:
            model.fit(batches, epochs=cfg.epochs, initial_epoch=first_epoch, steps_per_epoch=steps, shuffle=False,
                      validation_data=validation, verbose=verbose,
                      callbacks=[*own, *callbacks])
        finally:  # also when interrupted: the last finished epoch's checkpoint reaches the disk
            writer.shutdown(wait=True)
        for written in recorder.written:
            written.result()
    test = model.evaluate(_batches(x_test, data.y_test, cfg.batch_size), verbose=0, return_dict=True)
    result = _result(cfg, history, {k: float(v) for k, v in test.items()}, digest,
                     weights_digest(model.get_weights()))
    if save_model:
        _save_model(model, folder / "model.keras")
    _write_json(folder / "result.json", result)
    return result


def _result(cfg: RunConfig, history: list[dict], test: dict, initial: str, final: str) -> dict:
    val = [row.get("val_accuracy") for row in history]
    best = max(range(len(val)), key=lambda i: val[i]) if val and None not in val else None
    times = [row["time_s"] for row in history]
    return {
        "status": "complete", "label": cfg.label, "multiplier": cfg.multiplier.to_dict(), "seed": cfg.seed,
        "epochs": len(history), "final": history[-1] if history else {},
        "best_val_accuracy": val[best] if best is not None else None,
        "best_epoch": best + 1 if best is not None else None,
        "test": test, "mean_epoch_time_s": float(np.mean(times)) if times else None,
        "mean_epoch_time_after_first_s": float(np.mean(times[1:])) if len(times) > 1 else None,
        "total_time_s": float(np.sum(times)) if times else None,
        "board_energy_j": (float(np.sum([r["board_energy_j"] for r in history]))
                           if history and all(r.get("board_energy_j") is not None for r in history) else None),
        "initial_weights_sha256": initial, "final_weights_sha256": final,
    }
