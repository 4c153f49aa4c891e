"""Tests of eqbg.systems: energies with hand-computed values, symmetries, gradients, OpenMM batch
evaluation, L-chirality of the shipped alanine dipeptide, exact samplers and normalisers."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from eqbg.systems import (
    KNOWN_SYSTEMS,
    REFERENCE_SAMPLERS,
    SPEC_FIELDS,
    LennardJones,
    MultiDoubleWell,
    SystemSpec,
    get_system,
    name_pattern,
    system_spec,
    systems_with_sampler,
)
from eqbg.systems.particles import double_well_pair_minimum

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def random_orthogonal(d: int, gen: torch.Generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def permute_within_types(
    x: torch.Tensor, types: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    perm = torch.arange(len(types))
    for t in types.unique():
        idx = (types == t).nonzero().flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=gen)]
    return x[:, perm]


@pytest.fixture(scope="module")
def aldp():
    from eqbg.systems.aldp import AlanineDipeptide, shutdown_pools

    system = AlanineDipeptide(n_workers=2, pool_threshold=64)
    yield system
    shutdown_pools()


def aldp_batch(aldp, n: int, noise: float = 0.003, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return aldp.positions[None] + noise * torch.randn(
        (n, 22, 3), generator=gen, dtype=torch.float64
    )


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def test_unknown_system_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_system("lj31")
    for name in KNOWN_SYSTEMS:
        assert name in str(err.value)


def test_bad_option_and_bad_shape_name_the_problem():
    with pytest.raises(ValueError, match="pair_convention"):
        get_system("lj13", pair_convention="half")
    with pytest.raises(ValueError, match="dw4"):
        get_system("dw4", pair_convention="ordered")
    with pytest.raises(ValueError, match=r"\(batch, 13, 3\)"):
        get_system("lj13").energy(torch.zeros(5, 39))


@pytest.mark.parametrize(
    ("name", "n", "d", "dim", "com_free"),
    [
        ("dw4", 4, 2, 6, True),
        ("lj13", 13, 3, 36, True),
        ("lj55", 55, 3, 162, True),
        ("gmm40", 1, 2, 2, False),
        ("manywell32", 16, 2, 32, False),
    ],
)
def test_registry_attributes(name, n, d, dim, com_free):
    s = get_system(name)
    assert (s.name, s.n_particles, s.spatial_dim, s.dim, s.com_free) == (name, n, d, dim, com_free)
    assert s.atom_types.dtype == torch.long and s.atom_types.shape == (n,)
    assert s.temperature == 1.0 and isinstance(s.reference, dict)
    x = torch.randn(3, n, d, dtype=torch.float32) * 2
    u = s.energy(x)
    assert u.shape == (3,) and u.dtype == torch.float32


def test_aldp_attributes(aldp):
    assert (aldp.name, aldp.n_particles, aldp.spatial_dim, aldp.dim) == ("aldp", 22, 3, 63)
    assert aldp.temperature == 300.0 and aldp.length_unit == "nm" and aldp.com_free
    assert aldp.positions.shape == (22, 3) and aldp.positions.dtype == torch.float64
    assert aldp.system.getNumParticles() == 22 and aldp.topology.getNumAtoms() == 22
    assert aldp.mdtraj_topology().n_atoms == 22
    # methyl hydrogens share a type, everything else is distinct: 22 - 3*2 = 16 types
    types = aldp.atom_types.tolist()
    assert aldp.n_types == 16
    for group in ((0, 2, 3), (11, 12, 13), (19, 20, 21)):
        assert len({types[i] for i in group}) == 1
        atoms = list(aldp.topology.atoms())
        assert all(atoms[i].element.symbol == "H" for i in group)
    assert len(set(types)) == 16
    # kT at 300 K in kJ/mol
    assert aldp.kt_kj_per_mol == pytest.approx(8.314462618e-3 * 300.0, rel=1e-9)
    u = aldp.energy(aldp.positions[None].float())
    assert u.dtype == torch.float32 and torch.isfinite(u).all()


# --------------------------------------------------------------------------------------------
# Lennard-Jones
# --------------------------------------------------------------------------------------------


def two_particles(r: float) -> torch.Tensor:
    return torch.tensor([[[0.0, 0.0, 0.0], [r, 0.0, 0.0]]], dtype=torch.float64)


@pytest.mark.parametrize(("convention", "factor"), [("unique", 1.0), ("ordered", 2.0)])
def test_lj_pair_values(convention, factor):
    lj = LennardJones(n_particles=2, pair_convention=convention)
    # at r = r_m: pair term -1; harmonic: both particles r/2 from the CoM -> 1/2 * 2 * (1/2)^2
    assert lj.energy(two_particles(1.0)).item() == pytest.approx(-factor + 0.25, abs=1e-12)
    r0 = 2.0 ** (-1.0 / 6.0)
    assert lj.lj_energy(two_particles(r0)).item() == pytest.approx(0.0, abs=1e-12)
    assert lj.energy(two_particles(r0)).item() == pytest.approx(0.25 * r0**2, abs=1e-12)


@pytest.mark.parametrize(
    ("convention", "expected"), [("unique", -3.0 + 0.5), ("ordered", -6.0 + 0.5)]
)
def test_lj_equilateral_triangle(convention, expected):
    # side 1: three pairs at r_m; each vertex is 1/sqrt(3) from the centroid -> harmonic 1/2
    x = torch.tensor(
        [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0]]], dtype=torch.float64
    )
    lj = LennardJones(n_particles=3, pair_convention=convention)
    assert lj.energy(x).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("convention", "factor"), [("unique", 1.0), ("ordered", 2.0)])
def test_lj13_icosahedral_minimum(convention, factor):
    # eps[(1/r)^12 - 2(1/r)^6] is standard LJ with sigma = 2^(-1/6); the LJ13 global minimum
    # (Mackay icosahedron, Wales & Doye 1997) is -44.326801 eps in unique-pair units
    from scipy.optimize import minimize

    phi = (1 + math.sqrt(5)) / 2
    verts = [(0, a, b * phi) for a in (-1, 1) for b in (-1, 1)]
    verts += [(a, b * phi, 0) for a in (-1, 1) for b in (-1, 1)]
    verts += [(a * phi, 0, b) for a in (-1, 1) for b in (-1, 1)]
    x0 = np.array([(0.0, 0.0, 0.0)] + verts) / math.sqrt(1 + phi**2)  # vertices at radius 1
    lj = LennardJones(n_particles=13, pair_convention=convention, harmonic=0.0)

    def fun(flat):
        x = torch.tensor(flat.reshape(1, 13, 3), requires_grad=True)
        u = lj.energy(x)
        (g,) = torch.autograd.grad(u.sum(), x)
        return u.item(), g.numpy().ravel()

    res = minimize(
        fun, x0.ravel(), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 2000}
    )
    assert res.fun == pytest.approx(-44.326801 * factor, abs=1e-5)


def test_lj_default_convention_is_ordered():
    x = torch.randn(4, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    ordered, unique = get_system("lj13"), get_system("lj13", pair_convention="unique")
    assert ordered.pair_convention == "ordered"
    torch.testing.assert_close(ordered.lj_energy(x), 2 * unique.lj_energy(x))
    torch.testing.assert_close(ordered.harmonic_energy(x), unique.harmonic_energy(x))


def test_lj_soft_core_finite_at_coincidence_and_unchanged_outside():
    lj = get_system("lj13")
    x = torch.randn(2, 13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    x[:, 1] = x[:, 0]  # two coincident particles
    x.requires_grad_(True)
    u = lj.energy(x)
    (g,) = torch.autograd.grad(u.sum(), x)
    assert torch.isfinite(u).all() and torch.isfinite(g).all()
    # pair term identical to plain LJ for r >= r_c, and the core stays repulsive below r_c
    plain = LennardJones(n_particles=2, r_c=0.0)
    r = torch.linspace(lj.r_c, 3.0, 500, dtype=torch.float64)
    torch.testing.assert_close(lj.pair_energy(r**2), plain.pair_energy(r**2), rtol=1e-14, atol=0)
    s = torch.linspace(0.0, lj.r_c**2, 200, dtype=torch.float64)
    core = lj.pair_energy(s)
    assert (core.diff() < 0).all() and torch.isfinite(core).all()

    # C2 at r_c: value, slope and curvature in s agree from both sides
    def derivs(s0: float) -> torch.Tensor:
        s_ = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
        f = lj.pair_energy(s_)
        (d1,) = torch.autograd.grad(f, s_, create_graph=True)
        (d2,) = torch.autograd.grad(d1, s_)
        return torch.stack([f.detach(), d1.detach(), d2])

    sc = lj.r_c**2
    torch.testing.assert_close(derivs(sc - 1e-9), derivs(sc + 1e-9), rtol=1e-5, atol=0)


def test_lj_soft_core_parameter_is_validated():
    with pytest.raises(ValueError, match="r_c"):
        LennardJones(r_c=0.95)


# --------------------------------------------------------------------------------------------
# double well
# --------------------------------------------------------------------------------------------


def test_dw_pair_minima():
    # s = r - 4, f(s) = 0.9 s^4 - 4 s^2, f'(s) = 3.6 s^3 - 8 s = 0  ->  s^2 = 20/9, f = -40/9
    r_star, e_star = double_well_pair_minimum()
    assert r_star == pytest.approx(4 + math.sqrt(20 / 9)) and e_star == pytest.approx(-40 / 9)
    dw = MultiDoubleWell(n_particles=2, spatial_dim=2)
    for r in (4 + math.sqrt(20 / 9), 4 - math.sqrt(20 / 9)):
        x = torch.tensor([[[0.0, 0.0], [r, 0.0]]], dtype=torch.float64, requires_grad=True)
        u = dw.energy(x)
        (g,) = torch.autograd.grad(u.sum(), x)
        assert u.item() == pytest.approx(-40 / 9, abs=1e-12)
        assert g.abs().max().item() < 1e-12
    # the barrier at r = 4 has energy 0 and is a local maximum along r
    barrier = dw.energy(torch.tensor([[[0.0, 0.0], [4.0, 0.0]]], dtype=torch.float64)).item()
    near = dw.energy(torch.tensor([[[0.0, 0.0], [4.1, 0.0]]], dtype=torch.float64)).item()
    assert barrier == 0.0 and near < barrier


def test_dw4_sum_over_unique_pairs_and_coincident_gradient():
    # square of side r*: 4 edges at the minimum, 2 diagonals at sqrt(2) r*
    r_star, e_star = double_well_pair_minimum()
    sq = torch.tensor([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=torch.float64) * r_star
    s = math.sqrt(2) * r_star - 4
    assert get_system("dw4").energy(sq).item() == pytest.approx(
        4 * e_star + 2 * (0.9 * s**4 - 4 * s**2), abs=1e-12
    )
    x = torch.zeros(1, 4, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(get_system("dw4").energy(x).sum(), x)
    assert torch.isfinite(g).all()


# --------------------------------------------------------------------------------------------
# symmetries and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dw4", "lj13", "lj55"])
@pytest.mark.parametrize("reflect", [False, True])
def test_particle_energy_invariance(name, reflect):
    s = get_system(name)
    gen = torch.Generator().manual_seed(3)
    # spread-out configurations so that LJ energies are moderate
    x = torch.randn(8, s.n_particles, s.spatial_dim, generator=gen, dtype=torch.float64)
    x = x * (1.5 if name != "dw4" else 3.0)
    q = random_orthogonal(s.spatial_dim, gen, reflect)
    shift = torch.randn(1, 1, s.spatial_dim, generator=gen, dtype=torch.float64) * 5
    y = permute_within_types(x @ q.T + shift, s.atom_types, gen)
    torch.testing.assert_close(s.energy(y), s.energy(x), rtol=1e-10, atol=1e-9)


def test_manywell_invariant_under_well_permutation():
    s = get_system("manywell32")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 16, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(s.energy(permute_within_types(x, s.atom_types, gen)), s.energy(x))


@pytest.mark.parametrize("name", ["dw4", "lj13", "gmm40", "manywell32"])
def test_autograd_matches_finite_differences(name):
    s = get_system(name)
    gen = torch.Generator().manual_seed(5)
    scale = {"dw4": 3.0, "lj13": 1.5, "gmm40": 20.0, "manywell32": 1.5}[name]
    x = torch.randn(2, s.n_particles, s.spatial_dim, generator=gen, dtype=torch.float64) * scale
    assert torch.autograd.gradcheck(
        s.energy, (x.requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("reflect", [False, True])
def test_aldp_invariance(aldp, reflect):
    gen = torch.Generator().manual_seed(6)
    x = aldp_batch(aldp, 8)
    q = random_orthogonal(3, gen, reflect)
    shift = torch.randn(1, 1, 3, generator=gen, dtype=torch.float64)
    y = permute_within_types(x @ q.T + shift, aldp.atom_types, gen)
    assert not torch.equal(y, x)
    torch.testing.assert_close(aldp.energy(y), aldp.energy(x), rtol=1e-9, atol=1e-8)


def test_aldp_energy_not_invariant_under_other_permutations(aldp):
    # swapping the two (distinct-type) oxygens must change the energy: atom types are not too coarse
    x = aldp_batch(aldp, 1)
    y = x.clone()
    y[:, [5, 15]] = x[:, [15, 5]]
    assert (aldp.energy(y) - aldp.energy(x)).abs().item() > 1.0


def test_aldp_gradient_matches_finite_differences(aldp):
    x = aldp_batch(aldp, 3, noise=0.005, seed=7).requires_grad_(True)
    u = aldp.energy(x)
    (g,) = torch.autograd.grad(u.sum(), x)
    gen = torch.Generator().manual_seed(8)
    h = 1e-6  # nm
    for _ in range(4):
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        v = v / v.flatten(1).norm(dim=1)[:, None, None]
        with torch.no_grad():
            fd = (aldp.energy(x + h * v) - aldp.energy(x - h * v)) / (2 * h)
        torch.testing.assert_close((g * v).sum((1, 2)), fd, rtol=1e-5, atol=1e-4)
    # the chain rule through the custom Function: d(3u)/dx = 3 g
    (g3,) = torch.autograd.grad((3.0 * aldp.energy(x)).sum(), x)
    torch.testing.assert_close(g3, 3.0 * g)


def test_aldp_pool_equals_single_context(aldp):
    from eqbg.systems.aldp import POOLS, shutdown_pools

    shutdown_pools()
    x = aldp_batch(aldp, 96, seed=9)
    pool_e, pool_f = aldp.energy_and_forces_kj(x.numpy())  # 96 >= pool_threshold: pool path
    assert len(POOLS) == 1  # the pool was started by this call
    # chunks below pool_threshold run on the single in-process Context
    parts = [aldp.energy_and_forces_kj(c) for c in np.array_split(x.numpy(), 4)]
    single_e = np.concatenate([p[0] for p in parts])
    single_f = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(pool_e, single_e, rtol=1e-6)
    np.testing.assert_allclose(pool_f, single_f, rtol=1e-6, atol=1e-6)
    # the torch path through the pool agrees too
    torch.testing.assert_close(
        aldp.energy(x), torch.from_numpy(single_e / aldp.kt_kj_per_mol), rtol=1e-6, atol=0
    )
    # and a bare OpenMM Context, built here from the force field files, one configuration at a time
    import openmm
    from openmm import app, unit

    system = app.ForceField("amber99sbildn.xml", "amber99_obc.xml").createSystem(
        aldp.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    bare = []
    for conf in x.numpy()[:: 12]:
        context.setPositions(conf.astype(np.float64) * unit.nanometer)
        bare.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    np.testing.assert_allclose(pool_e[:: 12], bare, rtol=1e-9, atol=1e-8)


def test_aldp_pickles_without_its_context(aldp):
    import pickle

    x = aldp_batch(aldp, 2, seed=14)
    copy = pickle.loads(pickle.dumps(aldp))
    torch.testing.assert_close(copy.energy(x), aldp.energy(x), rtol=1e-12, atol=0)


def test_aldp_wild_inputs_give_numbers(aldp):
    x = aldp_batch(aldp, 4, seed=10)
    x[0, 3] = float("nan")
    x[1] = 0.0  # all atoms coincide
    x[2, 5] = x[2, 6]  # two bonded-neighbour atoms coincide
    x[3] *= 1e6  # absurdly large
    x.requires_grad_(True)
    u = aldp.energy(x)
    (g,) = torch.autograd.grad(u[torch.isfinite(u)].sum(), x)
    assert u.shape == (4,) and not torch.isnan(u).any()
    assert u[0].item() == math.inf
    assert torch.isfinite(g).all()


# --------------------------------------------------------------------------------------------
# alanine dipeptide structure: L chirality
# --------------------------------------------------------------------------------------------


def test_shipped_aldp_is_l_alanine(aldp):
    from eqbg.systems.aldp import (
        CA,
        CB,
        HA,
        PHI_ATOMS,
        C,
        N,
        chirality_volume,
        dihedral,
        improper_zeta,
        internal_coordinate_structure,
    )

    x = aldp.positions.numpy()
    names = [(a.residue.name, a.name) for a in aldp.topology.atoms()]
    assert names[CA] == ("ALA", "CA") and names[CB] == ("ALA", "CB") and names[HA] == ("ALA", "HA")
    assert names[N] == ("ALA", "N") and names[C] == ("ALA", "C")

    # (1) PROCHECK's virtual torsion zeta = CA-N-C-CB is about +34 deg for L residues
    zeta = float(improper_zeta(x))
    assert 20.0 < zeta < 50.0, zeta
    # (2) "CORN" rule: looking from HA towards CA, CO -> R -> N runs clockwise; for a viewer
    # looking along v, a -> b is clockwise iff (a x b) . v > 0
    v = x[CA] - x[HA]
    proj = {k: (x[k] - x[CA]) - np.dot(x[k] - x[CA], v) / np.dot(v, v) * v for k in (C, CB, N)}
    for a, b in ((C, CB), (CB, N), (N, C)):
        assert np.dot(np.cross(proj[a], proj[b]), v) > 0
    # (3) the signed volume used by the builder agrees
    assert chirality_volume(x) > 0
    # (4) mdtraj's phi of the minimised beta/C7eq structure is negative, and the Karplus
    # geometry of L residues holds: H-N-CA-HA = phi - 60 deg
    import mdtraj

    traj = mdtraj.Trajectory(x[None].astype(np.float32), aldp.mdtraj_topology())
    idx, phi = mdtraj.compute_phi(traj)
    assert tuple(idx[0]) == PHI_ATOMS
    phi_deg = math.degrees(float(phi[0, 0]))
    assert -120.0 < phi_deg < -50.0
    h_n_ca_ha = float(dihedral(x, 7, N, CA, HA))
    assert abs((h_n_ca_ha - (phi_deg - 60.0) + 180.0) % 360.0 - 180.0) < 15.0
    # the measures really discriminate: the mirror image (D) flips both signs
    mirror = x * np.array([1.0, 1.0, -1.0])
    assert improper_zeta(mirror) < -20.0 and chirality_volume(mirror) < 0
    # and the builder itself yields L for other backbone angles too
    for phi0, psi0 in ((-60.0, -45.0), (60.0, 45.0)):
        assert chirality_volume(internal_coordinate_structure(phi0, psi0)) > 0


def test_mapping_d_to_l_mirrors_only_d_keeps_openmm_energies_and_flips_the_improper(aldp):
    """A batch of L configurations and their mirror images: the map leaves L alone, turns every D
    into L (improper and chirality volume positive again), and OpenMM's energies of the mapped
    configurations equal those of the originals (a reflection is a symmetry of the force field,
    which is why mapping before reweighting is exact)."""
    from eqbg.systems.aldp import chirality_volume, improper_zeta, map_d_to_l

    x = aldp_batch(aldp, 6).numpy()
    x = x - x.mean(axis=1, keepdims=True)  # CoM-free, as data and flow samples are
    mirror = x * np.array([1.0, -1.0, 1.0])  # another mirror plane than the map's own
    both = np.concatenate([x, mirror])
    assert (chirality_volume(both) < 0).sum() == 6 and (improper_zeta(mirror) < 0).all()
    mapped, was_d = map_d_to_l(both)
    assert was_d.tolist() == [False] * 6 + [True] * 6
    np.testing.assert_array_equal(mapped[:6], x)
    assert (chirality_volume(mapped) > 0).all() and (improper_zeta(mapped) > 0).all()
    np.testing.assert_allclose(mapped.mean(axis=1), 0.0, atol=1e-12)  # still CoM-free
    u = aldp.energy(torch.as_tensor(both)).numpy()
    u_mapped = aldp.energy(torch.as_tensor(mapped)).numpy()
    np.testing.assert_allclose(u_mapped, u, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(u[6:], u[:6], rtol=1e-6, atol=1e-6)  # D has L's energy
    # the mapped D configurations have the dihedrals of a mirror of L: phi and psi of the mirrored
    # images come back to the originals' up to the second mirror (an improper rotation of L)
    phi_l, psi_l = aldp.dihedrals(x)
    phi_m, psi_m = aldp.dihedrals(mapped[6:])
    np.testing.assert_allclose(np.cos(phi_m), np.cos(phi_l), atol=1e-6)
    np.testing.assert_allclose(np.sin(phi_m), np.sin(phi_l), atol=1e-6)


def test_shipped_aldp_is_a_minimum(aldp):
    x = aldp.positions[None].clone().requires_grad_(True)
    u = aldp.energy(x)
    (g,) = torch.autograd.grad(u.sum(), x)
    # PDB rounding (1e-4 nm) leaves small residual forces; a stretched structure has far more
    assert g.norm().item() < 50.0
    assert -60.0 < u.item() < -45.0  # about -133 kJ/mol at 300 K
    assert aldp.energy(aldp_batch(aldp, 16, noise=0.01)).min().item() > u.item()


# --------------------------------------------------------------------------------------------
# exact systems
# --------------------------------------------------------------------------------------------


def test_manywell_log_z_against_quad():
    s = get_system("manywell32")
    z1, err = integrate.quad(
        lambda t: math.exp(-(t**4 - 6 * t**2 - 0.5 * t)),
        -np.inf,
        np.inf,
        epsabs=0,
        epsrel=1e-13,
        limit=200,
    )
    assert s.log_z1 == pytest.approx(math.log(z1), abs=1e-10)
    assert math.exp(s.log_z1) == pytest.approx(11784.50927, rel=1e-9)  # fab-torch's constant
    assert s.log_z == pytest.approx(16 * (math.log(z1) + 0.5 * math.log(2 * math.pi)), abs=1e-8)
    # log_prob of one 2D well integrates to 1
    z2d, _ = integrate.dblquad(
        lambda x2, x1: math.exp(-(x1**4 - 6 * x1**2 - 0.5 * x1 + 0.5 * x2**2) - s.log_z_2d),
        -8,
        8,
        -12,
        12,
        epsabs=1e-12,
    )
    assert z2d == pytest.approx(1.0, abs=1e-8)
    # the full 32D log_prob is the sum of 16 such terms
    x = torch.randn(5, 16, 2, dtype=torch.float64)
    per_well = -(s.u1(x[..., 0]) + 0.5 * x[..., 1] ** 2) - s.log_z_2d
    torch.testing.assert_close(s.log_prob(x), per_well.sum(-1))


def test_manywell_envelope_bounds_density():
    s = get_system("manywell32")
    t = (
        torch.rand(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
        * 2
        * s._L
        - s._L
    )
    cell = ((t - s._env_lo[0]) / s._h_env).floor().long().clamp(max=len(s._env_lo) - 1)
    assert (s._env_umin[cell] <= s.u1(t) + 1e-12).all()
    assert s.acceptance_rate > 0.9


def test_manywell_sampler_matches_exact_marginals():
    s = get_system("manywell32")
    x = s.sample(20_000, generator=torch.Generator().manual_seed(12))  # 320k double-well draws
    assert x.shape == (20_000, 16, 2) and x.dtype == torch.float64
    x1 = x[..., 0].flatten().numpy()
    edges = np.concatenate([[-np.inf], np.linspace(-2.6, 2.8, 55), [np.inf]])
    counts = np.histogram(x1, edges)[0]
    dens = lambda t: math.exp(-(t**4 - 6 * t**2 - 0.5 * t) - s.log_z1)  # noqa: E731
    probs = np.array(
        [integrate.quad(dens, a, b, epsabs=1e-14)[0] for a, b in zip(edges[:-1], edges[1:])]
    )
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    expected = probs * len(x1)
    keep = expected > 5
    chi2 = (((counts - expected) ** 2 / expected)[keep]).sum()
    assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1), chi2
    # the deep well (x1 > 0) holds exp(...)-predicted mass; and x2 is standard normal
    p_right = integrate.quad(dens, 0, np.inf)[0]
    assert (x1 > 0).mean() == pytest.approx(
        p_right, abs=4 * math.sqrt(p_right * (1 - p_right) / len(x1))
    )
    x2 = x[..., 1].flatten()
    assert abs(x2.mean().item()) < 4 / math.sqrt(len(x2))
    assert x2.var().item() == pytest.approx(1.0, abs=4 * math.sqrt(2 / len(x2)))


def test_gmm40_means_follow_fab_construction():
    s = get_system("gmm40")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        fab_means = (torch.rand((40, 2)) - 0.5) * 2 * 40.0
    finally:
        torch.random.set_rng_state(state)
    torch.testing.assert_close(s.means, fab_means.double())
    assert s.std == pytest.approx(math.log1p(math.e), rel=1e-12)  # softplus(1)
    assert s.means.abs().max() <= 40.0 and s.log_z == 0.0


def test_gmm40_log_prob_integrates_to_one():
    s = get_system("gmm40")
    # trapezoid/midpoint sums of Gaussians are exact to ~exp(-2 pi^2 std^2 / h^2) ~ 1e-23 here
    h = 0.25
    g = torch.arange(-50.0, 50.0 + h / 2, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 1, 2)
    total = torch.exp(s.log_prob(pts)).sum().item() * h * h
    assert total == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(s.energy(pts[:10]), -s.log_prob(pts[:10]))


def test_gmm40_sampler_moments():
    s = get_system("gmm40")
    n = 200_000
    x = s.sample(n, generator=torch.Generator().manual_seed(13))[:, 0]
    mean, cov = s.mean_and_covariance()
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - mean).abs() < 5 * se_mean).all()
    emp = torch.cov(x.T)
    # var of a sample covariance entry ~ (S_ii S_jj + S_ij^2)/n for near-Gaussian tails; use a
    # generous factor because the mixture is far from Gaussian
    se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert ((emp - cov).abs() < 6 * se_cov).all()
    # every sample is near some mode: within 6 std of its nearest mean
    d = torch.cdist(x, s.means).min(1).values
    assert (d < 6 * s.std).all()


def test_shipped_aldp_is_what_the_builder_makes(aldp):
    from eqbg.systems.aldp import build_minimised_structure

    rebuilt = build_minimised_structure()
    # the PDB stores 1e-3 Angstrom = 1e-4 nm; the minimiser is deterministic on Reference
    assert np.abs(rebuilt - aldp.positions.numpy()).max() < 2e-4


# --------------------------------------------------------------------------------------------
# capabilities: registry specs, reference samplers, observables, options, exact mean energies
# --------------------------------------------------------------------------------------------

SCHEMA_ROOT = Path(__file__).resolve().parents[1]
# constructor arguments the registry fixes per name (they set the shape, hence the name)
STRUCTURAL = {"n_particles", "spatial_dim", "name", "n_wells"}


def test_get_system_refuses_a_system_that_disagrees_with_its_spec(monkeypatch):
    """get_system checks every built system against its spec (so no test per system repeats it):
    a registry entry whose spec is wrong on any one field is refused, naming the field."""
    import dataclasses

    import eqbg.systems as systems

    entry = systems._REGISTRY["dw4"]
    wrong = {"name": "dw5", "n_particles": 5, "spatial_dim": 3, "com_free": False, "length_unit": "nm",
             "reference_sampler": "md", "observables": ("modes",), "second_derivatives": False}
    assert set(wrong) == set(SPEC_FIELDS) - {"dim"}  # dim follows from the others
    for field, value in wrong.items():
        spec = dataclasses.replace(entry.spec, **{field: value})
        monkeypatch.setitem(systems._REGISTRY, "dw4", dataclasses.replace(entry, spec=spec))
        with pytest.raises(RuntimeError, match=f"{field}: system="):
            get_system("dw4")
    monkeypatch.setitem(systems._REGISTRY, "dw4", entry)
    assert get_system("dw4").spec_mismatch(entry.spec) == []


@pytest.mark.parametrize("name", KNOWN_SYSTEMS)
def test_spec_options_are_keywords_of_the_system(name):
    spec = system_spec(name)
    system = get_system(name, n_workers=1) if name == "aldp" else get_system(name)
    assert set(spec.options) <= _keyword_options(type(system))


def _keyword_options(cls) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}


def test_spec_options_are_the_constructor_options():
    # every keyword the system classes take is a registry option, except the structural ones
    for name in KNOWN_SYSTEMS:
        spec = system_spec(name)
        if name == "aldp":
            from eqbg.systems.aldp import AlanineDipeptide as cls
        else:
            cls = type(get_system(name))
        assert _keyword_options(cls) - STRUCTURAL == set(spec.options), name


def test_spec_is_read_only_and_rejects_unknown_capabilities():
    spec = system_spec("lj55")
    with pytest.raises(AttributeError):
        spec.dim = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.data_defaults["thin"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.data_defaults["convergence"]["rhat_max"] = 2.0  # type: ignore[index]
    with pytest.raises(ValueError, match="reference_sampler"):
        SystemSpec(name="x", n_particles=2, spatial_dim=3, com_free=True, length_unit="reduced",
                   reference_sampler="hmc")
    with pytest.raises(ValueError, match="observables"):
        SystemSpec(name="x", n_particles=2, spatial_dim=3, com_free=True, length_unit="reduced",
                   reference_sampler="mcmc", observables=("rdf",))
    with pytest.raises(ValueError, match="known systems"):
        system_spec("lj31")


def test_name_patterns_partition_the_registry():
    by_sampler = {s: systems_with_sampler(s) for s in REFERENCE_SAMPLERS}
    assert sorted(n for names in by_sampler.values() for n in names) == sorted(KNOWN_SYSTEMS)
    assert by_sampler["md"] == ("aldp",) and set(by_sampler["exact"]) == {"gmm40", "manywell32"}
    pattern = name_pattern("mcmc", "exact")
    for name in KNOWN_SYSTEMS:
        matches = re.fullmatch(pattern, name) is not None
        assert matches == (system_spec(name).reference_sampler != "md"), name
    assert re.fullmatch(pattern, "lj1") is None and re.fullmatch(name_pattern("md"), "aldp")
    with pytest.raises(ValueError, match="unknown reference sampler"):
        name_pattern("hmc")


def test_schema_system_options_are_each_system_s_own():
    """``systems.<name>.options`` in the generated schema allows exactly the options that
    system's get_system takes (not the union over systems)."""
    from eqbg.config import config_schema

    systems = config_schema()["properties"]["systems"]["properties"]
    for name in KNOWN_SYSTEMS:
        assert set(systems[name]["properties"]["options"]["properties"]) == set(system_spec(name).options)
    assert "r_c" in system_spec("lj13").options and "r_c" not in system_spec("dw4").options


