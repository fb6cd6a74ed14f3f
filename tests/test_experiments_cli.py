"""``amsim train`` and ``amsim plot-runs`` end to end: a digits study in this process and on a Dask cluster."""

import json
import socket

import numpy as np
import pytest

pytest.importorskip("tensorflow")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

from amsim import cli  # noqa: E402
from amsim.experiments.runner import weights_digest  # noqa: E402

QUICK = ["--dataset", "digits", "--arch", "mlp", "--limit-train", "256", "--limit-test", "128", "--quiet"]


def initial_digest(study, seed):
    with np.load(study / "initial-weights" / f"seed{seed}.npz") as z:
        return weights_digest([z[k] for k in sorted(z.files)])


def run_digests(study):
    return {r: json.loads((study / r / "config.json").read_text())["initial_weights_sha256"]
            for r in json.loads((study / "study.json").read_text())["runs"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """float32 against MBM at M = 7, two epochs, in this process."""
    pytest.importorskip("amsim.keras")
    out = tmp_path_factory.mktemp("study") / "digits"
    assert cli.main(["train", *QUICK, "--multipliers", "float32,mbm:7", "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_train_trains_every_multiplier_from_the_same_initial_weights(study, capsys):
    digests = run_digests(study)
    assert sorted(digests) == ["float32/seed0", "mbm-M7/seed0"]
    assert set(digests.values()) == {initial_digest(study, 0)}
    summary = json.loads((study / "summary.json").read_text())
    assert [r["multiplier"] for r in summary["rows"]] == ["float32", "mbm-M7"]
    assert all(r["complete"] == 1 and 0 < r["final_val_accuracy"] <= 1 for r in summary["rows"])
    assert summary["rows"][0]["slowdown"] == 1.0 and summary["failures"] == {}
    energy = {r["label"]: r for r in summary["energy"]}
    assert energy["mbm-M7"]["relative_power"] == pytest.approx(0.61)
    assert energy["mbm-M7"]["vs_float32"] is None, "no published exact bfloat16 energy: unknown, not guessed"
    assert "unknown" in (study / "summary.md").read_text()
    for name in ("accuracy", "loss", "final-accuracy"):
        assert (study / "figures" / f"{name}.png").is_file() and (study / "figures" / f"{name}.svg").is_file()


def test_train_refuses_an_occupied_study_and_resumes_a_complete_one(study, capsys):
    args = ["train", *QUICK, "--multipliers", "float32,mbm:7", "--epochs", "2", "--out", str(study), "--no-plots"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("amsim: error: 2 run folder(s)") and "--resume" in err and "\n" not in err
    before = json.loads((study / "summary.json").read_text())["rows"]
    assert cli.main([*args, "--resume"]) == 0
    assert json.loads((study / "summary.json").read_text())["rows"] == before
    assert "float32" in capsys.readouterr().out


def test_plot_runs_draws_run_folders_and_study_folders(study, tmp_path):
    assert cli.main(["plot-runs", str(study / "float32" / "seed0"), str(study / "mbm-M7" / "seed0"),
                     "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.{ext}" for n in ("accuracy", "loss", "final-accuracy") for ext in ("png", "svg"))


@pytest.mark.parametrize("args, message", [
    (["--multipliers", "float32,nosuch:7"], "unknown model 'nosuch'"),
    (["--multipliers", "float32", "--resume", "--force"], "exclude each other"),
])
def test_bad_arguments_stop_before_training_with_one_line(tmp_path, capsys, args, message):
    assert cli.main(["train", *QUICK, *args, "--out", str(tmp_path / "s")]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "s").exists()


def test_train_on_a_two_worker_local_dask_cluster(tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "dask"
    assert cli.main(["train", *QUICK, "--limit-train", "64", "--multipliers", "float32", "--seeds", "0,1",
                     "--epochs", "1", "--workers", "2", "--no-plots", "--out", str(out)]) == 0
    digests = run_digests(out)
    assert digests == {"float32/seed0": initial_digest(out, 0), "float32/seed1": initial_digest(out, 1)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["complete"] == 2 and summary["failures"] == {}
    assert json.loads((out / "study.json").read_text())["execution"] == "dask LocalCluster(2)"


def test_a_local_dask_cluster_does_not_need_the_schedulers_default_port(tmp_path, recwarn):
    """Another study (or any Dask scheduler) holding port 8787: no warning that the port is taken."""
    pytest.importorskip("distributed")
    with socket.socket() as held:
        try:
            held.bind(("", 8787))
            held.listen()
        except OSError:  # someone else holds it already: just as good
            pass
        assert cli.main(["train", *QUICK, "--limit-train", "64", "--multipliers", "float32", "--epochs", "1",
                         "--workers", "1", "--no-plots", "--out", str(tmp_path / "s")]) == 0
    assert not [w for w in recwarn if "already in use" in str(w.message)]


def test_the_report_gets_a_training_section_from_run_folders(study, tmp_path):
    from amsim.analysis import training

    section = training.report_section([study], tmp_path)
    assert [r["multiplier"] for r in section["rows"]] == ["float32", "mbm-M7"]
    assert all((tmp_path / fig["png"]).is_file() for fig in section["figures"].values())
    html = training.report_html(section)
    assert "<h2>Training</h2>" in html and "mbm-M7" in html


def test_train_submits_to_an_existing_dask_scheduler_by_address(tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "cluster"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert cli.main(["train", *QUICK, "--limit-train", "64", "--multipliers", "float32", "--epochs", "1",
                         "--scheduler", cluster.scheduler_address, "--no-plots", "--out", str(out)]) == 0
    assert run_digests(out) == {"float32/seed0": initial_digest(out, 0)}
    assert json.loads((out / "study.json").read_text())["execution"] == f"dask {cluster.scheduler_address}"
