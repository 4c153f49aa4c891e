"""Vectorised random-walk Metropolis over many parallel chains, and chain initialisation.

Every chain is an independent Markov chain; they are advanced together so that one batched
energy call serves all of them. State and energies are float64 (the LJ repulsion spans many
orders of magnitude, and acceptance ratios of float32 energies are visibly quantised).

Step sizes are adapted per chain during burn-in only (Robbins-Monro on ``log step`` towards a
target acceptance) and then frozen, so the kernel that produces the kept samples is a fixed
symmetric Metropolis kernel and satisfies detailed balance.

For centre-of-mass-free systems the Gaussian proposal is projected onto the CoM-free subspace
(the particle mean of the noise is removed), so a CoM-free state stays CoM-free and the proposal
is an isotropic Gaussian on that ``(n-1)d``-dimensional subspace -- still symmetric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from eqbg.geometry import remove_mean

__all__ = [
    "MCMCResult",
    "metropolis",
    "random_nonoverlapping",
    "minimise",
]

EnergyFn = Callable[[torch.Tensor], torch.Tensor]




def _safe_energy(energy: EnergyFn, x: torch.Tensor) -> torch.Tensor:
    # NaN energies (e.g. overlapping particles in float arithmetic) count as +inf: always rejected.
    with torch.no_grad():
        u = energy(x).to(torch.float64)
    return torch.nan_to_num(u, nan=math.inf, posinf=math.inf)


def _energy_and_grad(energy: EnergyFn, x: torch.Tensor, com_free: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # a configuration whose energy or gradient is not finite gets u = +inf (always rejected)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        u = energy(xg)
        (g,) = torch.autograd.grad(u.sum(), xg)
    u = torch.nan_to_num(u.detach().to(torch.float64), nan=math.inf, posinf=math.inf)
    g = g.detach().to(torch.float64)
    bad = ~torch.isfinite(g).all(dim=-1).all(dim=-1)
    u = torch.where(bad, torch.full_like(u, math.inf), u)
    g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
    if com_free:
        g = remove_mean(g)
    return u, g


@dataclass
class MCMCResult:
    """Output of :func:`metropolis`.

    Attributes:
        samples: ``(n_chains, n_kept, n, d)`` float64 kept (thinned) states.
        energies: ``(n_chains, n_kept)`` reduced energy of each kept state (at ``beta = 1``).
        acceptance: ``(n_chains,)`` acceptance rate over the post-burn-in steps.
        burn_in_acceptance: ``(n_chains,)`` acceptance rate during burn-in.
        step_size: ``(n_chains,)`` frozen step sizes used after burn-in.
        burn_in_energy: ``(n_chains, n_trace)`` energy every ``thin`` steps during burn-in.
        wall_time_s: seconds spent in the sampler.
        n_energy_evals: energy evaluations per chain (with a gradient each for MALA).
        proposal: ``"rw"`` or ``"mala"``.
    """

    samples: torch.Tensor
    energies: torch.Tensor
    acceptance: torch.Tensor
    burn_in_acceptance: torch.Tensor
    step_size: torch.Tensor
    burn_in_energy: torch.Tensor
    wall_time_s: float
    n_energy_evals: int
    proposal: str = "rw"


def _check_chain_settings(
    x0: torch.Tensor, n_steps: int, burn_in: int, thin: int, anneal_steps: int, target_acceptance: float,
    proposal: str,
) -> None:
    if n_steps < 0 or burn_in < 0 or thin < 1:
        raise ValueError(f"need n_steps >= 0, burn_in >= 0, thin >= 1; got {n_steps}, {burn_in}, {thin}")
    if anneal_steps > burn_in:
        raise ValueError(f"anneal_steps ({anneal_steps}) must not exceed burn_in ({burn_in})")
    if not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    if proposal not in ("rw", "mala"):
        raise ValueError(f"proposal must be 'rw' or 'mala', got {proposal!r}")
    if x0.ndim != 3:
        raise ValueError(f"x0 must be (n_chains, n, d), got shape {tuple(x0.shape)}")


def _propose(
    energy: EnergyFn, x: torch.Tensor, g: torch.Tensor | None, h: torch.Tensor, beta: float,
    noise: torch.Tensor, com_free: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | float]:
    """``(y, u(y), grad u(y), log q(x | y) - log q(y | x))`` of one proposal from ``x``: MALA's
    at ``exp(-beta u)`` when the gradient ``g`` at ``x`` is given (``h`` the ``(B, 1, 1)`` step
    sizes), else a random walk (symmetric: no Hastings term)."""
    if g is not None:
        y = x - 0.5 * h * h * beta * g + h * noise
        u_y, g_y = _energy_and_grad(energy, y, com_free)
        # log q(x | y) - log q(y | x); the forward residual is exactly h * noise
        back = x - y + 0.5 * h * h * beta * g_y
        log_hastings = (-(back * back).sum((-1, -2)) / (2.0 * h[:, 0, 0] ** 2)
                        + 0.5 * (noise * noise).sum((-1, -2)))
        return y, u_y, g_y, log_hastings
    y = x + h * noise
    return y, _safe_energy(energy, y), None, 0.0


def metropolis(
    energy: EnergyFn,
    x0: torch.Tensor,
    *,
    n_steps: int,
    burn_in: int,
    thin: int = 1,
    step_size: float | torch.Tensor = 0.1,
    target_acceptance: float = 0.5,
    adapt_gain: float = 1.0,
    adapt_decay: float = 0.6,
    com_free: bool = False,
    anneal_steps: int = 0,
    anneal_t0: float = 1.0,
    proposal: str = "rw",
    generator: torch.Generator | None = None,
) -> MCMCResult:
    """Metropolis(-Hastings) on ``exp(-u)`` for all chains at once.

    ``proposal="rw"`` is random-walk Metropolis, ``y = x + s * xi``. ``proposal="mala"`` is the
    Metropolis-adjusted Langevin algorithm, ``y = x - (s^2 / 2) grad u(x) + s * xi`` with the
    Hastings correction for the asymmetric proposal; it costs one gradient per step but its
    step size shrinks like ``dim^(-1/6)`` instead of ``dim^(-1/2)``, which pays off for LJ55
    (use a target acceptance near 0.57 for it).

    Args:
        energy: reduced energy ``(B, n, d) -> (B,)``.
        x0: ``(n_chains, n, d)`` initial states (CoM-free if ``com_free``).
        n_steps: steps per chain after burn-in (before thinning); ``n_steps // thin`` are kept.
        burn_in: steps per chain discarded; step sizes adapt only here.
        thin: keep every ``thin``-th post-burn-in state.
        step_size: initial proposal standard deviation per coordinate (scalar or ``(n_chains,)``).
        target_acceptance: Robbins-Monro target of the adaptation.
        adapt_gain, adapt_decay: gain ``adapt_gain / (t + 10) ** adapt_decay`` of the update
            ``log s += gain * (accepted - target)`` at burn-in step ``t`` (decay in (0.5, 1]
            makes it a Robbins-Monro sequence).
        com_free: project proposals onto the CoM-free subspace.
        anneal_steps: the first ``anneal_steps`` burn-in steps sample ``exp(-u / T_t)`` with
            ``T_t`` decaying geometrically from ``anneal_t0`` to 1 (simulated annealing); must be
            ``<= burn_in``.
        anneal_t0: initial annealing temperature (reduced, ``>= 1``).
        proposal: ``"rw"`` or ``"mala"``.
        generator: torch generator (on ``x0``'s device) for reproducibility.

    Returns:
        :class:`MCMCResult`.
    """
    _check_chain_settings(x0, n_steps, burn_in, thin, anneal_steps, target_acceptance, proposal)
    t_start = time.perf_counter()
    x = x0.detach().to(torch.float64).clone()
    if com_free:
        x = remove_mean(x)
    n_chains = x.shape[0]
    dev = x.device
    log_s = torch.log(torch.as_tensor(step_size, dtype=torch.float64, device=dev)).expand(n_chains).clone()
    mala = proposal == "mala"
    if mala:
        u, g = _energy_and_grad(energy, x, com_free)
    else:
        u = _safe_energy(energy, x)
    if not torch.all(torch.isfinite(u)):
        bad = int((~torch.isfinite(u)).sum())
        raise ValueError(f"{bad} of {n_chains} initial states have non-finite energy")

    n_kept = n_steps // thin
    samples = torch.empty((n_chains, n_kept, *x.shape[1:]), dtype=torch.float64, device=dev)
    energies = torch.empty((n_chains, n_kept), dtype=torch.float64, device=dev)
    burn_trace = []
    acc_burn = torch.zeros(n_chains, dtype=torch.float64, device=dev)
    acc_prod = torch.zeros(n_chains, dtype=torch.float64, device=dev)

    for t in range(burn_in + n_steps):
        burning = t < burn_in
        if burning and t < anneal_steps:
            beta = anneal_t0 ** (-(1.0 - t / anneal_steps))
        else:
            beta = 1.0
        noise = torch.randn(x.shape, dtype=torch.float64, device=dev, generator=generator)
        if com_free:
            noise = remove_mean(noise)
        h = torch.exp(log_s)[:, None, None]
        y, u_y, g_y, log_hastings = _propose(energy, x, g if mala else None, h, beta, noise, com_free)
        log_r = torch.rand(n_chains, dtype=torch.float64, device=dev, generator=generator).log()
        log_alpha = -beta * (u_y - u) + log_hastings
        accept = log_r < torch.nan_to_num(log_alpha, nan=-math.inf)
        x = torch.where(accept[:, None, None], y, x)
        u = torch.where(accept, u_y, u)
        if mala:
            g = torch.where(accept[:, None, None], g_y, g)
        a = accept.to(torch.float64)
        if burning:
            acc_burn += a
            gain = adapt_gain / (t + 10.0) ** adapt_decay
            log_s = log_s + gain * (a - target_acceptance)
            if t % thin == 0:
                burn_trace.append(u.clone())
        else:
            acc_prod += a
            k = t - burn_in + 1
            if k % thin == 0 and (k // thin) <= n_kept:
                samples[:, k // thin - 1] = x
                energies[:, k // thin - 1] = u
    trace = torch.stack(burn_trace, dim=1) if burn_trace else torch.empty((n_chains, 0), dtype=torch.float64)
    return MCMCResult(
        samples=samples,
        energies=energies,
        acceptance=acc_prod / max(n_steps, 1),
        burn_in_acceptance=acc_burn / max(burn_in, 1),
        step_size=torch.exp(log_s),
        burn_in_energy=trace,
        wall_time_s=time.perf_counter() - t_start,
        n_energy_evals=burn_in + n_steps + 1,
        proposal=proposal,
    )


def random_nonoverlapping(
    n_chains: int,
    n_particles: int,
    spatial_dim: int,
    *,
    radius: float,
    min_dist: float,
    generator: torch.Generator | None = None,
    max_tries: int = 10_000,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random sequential placement of particles uniformly in a ball, no pair closer than ``min_dist``.

    Returns:
        ``(n_chains, n_particles, spatial_dim)``, CoM removed.

    Raises:
        RuntimeError: if a particle cannot be placed in ``max_tries`` attempts (ball too small).
    """
    x = torch.zeros((n_chains, n_particles, spatial_dim), dtype=dtype, device=device)
    for i in range(n_particles):
        todo = torch.ones(n_chains, dtype=torch.bool, device=device)
        for _ in range(max_tries):
            m = int(todo.sum())
            direction = torch.randn((m, spatial_dim), dtype=dtype, device=device, generator=generator)
            direction = direction / direction.norm(dim=-1, keepdim=True)
            r = radius * torch.rand((m, 1), dtype=dtype, device=device, generator=generator) ** (1.0 / spatial_dim)
            cand = direction * r
            if i > 0:
                dist = (x[todo, :i] - cand[:, None]).norm(dim=-1).min(dim=-1).values
                ok = dist >= min_dist
            else:
                ok = torch.ones(m, dtype=torch.bool, device=device)
            idx = torch.nonzero(todo).squeeze(-1)[ok]
            x[idx, i] = cand[ok]
            todo[idx] = False
            if not bool(todo.any()):
                break
        else:
            raise RuntimeError(
                f"could not place particle {i} of {n_particles} at min_dist={min_dist} in a ball of "
                f"radius {radius} after {max_tries} tries; increase init_radius"
            )
    return remove_mean(x)


def minimise(
    energy: EnergyFn,
    x: torch.Tensor,
    *,
    n_iter: int = 500,
    max_disp: float = 0.1,
    com_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chain steepest descent with backtracking; robust to the huge forces of overlaps.

    Each step moves the particle with the largest force by ``step`` (others proportionally);
    a chain's step grows by 1.2 after an energy decrease and halves otherwise, so stiff starts
    neither explode nor stall.

    Args:
        energy: ``(B, n, d) -> (B,)`` differentiable.
        x: ``(B, n, d)`` starting points.
        n_iter: iterations (each one energy + gradient evaluation).
        max_disp: initial (and maximum) largest per-particle displacement per step.

    Returns:
        ``(x_min, u_min)``.
    """
    x = x.detach().to(torch.float64).clone()
    step = torch.full((x.shape[0],), max_disp, dtype=torch.float64, device=x.device)
    xg = x.clone().requires_grad_(True)
    u_all = energy(xg)
    (g,) = torch.autograd.grad(u_all.sum(), xg)
    u = torch.nan_to_num(u_all.detach().to(torch.float64), nan=math.inf)
    for _ in range(n_iter):
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if com_free:
            g = remove_mean(g)
        gmax = g.norm(dim=-1).amax(dim=-1).clamp_min(1e-300)
        y = (x - (step / gmax)[:, None, None] * g).detach().requires_grad_(True)
        u_y_all = energy(y)
        (g_y,) = torch.autograd.grad(u_y_all.sum(), y)
        u_y = torch.nan_to_num(u_y_all.detach().to(torch.float64), nan=math.inf)
        better = u_y < u
        x = torch.where(better[:, None, None], y.detach(), x)
        g = torch.where(better[:, None, None], g_y, g)
        u = torch.where(better, u_y, u)
        step = torch.where(better, (step * 1.2).clamp_max(max_disp), step * 0.5)
        if bool((step < 1e-10).all()):
            break
    return x, u
