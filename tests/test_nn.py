"""Symmetry tests of the vector fields in eqbg.nn (EGNNField, KernelField), d = 2 and d = 3."""

from __future__ import annotations

import pytest
import torch

from eqbg.flows import subspace_basis
from eqbg.nn import EGNNField, KernelField



def random_orthogonal(d: int, gen: torch.Generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # Haar measure
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q[:, -1] = -q[:, -1]
    return q


def make_egnn(n: int, d: int, types: torch.Tensor | None = None, **kw) -> EGNNField:
    torch.manual_seed(0)
    n_types = 1 if types is None else int(types.max()) + 1
    f = EGNNField(n, d, hidden=16, n_layers=2, n_atom_types=n_types, atom_types=types, **kw)
    # Make the coordinate head non-negligible so the tests have teeth (it starts at gain 1e-3).
    with torch.no_grad():
        for layer in f.layers:
            layer.coord_2.weight.normal_(0, 0.3)
    return f.double()


def make_kernel(n: int, d: int) -> KernelField:
    torch.manual_seed(1)
    return KernelField(n, d, n_rbf=12, r_max=4.0, n_time_rbf=4, init_scale=0.5).double()


FIELDS = {
    "egnn": lambda n, d: make_egnn(n, d, time_freqs=2),
    "egnn_plain": lambda n, d: make_egnn(n, d, attention=False, tanh=False, normalize_aggregation=True),
    "kernel": make_kernel,
}


def _x(B: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, d, generator=g, dtype=torch.float64) * 1.5
    return x - x.mean(1, keepdim=True)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", list(FIELDS))
def test_equivariance(name: str, d: int) -> None:
    n, B = 5, 6
    f = FIELDS[name](n, d)
    x = _x(B, n, d)
    t = torch.rand(B, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v = f(t, x)
    assert v.shape == (B, n, d)
    assert v.abs().max() > 1e-3, "field is (near) zero; the test would be vacuous"
    g = torch.Generator().manual_seed(7)
    for reflect in (False, True):
        R = random_orthogonal(d, g, reflect)
        torch.testing.assert_close(f(t, x @ R.T), v @ R.T, atol=1e-10, rtol=1e-9)
    perm = torch.randperm(n, generator=g)
    torch.testing.assert_close(f(t, x[:, perm]), v[:, perm], atol=1e-10, rtol=1e-9)
    shift = torch.randn(B, 1, d, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(f(t, x + shift), v, atol=1e-10, rtol=1e-9)
    # CoM-free output.
    assert v.sum(1).abs().max() < 1e-10
    # Time dependence is real and per-sample: scalar t equals a constant (B,) vector.
    torch.testing.assert_close(f(torch.tensor(0.3, dtype=torch.float64), x),
                               f(torch.full((B,), 0.3, dtype=torch.float64), x))
    assert (f(torch.tensor(0.0), x) - f(torch.tensor(1.0), x)).abs().max() > 1e-6


@pytest.mark.parametrize("d", [2, 3])
def test_egnn_atom_types_break_only_cross_type_permutations(d: int) -> None:
    n, B = 6, 4
    types = torch.tensor([0, 0, 1, 1, 2, 0])
    f = make_egnn(n, d, types)
    x = _x(B, n, d, seed=1)
    v = f(0.5, x)
    # Permutation within type 0 (particles 0, 1, 5) and type 1 (2, 3): equivariant.
    perm = torch.tensor([5, 0, 3, 2, 4, 1])
    torch.testing.assert_close(f(0.5, x[:, perm]), v[:, perm], atol=1e-10, rtol=1e-9)
    # Swapping particles of different types is not a symmetry: output must change.
    bad = torch.tensor([2, 1, 0, 3, 4, 5])
    assert (f(0.5, x[:, bad]) - v[:, bad]).abs().max() > 1e-6
    # And rotations still commute.
    R = random_orthogonal(d, torch.Generator().manual_seed(2), reflect=True)
    torch.testing.assert_close(f(0.5, x @ R.T), v @ R.T, atol=1e-10, rtol=1e-9)


def test_egnn_not_com_free_option_keeps_mean() -> None:
    f = make_egnn(4, 2, com_free=False)
    v = f(0.2, _x(3, 4, 2))
    assert v.sum(1).abs().max() > 1e-8  # the raw EGNN update is not CoM-free; com_free removes it


def test_egnn_bad_inputs_name_the_problem() -> None:
    f = EGNNField(4, 2, hidden=8, n_layers=1)
    with pytest.raises(ValueError, match=r"\(B, 4, 2\)"):
        f(0.0, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="t must be"):
        f(torch.zeros(2), torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match="atom_types"):
        EGNNField(4, 2, n_atom_types=2)
    with pytest.raises(ValueError, match="atom_types"):
        EGNNField(4, 2, n_atom_types=2, atom_types=torch.tensor([0, 1, 2, 0]))


def test_egnn_initial_field_is_small_and_bounded() -> None:
    # xavier gain 1e-3 on the coordinate head: the untrained flow starts near the identity.
    torch.manual_seed(0)
    f = EGNNField(13, 3, hidden=32, n_layers=3)
    x = _x(4, 13, 3).float()
    assert f(0.5, x).abs().max() < 0.5  # positions are O(1.5)
    # tanh bound: per layer a particle moves at most coords_range / n_layers * (n - 1) (norm);
    # mean removal at most doubles it.
    with torch.no_grad():
        for layer in f.layers:
            layer.coord_2.weight.mul_(1e4)
    assert f(0.5, x).abs().max() <= 15.0 / 3 * 12 * 3 * 2 + 1e-4


@pytest.mark.parametrize("d", [2, 3])
def test_kernel_closed_form_divergence_matches_jacobian(d: int) -> None:
    n, B = 4, 3
    f = make_kernel(n, d)
    x = _x(B, n, d, seed=5)
    t = torch.tensor(0.37, dtype=torch.float64)
    v, div = f.forward_and_divergence(t, x)
    torch.testing.assert_close(v, f(t, x))
    U = subspace_basis(n, d, com_free=True, dtype=torch.float64).reshape(-1, n * d)
    for b in range(B):
        J = torch.autograd.functional.jacobian(lambda y: f(t, y[None])[0], x[b]).reshape(n * d, n * d)
        full = torch.trace(J)
        sub = torch.trace(U @ J @ U.T)
        torch.testing.assert_close(div[b], sub, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(full, sub, atol=1e-10, rtol=1e-9)
    assert div.abs().max() > 1e-3


@pytest.mark.parametrize("d", [2, 3])
def test_kernel_closed_form_divergence_matches_jacobian_in_float32(d: int) -> None:
    """The divergence maximum-likelihood training uses, in the training dtype."""
    n, B = 4, 3
    f = make_kernel(n, d).float()
    x = _x(B, n, d, seed=6).float()
    t = torch.tensor(0.61)
    _, div = f.forward_and_divergence(t, x)
    for b in range(B):
        J = torch.autograd.functional.jacobian(lambda y: f(t, y[None])[0], x[b]).reshape(n * d, n * d)
        torch.testing.assert_close(div[b], torch.trace(J), atol=1e-4, rtol=1e-4)
    assert div.dtype == torch.float32 and div.abs().max() > 1e-3


def _equivariance_error(f, n: int, d: int, seed: int) -> float:
    """Relative ``|f(R x P) - R f(x) P|`` over random rotations ``R`` and permutations ``P``."""
    g = torch.Generator().manual_seed(seed)
    x = _x(8, n, d, seed=seed)
    t = torch.full((8,), 0.4, dtype=x.dtype)
    R = random_orthogonal(d, g, reflect=False).to(x.dtype)
    perm = torch.randperm(n, generator=g)
    with torch.no_grad():
        v = f(t, x)
        moved = f(t, (x @ R.T)[:, perm])
    return float((moved - (v @ R.T)[:, perm]).norm() / v.norm())


def test_mlp_field_is_not_equivariant_and_augmentation_does_not_make_it_so():
    from eqbg.nn import MLPField
    from eqbg.training.augmentation import augment_batch

    n, d = 4, 2
    torch.manual_seed(0)
    mlp = MLPField(n, d, hidden=32, n_layers=2).double()
    with torch.no_grad():
        mlp.net[-1].weight.normal_(0, 0.3)
    kernel = make_kernel(n, d)
    assert _equivariance_error(kernel, n, d, seed=1) < 1e-10
    assert _equivariance_error(mlp, n, d, seed=1) > 0.1
    # Train the MLP to regress a known equivariant target (the kernel field) on augmented
    # data: it gets closer but stays measurably non-equivariant.
    before = _equivariance_error(mlp, n, d, seed=2)
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    types = torch.zeros(n, dtype=torch.long)
    for _ in range(300):
        x = augment_batch(_x(64, n, d, seed=int(torch.randint(0, 10**6, (1,), generator=g))), types, g)
        t = torch.rand(64, dtype=torch.float64, generator=g)
        with torch.no_grad():
            target = kernel(t, x)
        opt.zero_grad()
        (mlp(t, x) - target).pow(2).mean().backward()
        opt.step()
    after = _equivariance_error(mlp, n, d, seed=2)
    assert after < before and after > 1e-3, (before, after)
    # the CoM projection holds exactly: translations are the one symmetry it has
    x = _x(8, n, d)
    torch.testing.assert_close(mlp(0.3, x).sum(1), torch.zeros(8, d, dtype=torch.float64), atol=1e-12, rtol=0)


def test_augmentation_keeps_energies_centre_and_types():
    from eqbg.systems import get_system
    from eqbg.training.augmentation import augment_batch

    dw4 = get_system("dw4")
    x = _x(256, 4, 2, seed=3) * 2
    types = torch.tensor([0, 0, 1, 1])
    y = augment_batch(x, types, torch.Generator().manual_seed(0))
    torch.testing.assert_close(dw4.energy(y), dw4.energy(x))
    torch.testing.assert_close(y.mean(1), torch.zeros(256, 2, dtype=torch.float64), atol=1e-12, rtol=0)
    # particles move only within their type: the multiset of distances to the CoM per type holds
    for t in (0, 1):
        r_x = x[:, types == t].norm(dim=-1).sort(dim=1).values
        r_y = y[:, types == t].norm(dim=-1).sort(dim=1).values
        torch.testing.assert_close(r_x, r_y)
    # the rotations are random: the first particle's direction is spread over the circle
    angles = torch.atan2(y[:, 0, 1], y[:, 0, 0])
    assert abs(float(torch.cos(angles).mean())) < 0.15 and abs(float(torch.sin(angles).mean())) < 0.15
    assert not torch.allclose(y, x)
    # and the labels are shuffled: the distance matrix is unchanged only where the drawn
    # permutation was the identity (probability 1/4 with two pairs of equal type)
    same = torch.isclose(torch.cdist(x, x), torch.cdist(y, y), atol=1e-9).flatten(1).all(1)
    assert 0.1 < float(same.double().mean()) < 0.45
