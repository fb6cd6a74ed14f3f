#!/usr/bin/env bash
# gpu_check.sh -- one prepared command for a machine with an NVIDIA GPU: build amsim's CUDA kernels
# for its GPU, run the CUDA tests on it and time amsim_cuda_gemm against cuBLAS SGEMM
# (scripts/bench_cuda.py), inside a time budget, leaving JSON and logs in one folder.
# `scripts/gpu_check.sh --help` says how; docs/performance.md says when.
#
# The machine it is written for has CUDA (driver, nvcc), numpy, numba, pytest, PyTorch and CuPy,
# but no network and not the rest of amsim's dependencies: those travel as wheels in .whl/,
# fetched beforehand by `--prepare` on a machine with network.
set -uo pipefail # not -e: a failed step is recorded and the steps that do not need it still run

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The wheels a bare GPU machine lacks, pinned to the versions the test suite runs with, so that a
# carried set is reproducible (bump them with pyproject.toml's ranges). setuptools is carried
# because pyproject.toml's metadata needs setuptools >= 77 to build amsim's editable install;
# hypothesis (and its one dependency, sortedcontainers) because tests/test_cuda_int.py draws its cases.
WHEELS=(cffi==2.1.1 pycparser==3.12 platformdirs==4.14.9 setuptools==84.2.1 hypothesis==6.170.27
    sortedcontainers==2.4.0)
# The Python of the GPU machines this was written for; the wheels must match it.
WHEEL_PYTHON=3.12
# What amsim's CUDA tests import that the machine itself must have (nothing carries these).
PROVIDED=(numpy numba tqdm pytest)

# Steps in order. A step runs for at most CAP seconds, and never into the FLOOR seconds kept for
# each step still to come, so the whole run ends inside the budget; a step left less than its
# own FLOOR is skipped as out of time.
STEPS=(gpu environment setup build tests bench)
declare -A CAP=([gpu]=30 [environment]=60 [setup]=120 [build]=240 [tests]=300 [bench]=300)
declare -A FLOOR=([gpu]=10 [environment]=10 [setup]=30 [build]=30 [tests]=60 [bench]=60)
DEFAULT_BUDGET=480
# A step still running at its limit gets SIGTERM, and SIGKILL this much later; its limit leaves
# room for that, so that a killed step too ends inside the budget.
KILL_GRACE=5
# What the run leaves in the output folder (a flat folder of few files, so that it can be copied
# back whole from a machine that returns only a handful of files).
OUT_FILES=(gpu_check.json gpu_check.log setup.log build.log tests.log bench.log bench.json)

EXIT_FAILED=1      # a step failed, timed out, or was skipped for lack of time
EXIT_USAGE=2       # bad arguments
EXIT_UNAVAILABLE=3 # no usable GPU, or a package is missing and no wheel carries it

usage() {
    cat <<EOF
Usage: scripts/gpu_check.sh [options]
       scripts/gpu_check.sh --prepare [--python-version X.Y] [--dry-run]

On a machine with an NVIDIA GPU, within a time budget: check the GPU (nvidia-smi), record the
environment, make amsim importable (a virtual environment over the machine's own packages, the
wheels in .whl/ where imports fail, amsim installed editable from this checkout; no network),
build the CUDA kernels for this GPU, run tests/test_cuda*.py, and time amsim against cuBLAS
SGEMM (scripts/bench_cuda.py). Runs from any directory; steps run in the repository root.

Options:
  --out DIR          where the JSON and logs go (default: \$OUT if set, else ./gpu-check)
  --budget SECONDS   time for the whole run (default $DEFAULT_BUDGET); each step is limited to its share
  --python PATH      the interpreter whose packages are used (default: python3)
  --quick            benchmark without the AlexNet shapes
  --skip-tests       do not run the tests
  --skip-bench       do not run the benchmark
  --dry-run          check the arguments and print the steps; run and write nothing
  --prepare          with network: download the wheels a bare GPU machine lacks into .whl/
                     (${WHEELS[*]}) and ignore .whl/ in git
  --python-version   with --prepare: the GPU machine's Python (default $WHEEL_PYTHON)
  -h, --help         this text

Output: ${OUT_FILES[*]}.
gpu_check.json holds each step's status, time and exit code, and the environment (GPU model,
driver, CUDA versions); bench.json the timings, the ratios and the goal (<= 2x cuBLAS at 4096^3).
Exit status: 0 every step that ran passed; $EXIT_FAILED a step failed, timed out or ran out of time;
$EXIT_USAGE bad arguments; $EXIT_UNAVAILABLE no usable GPU, or missing packages and no wheels for them.
EOF
}