def test_lj_soft_core_option_from_a_validated_config():
    import yaml

    from eqbg.config.check import ConfigError, check_schema
    from eqbg.pipeline import system_options

    config = yaml.safe_load((SCHEMA_ROOT / "config.yaml").read_text())
    config["systems"]["lj13"] = {"options": {"r_c": 0.5, "pair_convention": "unique"}, "data": {}}
    check_schema(config)
    lj = get_system("lj13", **system_options(config, "lj13"))
    assert lj.r_c == 0.5 and lj.pair_convention == "unique"
    # an option another system takes: the schema refuses it at parse time, get_system too
    config["systems"]["dw4"]["options"] = {"r_c": 0.5}
    with pytest.raises(ConfigError, match=r"systems.dw4.options.*'r_c'"):
        check_schema(config)
    with pytest.raises(ValueError, match=r"bad options \['r_c'\] for system 'dw4'"):
        get_system("dw4", r_c=0.5)


def test_observables_are_the_capability_protocols_a_system_implements():
    from eqbg.systems import HasChirality, HasDihedrals, HasModes, HasTestFunction

    lj = get_system("lj13")
    assert lj.observables == () and lj.mean_energy is None
    assert not isinstance(lj, (HasDihedrals, HasChirality, HasModes, HasTestFunction))
    gmm = get_system("gmm40")
    assert isinstance(gmm, HasModes) and isinstance(gmm, HasTestFunction) and not isinstance(gmm, HasDihedrals)
    assert gmm.observables == ("modes", "test_function")

    class Helix(type(lj)):  # a user's system gains the observable by implementing its protocol
        def dihedrals(self, x):
            return np.zeros(len(x)), np.zeros(len(x))

    helix = Helix(n_particles=13, spatial_dim=3, name="helix")
    assert isinstance(helix, HasDihedrals) and helix.observables == ("dihedrals",)


