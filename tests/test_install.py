"""A regular install works: the wheel built from this checkout, installed into a fresh virtual
environment outside it, carries everything amsim reads at run time and runs its commands.

What must travel inside the wheel: every module of amsim and of ``analysis/`` (as
``amsim.analysis``; no top-level ``analysis`` module), the built-in models of ``c_models/`` (as
``amsim.c_models``), the C headers and the GEMM engine's sources, which amsim compiles on first use.

The wheel is built from a copy of the checkout, so the build leaves nothing in the working tree and
no earlier build's leftovers can slip into it. The venv gets amsim's dependencies from the package
index pip is configured with, as a user's would.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from amsim import gemm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

#: Top-level entries the wheel build does not read: version control, environments, caches, outputs.
_NOT_SOURCES = {".git", ".venv", "venv", "build", "dist", ".pytest_cache", ".hypothesis", "tests", "luts",
                "out", "plots", "report"}


def _not_sources(folder, names):
    top = Path(folder) == ROOT
    return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in _NOT_SOURCES)]


#: Installed path (inside the wheel) of each source folder and the files of it that must travel:
#: every module, and every file of the C folders (a new kind of source needs a line in pyproject.toml).
_SHIPPED = {
    "amsim": ("amsim", ["**/*.py", "include/**/*", "csrc/**/*"]),
    "analysis": ("amsim/analysis", ["**/*.py"]),
    "c_models": ("amsim/c_models", ["*.c", "*.h", "*.py"]),
}

#: Runs in the installed venv: the GEMM of two saved operands with the model by name and with the
#: LUT file generate-lut wrote, and where amsim, its analysis package and its models come from.
_VENV_SCRIPT = """
import importlib.util, json, sys
import numpy as np
import amsim, amsim.analysis, amsim.gemm
from amsim.models import builtin_models_dir
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], amsim.gemm.matmul(a, b, "mitchell", bits=7))
np.save(sys.argv[4], amsim.gemm.matmul(a, b, sys.argv[5], bits=7))
print(json.dumps({"amsim": amsim.__file__, "analysis": amsim.analysis.__file__,
                  "models": str(builtin_models_dir()),
                  "top_level_analysis": importlib.util.find_spec("analysis") is not None}))
"""


def _run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _operands():
    rng = np.random.default_rng(15)
    return rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((4, 5), dtype=np.float32)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp / "dist", source])
    (path,) = (tmp / "dist").glob("amsim-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv, outside the checkout, with the wheel and its dependencies installed."""
    path = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", path])
    _run([path / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel])
    return path


@pytest.fixture(scope="module")
def venv_env(tmp_path_factory):
    """Environment of a command in the venv: its own model cache, nothing pointing into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AMSIM_BUILTIN_MODELS", "AMSIM_VENV")}
    env["AMSIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    return env


@pytest.fixture(scope="module")
def lut_folder(venv, venv_env, tmp_path_factory) -> Path:
    """What the installed ``generate-lut --bits 7 --model mitchell`` writes."""
    out = tmp_path_factory.mktemp("luts")
    _run([venv / "bin" / "generate-lut", "--bits", "7", "--model", "mitchell", "--out", out], cwd=out,
         env=venv_env)
    return out


def test_the_wheel_carries_every_module_header_kernel_source_and_builtin_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder, (installed, patterns) in _SHIPPED.items()
                for pattern in patterns
                for path in (ROOT / folder).glob(pattern)
                if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")}
    assert sorted(expected - names) == []
    assert [n for n in names if n.split("/")[0] in ("analysis", "c_models", "tests", "scripts")] == []


def test_the_installed_commands_list_models_and_generate_a_lut(venv, venv_env, lut_folder, tmp_path):
    listing = _run([venv / "bin" / "amsim", "models"], cwd=tmp_path, env=venv_env)
    assert "mitchell" in listing and "drum" in listing
    models = json.loads(_run([venv / "bin" / "amsim", "models", "--json"], cwd=tmp_path, env=venv_env))
    assert {m["name"] for m in models} >= {"exact", "mitchell", "drum", "mbm"}
    assert [p.name for p in lut_folder.iterdir()] == ["mitchell_m7.npz"]


def test_the_installed_gemm_matches_this_checkouts_bit_for_bit(venv, venv_env, lut_folder, tmp_path):
    a, b = _operands()
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = _run([venv / "bin" / "python", "-c", _VENV_SCRIPT, "a.npy", "b.npy", "by_name.npy", "by_file.npy",
                lut_folder / "mitchell_m7.npz"], cwd=tmp_path, env=venv_env)
    where = json.loads(out.strip().splitlines()[-1])

    site = venv.resolve()
    assert Path(where["amsim"]).resolve().is_relative_to(site)
    assert Path(where["analysis"]).resolve().is_relative_to(site)
    assert Path(where["models"]).resolve().is_relative_to(site)
    assert not where["top_level_analysis"]

    expected = gemm.matmul(a, b, "mitchell", bits=7)
    for name in ("by_name.npy", "by_file.npy"):
        assert np.load(tmp_path / name).view(np.uint32).tolist() == expected.view(np.uint32).tolist()
