# Sourced by scripts/amsim and scripts/test: create .venv and install amsim into it when needed.
# Re-installs when the packaging (pyproject.toml, setup.py) is newer than the last install.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AMSIM_VENV:-$root/.venv}"
stamp="$venv/.amsim-installed"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$root/setup.py" -nt "$stamp" ]; then
    echo "amsim: setting up $venv (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    # The CPU build of TensorFlow, so that the tests of amsim.keras run (users: the extra amsim[tf]).
    "$venv/bin/python" -m pip install --quiet -e "$root[test,train]" "tensorflow-cpu>=2.16" >&2
    touch "$stamp"
fi
