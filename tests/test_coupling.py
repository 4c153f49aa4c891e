"""Couplings and alignment: OT permutations, Kabsch, Hungarian within types, equivariant OT."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from eqbg.ot.alignment import (
    align,
    batched_assignment,
    kabsch,
    random_rotation,
    type_groups,
)
from eqbg.ot.coupling import (
    emd_permutation,
    equivariant_cost_matrix,
    equivariant_ot,
    independent_coupling,
    ot_permutation,
    pairwise_squared_distance,
)



def _cf(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(1, keepdim=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("b", [1, 2, 3, 4, 5, 6])
def test_ot_permutation_is_optimal_permutation(b):
    g = _gen(b)
    for trial in range(5):
        x0 = torch.randn(b, 4, 2, generator=g)
        x1 = torch.randn(b, 4, 2, generator=g) * 2 + 0.3
        perm = ot_permutation(x0, x1)
        assert perm.dtype == torch.long
        assert sorted(perm.tolist()) == list(range(b))
        c = pairwise_squared_distance(x0, x1).numpy()
        best = min(sum(c[i, p[i]] for i in range(b)) for p in itertools.permutations(range(b)))
        got = c[np.arange(b), perm.numpy()].sum()
        assert got == pytest.approx(best, rel=1e-10, abs=1e-10)


def test_ot_permutation_beats_independent_and_rejects_bad_input():
    g = _gen(0)
    x0, x1 = torch.randn(64, 4, 2, generator=g), torch.randn(64, 4, 2, generator=g)
    c = pairwise_squared_distance(x0, x1)
    ot_total = c[torch.arange(64), ot_permutation(x0, x1)].sum()
    ind_total = c[torch.arange(64), independent_coupling(x0, x1)].sum()
    assert ot_total < 0.8 * ind_total
    with pytest.raises(ValueError, match="equal batch sizes"):
        ot_permutation(x0, x1[:10])
    with pytest.raises(ValueError, match="NaN or inf"):
        emd_permutation(np.array([[0.0, np.nan], [1.0, 0.0]]))


@pytest.mark.parametrize("d", [2, 3])
def test_kabsch_recovers_proper_rotation(d):
    g = _gen(10 + d)
    x = _cf(torch.randn(32, 7, d, generator=g, dtype=torch.float64))
    r_true = random_rotation(d, batch=(32,), generator=g)
    assert torch.allclose(torch.linalg.det(r_true), torch.ones(32, dtype=torch.float64))
    y = x @ r_true.transpose(-1, -2)
    r = kabsch(x, y)
    assert torch.allclose(r, r_true, atol=1e-9)
    assert torch.allclose(align(x, y), y, atol=1e-9)


@pytest.mark.parametrize("d", [2, 3])
def test_kabsch_never_returns_reflection(d):
    g = _gen(20 + d)
    x = _cf(torch.randn(64, 6, d, generator=g, dtype=torch.float64))
    mirror = torch.ones(d, dtype=torch.float64)
    mirror[0] = -1.0
    y = x * mirror  # a reflected copy: the best O(d) map is the mirror, which we must not return
    r = kabsch(x, y)
    det = torch.linalg.det(r)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-10)
    assert torch.allclose(
        r @ r.transpose(-1, -2), torch.eye(d, dtype=torch.float64).expand_as(r), atol=1e-10
    )
    # ... and the residual is strictly positive: a rotation cannot undo a generic reflection.
    resid = ((x @ r.transpose(-1, -2) - y) ** 2).sum((-1, -2))
    assert (resid > 1e-6).all()


def test_batched_assignment_matches_scipy_within_types():
    rng = np.random.default_rng(3)
    types = np.array([0, 1, 0, 2, 1, 0, 0])
    groups = type_groups(types, 7)
    cost = rng.random((200, 7, 7))
    # make row minima a permutation for some matrices (the shortcut path)
    cost[:50] += 10 * (1 - np.eye(7))
    perm = batched_assignment(cost, groups)
    for p, c in zip(perm, cost):
        assert (types[p] == types).all()
        assert sorted(p.tolist()) == list(range(7))
        want = 0.0
        for gidx in groups:
            sub = c[np.ix_(gidx, gidx)]
            r, col = linear_sum_assignment(sub)
            want += sub[r, col].sum()
        assert c[np.arange(7), p].sum() == pytest.approx(want, rel=1e-12)


def _brute_force_2d(x0: torch.Tensor, x1: torch.Tensor, n_angles: int = 7200) -> float:
    """Minimum over all permutations and a fine grid of rotation angles (2D)."""
    th = torch.linspace(0, 2 * math.pi, n_angles + 1, dtype=torch.float64)[:-1]
    rots = torch.stack(
        [torch.stack([th.cos(), -th.sin()], -1), torch.stack([th.sin(), th.cos()], -1)], -2
    )
    n = x0.shape[0]
    best = math.inf
    for p in itertools.permutations(range(n)):
        y = x1[list(p)] @ rots.transpose(-1, -2)  # (A, n, 2)
        best = min(best, ((y - x0) ** 2).sum((-1, -2)).min().item())
    return best


def test_equivariant_cost_2d_equals_brute_force():
    g = _gen(5)
    x0 = _cf(torch.randn(3, 4, 2, generator=g, dtype=torch.float64))
    x1 = _cf(torch.randn(3, 4, 2, generator=g, dtype=torch.float64) * 1.5)
    cost = equivariant_cost_matrix(x0, x1).cost
    for a in range(3):
        for b in range(3):
            bf = _brute_force_2d(x0[a], x1[b])
            # grid spacing 2pi/7200: the grid minimum overshoots by O(dtheta^2 * |x|^2) at most
            assert bf >= cost[a, b].item() - 1e-9
            assert bf == pytest.approx(cost[a, b].item(), abs=1e-4)


@pytest.mark.parametrize(
    "n,d,types,options",
    [
        (4, 2, None, {}),  # DW4: exhaustive enumeration (exact)
        (13, 3, None, {}),  # LJ13: alternating Hungarian / Kabsch from principal axes
        # 2! * 3! * 3! = 72 within-type permutations: enumerated, so exact
        (8, 3, [0, 0, 1, 1, 1, 2, 2, 2], {}),
    ],
)
def test_equivariant_cost_invariances_and_upper_bound(n, d, types, options):
    g = _gen(n * 10 + d)
    b = 12
    x0 = _cf(torch.randn(b, n, d, generator=g, dtype=torch.float64))
    x1 = _cf(torch.randn(b, n, d, generator=g, dtype=torch.float64))
    at = None if types is None else torch.tensor(types)
    base = equivariant_cost_matrix(x0, x1, at, **options).cost
    plain = pairwise_squared_distance(x0, x1)
    assert (base <= plain + 1e-9).all()
    assert (base >= 0).all()

    # random within-type permutation of particles in each sample
    def shuffle(x):
        out = x.clone()
        for gidx in type_groups(at, n):
            for k in range(x.shape[0]):
                p = torch.randperm(len(gidx), generator=g)
                out[k, gidx] = x[k, gidx[p.numpy()]]
        return out

    rot = random_rotation(d, batch=(b,), generator=g)
    variants = {
        "rotate x1": (x0, x1 @ rot.transpose(-1, -2)),
        "rotate x0": (x0 @ rot.transpose(-1, -2), x1),
        "permute x1": (x0, shuffle(x1)),
        "permute x0": (shuffle(x0), x1),
    }
    for name, (a, bb) in variants.items():
        c = equivariant_cost_matrix(a, bb, at, **options).cost
        assert torch.allclose(c, base, rtol=1e-6, atol=1e-8), name


def test_alternating_search_is_an_upper_bound_close_to_exact():
    g = _gen(7)
    x0 = _cf(torch.randn(16, 5, 3, generator=g, dtype=torch.float64))
    x1 = _cf(torch.randn(16, 5, 3, generator=g, dtype=torch.float64))
    exact = equivariant_cost_matrix(x0, x1, exhaustive_limit=120).cost
    for init, min_frac in [("pca", 0.3), ("pca-all", 0.65)]:
        approx = equivariant_cost_matrix(x0, x1, exhaustive_limit=1, init=init).cost
        assert (approx >= exact - 1e-9).all()
        assert ((approx - exact).abs() < 1e-8).double().mean() > min_frac, init


@pytest.mark.parametrize("n,d", [(4, 2), (13, 3)])
def test_equivariant_ot_pairing_and_alignment(n, d):
    g = _gen(100 + n)
    b = 32
    x0 = _cf(torch.randn(b, n, d, generator=g))
    x1 = _cf(torch.randn(b, n, d, generator=g) * 1.3)
    perm, aligned, cost = equivariant_ot(x0, x1)
    assert sorted(perm.tolist()) == list(range(b))
    assert aligned.shape == x1.shape and aligned.dtype == x1.dtype
    # the aligned pair attains exactly the cost-matrix entry
    got = ((aligned.double() - x0.double()) ** 2).sum((-1, -2))
    assert torch.allclose(got, cost[torch.arange(b), perm], rtol=1e-5, atol=1e-5)

    # aligned samples are rigid motions + relabellings of the chosen data samples:
    # the sorted interparticle distances agree
    def dists(x):
        return torch.cdist(x.double(), x.double()).reshape(x.shape[0], -1).sort(-1).values

    assert torch.allclose(dists(aligned), dists(x1[perm]), atol=1e-5)
    # CoM stays zero
    assert aligned.mean(1).abs().max() < 1e-5
    # eqOT's total cost is no larger than plain OT's
    plain = pairwise_squared_distance(x0, x1)
    ot_total = plain[torch.arange(b), ot_permutation(x0, x1)].sum()
    assert cost[torch.arange(b), perm].sum() <= ot_total + 1e-6
    eq_best_identity = cost.diagonal().sum()
    assert cost[torch.arange(b), perm].sum() <= eq_best_identity + 1e-9


def test_equivariant_ot_keeps_atom_types():
    g = _gen(9)
    types = torch.tensor([0, 1, 0, 1, 2, 0])
    x0 = _cf(torch.randn(10, 6, 3, generator=g))
    x1 = _cf(torch.randn(10, 6, 3, generator=g))
    tag = torch.arange(6, dtype=torch.float64)
    res = equivariant_cost_matrix(x0, x1, types, exhaustive_limit=1)
    assert (types[res.perm] == types).all()
    assert torch.equal(tag[res.perm].sort(-1).values, tag.expand(10, 10, 6))
    with pytest.raises(ValueError, match="atom_types must have shape"):
        equivariant_ot(x0, x1, torch.zeros(5, dtype=torch.long))
