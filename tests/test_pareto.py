"""Pareto fronts (amsim.analysis.pareto): properties of the non-dominated set, ties and missing data,
candidates built from model costs and statistics, and ``amsim pareto``."""

import csv
import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amsim
from amsim import cli
from amsim.errors import RangeError
from amsim.analysis import AnalysisError, data, pareto
from amsim.analysis.pareto import dominates, pareto_front

# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------

#: Small integer values make ties and duplicate vectors common; None, NaN and inf test the edges.
value = st.one_of(st.integers(0, 3).map(float), st.integers(0, 3).map(float), st.integers(0, 3).map(float),
                  st.sampled_from([None, math.nan, math.inf, -0.0]))


@st.composite
def problems(draw):
    d = draw(st.integers(2, 4))
    objectives = [f"o{k}" for k in range(d)]
    rows = draw(st.lists(st.lists(value, min_size=d, max_size=d), max_size=25))
    candidates = [{"label": f"c{i}", **dict(zip(objectives, row))} for i, row in enumerate(rows)]
    return candidates, objectives


def vec(c, objectives):
    return tuple(c[o] for o in objectives)


def has_data(c, objectives):
    return all(c[o] is not None and not math.isnan(c[o]) for o in objectives)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_front_properties(problem):
    candidates, objectives = problem
    result = pareto_front(candidates, objectives)
    n = len(candidates)
    front, dom, miss = set(result.front_indices), set(result.dominated_indices), set(result.missing_indices)
    # a partition of the input: nothing dropped, nothing twice
    assert front | dom | miss == set(range(n))
    assert len(front) + len(dom) + len(miss) == n
    # missing data is reported, never ranked
    assert miss == {i for i, c in enumerate(candidates) if not has_data(c, objectives)}
    for i in miss:
        assert result.missing_objectives[i] == [o for o in objectives
                                                if candidates[i][o] is None or math.isnan(candidates[i][o])]
    ranked = [i for i in range(n) if i not in miss]
    # no returned point is dominated (by any candidate with data)
    for i in front:
        assert not any(dominates(vec(candidates[j], objectives), vec(candidates[i], objectives)) for j in ranked)
    # every excluded point is dominated by a returned one, the one recorded
    for i in dom:
        f = result.dominated_by[i]
        assert f in front
        assert dominates(vec(candidates[f], objectives), vec(candidates[i], objectives))
    # ties and duplicates: identical vectors share their fate
    for i in ranked:
        for j in ranked:
            if vec(candidates[i], objectives) == vec(candidates[j], objectives):
                assert (i in front) == (j in front)
    # the brute-force definition
    assert front == {i for i in ranked if not any(dominates(vec(candidates[j], objectives),
                                                            vec(candidates[i], objectives)) for j in ranked)}
    # the front is sorted by objective vector, ties in input order
    keys = [(vec(candidates[i], objectives), i) for i in result.front_indices]
    assert keys == sorted(keys)
    # the front holds the input objects themselves
    assert all(a is candidates[i] for a, i in zip(result.front, result.front_indices))


