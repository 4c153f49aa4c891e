"""Tests of eqbg.evaluation: estimators on hand-computed cases, Wasserstein distances against
independent formulas, NLL conventions, failed samples, run evaluation and tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from eqbg.evaluation import (
    NLL_CONVENTIONS,
    basin_free_energy_difference,
    bootstrap_ess,
    convert_nll,
    find_failed_samples,
    forward_ess,
    kish_ess,
    log_importance_weights,
    nll_from_log_prob,
    pairwise_distances,
    prior_log_normaliser,
    ramachandran_basin_fractions,
    reweighted_mean,
    wasserstein_1d,
)

# ----------------------------------------------------------------------------- ESS


def test_kish_ess_equal_weights_is_one():
    ess, n = kish_ess(np.full(50, -3.7))
    assert n == 50
    assert ess == pytest.approx(1.0, abs=1e-12)


def test_kish_ess_one_dominant_weight_is_one_over_n():
    log_w = np.full(20, -1000.0)
    log_w[7] = 0.0
    ess, n = kish_ess(log_w)
    assert ess == pytest.approx(1.0 / 20, rel=1e-9)


def test_kish_ess_hand_computed_three_weights():
    # w = (1, 2, 3): (6)^2 / (3 * 14) = 36/42
    ess, n = kish_ess(np.log([1.0, 2.0, 3.0]))
    assert n == 3
    assert ess == pytest.approx(36.0 / 42.0, rel=1e-12)


@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_kish_ess_stable_for_huge_log_weights(offset):
    log_w = offset + np.log([1.0, 2.0, 3.0])
    ess, _ = kish_ess(log_w)
    assert ess == pytest.approx(36.0 / 42.0, rel=1e-9)


def test_kish_ess_counts_zero_weights_in_n():
    ess, n = kish_ess(np.array([0.0, 0.0, -np.inf, -np.inf]))
    assert n == 4
    assert ess == pytest.approx(0.5)


def test_kish_ess_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        kish_ess(np.array([0.0, np.nan]))


@pytest.mark.parametrize("forward", [False, True])
def test_bootstrap_interval_covers_truth_in_most_trials(forward):
    # Lognormal weights, log w ~ N(0, s^2): Kish's ESS E[w]^2 / E[w^2] and the forward ESS
    # 1 / (E[w] E[1/w]) (weights of target samples) are both exp(-s^2).
    s, n, level = 0.5, 2000, 0.9
    truth = math.exp(-(s**2))
    point = forward_ess if forward else kish_ess
    covered = 0
    for trial in range(40):
        log_w = np.random.default_rng(1000 + trial).normal(0.0, s, size=n)
        low, high, reps = bootstrap_ess(log_w, level=level, reps=400, seed=trial, forward=forward)
        assert low <= point(log_w)[0] <= high
        assert reps.shape == (400,)
        covered += low <= truth <= high
    assert covered >= 34, f"90% bootstrap interval covered the truth in only {covered}/40 trials"
    # equal weights (q = p): the interval is the point 1
    assert bootstrap_ess(np.full(50, 3.0), reps=50, forward=forward)[:2] == pytest.approx((1.0, 1.0))


def test_bootstrap_interval_is_reproducible_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(0, 1, 200)
    large = rng.normal(0, 1, 20000)
    a = bootstrap_ess(small, reps=200, seed=3)[:2]
    b = bootstrap_ess(small, reps=200, seed=3)[:2]
    assert a == b
    c = bootstrap_ess(large, reps=200, seed=3)[:2]
    assert (c[1] - c[0]) < (a[1] - a[0])


def test_forward_ess_is_one_when_q_equals_p():
    # log q = -u - log Z for every test point: the unnormalised weights are all exp(log Z).
    rng = np.random.default_rng(1)
    u = rng.normal(size=300) ** 2
    log_z = 12.3
    log_q = -u - log_z
    fess, n = forward_ess(-u - log_q)
    assert n == 300
    assert fess == pytest.approx(1.0, abs=1e-12)


def test_forward_ess_matches_direct_formula():
    rng = np.random.default_rng(2)
    log_w = rng.normal(5.0, 0.7, size=100)
    w = np.exp(log_w)
    direct = 1.0 / (np.mean(w) * np.mean(1.0 / w))
    assert forward_ess(log_w)[0] == pytest.approx(direct, rel=1e-10)
    assert forward_ess(log_w + 1e4)[0] == pytest.approx(direct, rel=1e-8)


def test_reweighted_mean_recovers_target_expectation():
    # q = N(0, 1), target p ∝ exp(-(x-1)^2/2) = N(1, 1): E_p[x] = 1.
    rng = np.random.default_rng(3)
    x = rng.normal(size=200_000)
    log_q = -0.5 * x**2 - 0.5 * np.log(2 * np.pi)
    u = 0.5 * (x - 1.0) ** 2
    mean, se = reweighted_mean(x, log_importance_weights(u, log_q))
    assert abs(mean - 1.0) < 4 * se
    assert 0.001 < se < 0.02


# ----------------------------------------------------------------------------- failures


def test_failed_samples_are_counted_and_keep_zero_weight():
    u = np.array([1.0, np.nan, 2e6, np.inf, 3.0, 2.0])
    log_q = np.array([0.0, 0.0, 0.0, 0.0, np.nan, -1.0])
    failed = find_failed_samples(u, log_q, energy_cap=1e6)
    assert failed.nonfinite_energy == 2
    assert failed.energy_above_cap == 1
    assert failed.nonfinite_log_q == 1
    assert failed.n_failed == 4
    assert failed.frac_failed == pytest.approx(4 / 6)
    log_w = log_importance_weights(u, log_q)
    assert np.isneginf(log_w[[1, 3, 4]]).all()
    assert log_w[2] == -2e6  # kept, weight ~0 but counted
    ess, n = kish_ess(log_w)
    assert n == 6
    w = np.exp([-1.0, -1.0])  # the two good samples: -u - log_q = -1 and -1
    assert ess == pytest.approx(w.sum() ** 2 / (6 * (w**2).sum()))


# ----------------------------------------------------------------------------- Wasserstein


def test_w1_matches_scipy():
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, 517)
    b = rng.gamma(2.0, 1.0, 301)
    assert wasserstein_1d(a, b, p=1) == pytest.approx(wasserstein_distance(a, b), rel=1e-10)


def test_weighted_w1_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=200), rng.normal(0.5, 2.0, size=150)
    wa, wb = rng.random(200), rng.random(150)
    ours = wasserstein_1d(a, b, wa, wb, p=1)
    assert ours == pytest.approx(wasserstein_distance(a, b, wa, wb), rel=1e-9)


def test_w2_matches_sorted_formula_for_equal_sizes():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=1000), rng.standard_t(3, size=1000)
    direct = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert wasserstein_1d(a, b, p=2) == pytest.approx(direct, rel=1e-10)


def test_weighted_w2_with_equal_weights_equals_unweighted():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=400), rng.normal(1.0, 1.5, size=250)
    plain = wasserstein_1d(a, b, p=2)
    assert wasserstein_1d(a, b, np.full(400, 3.0), np.full(250, 0.1), p=2) == pytest.approx(plain, rel=1e-10)


def test_weighted_w2_equals_w2_of_duplicated_sample():
    # Integer weights are the same measure as repeating samples.
    a = np.array([0.0, 1.0, 5.0])
    b = np.array([0.5, 2.0, 2.5, 3.0, 7.0, 9.0])
    weights = np.array([1, 2, 3])
    dup = np.repeat(a, weights)
    assert wasserstein_1d(a, b, weights, None, p=2) == pytest.approx(wasserstein_1d(dup, b, p=2), rel=1e-12)


def test_w2_of_shifted_gaussian_is_the_shift():
    rng = np.random.default_rng(8)
    a = rng.normal(size=5000)
    assert wasserstein_1d(a, a + 0.75, p=2) == pytest.approx(0.75, rel=1e-10)


def test_pairwise_distances_of_a_right_triangle():
    x = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]])
    np.testing.assert_allclose(pairwise_distances(x), [[3.0, 4.0, 5.0]])


# ----------------------------------------------------------------------------- NLL


def test_prior_normaliser_matches_papers_md_constants():
    # PAPERS.md Protocol: c = 5.514 DW4, 33.082 LJ13, 148.868 LJ55, 57.893 ALA2.
    for dim, c in [(6, 5.514), (36, 33.082), (162, 148.868), (63, 57.893)]:
        assert prior_log_normaliser(dim) == pytest.approx(c, abs=6e-4)


def test_convert_nll_between_conventions():
    assert convert_nll(7.23, 6, source="eqbg", target="efm") == pytest.approx(7.23 - 3 * math.log(2 * math.pi))
    assert convert_nll(1.7, 6, source="efm", target="enf") == pytest.approx(1.7 + 3 * math.log(2 * math.pi))
    assert convert_nll(30.0, 36, source="eacf", target="eqbg") == 30.0
    assert set(NLL_CONVENTIONS) >= {"eqbg", "efm", "enf", "eacf"}
    with pytest.raises(ValueError, match="unknown NLL convention"):
        convert_nll(1.0, 6, target="bogus")


def test_nll_from_log_prob():
    nll, sem = nll_from_log_prob(np.array([-1.0, -2.0, -3.0]))
    assert nll == pytest.approx(2.0)
    assert sem == pytest.approx(1.0 / math.sqrt(3))
    assert nll_from_log_prob(np.array([-1.0, -np.inf]))[0] == math.inf


# ----------------------------------------------------------------------------- dihedrals


def test_basin_free_energy_difference_hand_computed():
    phi = np.array([-1.0, -2.0, -0.5, 1.0])  # P+ = 1/4
    d_f, se, p = basin_free_energy_difference(phi)
    assert p == pytest.approx(0.25)
    assert d_f == pytest.approx(math.log(3.0))
    # binomial: sqrt(p(1-p)/n) * (1/p + 1/(1-p))
    assert se == pytest.approx(math.sqrt(0.25 * 0.75 / 4) * (4 + 4 / 3))
    # weights: make the positive sample carry half the mass -> dF = 0
    log_w = np.log([1.0, 1.0, 1.0, 3.0])
    assert basin_free_energy_difference(phi, log_w)[0] == pytest.approx(0.0, abs=1e-12)


def test_ramachandran_basin_fractions_at_textbook_conformations():
    # alpha_R helix, PII, extended C5 (psi wraps below -120), alpha_L, and psi = 50 exactly (the
    # open edge of the alpha_R band, so beta)
    phi = np.radians([-63.0, -75.0, -150.0, 60.0, -70.0])
    psi = np.radians([-42.0, 145.0, -170.0, 45.0, 50.0])
    fractions = ramachandran_basin_fractions(phi, psi)
    assert fractions == pytest.approx({"alpha_R": 0.2, "beta": 0.6, "phi>0": 0.2})
    # a uniform Ramachandran plane: alpha_R covers half the phi range x 170 of 360 degrees of psi
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 200_000))
    fractions = ramachandran_basin_fractions(phi, psi)
    assert fractions["alpha_R"] == pytest.approx(0.5 * 170 / 360, abs=3e-3)
    assert fractions["phi>0"] == pytest.approx(0.5, abs=3e-3)


# ----------------------------------------------------------------------------- run level

import torch  # noqa: E402
from torch import nn  # noqa: E402

from eqbg.evaluation import evaluate_samples, training_cost  # noqa: E402
from eqbg.flows import CNF, CoMFreeGaussian, ODESolver  # noqa: E402
from eqbg.systems.base import System  # noqa: E402


class ScaledField(nn.Module):
    """Linear field v(t, x) = a x: x_1 = e^a x_0, so q is a CoM-free Gaussian with std e^a."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a), dtype=torch.float64))

    def forward(self, t, x):
        return self.a * x