usage_error() { # one line, as every command-line error of the project reads
    printf 'gpu_check: %s (see --help)\n' "$1" >&2
    exit $EXIT_USAGE
}

# ---- arguments --------------------------------------------------------------------------------

out="${OUT:-$PWD/gpu-check}"
budget=$DEFAULT_BUDGET
python=python3
quick=0 skip_tests=0 skip_bench=0 dry_run=0 prepare=0 python_version=
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --out | --budget | --python | --python-version)
            (($# >= 2)) && [[ -n $2 && $2 != --* ]] || usage_error "$1 needs a value"
            case $1 in
                --out) out=$2 ;;
                --budget) budget=$2 ;;
                --python) python=$2 ;;
                --python-version) python_version=$2 ;;
            esac
            shift 2 ;;
        --out=* | --budget=* | --python=* | --python-version=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
        --quick) quick=1; shift ;;
        --skip-tests) skip_tests=1; shift ;;
        --skip-bench) skip_bench=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --prepare) prepare=1; shift ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

command -v "$python" >/dev/null || usage_error "--python: '$python' is not a command"
if ((prepare)); then
    python_version=${python_version:-$WHEEL_PYTHON}
    [[ $python_version =~ ^3\.[0-9]+$ ]] || usage_error "--python-version must read like 3.12, not '$python_version'"
else
    [[ -z $python_version ]] || usage_error "--python-version applies to --prepare only"
fi

enabled=()
for s in "${STEPS[@]}"; do
    [[ ($s == tests && $skip_tests == 1) || ($s == bench && $skip_bench == 1) ]] || enabled+=("$s")
done
[[ $budget =~ ^[0-9]+$ ]] || usage_error "--budget must be a whole number of seconds, not '$budget'"
need=$KILL_GRACE
for s in "${enabled[@]}"; do need=$((need + FLOOR[$s])); done
((budget >= need)) || usage_error "--budget $budget is too short: the steps chosen need at least $need s"