@settings(max_examples=100, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_front_does_not_depend_on_input_order(problem, random):
    candidates, objectives = problem
    shuffled = list(candidates)
    random.shuffle(shuffled)
    labels = lambda r: sorted(c["label"] for c in r.front)  # noqa: E731
    assert labels(pareto_front(candidates, objectives)) == labels(pareto_front(shuffled, objectives))


def test_ties_and_duplicates_are_all_kept():
    cands = [{"label": "a", "x": 1.0, "y": 2.0}, {"label": "a-again", "x": 1.0, "y": 2.0},
             {"label": "b", "x": 2.0, "y": 1.0}, {"label": "c", "x": 2.0, "y": 2.0},
             {"label": "c-again", "x": 2.0, "y": 2.0}, {"label": "d", "x": 1.0, "y": 3.0}]
    r = pareto_front(cands, ["x", "y"])
    assert [c["label"] for c in r.front] == ["a", "a-again", "b"]
    assert [c["label"] for c in r.dominated] == ["c", "c-again", "d"]
    assert r.dominated_by[5] == 0  # d: same x as a, worse y


def test_missing_values_are_reported_not_dropped():
    cands = [{"label": "priced", "power": 0.5, "err": 0.1}, {"label": "free", "power": None, "err": 0.0},
             {"label": "nan", "power": math.nan, "err": 0.0}, {"label": "absent", "err": 0.0},
             {"label": "flag", "power": True, "err": 0.0}]
    r = pareto_front(cands, ["power", "err"])
    assert [c["label"] for c in r.front] == ["priced"]
    assert [c["label"] for c in r.missing] == ["free", "nan", "absent", "flag"]
    assert r.status(1) == "no cost data" and r.missing_objectives[1] == ["power"]
    bare = pareto_front([{"label": "x", "err": None, "power": 1.0}], ["power", "err"])
    assert bare.status(0) == "no data"


def test_infinity_is_a_value():
    r = pareto_front([{"x": math.inf, "y": 0.0}, {"x": 0.0, "y": math.inf}, {"x": math.inf, "y": math.inf}],
                     ["x", "y"])
    assert r.front_indices == [1, 0] and r.dominated_indices == [2]


def test_empty_input_and_no_objectives():
    r = pareto_front([], ["a", "b"])
    assert r.front == [] and r.dominated == [] and r.missing == []
    with pytest.raises(AnalysisError):
        pareto_front([{"a": 1}], [])


def test_parse_objectives():
    assert pareto.parse_objectives("power,mean_abs_re") == ["power", "mean_abs_re"]
    assert pareto.parse_objectives(["area", "abs(mean_re)", "delay"]) == ["area", "abs_mean_re", "delay"]
    for bad, message in [("power", "at least two"), ("power,power", "twice"), ("power,bogus", "unknown objective"),
                         ("power,exhaustive", "unknown objective")]:
        with pytest.raises(AnalysisError, match=message):
            pareto.parse_objectives(bad)
    assert pareto.objective_scale("mean_abs_re") == 100 and pareto.objective_scale("power") == 1
    assert "(%)" in pareto.objective_label("max_abs_re") and "exact = 1" in pareto.objective_label("power")


# ---------------------------------------------------------------------------------------------
# Configurations and candidates
# ---------------------------------------------------------------------------------------------


def test_parse_param_values():
    assert data.parse_param_values("k=3..8") == ("k", [3, 4, 5, 6, 7, 8])
    assert data.parse_param_values("k=3,5,7") == ("k", [3, 5, 7])
    assert data.parse_param_values("k=2..4,8,3") == ("k", [2, 3, 4, 8])
    assert data.parse_param_values("k=6") == ("k", [6])
    for bad in ("k", "k=", "k=a", "k=5..3", "=3", "3k=1"):
        with pytest.raises(AnalysisError):
            data.parse_param_values(bad)


def test_select_configs_expands_sweeps():
    configs = data.select_configs(["drum", "mbm", "mitchell"], ["k=3..5", "t=0,2"], 7)
    assert [c.label for c in configs] == ["drum k=3", "drum k=4", "drum k=5", "mbm t=0", "mbm t=2", "mitchell"]
    assert [c.slug for c in configs][:1] == ["drum_k3"]
    with pytest.raises(RangeError, match="no selected model has a parameter"):
        data.select_configs(["mitchell"], ["k=3"], 7)
    with pytest.raises(RangeError, match="outside its range"):
        data.select_configs(["drum"], ["k=1..3"], 7)
    with pytest.raises(RangeError):
        data.select_configs(["at_mbm"], [], 6)  # at_mbm: M = 1, 3, 5, 7 only
    everything = data.select_configs(None, [], 7)
    assert {"exact", "mitchell", "mbm t=0", "at_mbm"} <= {c.label for c in everything}


def test_cost_lookup_for_lifted_integer_models():
    mbm = amsim.find_model("mbm")
    assert data.cost_bits(mbm, 7) == 8  # lifted: an 8-bit integer multiplier
    assert data.cost_bits(mbm, 8, integer=True) == 8
    assert data.cost_bits(amsim.find_model("exact"), 7) == 7
    (cfg,) = data.select_configs(["mbm"], [], 7)
    c = pareto.make_candidate(cfg, 7, {"mean_abs_re": 0.026, "mean_re": -0.001})
    assert c["power"] == 0.61 and c["area"] == 0.65 and c["delay"] is None and c["cost_bits"] == 8
    assert c["cost_source"].startswith("Saadat") and c["abs_mean_re"] == 0.001
    (cfg6,) = data.select_configs(["mbm"], [], 6)  # lifted from 7 bits: no published figure
    assert pareto.make_candidate(cfg6, 6, {"mean_abs_re": 0.03})["power"] is None
    (drum,) = data.select_configs(["drum"], ["k=6"], 15)  # lifted from 16 bits: DRUM's own figure
    assert pareto.make_candidate(drum, 15, {})["power"] == 0.30


@pytest.fixture(scope="module")
def sweep_candidates():
    configs = data.select_configs(["drum", "mbm", "exact", "mitchell"], ["k=3..5"], 5)
    return pareto.build_candidates(configs, 5, samples=5000, isolate=False)


def test_design_space_sweep_feeds_the_front(sweep_candidates):
    candidates, failures = sweep_candidates
    assert not failures
    assert [c["label"] for c in candidates] == ["drum k=3", "drum k=4", "drum k=5", "mbm t=0", "exact", "mitchell"]
    r = pareto_front(candidates, ["mean_abs_re", "max_abs_re"])
    assert [c["label"] for c in r.front] == ["exact"]  # exact wins when only error counts
    r = pareto_front(candidates, ["power", "mean_abs_re"])
    assert [c["label"] for c in r.front] == ["exact"]
    assert {c["label"] for c in r.missing} == {"drum k=3", "drum k=4", "drum k=5", "mbm t=0", "mitchell"}
    # monotone: a wider DRUM window is more accurate
    maes = [c["mean_abs_re"] for c in candidates[:3]]
    assert maes == sorted(maes, reverse=True)


def test_output_formats(sweep_candidates):
    candidates, _ = sweep_candidates
    r = pareto_front(candidates, ["power", "abs_mean_re"])
    table = pareto.format_table(r)
    assert "no cost data (power)" in table and table.splitlines()[2].startswith("*")
    rows = list(csv.DictReader(io.StringIO(pareto.to_csv(r))))
    assert [row["status"] for row in rows].count("no cost data") == 5
    assert rows[0]["label"] == "exact" and float(rows[0]["power"]) == 1.0
    js = pareto.to_json(r, bits=5)
    assert js["objectives"] == ["power", "abs_mean_re"] and len(js["no_cost_data"]) == 5
    assert json.loads(json.dumps(js)) == js


# ---------------------------------------------------------------------------------------------
# amsim pareto
# ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_pareto_table_json_csv_and_plot(tmp_path, capsys):
    common = ["pareto", "--bits", "5", "--model", "drum", "--param", "k=3..4", "--model", "exact",
              "--model", "at_mitchell", "--samples", "2000"]
    code, out, err = run_cli(capsys, *common, "--plot", str(tmp_path))
    assert code == 0, err
    assert "no cost data" in out and "not strictly comparable" in out
    pngs = list(tmp_path.glob("pareto_m5_power_mean_abs_re.png"))
    assert pngs and pngs[0].stat().st_size > 1000
    assert (tmp_path / "pareto_m5_power_mean_abs_re.svg").read_text().lstrip().startswith("<?xml")

    code, out, err = run_cli(capsys, *common, "--objectives", "mean_abs_re,max_abs_re,abs(mean_re)", "--json")
    assert code == 0, err
    js = json.loads(out)
    labels = [c["label"] for c in js["front"] + js["dominated"] + js["no_cost_data"]]
    assert sorted(labels) == sorted(["drum k=3", "drum k=4", "exact", "at_mitchell"])
    assert js["objectives"] == ["mean_abs_re", "max_abs_re", "abs_mean_re"] and not js["no_cost_data"]
    for c in js["dominated"]:
        assert c["dominated_by"] in [f["label"] for f in js["front"]]

    code, out, err = run_cli(capsys, *common, "--csv")
    assert code == 0, err
    assert out.startswith("status,label,model,params,bits,power,mean_abs_re")


def test_cli_pareto_errors(capsys):
    code, _out, err = run_cli(capsys, "pareto", "--bits", "5", "--objectives", "power,nonsense")
    assert code == 1 and "unknown objective" in err and len(err.strip().splitlines()) == 1
    code, _out, err = run_cli(capsys, "pareto", "--bits", "5", "--model", "mitchell", "--param", "k=3")
    assert code == 2 and "no selected model has a parameter" in err
    code, _out, err = run_cli(capsys, "pareto", "--bits", "5", "--param", "k=x")
    assert code == 2 and "NAME=LO..HI" in err
    code, _out, err = run_cli(capsys, "pareto", "--bits", "5", "--json", "--csv")
    assert code == 2
