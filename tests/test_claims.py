"""The claims stage (eqbg.claims): predicates, intervals of differences and ratios, verdicts,
the shipped claims file, and the table over run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eqbg.claims import VERDICTS, RunData, combine, estimate, judge, load_claims, write_claims
from eqbg.claims.estimates import SeedData
from eqbg.claims.spec import Check, RunRef
from eqbg.claims.verdicts import decide

CLAIMS = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "claims.yaml"


@pytest.mark.parametrize("predicate, low, high, threshold, verdict", [
    ("less", -3.0, -1.0, 0, "reproduced"),
    ("less", -1.0, 2.0, 0, "inconclusive at this size"),
    ("less", 0.5, 2.0, 0, "not reproduced"),
    ("greater", 0.1, 0.2, 0, "reproduced"),
    ("greater", -0.2, -0.1, 0, "not reproduced"),
    ("not_less", 0.0, 0.3, 0, "reproduced"),
    ("not_less", -0.1, 0.3, 0, "inconclusive at this size"),
    ("ratio_at_least", 12.0, 30.0, 10, "reproduced"),
    ("ratio_at_least", 8.0, 30.0, 10, "inconclusive at this size"),
    ("ratio_at_least", 2.0, 9.9, 10, "not reproduced"),
    ("within", 0.2, 0.9, 1.0, "reproduced"),
    ("within", 0.5, 1.5, 1.0, "inconclusive at this size"),
    ("within", 1.1, 3.0, 1.0, "not reproduced"),
    ("at_least", 39.0, 40.0, 39, "reproduced"),
    ("at_least", 30.0, 38.0, 39, "not reproduced"),
    ("above", 0.002, 0.01, 0.001, "reproduced"),
    ("above", 0.0005, 0.001, 0.001, "not reproduced"),
    ("below", -5.0, -1.0, 0, "reproduced"),
    ("below", -1.0, 1.0, 0, "inconclusive at this size"),
    ("less", math.nan, 1.0, 0, "inconclusive at this size"),
])
def test_each_predicate_gives_each_verdict_from_its_interval(predicate, low, high, threshold, verdict):
    assert decide(predicate, low, high, threshold) == verdict


def _seed(tmp_path: Path, name: str, metrics: dict, **arrays) -> SeedData:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    if arrays:
        np.savez(folder / "eval.npz", **arrays)
    return SeedData(folder, metrics)


def test_interval_of_a_difference_combines_both_runs_bootstrap_replicates(tmp_path):
    """Two runs' ESS with independent replicates N(0.5, 0.01) and N(0.3, 0.01): the difference
    0.2 has sd 0.01 sqrt(2), so its 95 % interval is 0.2 +- 1.96 x 0.01414 (to Monte Carlo error)."""
    rng = np.random.default_rng(0)
    a = _seed(tmp_path, "a", {"ess": 0.5, "ess_n": 1000}, ess_bootstrap=rng.normal(0.5, 0.01, 20000))
    b = _seed(tmp_path, "b", {"ess": 0.3, "ess_n": 1000}, ess_bootstrap=rng.normal(0.3, 0.01, 20000))
    runs = {"dw4/egnn/eqotfm": RunData([a]), "dw4/egnn/fm": RunData([b])}
    check = Check("dw4", "ess", "greater", RunRef.parse("egnn/eqotfm"), (RunRef.parse("egnn/fm"),))
    res = judge(check, runs)
    half = 1.96 * 0.01 * math.sqrt(2)
    assert res.value == pytest.approx(0.2)
    assert res.low == pytest.approx(0.2 - half, abs=1.5e-3) and res.high == pytest.approx(0.2 + half, abs=1.5e-3)
    assert res.verdict == "reproduced" and "bootstrap over the 1000 samples" in res.how
    # a ratio uses the element-wise ratio of the replicates: 0.5 / 0.3 = 1.667, not >= 2
    ratio = judge(Check("dw4", "ess", "ratio_at_least", check.a, check.b, threshold=2.0), runs)
    assert ratio.value == pytest.approx(5 / 3) and ratio.high < 2.0 and ratio.verdict == "not reproduced"


def test_nll_replicates_come_from_the_test_points_and_seeds_replace_them(tmp_path):
    log_q = np.random.default_rng(1).normal(-7.0, 2.0, 400)
    one = RunData([_seed(tmp_path, "s0", {"nll": 7.0}, log_q_test=log_q)])
    est = estimate(one, "nll")
    assert est.value == pytest.approx(-log_q.mean())
    assert np.std(est.replicates) == pytest.approx(log_q.std() / 20, rel=0.1)  # sd / sqrt(400)
    assert "400 test points" in est.how
    seeds = RunData([_seed(tmp_path, f"seed{k}", {"nll": v}) for k, v in enumerate([7.0, 7.2, 7.4])])
    est = estimate(seeds, "nll")
    assert est.value == pytest.approx(7.2) and "over 3 seeds" in est.how
    assert est.replicates.min() == pytest.approx(7.0) and est.replicates.max() == pytest.approx(7.4)
    # a metric without replicates is a point estimate
    point = estimate(RunData([_seed(tmp_path, "p", {"samples_per_s": 40.0})]), "samples_per_s")
    assert point.value == 40.0 and point.replicates is None and point.how == "point"


def test_missing_runs_are_not_run_and_optional_checks_are_skipped(tmp_path):
    runs = {"dw4/egnn/fm": RunData([_seed(tmp_path, "x", {"path_length": 3.0},
                                          path_length_subset=np.array([2.9, 3.0, 3.1, 3.0]))])}
    required = Check("dw4", "path_length", "less", RunRef.parse("egnn/eqotfm"), (RunRef.parse("egnn/fm"),))
    optional = Check("aldp", "path_length", "less", RunRef.parse("egnn/eqotfm"), (RunRef.parse("egnn/fm"),),
                     optional=True)
    present = Check("dw4", "path_length", "below", RunRef.parse("egnn/fm"), threshold=5.0)
    r_req, r_opt, r_ok = (judge(c, runs) for c in (required, optional, present))
    assert r_req.verdict == r_opt.verdict == "not run" and r_ok.verdict == "reproduced"
    assert combine([r_ok, r_opt]) == "reproduced"
    assert combine([r_ok, r_req]) == "not run"
    inconclusive = judge(Check("dw4", "path_length", "below", RunRef.parse("egnn/fm"), threshold=3.02), runs)
    assert inconclusive.verdict == "inconclusive at this size"
    assert combine([r_ok, inconclusive]) == "inconclusive at this size"
    assert combine([r_ok, inconclusive, judge(Check("dw4", "path_length", "above", RunRef.parse("egnn/fm"),
                                                     threshold=4.0), runs)]) == "not reproduced"


def test_best_of_several_runs_and_the_one_over_n_threshold(tmp_path):
    runs = {f"dw4/egnn/{loss}": RunData([_seed(tmp_path, loss, {"nll": v})])
            for loss, v in (("ml", 7.6), ("fm", 7.3), ("eqotfm", 7.5))}
    runs["dw4/eacf/ml"] = RunData([_seed(tmp_path, "eacf", {"nll": 8.1, "ess": 0.004, "ess_n": 500},
                                         ess_bootstrap=np.full(10, 0.004))])
    check = Check("dw4", "nll", "within", RunRef.parse("eacf/ml"),
                  tuple(RunRef.parse(f"egnn/{x}") for x in ("ml", "fm", "eqotfm")), best="min", threshold=1.0)
    res = judge(check, runs)
    assert res.b_run == "egnn/fm" and res.value == pytest.approx(0.8) and res.verdict == "reproduced"
    above = judge(Check("dw4", "ess", "above", RunRef.parse("eacf/ml"), threshold="1/n"), runs)
    assert above.threshold == pytest.approx(1 / 500) and above.verdict == "reproduced"


def test_claims_file_loads_and_holds_the_minimum_set():
    claims = {c.id: c for c in load_claims(CLAIMS)}
    for needed in ("efm_shorter_paths", "efm_fewer_evaluations", "efm_lower_transport_cost",
                   "efm_simulation_free_cheaper", "efm_aldp_sampling_efficiency", "eacf_fast_sampling",
                   "eacf_competitive", "eacf_energy_only", "fab_mode_coverage", "fab_buffer_helps",
                   "fab_manywell_accurate", "kohler_equivariance_generalises", "enf_beats_baselines",
                   "enf_more_data"):
        assert needed in claims
    assert all(c.paper and c.where and c.claim and c.paper_scale for c in claims.values())
    lj55 = [c for c in claims["efm_lower_transport_cost"].checks if c.system == "lj55"]
    assert lj55 and all(str(c.a) == "data/coupling" for c in lj55)


@pytest.mark.parametrize("text, message", [
    ("claims: []", "non-empty list"),
    ("claims:\n- {id: x, paper: p, where: w, claim: c, measured_as: m, paper_scale: s, interval: i,"
     " checks: [{system: dw4, metric: nll, predicate: smaller, a: egnn/fm, b: egnn/ml}]}", "unknown predicate"),
    ("claims:\n- {id: x, paper: p, where: w, claim: c, measured_as: m, paper_scale: s, interval: i,"
     " checks: [{system: dw4, metric: nll, predicate: within, a: egnn/fm, b: egnn/ml}]}", "needs threshold"),
    ("claims:\n- {id: x, paper: p, where: w, claim: c, measured_as: m, paper_scale: s, interval: i,"
     " checks: [{system: dw4, metric: nll, predicate: less, a: egnn, b: egnn/ml}]}", "model/loss"),
    ("claims:\n- {id: x, paper: p, where: w, claim: c, measured_as: m, paper_scale: s,"
     " checks: [{system: dw4, metric: nll, predicate: less, a: egnn/fm, b: egnn/ml}]}", "missing keys"),
])
def test_a_bad_claims_file_is_refused_with_the_claim_named(tmp_path, text, message):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_claims(path)


def test_claims_table_over_run_folders(tmp_path):
    """Run folders as the pipeline writes them: the table has one row per claim, the CSV one row
    per check, verdicts from the data, and runs the grid lacks are 'not run'."""
    rng = np.random.default_rng(3)
    paths = []
    for loss, pl, nfe in (("eqotfm", 2.7, 60.0), ("otfm", 2.9, 80.0), ("fm", 3.2, 95.0)):
        folder = tmp_path / "results/runs/dw4/egnn" / loss / "seed0"
        folder.mkdir(parents=True)
        np.savez(folder / "eval.npz", path_length_subset=rng.normal(pl, 0.05, 32), nfe_subset=rng.normal(nfe, 3.0, 32),
                 ess_bootstrap=rng.normal(0.6, 0.02, 500))
        (folder / "metrics.json").write_text(json.dumps({"ess": 0.6, "ess_n": 1000, "n_samples": 1000,
                                                         "train_steps": 2000, "n_train": 10000}))
        paths.append(folder / "metrics.json")
    md, csv, rst = (tmp_path / f"claims.{ext}" for ext in ("md", "csv", "rst"))
    table = write_claims(CLAIMS, paths, md, csv, rst)
    assert len(table) == len(load_claims(CLAIMS)) and set(table["verdict"]) <= set(VERDICTS)
    rows = pd.read_csv(csv)
    paths_dw4 = rows[(rows["claim"] == "efm_shorter_paths") & (rows["system"] == "dw4")]
    assert list(paths_dw4["verdict"]) == ["reproduced", "reproduced"]
    assert paths_dw4["high"].max() < 0
    claim = table.set_index("id").loc["efm_shorter_paths"]
    assert claim["verdict"] == "not run"  # LJ13's runs are not in this grid
    assert "2000 steps, 1000 samples, 10000 train, 1 seed(s)" in claim["this run's scale"]
    nfe = rows[(rows["claim"] == "efm_fewer_evaluations") & (rows["metric"] == "nfe") & (rows["system"] == "dw4")]
    assert nfe["verdict"].tolist() == ["reproduced"]
    assert "What the papers found" in md.read_text() and "list-table" in rst.read_text()


def test_baseline_comparison_fails_only_when_a_reproduced_check_is_not_reproduced(tmp_path, capsys):
    from eqbg.claims.baseline import compare_with_baseline, main

    cols = dict(system="dw4", metric="nll", predicate="less", a="egnn/fm", b="mlp/fm", low=-1.0, high=-0.5,
                statistic=-0.7, claim_verdict="reproduced")
    baseline = pd.DataFrame([{**cols, "claim": "c1", "check": 0, "verdict": "reproduced"},
                             {**cols, "claim": "c1", "check": 1, "verdict": "reproduced"},
                             {**cols, "claim": "c2", "check": 0, "verdict": "inconclusive at this size"}])
    same = baseline.copy()
    assert compare_with_baseline(same, baseline) == ([], [])
    worse = baseline.copy()
    worse.loc[0, ["verdict", "statistic", "low", "high"]] = ["not reproduced", 0.4, 0.2, 0.6]
    worse.loc[1, "verdict"] = "inconclusive at this size"
    regressions, changes = compare_with_baseline(worse, baseline)
    assert len(regressions) == 1 and "c1 check 0" in regressions[0] and "0.4 [0.2, 0.6]" in regressions[0]
    assert len(changes) == 1 and "c1 check 1" in changes[0]
    worse.to_csv(tmp_path / "now.csv", index=False)
    baseline.to_csv(tmp_path / "base.csv", index=False)
    assert main([str(tmp_path / "now.csv"), str(tmp_path / "base.csv")]) == 1
    assert "NOT REPRODUCED ANY MORE: c1 check 0" in capsys.readouterr().err
    assert main([str(tmp_path / "base.csv"), str(tmp_path / "base.csv")]) == 0
