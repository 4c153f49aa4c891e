"""Budget-matched MCMC (eqbg.baselines) and the cost record of a run (eqbg.evaluation.cost)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eqbg.baselines.mcmc import MCMCBaselineSettings, plan_budget, run_budgeted_mcmc
from eqbg.baselines.run import best_flow_budget
from eqbg.baselines.evaluate import _blocks
from eqbg.evaluation.cost import COST_PARTS, data_stage_cost, run_cost

MU = torch.tensor([[1.5, -0.5], [0.0, 2.0], [-1.0, 0.25]], dtype=torch.float64)
VAR = torch.tensor([[0.5, 2.0], [1.0, 0.25], [1.5, 1.0]], dtype=torch.float64)


class CountingGaussian:
    """u(x) = sum (x - MU)^2 / (2 VAR) over (B, 3, 2), counting every configuration evaluated."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return (0.5 * (x - MU) ** 2 / VAR).sum((-1, -2))


def _prior(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn((n, 3, 2), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("budget", [15, 64, 1000, 12_345, 100_000, 1_000_483])
def test_plan_spends_the_budget_less_its_remainder_modulo_the_chains(budget):
    s = MCMCBaselineSettings(checkpoint_every=5000)
    plan = plan_budget(budget, s)
    assert 0 <= budget - plan.spent < plan.n_chains
    assert plan.n_chains == max(1, min(32, budget // 100))
    assert plan.burn_in >= s.min_burn_in and plan.burn_in == max(10, int(0.5 * (budget // plan.n_chains - 1)))
    # every segment but the last ends on a kept state (the next one starts there)
    assert all(length % plan.thin == 0 for length in plan.segments[:-1])
    assert sum(plan.segments) // plan.thin <= s.max_kept_per_chain * len(plan.segments)
    assert sum(plan.segments) // plan.thin >= 4


def test_a_budget_below_the_burn_in_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"budget of 14 energy evaluations is below one chain's burn-in of 10 steps"):
        plan_budget(14, MCMCBaselineSettings())
    with pytest.raises(ValueError, match="not a finite number"):
        plan_budget(float("nan"), MCMCBaselineSettings())


def test_mala_reaches_the_gaussian_moments_and_spends_exactly_its_budget():
    energy = CountingGaussian()
    s = MCMCBaselineSettings(step_size=0.3, checkpoint_every=1000)
    plan = plan_budget(96_000, s)
    assert plan.spent == 96_000 and len(plan.segments) == 2
    chains = run_budgeted_mcmc(energy, _prior, plan, s, com_free=False, seed=3)
    assert energy.calls == chains.n_energy_evals == 96_000
    x = chains.samples.reshape(-1, 3, 2)
    n_eff = chains.effective_samples()
    assert 500 < n_eff <= x.shape[0]
    se_mean = (VAR / n_eff).sqrt()
    assert ((x.mean(0) - MU).abs() < 5 * se_mean).all(), (x.mean(0), MU)
    rel_var = x.var(0) / VAR - 1
    assert (rel_var.abs() < 5 * math.sqrt(2 / n_eff)).all(), rel_var
    assert 0.45 < chains.acceptance.mean() < 0.7  # adapted towards 0.57


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path):
    s = MCMCBaselineSettings(n_chains=4, step_size=0.3, checkpoint_every=200, max_kept_per_chain=16)
    plan = plan_budget(4 * 1000, s)
    assert len(plan.segments) == 3
    whole = run_budgeted_mcmc(CountingGaussian(), _prior, plan, s, com_free=False, seed=0)
    ckpt = tmp_path / "checkpoint.pt"
    # killed in the third segment: the first two are checkpointed
    with pytest.raises(KeyboardInterrupt):
        run_budgeted_mcmc(CountingGaussian(fail_after=4 * 900), _prior, plan, s, com_free=False, seed=0,
                          checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=False)["done"] == 2
    resumed_energy = CountingGaussian()
    resumed = run_budgeted_mcmc(resumed_energy, _prior, plan, s, com_free=False, seed=0, checkpoint=ckpt)
    assert resumed_energy.calls == 4 * (1 + plan.segments[-1])  # only the last segment ran again
    assert torch.equal(resumed.samples, whole.samples) and torch.equal(resumed.energies, whole.energies)
    assert resumed.n_energy_evals == whole.n_energy_evals == plan.spent
    assert not ckpt.exists()
    # a checkpoint of another seed is not resumed from
    with pytest.raises(KeyboardInterrupt):
        run_budgeted_mcmc(CountingGaussian(fail_after=4 * 900), _prior, plan, s, com_free=False, seed=1,
                          checkpoint=ckpt)
    other = run_budgeted_mcmc(CountingGaussian(), _prior, plan, s, com_free=False, seed=0, checkpoint=ckpt)
    assert torch.equal(other.samples, whole.samples)


def test_blocks_cut_few_chains_into_at_least_eight_clusters():
    assert _blocks(1, 32).tolist() == [i // 4 for i in range(32)]
    assert np.unique(_blocks(2, 40)).size == 8 and np.unique(_blocks(32, 64)).size == 32
    assert np.unique(_blocks(1, 6)).size == 1  # too short for blocks of 4


def test_cost_record_adds_its_parts_and_divides_by_the_effective_samples():
    provenance = {"sampler": "mcmc", "diagnostics": {"n_chains": 10, "steps_per_chain": 99_999, "wall_time_s": 40.0},
                  "settings": {}, "files": {"train": {"n": 6000}, "val": {"n": 1000}, "test": {"n": 1000}}}
    assert data_stage_cost(provenance) == (1_000_000.0, 40.0, 8000)
    metrics = {"n_train": 2000, "n_energy_evals_train": 200.0, "train_time_s": 10.0, "ess_n": 1000,
               "ess": 0.25, "sampling_wall_time_s": 3.0, "flow_energy_time_s": 1.0,
               "n_energy_evals_ais": 300.0, "ais_time_s": 2.0}
    cost = run_cost(metrics, provenance)
    assert cost["cost_energy_evals_data"] == 250_000.0 and cost["cost_data_time_s"] == 10.0
    assert [cost[f"cost_energy_evals_{p}"] for p in COST_PARTS] == [250_000.0, 200.0, 1000.0, 300.0]
    assert cost["cost_energy_evals_total"] == 251_500.0 and cost["cost_total_time_s"] == 26.0
    assert cost["effective_samples"] == 250.0
    assert cost["energy_evals_per_effective_sample_sampling"] == 4.0
    assert cost["energy_evals_per_effective_sample_total"] == 1006.0
    assert cost["cost_per_effective_sample_total_time_s"] == 26.0 / 250
    # energy-only losses train on no data; exact samplers cost no evaluations
    assert run_cost({**metrics, "n_train": None}, provenance)["cost_energy_evals_data"] == 0.0
    exact = {"sampler": "exact", "diagnostics": {"wall_time_s": 0.1}, "files": {"train": {"n": 10}}}
    assert run_cost(metrics, exact)["cost_energy_evals_data"] == 0.0
    # MD: one force evaluation per step, equilibration included
    md = {"sampler": "md", "diagnostics": {"simulated_ns_total": 2.0, "n_trajectories": 2, "wall_time_s": 5.0},
          "settings": {"timestep_fs": 2.0, "equilibration_ps": 10.0}, "files": {"train": {"n": 4}}}
    assert data_stage_cost(md)[0] == (2.0 + 0.02) * 5e5


def test_data_stage_cost_equals_the_evaluations_its_chains_make(monkeypatch, tmp_path):
    import eqbg.data.dataset as dataset
    import eqbg.data.samplers.mcmc as mcmc_sampler

    counted = []
    real = mcmc_sampler.metropolis

    def counting(energy, x0, **kw):
        def wrapped(x):
            counted.append(x.shape[0])
            return energy(x)
        return real(wrapped, x0, **kw)

    monkeypatch.setattr(mcmc_sampler, "metropolis", counting)
    settings = {"n_chains": 8, "burn_in": 200, "thin": 5, "splits": {"train": 64, "val": 16, "test": 16},
                "check_convergence": False, "conf_temp_samples": 0}
    dataset.make_reference_data("dw4", settings, seed=0, out_dir=tmp_path)
    provenance = __import__("json").loads((tmp_path / "provenance.json").read_text())
    evals, seconds, made = data_stage_cost(provenance)
    assert evals == sum(counted) and made == 96 and seconds > 0


def test_mcmc_budget_is_the_best_flow_s():
    flows = [
        {"run_dir": "a", "energy_w2_reweighted": 0.5, "cost_energy_evals_sampling": 100.0, "cost_energy_evals_total": 1e5},
        {"run_dir": "b", "energy_w2_reweighted": 0.2, "cost_energy_evals_sampling": 300.0, "cost_energy_evals_total": 2e5},
        {"run_dir": "c", "energy_w2_reweighted": None, "cost_energy_evals_sampling": 50.0, "cost_energy_evals_total": 1.0},
    ]
    assert best_flow_budget(flows, "sampling") == (300.0, "b")
    assert best_flow_budget(flows, "total") == (2e5, "b")
    with pytest.raises(ValueError, match="unknown MCMC budget"):
        best_flow_budget(flows, "half")
    with pytest.raises(ValueError, match="no flow run has a finite"):
        best_flow_budget(flows[2:], "total")


def test_mcmc_runs_of_a_config_need_flows_of_their_system():
    from eqbg.baselines.grid import check_mcmc_grid, iter_mcmc_runs, mcmc_params

    config = {
        "systems": {"dw4": {"data": {}, "mcmc": {"step_size": 0.2}}, "gmm40": {"data": {}}},
        "grid": [{"system": "dw4", "models": ["egnn"], "losses": ["fm"], "seeds": [0]}],
        "defaults": {"model": {"egnn": {}}, "mcmc": {"n_chains": 16, "step_size": 0.05}},
        "baselines": {"mcmc": {"systems": ["dw4"], "budgets": ["sampling", "total"], "seeds": [0, 1]}},
    }
    runs = list(iter_mcmc_runs(config))
    assert [r.path for r in runs] == ["dw4/mcmc/mala/sampling/seed0", "dw4/mcmc/mala/sampling/seed1",
                                     "dw4/mcmc/mala/total/seed0", "dw4/mcmc/mala/total/seed1"]
    check_mcmc_grid(config)
    params = mcmc_params(config, runs[0])
    assert params["settings"]["mcmc"] == {"n_chains": 16, "step_size": 0.2}  # the system's over the defaults
    assert params["settings"]["device"] == "cpu" and params["identity"]["variant"] == "sampling"
    config["baselines"]["mcmc"]["systems"] = ["gmm40"]
    with pytest.raises(ValueError, match="names system 'gmm40', but the grid trains no flow on it"):
        check_mcmc_grid(config)


def test_ais_log_z_of_a_gaussian_target_within_its_error_at_its_budget():
    from eqbg.baselines.log_z import ais_log_z
    from eqbg.flows.priors import StandardGaussian

    energy = CountingGaussian()
    log_z = float(0.5 * torch.log(2 * math.pi * VAR).sum())  # int exp(-u) = prod sqrt(2 pi var)
    out, log_w = ais_log_z(energy, StandardGaussian(3, 2), 20_000, n_chains=200, n_leapfrog=5, step_size=0.3,
                           seed=0)
    assert out["log_z_ais_n_chains"] == 200 and out["log_z_ais_n_intermediate"] == (100 - 1) // 5
    assert out["log_z_ais_energy_evals"] == energy.calls == 200 * (1 + 5 * 19) <= 20_000
    w = np.exp(log_w - log_w.max())
    se = math.sqrt(np.var(w) / len(w)) / w.mean()  # delta method: sd of log of the mean weight
    assert abs(out["log_z_estimate"] - log_z) < 5 * se + 0.01, (out, log_z, se)
    with pytest.raises(ValueError, match="below one AIS chain's 6"):
        ais_log_z(energy, StandardGaussian(3, 2), 5, n_chains=10, n_leapfrog=5, step_size=0.3, seed=0)


def test_langevin_md_spends_its_force_evaluations_and_resumes_bit_identical(tmp_path):
    """Alanine dipeptide's baseline: MD steps are the budget; frames CoM-free; their recorded
    energies are the system's reduced energy; a killed run resumes at its last segment."""
    from eqbg.baselines import langevin
    from eqbg.systems import get_system

    system = get_system("aldp")
    s = MCMCBaselineSettings(n_chains=2, min_chain_length=50, checkpoint_every=40, max_kept_per_chain=20)
    plan = plan_budget(400, s)
    assert (plan.n_chains, plan.burn_in, plan.thin) == (2, 99, 5) and plan.segments == (40, 40, 18)
    whole = langevin.run_budgeted_md(system, plan, s, seed=0)
    assert whole.n_energy_evals == 2 * (99 + 98) == plan.spent - 2 * len(plan.segments)
    assert whole.samples.shape == (2, 8 + 8 + 3, 22, 3)
    torch.testing.assert_close(whole.samples.mean(-2), torch.zeros(2, 19, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    u = system.energy(whole.samples.reshape(-1, 22, 3)).reshape(2, -1).to(torch.float64)
    torch.testing.assert_close(u, whole.energies, rtol=1e-4, atol=1e-3)

    calls = []
    real = langevin.run_langevin

    def killed_in_the_third_segment(*args, **kw):
        calls.append(1)
        if len(calls) > 2 * 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    ckpt = tmp_path / "checkpoint.pt"
    langevin.run_langevin = killed_in_the_third_segment
    try:
        with pytest.raises(KeyboardInterrupt):
            langevin.run_budgeted_md(system, plan, s, seed=0, checkpoint=ckpt)
    finally:
        langevin.run_langevin = real
    assert torch.load(ckpt, weights_only=False)["done"] == 2
    resumed = langevin.run_budgeted_md(system, plan, s, seed=0, checkpoint=ckpt)
    assert torch.equal(resumed.samples, whole.samples) and torch.equal(resumed.energies, whole.energies)
    assert not ckpt.exists()


def test_every_baseline_sampler_a_system_can_get_is_registered():
    from eqbg.baselines.grid import BASELINE_SAMPLER
    from eqbg.baselines.run import SAMPLERS

    assert set(BASELINE_SAMPLER.values()) == set(SAMPLERS)