[[ $out == /* ]] || out="$PWD/$out"
[[ $python == */* && $python != /* ]] && python="$PWD/$python" # steps run in the repository root
cd "$root" || exit $EXIT_UNAVAILABLE

# ---- --prepare: the wheels, on a machine with network -----------------------------------------

wheel_names() { local w; for w in "${WHEELS[@]}"; do printf '%s\n' "${w%%==*}"; done; }

if ((prepare)); then
    # The manylinux tags pip must be told one by one (it matches the glibc version exactly); these
    # cover the wheels above for an x86-64 Linux GPU machine.
    download=("$python" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp
        --python-version "$python_version" --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
        -d .whl "${WHEELS[@]}")
    if ((dry_run)); then
        echo "gpu_check: dry run; would download the wheels for Python $python_version into $root/.whl:"
        echo "  ${download[*]}"
        exit 0
    fi
    exclude=$(git rev-parse --git-path info/exclude 2>/dev/null) &&
        { mkdir -p "$(dirname "$exclude")"; grep -qxF /.whl/ "$exclude" 2>/dev/null || echo /.whl/ >>"$exclude"; }
    mkdir -p .whl
    # One version of each package: pip refuses an install that names two.
    while read -r name; do rm -f .whl/"$name"-*.whl; done < <(wheel_names)
    "${download[@]}" || { echo "gpu_check: pip download failed" >&2; exit $EXIT_FAILED; }
    ls -l .whl
    exit 0
fi

# ---- the steps --------------------------------------------------------------------------------

# The real GPU is checked: neither the CPU emulation of the kernels nor a switch that hides the
# GPU may leak in from the caller's environment.
unset AMSIM_CUDA_EMULATION AMSIM_DISABLE_CUDA
export PYTHONUNBUFFERED=1 # a log cut off by a time limit still holds everything printed before

tests=(tests/test_cuda*.py)
py="$python" # the interpreter of the steps after setup (setup may replace it with a venv's)
work=

describe() { # the command a step runs, as the dry run and the log show it
    case $1 in
        gpu) echo "nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader" ;;
        environment) echo "$python scripts/bench_cuda.py --environment" ;;
        setup) echo "a venv over $python's packages; pip install --no-index" \
            ".whl/{$(wheel_names | paste -sd,)} where imports fail; pip install --no-index -e ." ;;
        build) echo "PY scripts/bench_cuda.py --build-only" ;;
        tests) echo "PY -m pytest -q -rs -p no:cacheprovider ${tests[*]}" ;;
        bench) echo "PY scripts/bench_cuda.py --budget SECONDS$( ((quick)) && echo " --quick")" ;;
    esac
}

later_floors() { # the seconds kept for the enabled steps after $1
    local s seen=0 sum=0
    for s in "${enabled[@]}"; do
        ((seen)) && sum=$((sum + FLOOR[$s]))
        [[ $s == "$1" ]] && seen=1
    done
    echo $sum
}

limit_of() { # the time step $1 may take now: its cap, or what the budget leaves it
    local left=$((budget - SECONDS - KILL_GRACE - $(later_floors "$1")))
    echo $((left < CAP[$1] ? left : CAP[$1]))
}

if ((dry_run)); then
    echo "gpu_check: dry run; nothing is run or written"
    echo "repository: $root"
    echo "output: $out (${OUT_FILES[*]})"
    echo "budget: $budget s, shared in order: a step may take up to its limit below, less the time the steps"
    echo "        before it took, and never the minimum kept for each step after it"
    echo "PY: $python, or the virtual environment the setup makes over it"
    for s in "${enabled[@]}"; do
        printf 'step %-12s at most %4d s  %s\n' "$s" "$(limit_of "$s")" "$(describe "$s")"
    done
    for s in tests bench; do [[ " ${enabled[*]} " == *" $s "* ]] || echo "step $s: skipped (--skip-$s)"; done
    carried=()
    while read -r name; do carried+=(.whl/"$name"-*.whl); done < <(wheel_names)
    existing=()
    for w in "${carried[@]}"; do [[ -e $w ]] && existing+=("$w"); done
    echo "wheels: ${existing[*]:-none in .whl/ (scripts/gpu_check.sh --prepare fetches them)}"
    exit 0
fi

mkdir -p "$out" || usage_error "cannot create the output folder '$out'"
for f in "${OUT_FILES[@]}"; do rm -f "$out/$f"; done
work=$(mktemp -d "${TMPDIR:-/tmp}/amsim-gpu-check.XXXXXX") || exit $EXIT_FAILED
trap 'rm -rf "$work"' EXIT

say() { printf '%s\n' "$*" | tee -a "$out/gpu_check.log"; }
warn() { printf '%s\n' "$*" | tee -a "$out/gpu_check.log" >&2; }

names=() statuses=() codes=() times=() limits=() logs=()
record() { # name status exit-code seconds limit log
    names+=("$1") statuses+=("$2") codes+=("$3") times+=("$4") limits+=("$5") logs+=("$6")
}
status_of() { local i; for i in "${!names[@]}"; do [[ ${names[i]} == "$1" ]] && echo "${statuses[i]}"; done; }
code_of() { local i; for i in "${!names[@]}"; do [[ ${names[i]} == "$1" ]] && echo "${codes[i]}"; done; }

# run_step NAME LOG [--stdout FILE] -- CMD...: CMD under the step's time limit, its output appended
# to LOG in the output folder (stdout to FILE when given); the result is recorded. Returns CMD's status.
run_step() {
    local name=$1 log=$2 stdout=
    shift 2
    [[ $1 == --stdout ]] && { stdout=$2; shift 2; }
    shift # --
    local limit
    limit=$(limit_of "$name")
    if ((limit < FLOOR[$name])); then
        say "== $name: skipped, out of time (${limit} s left for it)"
        record "$name" "out of time" null 0 "$limit" "$log"
        return 1
    fi
    say "== $name (at most $limit s): $(describe "$name")"
    local start=$SECONDS rc
    if [[ -n $stdout ]]; then
        timeout -k $KILL_GRACE "$limit" "$@" >"$stdout" 2>>"$out/$log"
    else
        timeout -k $KILL_GRACE "$limit" "$@" >>"$out/$log" 2>&1
    fi
    rc=$?
    local status=passed
    ((rc == 124 || rc == 137)) && status="timed out"
    ((rc != 0 && rc != 124 && rc != 137)) && status=failed
    record "$name" "$status" "$rc" $((SECONDS - start)) "$limit" "$log"
    say "   $name: $status ($((SECONDS - start)) s)"
    if [[ $status != passed && $log != gpu_check.log ]]; then
        say "   last lines of $log:"
        tail -n 15 "$out/$log" | sed 's/^/   | /' | tee -a "$out/gpu_check.log"
    fi
    return $rc
}

skip_step() { # name reason
    say "== $1: skipped ($2)"
    record "$1" "skipped: $2" null 0 0 null
}

json_string() { # the few strings written here are paths and fixed words; escape what JSON needs
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

flag() { (($1)) && echo true || echo false; }

write_summary() { # exit-code result
    local env=null i steps=
    [[ $(status_of environment) == passed && -s $work/environment.json ]] && env=$(cat "$work/environment.json")
    for i in "${!names[@]}"; do
        [[ -n $steps ]] && steps+=","
        local log=null
        [[ ${logs[i]} != null ]] && log=$(json_string "${logs[i]}")
        steps+=$'\n  '"{\"name\": \"${names[i]}\", \"status\": \"${statuses[i]}\", \"exit_code\": ${codes[i]},"
        steps+=" \"seconds\": ${times[i]}, \"limit_s\": ${limits[i]}, \"log\": $log}"
    done
    local bench=null
    [[ -s $out/bench.json ]] && bench='"bench.json"'
    cat >"$out/gpu_check.json" <<EOF
{
 "check": "scripts/gpu_check.sh",
 "result": "$2",
 "exit_code": $1,
 "budget_s": $budget,
 "elapsed_s": $SECONDS,
 "options": {"quick": $(flag $quick), "skip_tests": $(flag $skip_tests), "skip_bench": $(flag $skip_bench)},
 "output": $(json_string "$out"),
 "bench": $bench,
 "steps": [$steps
 ],
 "environment": $env
}
EOF
}

finish() { # exit-code result
    write_summary "$1" "$2"
    say "== $2 in $SECONDS s of $budget; results in $out"
    [[ -s $out/bench.log ]] && grep '^goal:' "$out/bench.log" | tee -a "$out/gpu_check.log"
    exit "$1"
}
trap 'record interrupted "interrupted" null 0 0 null; finish 130 interrupted' INT TERM

# shellcheck disable=SC2329 # run below, through bash -c under the step's time limit
setup_env() { # root work python provided... -- wheels...: prints the steps' interpreter to $work/python
    local root=$1 work=$2 base=$3
    shift 3
    local provided=() wheels=()
    while [[ $1 != -- ]]; do provided+=("$1"); shift; done
    shift
    wheels=("$@")
    missing() { # the modules among its arguments that interpreter $1 cannot import
        "$1" -c 'import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if u.find_spec(m) is None))' "${@:2}"
    }
    this_checkout() { # whether interpreter $1 imports amsim, c_models included, from this checkout
        "$1" -c 'import importlib.resources as r, sys; sys.exit(str(r.files("amsim.c_models")) != sys.argv[1])' \
            "$root/c_models" 2>/dev/null
    }
    local names=(cffi pycparser platformdirs hypothesis)
    if [[ -z $(missing "$base" "${names[@]}" "${provided[@]}") ]] && this_checkout "$base"; then
        echo "$base imports amsim and its dependencies already: nothing to install"
        echo "$base" >"$work/python"
        return 0
    fi
    local venv=$work/venv py=$work/venv/bin/python
    "$base" -m venv --without-pip "$venv" || return 1
    # The base interpreter's packages (CuPy, PyTorch, numba, numpy, pip) stay visible after the
    # venv's own: its site directories are added with their .pth files, as its own startup does.
    "$base" -c 'import site; [print(f"import site; site.addsitedir({p!r})") for p in site.getsitepackages()]' \
        >"$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_amsim_base_site.pth" || return 1
    local lacking
    lacking=$(missing "$py" "${provided[@]}")
    if [[ -n $lacking ]]; then
        echo "this machine lacks $lacking, which amsim's CUDA tests need and no wheel carries"
        return 3
    fi
    local include
    include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if [[ ! -e $include/Python.h ]]; then
        echo "$include/Python.h is missing: amsim compiles its models and CPU engine as CPython extensions"
        return 3
    fi
    if ((${#wheels[@]})); then
        echo "installing ${wheels[*]}"
        "$py" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check "${wheels[@]}" ||
            return 1
    fi
    lacking=$(missing "$py" "${names[@]}")
    if [[ -n $lacking ]]; then
        echo "missing $lacking: run scripts/gpu_check.sh --prepare on a machine with network and bring .whl/ along"
        return 3
    fi
    # Editable, as the test suite runs it: analysis/ and c_models/ are mapped into the package.
    "$py" -m pip install --quiet --no-index --no-deps --no-build-isolation --disable-pip-version-check -e "$root" ||
        { echo "pip install -e . failed (it needs setuptools >= 77: the carried wheel, or the machine's)"; return 1; }
    echo "$py" >"$work/python"
    echo "amsim installed editable into $venv"
}

# 1. The GPU, as its driver reports it. Without one nothing else means anything.
say "== gpu: $(describe gpu)"
if ! command -v nvidia-smi >/dev/null; then
    warn "gpu_check: no NVIDIA GPU: nvidia-smi is not on PATH (no NVIDIA driver here); this check needs a GPU machine"
    record gpu failed 127 0 "$(limit_of gpu)" null
    finish $EXIT_UNAVAILABLE "no gpu"
fi
gpu_limit=$(limit_of gpu)
gpus=$(timeout -k $KILL_GRACE "$gpu_limit" nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
    --format=csv,noheader 2>&1)
rc=$?
if ((rc != 0)) || [[ -z $gpus ]]; then
    why="failed ($rc): ${gpus%%$'\n'*}"
    ((rc)) || why="lists none"
    warn "gpu_check: no usable NVIDIA GPU: nvidia-smi $why"
    record gpu failed "$rc" "$SECONDS" "$gpu_limit" gpu_check.log
    finish $EXIT_UNAVAILABLE "no gpu"
fi
say "$gpus"
record gpu passed 0 "$SECONDS" "$gpu_limit" gpu_check.log

# 2. The environment's description, with the machine's own Python (before anything is installed).
run_step environment gpu_check.log --stdout "$work/environment.json" -- "$python" scripts/bench_cuda.py --environment

# 3. amsim importable; 4. its kernels built; 5. the tests; 6. the benchmark.
wheels=()
while read -r name; do for w in .whl/"$name"-*.whl; do [[ -e $w ]] && wheels+=("$root/$w"); done; done < <(wheel_names)
run_step setup setup.log -- bash -c "$(declare -f setup_env); setup_env \"\$@\"" setup_env \
    "$root" "$work" "$python" "${PROVIDED[@]}" -- "${wheels[@]}"
if [[ $(status_of setup) == passed ]]; then
    py=$(cat "$work/python")
    run_step build build.log -- "$py" scripts/bench_cuda.py --build-only
    if ((skip_tests)); then skip_step tests "--skip-tests"; else
        run_step tests tests.log -- "$py" -m pytest -q -rs -p no:cacheprovider "${tests[@]}"
    fi
    if ((skip_bench)); then skip_step bench "--skip-bench"
    elif [[ $(status_of build) != passed ]]; then skip_step bench "build $(status_of build)"
    else
        # The benchmark stops starting shapes in time to write its JSON before the step's limit.
        bench_budget=$(($(limit_of bench) - 15))
        bench_args=(--budget "$bench_budget")
        ((quick)) && bench_args+=(--quick)
        run_step bench bench.log --stdout "$out/bench.json" -- "$py" scripts/bench_cuda.py "${bench_args[@]}"
        [[ -s $out/bench.json ]] || rm -f "$out/bench.json"
    fi
else
    for s in build tests bench; do
        [[ " ${enabled[*]} " == *" $s "* ]] && skip_step "$s" "setup $(status_of setup)"
    done
    [[ $(code_of setup) == "$EXIT_UNAVAILABLE" ]] && finish $EXIT_UNAVAILABLE "missing packages"
fi

for st in "${statuses[@]}"; do
    [[ $st == passed || $st == "skipped: --skip-"* ]] || finish $EXIT_FAILED failed
done
finish 0 passed