def test_aldp_dihedrals_and_chirality(aldp):
    from eqbg.systems.aldp import PHI_ATOMS, PSI_ATOMS, dihedral

    x = aldp_batch(aldp, 5)
    phi, psi = aldp.dihedrals(x)
    assert phi.shape == psi.shape == (5,) and phi.dtype == np.float64
    xn = x.numpy()
    np.testing.assert_allclose(np.degrees(phi), dihedral(xn, *PHI_ATOMS), atol=1e-3)
    np.testing.assert_allclose(np.degrees(psi), dihedral(xn, *PSI_ATOMS), atol=1e-3)
    assert (phi < 0).all()  # the shipped structure sits in the phi < 0 basin
    chi = aldp.chirality(x)
    assert chi.shape == (5,) and (chi > 0).all()
    assert (aldp.chirality(-x) < 0).all()  # the mirror image is D-alanine
    assert aldp.mean_energy is None and not aldp.second_derivatives


@pytest.mark.parametrize(("name", "n"), [("manywell32", 100_000), ("gmm40", 400_000)])
def test_exact_mean_energy_matches_exact_samples(name, n):
    system = get_system(name)
    x = system.sample(n, generator=torch.Generator().manual_seed(7))
    u = system.energy(x).numpy()
    se = u.std(ddof=1) / math.sqrt(n)
    assert abs(u.mean() - system.mean_energy) < 4 * se, (u.mean(), system.mean_energy, se)
    assert se < 0.03


def test_manywell_mean_energy_by_independent_quadrature():
    # E[u] per well = E[u1] + 1/2, with E[u1] from scipy's quad on the whole line
    s = get_system("manywell32")
    z = integrate.quad(lambda t: math.exp(-s.u1(t)), -np.inf, np.inf)[0]
    m = integrate.quad(lambda t: s.u1(t) * math.exp(-s.u1(t)), -np.inf, np.inf)[0]
    assert s.mean_energy == pytest.approx(16 * (m / z + 0.5), rel=1e-8)
    assert math.log(z) == pytest.approx(s.log_z1, rel=1e-10)


def test_gmm40_mean_energy_is_converged_in_the_grid_step():
    s = get_system("gmm40")
    assert abs(s._entropy(s.std / 8) - s.mean_energy) < 1e-8
    # each mode alone has entropy log(2 pi e std^2); the mixture adds at most log(40)
    single = math.log(2 * math.pi * math.e * s.std**2)
    assert single < s.mean_energy <= single + math.log(40) + 1e-9
