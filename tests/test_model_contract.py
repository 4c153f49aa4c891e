"""One contract for every registered model (zuko's ``test_flows`` style): samples of the declared
shape, density kind and centre of mass; ``log_prob`` equal to the samples' ``log q`` (or, for an
importance-sampled marginal, the joint state's density equal to its sampling density); every
declared invariance holds and every undeclared one is broken; the training loss is finite and
differentiable. Each flow is built small, in float64, with its parameters perturbed away from
the (often identity) initialisation so that nothing holds by accident."""

from __future__ import annotations

import math

import pytest
import torch

from eqbg.flows import INVARIANCES
from eqbg.flows.registry import MODELS, build_flow
from eqbg.systems import get_system

#: per registered model: a system it serves and small settings (a new model needs an entry)
CASES: dict[str, tuple[str, dict]] = {
    "egnn": ("dw4", {"hidden": 8, "n_layers": 2}),
    "kernel": ("lj13", {"n_rbf": 8, "n_time_rbf": 4}),
    "mlp": ("dw4", {"hidden": 16, "n_layers": 2}),
    "eacf": ("dw4", {"n_blocks": 1, "egnn_hidden": 8, "egnn_layers": 1, "head_hidden": 8, "marginal_k": 4}),
    "realnvp": ("manywell32", {"n_layers": 2, "hidden": 8}),
}
#: ODE tolerances of the CNFs here (dopri5); log q from the two directions of the solve, or of a
#: transformed input, agree to TOL (measured: ~3e-6 for the EGNN CNF at 1e-7)
ODE = {"atol": 1e-7, "rtol": 1e-7}
TOL = 1e-4


def test_every_registered_model_has_a_contract_case():
    assert set(CASES) == set(MODELS)


@pytest.fixture(scope="module", params=sorted(CASES))
def flow(request):
    system_name, settings = CASES[request.param]
    system = get_system(system_name)
    flow = build_flow(system, {"name": request.param, **settings}, ODE).double().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return request.param, system, flow


def _transform(kind: str, x: torch.Tensor, system, g: torch.Generator) -> torch.Tensor:
    """``x`` ``(B, n, ...)``, vectors on the last axis: rotated, mirrored, or its particles of one
    atom type permuted (the same transformation for the whole batch)."""
    d = x.shape[-1]
    if kind == "rotation":
        q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=x.dtype))
        q = q * torch.sign(torch.diagonal(r))
        if torch.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return x @ q.T
    if kind == "reflection":
        return x * torch.tensor([-1.0] + [1.0] * (d - 1), dtype=x.dtype)
    types = torch.as_tensor(system.atom_types)
    perm = torch.arange(x.shape[1])
    for t in torch.unique(types):
        idx = torch.nonzero(types == t).flatten()
        perm[idx] = idx[torch.randperm(idx.numel(), generator=g)]
    return x[:, perm]


def _density(flow, x: torch.Tensor) -> torch.Tensor:
    """A deterministic density to test invariances with: ``log_prob`` of an exact flow, the joint
    state density of an importance-sampled one (its marginal estimate draws noise)."""
    return flow.state_log_prob(x) if flow.density == "estimate" else flow.log_prob(x)


def _points(flow, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if flow.density == "estimate":
        return flow.state_sample(n, generator=g)[0]
    return flow.sample(n, generator=g).x


def test_samples_have_the_declared_shape_density_kind_and_centre(flow):
    _, system, flow = flow
    s = flow.sample(8, generator=torch.Generator().manual_seed(2))
    assert s.x.shape == (8, system.n_particles, system.spatial_dim) and s.x.dtype == torch.float64
    assert torch.isfinite(s.x).all() and torch.isfinite(s.log_q).all()
    assert s.density == flow.density and flow.event_shape == tuple(s.x.shape[1:])
    assert flow.com_free == system.com_free
    if flow.com_free:
        assert s.x.mean(dim=1).abs().max() < 1e-10


def test_log_prob_agrees_with_the_sampling_density(flow):
    _, _, flow = flow
    g = torch.Generator().manual_seed(3)
    if flow.density == "estimate":
        z, log_q = flow.state_sample(8, generator=g)
        torch.testing.assert_close(flow.state_log_prob(z), log_q, atol=1e-9, rtol=0)
    else:
        s = flow.sample(8, generator=g)
        torch.testing.assert_close(flow.log_prob(s.x), s.log_q, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", INVARIANCES)
def test_declared_invariances_hold_and_the_others_break(flow, kind):
    name, system, flow = flow
    x = _points(flow)
    if kind == "permutation" and len(set(map(int, torch.as_tensor(system.atom_types)))) == x.shape[1]:
        pytest.skip(f"{system.name}: no two particles share a type")
    with torch.no_grad():
        gap = _density(flow, _transform(kind, x, system, torch.Generator().manual_seed(4))) - _density(flow, x)
    gap = float(gap.abs().max())
    if kind in flow.invariances:
        assert gap < TOL, (name, kind, gap)
    else:
        assert gap > 1e-3, f"{name} does not declare {kind} invariance, but its density has it ({gap:.2e})"


def test_training_loss_is_finite_and_differentiable(flow):
    name, _, flow = flow
    x = _points(flow, 4)
    x = x[:, :, 0] if flow.density == "estimate" else x  # the configurations of a joint state
    flow.zero_grad()
    nll = flow.nll(x.detach(), generator=torch.Generator().manual_seed(5)).mean()
    nll.backward()
    grads = [p.grad for p in flow.parameters() if p.requires_grad]
    assert math.isfinite(nll.item()) and grads and all(gr is None or torch.isfinite(gr).all() for gr in grads)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name
