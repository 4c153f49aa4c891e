"""Tests of the MCMC engine and the convergence diagnostics (eqbg.data.mcmc, eqbg.data.diagnostics)
against distributions with known moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eqbg.data import diagnostics as dg
from eqbg.data.mcmc import metropolis, minimise, random_nonoverlapping
from eqbg.geometry import remove_mean

SIG = torch.tensor([[0.5, 1.0], [2.0, 0.3], [1.0, 1.5]], dtype=torch.float64)


def gaussian_energy(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x / SIG) ** 2).sum((-1, -2))


def test_metropolis_anisotropic_gaussian_moments():
    gen = torch.Generator().manual_seed(0)
    res = metropolis(gaussian_energy, torch.zeros(64, 3, 2, dtype=torch.float64), n_steps=3000,
                     burn_in=1000, thin=3, step_size=0.3, generator=gen)
    assert abs(float(res.acceptance.mean()) - 0.5) < 0.05
    x = res.samples  # (chains, kept, 3, 2)
    # standard errors from per-chain means (chains are independent replicas)
    chain_mean = x.mean(1)
    m = chain_mean.mean(0)
    se_m = chain_mean.std(0) / math.sqrt(x.shape[0])
    assert torch.all((m.abs() / se_m) < 4.5), (m, se_m)
    chain_var = (x**2).mean(1)
    v = chain_var.mean(0)
    se_v = chain_var.std(0) / math.sqrt(x.shape[0])
    z = (v - SIG**2) / se_v
    assert torch.all(z.abs() < 4.5), z
    # and the diagnostics agree that these chains are converged
    e = res.energies.numpy()
    assert dg.split_rhat(e) < 1.02
    ct = dg.configurational_temperature(gaussian_energy, x[:, ::20].reshape(-1, 3, 2),
                                        groups=np.repeat(np.arange(64), x[:, ::20].shape[1]))
    assert abs(ct["value"] - 1.0) < 4 * ct["se"] + 0.01


def test_metropolis_double_well_matches_quadrature():
    # 1D double well u = 2 (x^2 - 1)^2 (barrier 2 kT): <x^2> and <x^4> by quadrature
    def u(x):
        return 2.0 * (x[..., 0, 0] ** 2 - 1.0) ** 2

    grid = np.linspace(-4, 4, 80001)
    w = np.exp(-2.0 * (grid**2 - 1) ** 2)
    w /= w.sum()
    ex2, ex4 = float((w * grid**2).sum()), float((w * grid**4).sum())
    gen = torch.Generator().manual_seed(1)
    res = metropolis(u, torch.zeros(128, 1, 1, dtype=torch.float64), n_steps=4000, burn_in=500,
                     thin=4, step_size=1.0, target_acceptance=0.4, generator=gen)
    x = res.samples[..., 0, 0]
    for k, ref in ((2, ex2), (4, ex4)):
        per_chain = (x**k).mean(1)
        z = (float(per_chain.mean()) - ref) / float(per_chain.std() / math.sqrt(len(per_chain)))
        assert abs(z) < 4.5, (k, z)
    # symmetric wells: mean zero
    per_chain = x.mean(1)
    assert abs(float(per_chain.mean()) / float(per_chain.std() / math.sqrt(128))) < 4.5


def test_com_free_proposals_sample_subspace_gaussian():
    # u = 1/2 sum |x_i - x_com|^2 is a standard Gaussian on the (n-1)d CoM-free subspace: E[u] = (n-1)d/2
    n, d = 5, 3

    def u(x):
        return 0.5 * (remove_mean(x) ** 2).sum((-1, -2))

    gen = torch.Generator().manual_seed(2)
    res = metropolis(u, torch.zeros(64, n, d, dtype=torch.float64), n_steps=2000, burn_in=500,
                     thin=5, step_size=0.3, com_free=True, generator=gen)
    assert float(res.samples.mean(-2).abs().max()) < 1e-10  # CoM stays exactly 0
    per_chain = res.energies.mean(1)
    z = (float(per_chain.mean()) - (n - 1) * d / 2) / float(per_chain.std() / 8.0)
    assert abs(z) < 4.5, z


def test_step_size_frozen_after_burn_in():
    gen_a = torch.Generator().manual_seed(3)
    gen_b = torch.Generator().manual_seed(3)
    x0 = torch.zeros(16, 3, 2, dtype=torch.float64)
    a = metropolis(gaussian_energy, x0, n_steps=50, burn_in=300, step_size=0.05, generator=gen_a)
    b = metropolis(gaussian_energy, x0, n_steps=2000, burn_in=300, step_size=0.05, generator=gen_b)
    # same burn-in -> same adapted steps; 1950 more production steps changed nothing
    assert torch.equal(a.step_size, b.step_size)
    assert not torch.allclose(a.step_size, torch.full_like(a.step_size, 0.05))  # it did adapt
    c = metropolis(gaussian_energy, x0, n_steps=500, burn_in=0, step_size=0.05,
                   generator=torch.Generator().manual_seed(3))
    assert torch.allclose(c.step_size, torch.full_like(c.step_size, 0.05), rtol=1e-12, atol=0)


def test_metropolis_is_reproducible():
    x0 = torch.zeros(8, 3, 2, dtype=torch.float64)
    r1 = metropolis(gaussian_energy, x0, n_steps=200, burn_in=50, generator=torch.Generator().manual_seed(7))
    r2 = metropolis(gaussian_energy, x0, n_steps=200, burn_in=50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(r1.samples, r2.samples)


def test_metropolis_rejects_bad_arguments():
    x0 = torch.zeros(4, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="anneal_steps"):
        metropolis(gaussian_energy, x0, n_steps=10, burn_in=5, anneal_steps=10, anneal_t0=2.0)
    with pytest.raises(ValueError, match="non-finite"):
        metropolis(lambda x: torch.full((x.shape[0],), math.nan, dtype=x.dtype), x0, n_steps=10, burn_in=0)


def test_random_placement_and_minimisation():
    gen = torch.Generator().manual_seed(0)
    x = random_nonoverlapping(32, 13, 3, radius=2.0, min_dist=0.9, generator=gen)
    d = torch.cdist(x, x) + 10 * torch.eye(13)
    assert float(d.min()) >= 0.9 - 1e-12
    assert float(x.mean(1).abs().max()) < 1e-12

    # LJ pair energy of a dimer has its minimum at r = 1 with energy -1
    def dimer(y):
        r2 = ((y[:, 0] - y[:, 1]) ** 2).sum(-1)
        return r2.reciprocal() ** 6 - 2 * r2.reciprocal() ** 3

    y0 = torch.tensor([[[0.0, 0.0, 0.0], [1.7, 0.0, 0.0]]], dtype=torch.float64)
    y, e = minimise(dimer, y0, n_iter=200, com_free=True)
    assert abs(float(e) + 1.0) < 1e-8
    assert abs(float((y[0, 0] - y[0, 1]).norm()) - 1.0) < 1e-4


def ar1(rho: float, n_chains: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.empty((n_chains, n))
    z[:, 0] = rng.normal(size=n_chains) / math.sqrt(1 - rho**2)
    eps = rng.normal(size=(n_chains, n))
    for t in range(1, n):
        z[:, t] = rho * z[:, t - 1] + eps[:, t]
    return z


@pytest.mark.parametrize("method", ["sokal", "geyer"])
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_iat_of_ar1_process(method, rho):
    z = ar1(rho, 16, 20_000, seed=int(rho * 10))
    tau = dg.integrated_autocorrelation_time(z, method=method)
    expected = (1 + rho) / (1 - rho)
    assert abs(tau.mean() / expected - 1.0) < 0.1, (tau.mean(), expected)
    ess = dg.effective_sample_size(z, method=method)
    assert abs(ess / (z.size / expected) - 1.0) < 0.12


def test_split_rhat_detects_shifted_chains():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(8, 1000))
    assert abs(dg.split_rhat(iid) - 1.0) < 0.01
    assert abs(dg.split_rhat(iid, rank_normalised=True) - 1.0) < 0.01
    shifted = iid + np.arange(8)[:, None] * 0.5
    assert dg.split_rhat(shifted) > 1.3
    assert dg.split_rhat(shifted, rank_normalised=True) > 1.3
    # a trend inside each chain is caught by the split (halves disagree), means are equal
    trend = iid + np.linspace(-1, 1, 1000)[None, :]
    assert dg.split_rhat(trend) > 1.1


def test_configurational_temperature_of_exact_gaussian_samples():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((4000, 3, 2), dtype=torch.float64, generator=gen)
    ct1 = dg.configurational_temperature(gaussian_energy, z * SIG)
    assert abs(ct1["value"] - 1.0) < 4 * ct1["se"]
    assert ct1["se"] < 0.05
    # samples of exp(-u / T) give T
    for temp in (0.5, 2.0):
        ct = dg.configurational_temperature(gaussian_energy, z * SIG * math.sqrt(temp))
        assert abs(ct["value"] - temp) < 4 * ct["se"], (temp, ct)
        assert abs(ct["value"] - 1.0) > 10 * ct["se"]


def test_laplacian_is_exact():
    # u = sum_k a_k x_k^2 / 2 + x_0^3: Laplacian = sum a_k + 6 x_0
    a = torch.arange(1.0, 7.0, dtype=torch.float64).reshape(3, 2)

    def u(x):
        return 0.5 * (a * x**2).sum((-1, -2)) + x[:, 0, 0] ** 3

    x = torch.randn(5, 3, 2, dtype=torch.float64)
    g2, lap = dg.grad_and_laplacian(u, x)
    assert torch.allclose(lap, a.sum() + 6 * x[:, 0, 0])
    grad = a * x
    grad[:, 0, 0] += 3 * x[:, 0, 0] ** 2
    assert torch.allclose(g2, (grad**2).sum((-1, -2)))


def test_mala_gaussian_moments_and_com_free():
    gen = torch.Generator().manual_seed(4)
    res = metropolis(gaussian_energy, torch.zeros(64, 3, 2, dtype=torch.float64), n_steps=2000,
                     burn_in=500, thin=2, step_size=0.3, target_acceptance=0.57, proposal="mala",
                     generator=gen)
    assert abs(float(res.acceptance.mean()) - 0.57) < 0.06
    x = res.samples
    chain_var = (x**2).mean(1)
    z = (chain_var.mean(0) - SIG**2) / (chain_var.std(0) / 8.0)
    assert torch.all(z.abs() < 4.5), z
    n, d = 5, 3

    def u(y):
        return 0.5 * (remove_mean(y) ** 2).sum((-1, -2))

    res = metropolis(u, torch.zeros(64, n, d, dtype=torch.float64), n_steps=1000, burn_in=300,
                     thin=2, step_size=0.5, target_acceptance=0.57, proposal="mala", com_free=True,
                     generator=gen)
    assert float(res.samples.mean(-2).abs().max()) < 1e-10
    per_chain = res.energies.mean(1)
    z = (float(per_chain.mean()) - (n - 1) * d / 2) / float(per_chain.std() / 8.0)
    assert abs(z) < 4.5, z
