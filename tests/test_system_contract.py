"""One contract for every registered system: finite energies and forces at configurations of its
own kind (minimised particle clusters from its reference sampler's start, the shipped alanine
dipeptide structure, exact draws of the toy targets); the symmetries a CoM-free system has by
construction (energy invariant under rotations, reflections, translations and permutations of
equal-type particles); every declared observable callable and meaningful, every undeclared one
refused."""

from __future__ import annotations

import pytest
import torch

from eqbg.data.mcmc import minimise, random_nonoverlapping
from eqbg.data.settings import system_defaults
from eqbg.systems import KNOWN_SYSTEMS, get_system
from eqbg.systems.observables import OBSERVABLES

def _configurations(system, n: int = 4) -> torch.Tensor:
    """``(n, particles, d)`` float64 configurations where the system's density lives."""
    g = torch.Generator().manual_seed(0)
    if system.reference_sampler == "exact":
        return system.sample(n, generator=g).double()
    if system.reference_sampler == "md":  # the shipped structure, slightly perturbed
        base = system.positions - system.positions.mean(dim=0)
        return base + 0.002 * torch.randn(n, *base.shape, generator=g, dtype=torch.float64)
    d = system_defaults(system.name)
    x = random_nonoverlapping(n, system.n_particles, system.spatial_dim, radius=d["init_radius"],
                              min_dist=d["init_min_dist"], generator=g).double()
    return minimise(system.energy, x, n_iter=200, com_free=system.com_free)[0]


@pytest.fixture(scope="module", params=KNOWN_SYSTEMS)
def case(request):
    system = get_system(request.param, n_workers=1) if request.param == "aldp" else get_system(request.param)
    return system, _configurations(system)


def test_energy_and_forces_are_finite_where_the_density_lives(case):
    system, x = case
    x = x.clone().requires_grad_(True)
    u = system.energy(x)
    (force,) = torch.autograd.grad(-u.sum(), x)
    assert u.shape == (len(x),) and torch.isfinite(u).all() and torch.isfinite(force).all()
    if system.com_free:  # no net force on the centre of mass
        assert float(force.sum(dim=1).abs().max()) < 1e-6 * (1 + float(force.abs().max()))


def _random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_a_com_free_energy_is_invariant_under_rigid_motions_and_equal_type_permutations(case):
    system, x = case
    if not system.com_free:
        pytest.skip(f"{system.name} is not a particle system on the CoM-free subspace")
    g = torch.Generator().manual_seed(1)
    u = system.energy(x)
    q = _random_orthogonal(system.spatial_dim, g)  # proper or improper: the energy is E(d)-invariant
    shift = torch.randn(1, 1, system.spatial_dim, generator=g, dtype=torch.float64)
    types = torch.as_tensor(system.atom_types)
    perm = torch.arange(system.n_particles)
    for t in torch.unique(types):
        idx = torch.nonzero(types == t).flatten()
        perm[idx] = idx[torch.randperm(idx.numel(), generator=g)]
    for moved in (x @ q.T, x + shift, x[:, perm]):
        torch.testing.assert_close(system.energy(moved), u, rtol=1e-6, atol=1e-6)
    assert not torch.equal(perm, torch.arange(system.n_particles))  # a real permutation was tried


def test_declared_observables_answer_and_the_others_are_refused(case):
    system, x = case
    calls = {
        "dihedrals": lambda: system.dihedrals(x),
        "chirality": lambda: system.chirality(x),
        "modes": lambda: system.mode_index(x),
        "test_function": lambda: system.quadratic_test_function()[0](x),
    }
    assert set(calls) == set(OBSERVABLES)
    for name, call in calls.items():
        assert (name in system.observables) == isinstance(system, OBSERVABLES[name])
        if name not in system.observables:  # a system offers an observable by implementing it
            with pytest.raises(AttributeError):
                call()
            continue
        out = call()
        values = torch.as_tensor(out[0] if isinstance(out, tuple) else out)
        assert values.shape[0] == len(x) and torch.isfinite(torch.as_tensor(values, dtype=torch.float64)).all()
    if "chirality" in system.observables:  # the shipped structure is L-alanine
        assert (torch.as_tensor(system.chirality(x)) > 0).all()
    if "modes" in system.observables:  # exact draws lie in modes
        assert (system.mode_index(x) >= 0).float().mean() > 0.5