class HarmonicSystem(System):
    """CoM-free isotropic Gaussian target, u(x) = |x|^2 / (2 s^2): the flow above is exact."""

    def __init__(self, n: int, d: int, s: float) -> None:
        super().__init__(name="harmonic", n_particles=n, spatial_dim=d)
        self.s = s

    def energy(self, x):
        x = x - x.mean(dim=1, keepdim=True)
        return x.pow(2).sum(dim=(1, 2)) / (2 * self.s**2)


def _gaussian_flow(n: int, d: int, a: float) -> CNF:
    flow = CNF(ScaledField(a), CoMFreeGaussian(n, d), solver=ODESolver("dopri5", 1e-8, 1e-8))
    return flow.to(torch.float64)


def test_nll_of_linear_gaussian_flow_is_analytic():
    n, d, a = 4, 2, 0.3
    dim = (n - 1) * d
    flow = _gaussian_flow(n, d, a)
    x = CoMFreeGaussian(n, d).to(torch.float64).sample(64, generator=torch.Generator().manual_seed(0)) * 1.7
    from eqbg.evaluation import model_log_prob

    log_q = model_log_prob(flow, x)
    sq = x.pow(2).sum(dim=(1, 2)).numpy()
    analytic = -0.5 * sq * math.exp(-2 * a) - 0.5 * dim * math.log(2 * math.pi) - dim * a
    np.testing.assert_allclose(log_q, analytic, rtol=0, atol=1e-6)
    # EFM convention drops exactly the prior normaliser
    nll, _ = nll_from_log_prob(log_q)
    assert convert_nll(nll, dim) == pytest.approx(-analytic.mean() - prior_log_normaliser(dim), abs=1e-6)


