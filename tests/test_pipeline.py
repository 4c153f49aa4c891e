"""The pipeline end to end on tiny configs, in a temporary working directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eqbg.claims import load_claims
from eqbg.data import load_dataset
from eqbg.evaluation import kish_ess

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]


def run_snakemake(workdir: Path, configfile: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable, "-m", "snakemake",
            "--snakefile", str(ROOT / "Snakefile"),
            "--configfile", str(configfile),
            "--directory", str(workdir),
            "--cores", "2",
            *targets,
        ],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


def assert_report_embeds_the_figures_and_tables(html: str, system: str) -> None:
    """Every figure of ``system`` is embedded in the report (a base64 PNG), and every table is in it."""
    for kind in ("energy_hist", "distance_hist", "ess", "training_curves", "path_length", "sampling_speed", "cost"):
        assert f"filename={kind}.png;base64," in html, kind
    for table in (f"tables/{system}/summary.md", "tables/headline.md", "tables/claims.md"):
        assert f'"results/{table}"' in html, table


def test_data_stage_makes_every_sampler_s_data_with_passing_diagnostics(tmp_path):
    run_snakemake(tmp_path, CONFIGS / "tiny_data.yaml")
    for system in ("lj13", "aldp", "gmm40", "manywell32"):
        folder = tmp_path / "results" / "data" / system
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["system"] == system
        assert provenance["diagnostics"]["converged"] is True
        assert provenance["git_commit"] and provenance["versions"]["torch"]
        splits = {s: load_dataset(folder / f"{s}.npz", system=system, split=s) for s in ("train", "val", "test")}
        # No configuration is shared between splits.
        rows = {s: {tuple(np.round(x.reshape(-1).numpy(), 5)) for x in xs} for s, xs in splits.items()}
        assert not rows["train"] & rows["test"] and not rows["train"] & rows["val"]
        assert (tmp_path / "results" / "logs" / "data" / f"{system}.log").read_text()
        assert (tmp_path / "results" / "benchmarks" / "data" / f"{system}.tsv").is_file()
    lj13 = json.loads((tmp_path / "results/data/lj13/provenance.json").read_text())["diagnostics"]
    assert lj13["conf_temp"]["value"] == pytest.approx(1.0, abs=4 * lj13["conf_temp"]["se"] + 0.03)
    chains = lj13["chains"]
    assert not set(chains["train"]) & set(chains["test"])
    assert "phi" in json.dumps(json.loads((tmp_path / "results/data/aldp/provenance.json").read_text())["diagnostics"])


def test_whole_pipeline_ends_with_tables_figures_and_the_html_report(tmp_path):
    run_snakemake(tmp_path, CONFIGS / "tiny.yaml")
    results = tmp_path / "results"
    for loss in ("fm", "eqotfm"):
        run = results / "runs" / "dw4" / "egnn" / loss / "seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        log_w = np.load(run / "eval.npz")["log_w"]
        assert metrics["ess"] == kish_ess(log_w)[0] and metrics["ess_n"] == 64 and log_w.shape == (64,)
        assert metrics["ess_ci_low"] <= metrics["ess"] <= metrics["ess_ci_high"]
        assert np.isfinite(metrics["nll"]) and np.isfinite(metrics["energy_w2"])
        samples = np.load(run / "samples.npz")
        assert samples["x"].shape == (64, 4, 2) and samples["log_q"].shape == (64,)
        np.testing.assert_allclose(samples["x"].mean(axis=1), 0.0, atol=1e-5)
        curve = pd.read_csv(run / "train.csv")
        assert curve["step"].max() == 30
    runs = pd.read_csv(results / "tables" / "dw4" / "runs.csv")
    assert sorted(runs["loss"]) == ["eqotfm", "fm", "mala", "mala"]
    assert_mcmc_is_matched_to_the_best_flow(results)
    table = (results / "tables" / "dw4" / "summary.md").read_text()
    assert "eqotfm" in table and "ESS" in table
    assert (results / "tables" / "dw4" / "summary.tex").read_text().strip()
    for kind in ("energy_hist", "distance_hist", "ess", "training_curves", "path_length", "sampling_speed", "cost"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / "dw4" / f"{kind}.{ext}").stat().st_size > 1000
    html = (results / "report.html").read_text(errors="replace")
    assert_report_embeds_the_figures_and_tables(html, "dw4")
    # The headline table across systems: one row per run method, and the report opens on it
    # (front-page description with the table, landing-page metadata instead of the rule graph).
    headline = (results / "tables" / "headline.md").read_text()
    for loss in ("fm", "eqotfm"):
        # (an empty variant cell: the MCMC rows name their budget there)
        assert re.search(rf"^\| dw4 +\| egnn +\| {loss} +\| +\| 1 ", headline, flags=re.M), headline
    assert "ESS [" in headline and "eff. samples/s" in headline
    assert "Headline: every system" in html and "<td>eqotfm</td>" in html and "eff. samples/s" in html
    assert '"systems": 1' in html
    # The claims table: a row per check of every claim, numbers where this grid has the runs,
    # and the report opens on it. DW4's data batches: equivariant OT is cheaper than OT.
    claims = pd.read_csv(results / "tables" / "claims.csv")
    shipped = load_claims(ROOT / "workflow" / "resources" / "claims.yaml")
    assert set(claims["claim"]) == {c.id for c in shipped} and len(claims) == sum(len(c.checks) for c in shipped)
    cost = claims[(claims["claim"] == "efm_lower_transport_cost") & (claims["system"] == "dw4")]
    assert cost["verdict"].tolist() == ["reproduced"] and cost["high"].iloc[0] < 0
    nfe = claims[(claims["claim"] == "efm_fewer_evaluations") & (claims["metric"] == "nfe") & (claims["system"] == "dw4")]
    assert np.isfinite(nfe[["a_value", "b_value", "low", "high"]].to_numpy()).all() and nfe["verdict"].iloc[0] != "not run"
    assert "bootstrap over 32 single-sample solves" in nfe["interval_from"].iloc[0]
    assert set(claims[claims["claim"] == "efm_shorter_paths"]["claim_verdict"]) == {"not run"}  # no otfm run
    # ... and whether the best flow beats MCMC at its budget (the tiny flows do not)
    mcmc = claims[claims["claim"] == "flow_beats_mcmc_dw4"]
    assert mcmc["b"].tolist() == ["egnn/" + best_loss(results)] * 2, mcmc
    assert mcmc["interval_from"].str.contains("block bootstrap over 8 blocks of 1 chains").iloc[0], mcmc
    assert set(claims[claims["claim"] == "flow_beats_mcmc_lj13"]["verdict"]) == {"not run"}
    assert "What the papers found, checked by this run" in html and html.index("What the papers found") < html.index("Headline: every system")

    # Re-running does nothing; the `figures` target redraws from existing samples only.
    again = run_snakemake(tmp_path, CONFIGS / "tiny.yaml", "figures", "--forcerun", "table", "plot")
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", again.stdout + again.stderr, flags=re.M))
    assert {"plot", "table"} <= jobs
    assert not jobs & {"reference_data", "train", "sample", "evaluate"}, jobs

    # --- A config edit never throws away a result it does not affect (reuses this run; see
    # assert_config_edits_rerun_only_what_they_affect below). ---
    assert_config_edits_rerun_only_what_they_affect(tmp_path)


def best_loss(results: Path) -> str:
    """The tiny DW4 flow with the smallest reweighted energy W2 (MCMC's budget comes from it)."""
    w2 = {loss: json.loads((results / f"runs/dw4/egnn/{loss}/seed0/metrics.json").read_text())["energy_w2_reweighted"]
          for loss in ("fm", "eqotfm")}
    return min(w2, key=w2.get)


def assert_mcmc_is_matched_to_the_best_flow(results: Path) -> None:
    """Budget-matched MCMC (eqbg.baselines): the best flow's sampling (64 samples: one chain)
    and whole budget (its 640 training configurations' share of the data stage's chains),
    spent exactly, evaluated like a flow, in the tables beside the flows."""
    from eqbg.evaluation.cost import data_stage_cost

    best = json.loads((results / f"runs/dw4/egnn/{best_loss(results)}/seed0/metrics.json").read_text())
    data_evals, _, made = data_stage_cost(json.loads((results / "data/dw4/provenance.json").read_text()))
    assert made == 1120 and best["cost_energy_evals_data"] == pytest.approx(data_evals * 640 / 1120)
    assert best["cost_energy_evals_sampling"] == 64 and best["cost_energy_evals_training"] == 0
    assert best["cost_energy_evals_total"] == pytest.approx(best["cost_energy_evals_data"] + 64)
    for budget, n_chains in (("sampling", 1), ("total", 8)):
        m = json.loads((results / f"runs/dw4/mcmc/mala/{budget}/seed0/metrics.json").read_text())
        assert m["budget_matched_to"] == best["run_dir"] and m["mcmc_n_chains"] == n_chains
        assert m["mcmc_budget"] == int(best[f"cost_energy_evals_{budget}"])
        assert 0 <= m["mcmc_budget"] - m["cost_energy_evals_total"] < n_chains
        assert m["ess"] is None and m["nll"] is None and m["energy_w2"] == m["energy_w2_reweighted"]
        assert m["energy_evals_per_effective_sample_total"] == pytest.approx(
            m["cost_energy_evals_total"] / m["effective_samples"])
        assert m["n_samples"] == n_chains * m["mcmc_kept_per_chain"]
    headline = (results / "tables" / "headline.md").read_text()
    assert re.search(r"^\| dw4 +\| mcmc +\| mala +\| sampling ", headline, flags=re.M), headline
    assert "E-evals/eff. sample (all)" in headline


def assert_config_edits_rerun_only_what_they_affect(workdir: Path) -> None:
    """Each rule's params hold only its own settings (eqbg.pipeline.train_params, sample_params,
    evaluate_params), so Snakemake's params trigger re-runs the edited stage and what reads its
    outputs, never an upstream one. Guards the bug where every rule got the whole resolved
    settings and an edit of `sample:` re-trained every model. Dry runs on a finished tiny run."""
    import copy
    from collections import Counter

    import yaml

    tiny = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    report_chain = {"collect", "table", "plot", "headline", "html_report"}

    def scheduled(edit) -> tuple[Counter[str], str]:
        config = copy.deepcopy(tiny)
        edit(config)
        configfile = workdir / "edited.yaml"
        # key order kept: Snakemake compares params by repr, so order counts (see test_grid.py)
        configfile.write_text(yaml.safe_dump(config, sort_keys=False))
        result = run_snakemake(workdir, configfile, "--dry-run")
        out = result.stdout + result.stderr
        return Counter(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M)), out

    # Sampling settings: both runs re-sample and re-evaluate, the report follows; no training.
    jobs, out = scheduled(lambda c: c["defaults"]["sample"].update(n_samples=48))
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2, out
    assert report_chain <= set(jobs), out
    assert not set(jobs) & {"reference_data", "train"}, out
    assert "Params have changed" in out, out

    # Evaluation settings: only evaluation and the report.
    jobs, out = scheduled(lambda c: c["defaults"]["evaluate"].update(bootstrap_reps=100))
    assert jobs["evaluate"] == 2 and report_chain <= set(jobs), out
    assert not set(jobs) & {"reference_data", "train", "sample"}, out

    # MCMC settings: only the budget-matched MCMC and the report.
    jobs, out = scheduled(lambda c: c["defaults"]["mcmc"].update(step_size=0.1))
    assert jobs["mcmc"] == 2 and report_chain <= set(jobs), out
    assert not set(jobs) & {"reference_data", "train", "sample", "evaluate"}, out

    # Training settings of one run (an override matching fm): that run alone re-trains.
    jobs, out = scheduled(
        lambda c: c.setdefault("overrides", []).append({"when": {"loss": "fm"}, "train": {"lr": 5e-4}})
    )
    assert jobs["train"] == 1 and jobs["sample"] == 1 and jobs["evaluate"] == 1, out
    assert "run=dw4/egnn/fm/seed0" in out and "run=dw4/egnn/eqotfm/seed0" not in out, out
    assert "reference_data" not in jobs, out


