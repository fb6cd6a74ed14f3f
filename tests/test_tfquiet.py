"""amsim's commands keep TensorFlow's start-up noise off stderr, unless the user asks with --verbose.

What TensorFlow prints while it starts depends on its build and the machine: here (a CPU build) the
oneDNN notice, twice, through absl's logging, which ignores TF_CPP_MIN_LOG_LEVEL; on a machine
without a GPU, a CUDA build adds the CUDA stub's and cuInit's complaints.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amsim import tfquiet

BIN = Path(sys.executable).parent

#: TensorFlow's start-up noise: its notices by their words, and any line in absl's or TensorFlow's log format.
NOISE = re.compile(r"oneDNN|cuInit|cudart|absl::InitializeLog|^[IWEF]\d{4} |^\d{4}-\d\d-\d\d [\d:.]+: [IWEF] ", re.M)


def environment(**extra):
    """This environment without the settings under test: what a user who set nothing has."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", tfquiet.VERBOSE_ENV)}
    return {**env, **extra}


def train(folder, *extra):
    """A tiny `amsim train` in a real process: its start-up is what is being tested."""
    return subprocess.run([str(BIN / "amsim"), "train", "--dataset", "digits", "--arch", "mlp", "--multipliers",
                           "float32", "--epochs", "1", "--limit-train", "32", "--limit-test", "16", "--quiet",
                           "--no-plots", "--out", str(folder), *extra],
                          capture_output=True, text=True, env=environment(), cwd=folder.parent, timeout=300)


@pytest.fixture(scope="module")
def start_up_noise():
    """What importing TensorFlow, and its search for devices, print on this machine, left alone."""
    pytest.importorskip("tensorflow")
    result = subprocess.run([sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
                            capture_output=True, text=True, env=environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_train_keeps_tensorflows_start_up_noise_off_stderr(start_up_noise, tmp_path):
    result = train(tmp_path / "study")
    assert result.returncode == 0, result.stderr
    assert not NOISE.search(result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_lets_it_through(start_up_noise, tmp_path):
    if not NOISE.search(start_up_noise):
        pytest.skip("this TensorFlow says nothing at start-up")
    result = train(tmp_path / "study", "--verbose")
    assert result.returncode == 0, result.stderr
    assert NOISE.search(result.stderr), result.stderr


def test_output_held_back_is_dropped_when_the_import_succeeds(capfd):
    with tfquiet._stderr_held_back():
        os.write(2, b"I0000 00:00:1.0  1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
                    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_output_held_back_is_passed_on_when_the_import_fails(capfd):
    with pytest.raises(ImportError), tfquiet._stderr_held_back():
        os.write(2, b"why it failed\n")
        raise ImportError("no TensorFlow")
    assert capfd.readouterr().err == "why it failed\n"


def test_the_users_settings_win(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    tfquiet.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert any(isinstance(f, tfquiet._QuietFinder) for f in sys.meta_path)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, tfquiet._QuietFinder)])
    monkeypatch.setenv(tfquiet.VERBOSE_ENV, "1")
    tfquiet.quiet_tensorflow()
    assert not any(isinstance(f, tfquiet._QuietFinder) for f in sys.meta_path), "verbose: nothing held back"
