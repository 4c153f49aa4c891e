"""Annealed importance sampling and its transitions (checks 8 and 10 of EACF_FAB.md section C)."""

from __future__ import annotations

import math

import pytest
import torch

from eqbg.sampling.ais import AISSettings, AnnealedImportanceSampler
from eqbg.settings import SettingsError

D = 3


def _gauss(mean: float, std: float, log_z: float = 0.0):
    """Unnormalised ``log p = log Z + log N(x; mean, std^2 I_D)``."""

    def log_p(x):
        return log_z - 0.5 * _sq(x - mean) / std**2 - 0.5 * D * math.log(2 * math.pi * std**2)

    return log_p


def _sq(x):
    return x.pow(2).flatten(1).sum(-1)


@pytest.mark.parametrize("m, transition", [(0, "hmc"), (1, "hmc"), (8, "hmc"), (4, "metropolis")])
def test_gaussian_to_gaussian_ais_recovers_log_z(m, transition):
    """q = N(0, I), p = Z N(1, 0.7^2 I) unnormalised: mean w = Z within Monte Carlo error."""
    gen = torch.Generator().manual_seed(m)
    settings = AISSettings(n_intermediate=m, transition=transition, alpha=1.0, step_size=0.5,
                           n_leapfrog=5, adapt=False)
    ais = AnnealedImportanceSampler(settings)
    log_z = 1.7
    z0 = torch.randn(20000, D, generator=gen, dtype=torch.float64)
    res = ais.run(z0, _gauss(0.0, 1.0), _gauss(1.0, 0.7, log_z), generator=gen)
    w = torch.exp(res.log_w - log_z)
    se = float(w.std() / math.sqrt(w.numel()))
    assert abs(float(w.mean()) - 1.0) < 4 * se + 1e-3, (float(w.mean()), se)
    assert res.n_invalid == 0
    assert res.n_target_evals == 20000 * settings.target_evals_per_sample()
    # weighted moments of the final points are the target's
    wn = w / w.sum()
    mean = (wn[:, None] * res.z).sum(0)
    assert torch.allclose(mean, torch.ones(D, dtype=torch.float64), atol=0.06)


def test_more_intermediate_distributions_give_better_weights():
    """The weights' spread (and so the ESS) improves with M on a mismatched pair."""
    ess = []
    for m in (0, 8):
        gen = torch.Generator().manual_seed(1)
        ais = AnnealedImportanceSampler(AISSettings(n_intermediate=m, alpha=1.0, step_size=0.4, adapt=False))
        z0 = torch.randn(4000, D, generator=gen, dtype=torch.float64)
        log_w = ais.run(z0, _gauss(0.0, 1.0), _gauss(2.0, 0.5), generator=gen).log_w
        w = torch.softmax(log_w, 0)
        ess.append(float(1.0 / (w * w).sum() / w.numel()))
    assert ess[1] > 3 * ess[0], ess


def test_hmc_leaves_its_target_invariant():
    """q = p = N(0.5, 0.8^2): chains started from the target stay distributed as the target, and
    the weights are constant (q = p)."""
    gen = torch.Generator().manual_seed(2)
    target = _gauss(0.5, 0.8)
    ais = AnnealedImportanceSampler(AISSettings(n_intermediate=3, alpha=1.0, step_size=0.6, n_outer=3, adapt=False))
    z0 = 0.5 + 0.8 * torch.randn(40000, D, generator=gen, dtype=torch.float64)
    res = ais.run(z0, target, target, generator=gen)
    assert torch.allclose(res.log_w, torch.zeros_like(res.log_w), atol=1e-10)
    assert 0.5 < min(res.acceptance) < 1.0  # the chains moved
    assert torch.allclose(res.z.mean(0), torch.full((D,), 0.5, dtype=torch.float64), atol=0.02)
    assert torch.allclose(res.z.var(0), torch.full((D,), 0.64, dtype=torch.float64), rtol=0.03)


def test_step_sizes_converge_towards_the_target_acceptance_and_persist():
    gen = torch.Generator().manual_seed(3)
    settings = AISSettings(n_intermediate=2, alpha=1.0, step_size=3.0, target_accept=0.65, adapt_factor=1.05)
    ais = AnnealedImportanceSampler(settings)
    target = _gauss(0.0, 0.5)
    rates = []
    for _ in range(150):
        z0 = 0.5 * torch.randn(256, D, generator=gen, dtype=torch.float64)
        rates.append(ais.run(z0, target, target, generator=gen).acceptance)
    late = torch.tensor(rates[-50:]).mean(0)
    assert torch.all((late > 0.5) & (late < 0.8)), late
    assert all(e < 3.0 for e in ais.step_sizes)
    # a checkpoint restores them, and evaluation (adapt=False) leaves them unchanged
    restored = AnnealedImportanceSampler(settings)
    restored.load_state_dict(ais.state_dict())
    assert restored.step_sizes == ais.step_sizes
    before = list(restored.step_sizes)
    restored.run(0.5 * torch.randn(64, D, generator=gen, dtype=torch.float64), target, target,
                 generator=gen, adapt=False)
    assert restored.step_sizes == before


def test_invalid_chains_are_counted_and_get_zero_weight():
    def log_p(x):
        out = -0.5 * _sq(x)
        return torch.where(x[:, 0] > 1.5, torch.full_like(out, math.nan), out)

    gen = torch.Generator().manual_seed(4)
    ais = AnnealedImportanceSampler(AISSettings(n_intermediate=0, alpha=1.0))
    z0 = torch.randn(1000, D, generator=gen, dtype=torch.float64)
    res = ais.run(z0, _gauss(0.0, 1.0), log_p, generator=gen)
    bad = int((z0[:, 0] > 1.5).sum())
    assert res.n_invalid == bad > 0 and torch.isneginf(res.log_w).sum() == bad


def test_bad_settings_are_named():
    with pytest.raises(SettingsError, match="transition"):
        AnnealedImportanceSampler(AISSettings(transition="langevin"))
    with pytest.raises(SettingsError, match="spacing"):
        AnnealedImportanceSampler(AISSettings(spacing="cosine"))
    assert AISSettings(n_intermediate=3, spacing="geometric").betas()[0] == 0.0
    assert AISSettings(n_intermediate=3, spacing="geometric").betas()[-1] == 1.0