def test_alanine_dipeptide_trains_samples_and_evaluates_end_to_end(tmp_path):
    """MD with cycled splits -> umbrella-sampling reference -> EGNN CNF by equivariant OT flow
    matching (one-hot types, methyl hydrogens permuted within their group) and the augmented
    coupling flow -> OpenMM energies, chirality, Ramachandran and free-energy metrics -> tables
    and the Ramachandran figure."""
    run_snakemake(tmp_path, CONFIGS / "tiny_aldp.yaml")
    results = tmp_path / "results"
    data = json.loads((results / "data/aldp/provenance.json").read_text())["diagnostics"]
    assert len(data["blocks"]["train"]) == 4 and "phi_positive_agreement" in data
    population = json.loads((results / "data/aldp/md_population.json").read_text())
    assert len(population["centres_rad"]) == 6 and population["git_commit"]
    reference = population["intervals"]["phi_positive"]
    for model, loss in (("egnn", "eqotfm"), ("eacf", "ml")):
        metrics = json.loads((results / "runs/aldp" / model / loss / "seed0/metrics.json").read_text())
        n = metrics["n_samples"]
        assert n == (16 if model == "egnn" else 200) and metrics["ess_n"] == n
        assert metrics["n_failed"] == (metrics["n_failed_nonfinite_energy"] + metrics["n_failed_energy_above_cap"]
                                       + metrics["n_failed_nonfinite_log_q"])
        assert metrics["energies_per_s"] > 0 and np.isfinite(metrics["nll"])
        assert 0.0 <= metrics["frac_d_chirality_flow"] <= 1.0
        assert 0 <= metrics["n_mapped_d_to_l"] <= n and metrics["n_mapped_d_to_l_test"] == 0
        assert metrics["delta_f_reference"] == pytest.approx(reference["delta_f_kt"])
        assert "delta_f_data" in metrics and "delta_f_reweighted" in metrics  # None when a basin is empty
        for key in ("ramachandran_kl_flow", "phi_kl_flow", "psi_kl_flow"):
            assert metrics[key] is not None and metrics[key] >= 0.0, key
        arrays = np.load(results / "runs/aldp" / model / loss / "seed0/eval.npz")
        assert arrays["rama_hist_data"].shape == (64, 64) and arrays["phi_flow"].shape == (n,)
    table = (results / "tables/aldp/summary.md").read_text()
    assert "ΔF ref. US (kT)" in table and "Rama KL" in table and "eacf" in table and "eqotfm" in table
    assert (results / "figures/aldp/ramachandran.png").stat().st_size > 1000