def test_evaluate_samples_on_an_exact_flow():
    n, d, a = 4, 2, 0.2
    s = math.exp(a)
    system = HarmonicSystem(n, d, s)
    flow = _gaussian_flow(n, d, a)
    res = flow.sample(400, generator=torch.Generator().manual_seed(1))
    samples = {
        "x": res.x.numpy(), "log_q": res.log_q.numpy(), "nfe": res.nfe,
        "path_length": res.path_length, "wall_time_s": res.wall_time_s,
    }
    x_test = CoMFreeGaussian(n, d).to(torch.float64).sample(300, generator=torch.Generator().manual_seed(2)) * s
    curve = pd.DataFrame({"step": [10, 20], "loss": [1.0, 0.5], "lr": [1e-3, 1e-3],
                          "val_nll": [9.0, 8.0], "wall_time_s": [1.5, 3.0]})
    metrics, arrays = evaluate_samples(
        system, samples, x_test, flow=flow, loss="ml", train_curve=curve,
        settings={"nll_n": 100, "bootstrap_reps": 200},
    )
    assert metrics["ess"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ess_n"] == 400
    assert metrics["ess_ci_low"] <= metrics["ess"] <= metrics["ess_ci_high"] + 1e-12
    assert metrics["forward_ess"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["nll_n"] == metrics["forward_ess_n"] == 100
    dim = (n - 1) * d
    # E_p[-log q] for q = p = N(0, s^2 I_dim): dim/2 (1 + log 2 pi s^2); 100 points -> a few sem
    expected = 0.5 * dim * (1 + math.log(2 * math.pi * s**2))
    assert abs(metrics["nll"] - expected) < 4 * metrics["nll_sem"] + 1e-9
    assert metrics["nll_efm"] == pytest.approx(metrics["nll"] - prior_log_normaliser(dim))
    assert metrics["n_failed"] == 0 and metrics["frac_failed"] == 0.0
    # exact flow: reweighted and raw energies agree with the data within sampling noise
    assert abs(metrics["mean_energy_reweighted"] - dim / 2) < 4 * metrics["mean_energy_reweighted_err"]
    assert metrics["energy_w2"] < 0.5 and metrics["distance_w2"] < 0.3
    assert metrics["samples_per_s"] == pytest.approx(400 / res.wall_time_s)
    assert metrics["nfe"] == res.nfe and metrics["path_length"] == pytest.approx(res.path_length)
    assert metrics["train_time_s"] == 3.0 and metrics["n_energy_evals_train"] == 0
    assert metrics["n_energy_evals_eval"] == 700
    assert arrays["energy_flow"].shape == (400,) and arrays["log_w"].shape == (400,)
    assert arrays["energy_hist_data"].shape == (len(arrays["energy_edges"]) - 1,)


def test_evaluate_samples_counts_failures_and_keeps_them_in_ess():
    n, d = 3, 2
    system = HarmonicSystem(n, d, 1.0)
    prior = CoMFreeGaussian(n, d).to(torch.float64)
    x = prior.sample(200, generator=torch.Generator().manual_seed(3))
    log_q = prior.log_prob(x).numpy().copy()
    x = x.numpy().copy()
    x[:5] *= 1e3  # energies ~1e6 kT > cap
    log_q[5:8] = np.nan
    x_test = prior.sample(100, generator=torch.Generator().manual_seed(4))
    metrics, arrays = evaluate_samples(system, {"x": x, "log_q": log_q}, x_test,
                                       settings={"energy_cap": 1e4, "bootstrap_reps": 50, "energy_test_n": 60})
    assert metrics["energy_test_n"] == 60 and arrays["energy_data"].shape == (60,)
    assert metrics["n_energy_evals_eval"] == 200 + 60
    assert metrics["n_failed"] == 8
    assert metrics["frac_failed"] == pytest.approx(8 / 200)
    assert metrics["n_failed_energy_above_cap"] == 5 and metrics["n_failed_nonfinite_log_q"] == 3
    assert metrics["ess_n"] == 200
    # the 192 good samples are exact (w = const): ESS = 192/200
    assert metrics["ess"] == pytest.approx(192 / 200, rel=1e-9)
    assert math.isnan(metrics["nll"]) and metrics["nll_n"] == 0
    assert np.isfinite(metrics["energy_w2"]) and metrics["energy_w2"] < 1.0
    assert arrays["failed"].sum() == 8


def test_training_cost_for_energy_based_losses():
    curve = pd.DataFrame({"step": [1, 2], "wall_time_s": [0.5, 1.0], "n_energy_evals": [100, 250]})
    assert training_cost(curve, "fab")["n_energy_evals_train"] == 250
    assert math.isnan(training_cost(None, "fab")["n_energy_evals_train"])
    assert training_cost(None, "eqotfm")["n_energy_evals_train"] == 0


# ----------------------------------------------------------------------------- tables

from pathlib import Path  # noqa: E402

from eqbg.tables import collect_metrics, load_published, write_system_table  # noqa: E402
from eqbg.io import write_json  # noqa: E402

PUBLISHED = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "published.csv"


def _write_runs(root: Path) -> list[Path]:
    paths = []
    for model, loss, base in [("egnn", "ml", 0.9), ("egnn", "eqotfm", 0.8), ("kernel", "ml", 0.5)]:
        for seed in range(3):
            path = root / "dw4" / model / loss / f"seed{seed}" / "metrics.json"
            write_json(path, {
                "system": "dw4", "model": model, "loss": loss, "seed": seed,
                "ess": base + 0.01 * seed, "ess_n": 1000, "nll": 7.0 + seed, "nll_efm": 7.0 + seed - 5.514,
                "energy_w2": 0.1 * (seed + 1), "samples_per_s": 100.0, "nfe": None,
                "provenance": {"git_commit": "abc"},
            })
            paths.append(path)
    return paths


def test_collect_metrics_is_tidy(tmp_path):
    df = collect_metrics(_write_runs(tmp_path))
    assert len(df) == 9
    assert {"system", "model", "loss", "seed", "ess", "metrics_path"} <= set(df.columns)
    assert "provenance" not in df.columns
    assert df["nfe"].isna().all() and df["ess"].dtype.kind == "f"


def test_published_csv_is_complete_and_honest():
    pub = load_published(PUBLISHED)
    assert set(pub["system"]) >= {"dw4", "lj13", "lj55", "aldp"}
    # every value from a recalled (UNVERIFIED) source is flagged unverified, and vice versa
    assert (pub["verified"] == ~pub["evidence"].eq("UNVERIFIED")).all()
    has_value = pub["value"].notna() | (pub["value_low"].notna() & pub["value_high"].notna())
    assert has_value.all()
    # E-NF DW4 at 1e3 training samples, as quoted in PAPERS.md
    row = pub[(pub["paper"].str.startswith("E-NF")) & (pub["system"] == "dw4") & (pub["setting"] == "n_train=1000")]
    assert row["value"].tolist() == [8.15] and not row["verified"].any()


def test_system_table_rows_and_published_columns(tmp_path):
    df = collect_metrics(_write_runs(tmp_path))
    md, tex = tmp_path / "dw4.md", tmp_path / "dw4.tex"
    table = write_system_table(df, "dw4", PUBLISHED, md, tex)
    assert len(table) == 3  # one row per model x loss
    assert list(table["n seeds"]) == [3, 3, 3]
    row = table[(table["model"] == "egnn") & (table["loss"] == "ml")].iloc[0]
    # ess = 0.90, 0.91, 0.92: mean 0.91, sem = sd(ddof=0)/sqrt(3) = 0.01 sqrt(2/3)/sqrt(3) = 0.00471
    # (FAB's and EACF's convention; ddof=1 gave 0.00577)
    assert row["ESS (frac.)"] == "0.91 ± 0.0047"
    assert row["NLL (eqbg)"] == "8 ± 0.47"
    # published E-NF NLLs sit beside egnn/ml, unverified -> dagger
    assert "8.15†" in row["published NLL (eqbg)"]
    # the EFM range (efm convention, +5.514 into ours) is shown converted: 1.68 + 5.514 = 7.194
    assert "7.194–7.234†" in row["published NLL (eqbg)"]
    text = md.read_text()
    assert "† unverified" in text and "ddof=0" in text and "Published values" in text
    assert r"\begin{tabular}" in tex.read_text() and r"$^\dagger$" in tex.read_text()
    with pytest.raises(ValueError, match="no runs of system"):
        write_system_table(df, "lj13", PUBLISHED, md, tex)


# ----------------------------------------------------------------------------- alanine dipeptide


def test_phi_psi_of_built_structures_match_their_construction():
    from eqbg.systems.dihedrals import mdtraj_topology, phi_psi
    from eqbg.systems import get_system
    from eqbg.systems.aldp import internal_coordinate_structure

    top = mdtraj_topology(get_system("aldp"))
    x = np.stack([internal_coordinate_structure(-80.0, 150.0), internal_coordinate_structure(60.0, -40.0)])
    phi, psi = phi_psi(x, top)
    np.testing.assert_allclose(np.degrees(phi), [-80.0, 60.0], atol=1e-3)
    np.testing.assert_allclose(np.degrees(psi), [150.0, -40.0], atol=1e-3)


def test_evaluate_samples_aldp_basins_and_dihedrals():
    from eqbg.systems import get_system
    from eqbg.systems.aldp import internal_coordinate_structure

    system = get_system("aldp")
    sigma = 0.002  # nm: small thermal-like perturbations around two built structures
    centres = np.stack([internal_coordinate_structure(-80.0, 150.0), internal_coordinate_structure(60.0, -40.0)])
    centres -= centres.mean(axis=1, keepdims=True)
    rng = np.random.default_rng(5)

    def draw(counts):
        x = np.concatenate([c + sigma * rng.normal(size=(k, 22, 3)) for c, k in zip(centres, counts)])
        return x - x.mean(axis=1, keepdims=True)

    x_test = draw([20, 10])  # P(phi > 0) = 1/3 -> dF = log 2
    x_flow = draw([40, 40])
    # exact log density of the equal-weight mixture of the two CoM-free Gaussians
    prior = CoMFreeGaussian(22, 3, scale=sigma).to(torch.float64)
    comps = torch.stack([prior.log_prob(torch.as_tensor(x_flow - c)) for c in centres])
    log_q = (torch.logsumexp(comps, dim=0) - math.log(2)).numpy()
    metrics, arrays = evaluate_samples(system, {"x": x_flow, "log_q": log_q}, x_test,
                                       settings={"bootstrap_reps": 50, "rama_bins": 36})
    assert metrics["delta_f_data"] == pytest.approx(math.log(2.0))
    assert metrics["delta_f_flow"] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(metrics["delta_f_reweighted"]) and metrics["delta_f_reweighted_err"] > 0
    assert metrics["frac_d_chirality_flow"] == 0.0 and metrics["frac_d_chirality_data"] == 0.0
    assert arrays["phi_flow"].shape == (80,) and arrays["rama_hist_data"].shape == (36, 36)
    assert arrays["rama_hist_flow"].sum() == pytest.approx(1.0)
    assert metrics["n_failed"] == 0
    # flow and test data hold the same two structures in other proportions (1/2 vs 1/3)
    for key in ("ramachandran_kl_flow", "phi_kl_flow", "psi_kl_flow"):
        assert 0.0 < metrics[key] < 10.0, key
    assert np.isfinite(metrics["phi_kl_reweighted"]) and np.isfinite(metrics["psi_kl_reweighted"])


def test_histogram_kl_is_zero_for_a_sample_with_itself_and_grows_with_a_shift():
    from eqbg.evaluation import histogram_kl, ramachandran_histogram

    rng = np.random.default_rng(8)
    phi, psi = rng.vonmises(-1.4, 4.0, 5000), rng.vonmises(2.6, 4.0, 5000)
    h, _ = ramachandran_histogram(phi, psi)
    area = (2 * np.pi / 64) ** 2
    assert h.shape == (64, 64) and histogram_kl(h, h, area) == pytest.approx(0.0, abs=1e-12)
    kls = []
    for shift in (0.2, 0.5, 1.0):
        h_shift, _ = ramachandran_histogram(np.angle(np.exp(1j * (phi + shift))), psi)
        kls.append(histogram_kl(h, h_shift, area))
    assert 0.0 < kls[0] < kls[1] < kls[2]
    # hand-computed case: p = (1/2, 1/2), q = (1/4, 3/4)
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert histogram_kl(np.array([1.0, 1.0]), np.array([1.0, 3.0]), 0.5, eps=0.0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same bins"):
        histogram_kl(np.ones(3), np.ones(4), 1.0)
    assert np.isnan(histogram_kl(h, np.zeros_like(h), area))  # no flow samples: no KL


def test_histogram_kl_puts_eps_inside_the_log_only_as_the_eacf_authors():
    """EACF's eval_aldp.py: sum h_p log((h_p + eps) / (h_q + eps)) x bin width on densities. Data
    mass m in a bin the model leaves empty costs m log(h_p / eps), not m log(p / eps') after
    renormalising probabilities (which charged 3.5 nats less per unit mass for 200 bins on
    [-pi, pi])."""
    from eqbg.evaluation import histogram_kl

    width = 2 * np.pi / 200
    p = np.zeros(200)
    p[:2] = 0.5
    q = np.zeros(200)
    q[0] = 1.0
    eps = 1e-10
    hp, hq = p / width, q / width
    authors = float(np.sum(p * np.log((hp + eps) / (hq + eps))))
    assert histogram_kl(p, q, width) == pytest.approx(authors, rel=1e-12)
    assert authors == pytest.approx(0.5 * math.log(0.5) + 0.5 * math.log(0.5 / width / eps), rel=1e-9)
    # the old convention (eps per bin, renormalised) charged log(1 / width) = 3.46 nats less per
    # unit of data mass in the empty bin
    old_p, old_q = (p + eps) / (p + eps).sum(), (q + eps) / (q + eps).sum()
    old = float(np.sum(old_p * np.log(old_p / old_q)))
    assert authors - old == pytest.approx(0.5 * math.log(1 / width), abs=1e-3)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow  # ~10 s alone (train 2 steps + sample + evaluate), more on a loaded machine
def test_evaluate_run_on_a_trained_run(tmp_path):
    from eqbg.evaluation import evaluate_run
    from eqbg.io import read_json, save_npz
    from eqbg.plots import load_eval_npz
    from eqbg.sampling import sample_run
    from eqbg.training import train_run

    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "dw4"
    for split, n in [("train", 64), ("val", 16), ("test", 40)]:
        x = 2.0 * rng.normal(size=(n, 4, 2))
        x -= x.mean(axis=1, keepdims=True)
        save_npz(data / f"{split}.npz", x=x.astype(np.float32), system=np.asarray("dw4"), split=np.asarray(split))
    run = tmp_path / "runs" / "dw4" / "egnn" / "fm" / "seed0"
    train_run("dw4", "egnn", "fm", 0, {
        "model": {"hidden": 8, "n_layers": 1},
        "training": {"steps": 2, "batch_size": 16, "val_every": 0, "progress": False, "device": "cpu"},
    }, data, run)
    info = sample_run(run, 24, {"device": "cpu", "method": "rk4", "n_steps": 4}, run / "samples.npz", 0)
    # full run settings as eqbg.pipeline.run_settings builds them
    settings = {"model": {}, "train": {}, "ode": {}, "sample": {},
                "evaluate": {"nll_n": 10, "bootstrap_reps": 50}, "system_options": {}, "device": "cpu"}
    metrics = evaluate_run("dw4", run, data, settings, run / "metrics.json")
    on_disk = read_json(run / "metrics.json")
    from eqbg.evaluation.run import METRIC_KEYS

    for key in METRIC_KEYS:
        assert key in on_disk, key
    assert (on_disk["system"], on_disk["model"], on_disk["loss"], on_disk["seed"]) == ("dw4", "egnn", "fm", 0)
    assert on_disk["ess_n"] == 24 and on_disk["nll_n"] == 10 and on_disk["nll_convention"] == "eqbg"
    with np.load(run / "eval.npz") as arrays:
        assert on_disk["ess"] == kish_ess(arrays["log_w"])[0] and arrays["log_w"].shape == (24,)
        assert on_disk["nll"] == pytest.approx(-arrays["log_q_test"].mean()) and arrays["log_q_test"].shape == (10,)
    assert on_disk["forward_ess_ci_low"] <= on_disk["forward_ess"] <= on_disk["forward_ess_ci_high"]
    assert on_disk["nll_efm"] == pytest.approx(on_disk["nll"] - prior_log_normaliser(6))
    assert on_disk["samples_per_s"] == pytest.approx(info["samples_per_s"])
    assert on_disk["provenance"]["git_commit"]
    assert metrics["ess"] == on_disk["ess"]
    assert on_disk["nfe"] == 16 and on_disk["path_length"] == pytest.approx(info["path_length"])
    ev = load_eval_npz(run / "eval.npz")
    assert (ev["system"], ev["model"], ev["loss"], ev["seed"]) == ("dw4", "egnn", "fm", 0)
    # the stored log weights reproduce the reported ESS without the model
    assert kish_ess(ev["log_w"])[0] == pytest.approx(on_disk["ess"])


def test_conventions_table_offsets():
    from eqbg.evaluation import conventions_table

    rows = {r["convention"]: r for r in conventions_table()}
    assert rows["efm"]["offset_dw4"] == pytest.approx(-5.514, abs=1e-3)
    assert rows["efm"]["offset_lj55"] == pytest.approx(-148.868, abs=1e-3)
    assert rows["enf"]["offset_lj13"] == 0.0 and rows["eqbg"]["offset_aldp"] == 0.0


def test_exact_system_log_z_and_forward_kl():
    from eqbg.systems import get_system

    system = get_system("gmm40")
    x = system.sample(3000, generator=torch.Generator().manual_seed(0))
    # q = p exactly: log w = -u - log p = log Z for every sample
    log_q = system.log_prob(x).numpy()
    x_test = system.sample(200, generator=torch.Generator().manual_seed(1))
    metrics, _ = evaluate_samples(system, {"x": x.numpy(), "log_q": log_q}, x_test,
                                  settings={"bootstrap_reps": 20})
    assert metrics["ess"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["log_z_error"] == pytest.approx(0.0, abs=1e-6)
    assert "distance_w2" not in metrics  # not a particle system


# ----------------------------------------------------------------------------- D-chirality


def test_frac_d_chirality_counts_exactly_the_mirrored_samples():
    from eqbg.systems import get_system
    from eqbg.systems.aldp import chirality_volume, internal_coordinate_structure
    from eqbg.ot import random_rotation

    system = get_system("aldp")
    centre = internal_coordinate_structure(-80.0, 150.0)  # L-alanine
    centre = centre - centre.mean(axis=0)
    rng = np.random.default_rng(11)
    gen = torch.Generator().manual_seed(11)

    def draw(k: int, n_mirror: int) -> tuple[np.ndarray, np.ndarray]:
        x = centre + 0.002 * rng.normal(size=(k, 22, 3))  # nm, thermal-like
        x -= x.mean(axis=1, keepdims=True)
        mirrored = np.zeros(k, dtype=bool)
        mirrored[rng.choice(k, size=n_mirror, replace=False)] = True
        x[mirrored, :, 2] *= -1.0  # z -> -z: the D enantiomer
        # proper rotations do not change handedness: the flag cannot just read the sign of z
        rot = random_rotation(3, batch=(k,), generator=gen).numpy()
        return np.einsum("kij,knj->kni", rot, x), mirrored

    x_flow, mirrored_flow = draw(30, 11)
    x_test, mirrored_test = draw(20, 5)
    vol = chirality_volume(x_flow)
    np.testing.assert_array_equal(vol < 0, mirrored_flow)
    assert np.abs(vol).min() > 1e-4  # nm^3: every sign is clear, not round-off
    np.testing.assert_array_equal(chirality_volume(x_test) < 0, mirrored_test)
    # the force field is achiral: mirror images keep their energy, so no sample fails; log q
    # only has to be finite here
    metrics, arrays = evaluate_samples(
        system, {"x": x_flow, "log_q": np.zeros(30)}, x_test, settings={"bootstrap_reps": 20}
    )
    assert metrics["n_failed"] == 0
    assert metrics["frac_d_chirality_flow"] == pytest.approx(11 / 30, abs=1e-12)
    assert metrics["frac_d_chirality_data"] == pytest.approx(5 / 20, abs=1e-12)
    # the D samples are mirrored into L before the dihedral observables, and counted
    assert metrics["n_mapped_d_to_l"] == 11 and metrics["n_mapped_d_to_l_test"] == 5
    phi_l, _ = system.dihedrals(system.map_to_l(x_flow)[0])
    np.testing.assert_allclose(arrays["phi_flow"], phi_l)
    phi_raw, _ = system.dihedrals(x_flow)
    assert np.abs(np.sin(phi_raw[mirrored_flow]) + np.sin(arrays["phi_flow"][mirrored_flow])).max() < 1e-6


# ----------------------------------------------------------------------------- forward KL, log Z


from eqbg.systems.base import ExactSystem  # noqa: E402


class _IsotropicGaussianTarget(ExactSystem):
    """Exact target ``u(x) = |x|^2 / (2 s_p^2)`` on ``R^{n*d}`` (not CoM-free) with
    ``log Z = (D/2) log(2 pi s_p^2)``, ``D = n*d``."""

    def __init__(self, n: int, d: int, s_p: float) -> None:
        super().__init__(name="gauss", n_particles=n, spatial_dim=d, com_free=False)
        self.s_p = s_p
        self.log_z = 0.5 * n * d * math.log(2 * math.pi * s_p**2)

    def energy(self, x):
        return x.pow(2).sum(dim=(1, 2)) / (2 * self.s_p**2)

    def sample(self, num, generator=None):
        shape = (num, self.n_particles, self.spatial_dim)
        return self.s_p * torch.randn(*shape, generator=generator, dtype=torch.float64)


class _IsotropicGaussianFlow:
    """Stand-in for a trained flow: ``q = N(0, s_q^2 I_D)`` with its exact ``log_prob``."""

    def __init__(self, s_q: float) -> None:
        self.s_q = s_q
        self.calls: list[int | None] = []

    def parameters(self):
        return iter([torch.zeros((), dtype=torch.float64)])

    def log_prob(self, x, exact=True, batch_size=None, generator=None):
        assert exact  # evaluation must ask for the exact density
        self.calls.append(batch_size)
        dim = x[0].numel()
        log_norm = 0.5 * dim * math.log(2 * math.pi * self.s_q**2)
        return -0.5 * x.pow(2).sum(dim=(1, 2)) / self.s_q**2 - log_norm

    def sample(self, num, generator):
        x = self.s_q * torch.randn(num, 2, 3, generator=generator, dtype=torch.float64)
        return x, self.log_prob(x)


@pytest.mark.parametrize("s_q", [1.3, 0.9])
def test_forward_kl_and_log_z_of_a_wrong_scale_gaussian_flow(s_q):
    n, d, s_p = 2, 3, 1.0
    dim = n * d
    system = _IsotropicGaussianTarget(n, d, s_p)
    flow = _IsotropicGaussianFlow(s_q)
    x, log_q = flow.sample(4000, torch.Generator().manual_seed(21))
    x_test = system.sample(2000, torch.Generator().manual_seed(22))
    metrics, _ = evaluate_samples(
        system, {"x": x.numpy(), "log_q": log_q.numpy()}, x_test,
        flow=flow, settings={"nll_n": None, "bootstrap_reps": 20},
    )
    assert flow.calls and metrics["nll_n"] == 2000
    # forward KL(p || q) = E_p[log p - log q]; closed form for two centred isotropic Gaussians
    r = s_p**2 / s_q**2
    kl_exact = 0.5 * dim * (r - 1.0 - math.log(r))
    sq = x_test.pow(2).sum(dim=(1, 2)).numpy()
    f = -0.5 * sq * (1 / s_p**2 - 1 / s_q**2) + 0.5 * dim * math.log(s_q**2 / s_p**2)
    assert metrics["forward_kl"] == pytest.approx(f.mean(), abs=1e-9)  # same test points
    kl_se = f.std(ddof=1) / math.sqrt(f.size)
    assert abs(metrics["forward_kl"] - kl_exact) < 4 * kl_se, (metrics["forward_kl"], kl_exact, kl_se)
    assert kl_exact > 5 * kl_se  # the test tells the KL apart from zero (8 se at s_q = 0.9)
    # importance-sampling log Z from samples of q with their exact log q; delta-method error
    # se(log Z_hat) = std(w) / (sqrt(N) mean(w))
    log_z = 0.5 * dim * math.log(2 * math.pi * s_p**2)
    assert metrics["log_z"] == pytest.approx(log_z, rel=1e-12)
    log_w = -0.5 * x.pow(2).sum(dim=(1, 2)).numpy() / s_p**2 - log_q.numpy()
    w = np.exp(log_w - log_w.max())
    z_se = w.std(ddof=1) / (math.sqrt(w.size) * w.mean())
    assert metrics["log_z_estimate"] == pytest.approx(log_w.max() + math.log(w.mean()), abs=1e-9)
    assert metrics["log_z_error"] == pytest.approx(metrics["log_z_estimate"] - log_z, abs=1e-12)
    assert abs(metrics["log_z_error"]) < 4 * z_se, (metrics["log_z_error"], z_se)
    # ... and the Kish ESS agrees with its closed form E_q[w]^2 / E_q[w^2] within noise
    ess_exact = (r * (2.0 - r)) ** (dim / 2) if r < 2 else 0.0
    assert metrics["ess"] == pytest.approx(ess_exact, abs=0.05)


# ----------------------------------------------------------------------------- W_p against POT


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("sizes", [(1, 7), (13, 13), (50, 80), (200, 33)])
def test_weighted_wasserstein_matches_pot(sizes, p):
    import ot

    rng = np.random.default_rng(sizes[0] * 1000 + sizes[1] + p)
    for trial in range(5):
        u = rng.normal(size=sizes[0])
        v = rng.normal(0.5, 2.0, size=sizes[1])
        if trial % 2:
            u, v = np.round(u, 1), np.round(v, 1)  # ties within and across the samples
        wu, wv = rng.random(sizes[0]), rng.random(sizes[1]) ** 3
        # zero weights (but never all of them)
        wu[rng.random(sizes[0]) < 0.3] = 0.0
        wv[rng.random(sizes[1]) < 0.3] = 0.0
        wu[rng.integers(sizes[0])] = 1.0
        wv[rng.integers(sizes[1])] = 1.0
        # POT: W_p^p, weights must already sum to one
        want = ot.wasserstein_1d(u, v, wu / wu.sum(), wv / wv.sum(), p=p) ** (1.0 / p)
        got = wasserstein_1d(u, v, wu, wv, p=p)
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (trial, got, want)
        # zero-weight entries are ignored entirely, even when they are not finite
        u_bad, v_bad = u.copy(), v.copy()
        u_bad[wu == 0], v_bad[wv == 0] = np.nan, np.inf
        assert wasserstein_1d(u_bad, v_bad, wu, wv, p=p) == pytest.approx(want, rel=1e-10, abs=1e-12)
        # unweighted against POT as well
        want_u = ot.wasserstein_1d(u, v, p=p) ** (1.0 / p)
        assert wasserstein_1d(u, v, p=p) == pytest.approx(want_u, rel=1e-10, abs=1e-12)


def test_evaluation_refuses_a_stochastic_log_q_and_labels_an_estimated_one():
    from eqbg.systems import get_system

    system = get_system("gmm40")
    x = system.sample(200, generator=torch.Generator().manual_seed(0)).numpy()
    log_q = system.log_prob(torch.as_tensor(x)).numpy()
    x_test = system.sample(50, generator=torch.Generator().manual_seed(1))
    cheap = {"bootstrap_reps": 10}
    with pytest.raises(ValueError, match="stochastic.*importance weights"):
        evaluate_samples(system, {"x": x, "log_q": log_q, "density": "stochastic"}, x_test, settings=cheap)
    # files written before the density field existed say exact: false for a Hutchinson log q
    with pytest.raises(ValueError, match="stochastic"):
        evaluate_samples(system, {"x": x, "log_q": log_q, "exact": False}, x_test, settings=cheap)
    metrics, _ = evaluate_samples(
        system, {"x": x, "log_q": log_q, "density": "estimate", "density_k": 20}, x_test, settings=cheap
    )
    assert metrics["log_q_density"] == "estimate" and metrics["log_q_k"] == 20
    exact, _ = evaluate_samples(system, {"x": x, "log_q": log_q, "density": "exact"}, x_test, settings=cheap)
    assert exact["log_q_density"] == "exact" and exact["log_q_k"] is None
