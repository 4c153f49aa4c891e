"""One contract for every registered loss: its value is a finite scalar whose gradient reaches the
flow's parameters; it counts target-energy evaluations exactly when it says it needs the energy;
and its state round-trips: a loss rebuilt from another's ``state_dict`` continues exactly as the
original does (same values, same counts), which is what resuming a killed run relies on."""

from __future__ import annotations

import math

import pytest
import torch

from eqbg.flows.registry import build_flow
from eqbg.losses import LOSSES, build_loss
from eqbg.systems import get_system

#: per registered loss: a system, a model it trains there (small) and training settings
_CNF = ("dw4", {"name": "egnn", "hidden": 8, "n_layers": 1})
_COUPLING = ("gmm40", {"name": "realnvp", "n_layers": 2, "hidden": 8})
CASES: dict[str, tuple[tuple[str, dict], dict]] = {
    "ml": (_CNF, {"method": "rk4", "n_steps": 4}),
    "fm": (_CNF, {}),
    "otfm": (_CNF, {}),
    "eqotfm": (_CNF, {}),
    "kl": (_COUPLING, {}),
    "fab": (_COUPLING, {"buffer_batches": 4, "buffer_min_batches": 2, "updates_per_ais": 2}),
}
BATCH = 8


def test_every_registered_loss_has_a_contract_case():
    assert set(CASES) == set(LOSSES)


def _setup(name: str):
    (system_name, model), settings = CASES[name]
    system = get_system(system_name)
    torch.manual_seed(0)
    flow = build_flow(system, model, {"method": "rk4", "n_steps": 4}).double()
    data = system.sample(BATCH, generator=torch.Generator().manual_seed(1)).double() if hasattr(
        system, "sample") else None
    if data is None:
        x = torch.randn(BATCH, system.n_particles, system.spatial_dim, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
        data = x - x.mean(dim=1, keepdim=True)
    return system, settings, flow, data


def _step(loss, flow, data, gen) -> float:
    flow.zero_grad()
    value = loss(flow, data if loss.needs_data else None, generator=gen)
    value.backward()
    return value.item()


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_is_finite_differentiable_and_counts_its_energy_calls(name):
    system, ts, flow, data = _setup(name)
    loss = build_loss(name, system, ts, batch_size=BATCH)
    assert loss.needs_data == LOSSES[name].cls.needs_data
    value = _step(loss, flow, data, torch.Generator().manual_seed(2))
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert math.isfinite(value) and grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert (loss.n_energy_evals > 0) == loss.needs_energy, (name, loss.n_energy_evals)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_round_trip_continues_exactly(name):
    system, ts, flow, data = _setup(name)
    loss = build_loss(name, system, ts, batch_size=BATCH)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        _step(loss, flow, data, gen)
    resumed = build_loss(name, system, ts, batch_size=BATCH)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.n_energy_evals == loss.n_energy_evals
    state = gen.get_state()
    original = [_step(loss, flow, data, gen) for _ in range(3)]
    gen.set_state(state)
    again = [_step(resumed, flow, data, gen) for _ in range(3)]
    assert again == original and resumed.n_energy_evals == loss.n_energy_evals
    if name == "fab":  # the replay buffer is the state that matters: a fresh loss differs
        gen.set_state(state)
        assert [_step(build_loss(name, system, ts, batch_size=BATCH), flow, data, gen) for _ in range(3)] != original
