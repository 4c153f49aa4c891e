"""The CUDA code paths, for the day a GPU is there (skipped without one, never required)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eqbg.flows import remove_mean
from eqbg.flows.registry import build_flow
from eqbg.rundir import load_flow
from eqbg.ot import equivariant_ot, ot_permutation
from eqbg.sampling import sample_run
from eqbg.systems import get_system
from eqbg.training import train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_couplings_run_on_the_gpu_and_agree_with_the_cpu():
    g = torch.Generator().manual_seed(0)
    x0 = remove_mean(torch.randn(32, 13, 3, generator=g, dtype=torch.float64))
    x1 = remove_mean(torch.randn(32, 13, 3, generator=g, dtype=torch.float64))
    types = get_system("lj13").atom_types
    perm_cpu = ot_permutation(x0, x1)
    perm_gpu = ot_permutation(x0.cuda(), x1.cuda())
    assert perm_gpu.device.type == "cuda" and torch.equal(perm_gpu.cpu(), perm_cpu)
    _, aligned_cpu, cost_cpu = equivariant_ot(x0, x1, types, max_iter=2)
    _, aligned_gpu, cost_gpu = equivariant_ot(x0.cuda(), x1.cuda(), types, max_iter=2)
    assert aligned_gpu.device.type == "cuda"
    torch.testing.assert_close(cost_gpu.cpu(), cost_cpu, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(aligned_gpu.cpu(), aligned_cpu, atol=1e-8, rtol=1e-8)


def test_cnf_log_prob_on_the_gpu_equals_the_cpu():
    torch.manual_seed(0)
    flow = build_flow(get_system("dw4"), {"hidden": 16, "n_layers": 2}, {}).double()
    x = remove_mean(2.0 * torch.randn(16, 4, 2, dtype=torch.float64))
    cpu = flow.log_prob(x)
    gpu = flow.cuda().log_prob(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)


def test_eacf_density_and_sampling_on_the_gpu_equal_the_cpu():
    """The augmented coupling flow on CUDA: the joint density equals the CPU's in float64, and
    sampling, the marginal estimate and the training objective run on the device."""
    torch.manual_seed(0)
    flow = build_flow(get_system("lj13"), {"name": "eacf", "n_blocks": 2}).double()
    for c in flow.couplings:
        torch.nn.init.normal_(c.head[-1].weight, std=0.1)
    x = remove_mean(torch.randn(8, 13, 3, dtype=torch.float64))
    a = x.unsqueeze(2) + 0.1 * torch.randn(8, 13, 1, 3, dtype=torch.float64)
    cpu = flow.joint_log_prob(x, a)
    flow = flow.cuda()
    torch.testing.assert_close(flow.joint_log_prob(x.cuda(), a.cuda()).cpu(), cpu, atol=1e-8, rtol=0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    res = flow.sample(64, generator=gen)
    assert res.x.device.type == "cuda" and torch.isfinite(res.log_q).all()
    assert torch.isfinite(flow.log_prob(res.x, generator=gen)).all()
    flow.nll(res.x, generator=gen).backward()


@pytest.mark.parametrize("loss", ["fm", "eqotfm", "ml"])
def test_train_and_sample_on_the_gpu(tmp_path, loss):
    from eqbg.data import make_reference_data

    data = tmp_path / "data"
    make_reference_data(
        "dw4", {"splits": {"train": 256, "val": 64, "test": 64}, "check_convergence": False,
                "n_chains": 16, "burn_in": 200, "thin": 5}, 0, data,
    )
    settings = {
        "model": {"hidden": 16, "n_layers": 2},
        "training": {"steps": 4, "batch_size": 32, "val_every": 2, "val_size": 32,
                     "checkpoint_every": 2, "progress": False, "device": "cuda",
                     "ml_atol": 1e-3, "ml_rtol": 1e-3},
    }
    run = tmp_path / "run"
    train_run("dw4", "egnn", loss, 0, settings, data, run)
    flow, config = load_flow(run, device="cuda")
    assert config["device"].startswith("cuda")
    assert next(flow.parameters()).device.type == "cuda"
    info = sample_run(run, 32, {"device": "cuda", "method": "rk4", "n_steps": 4}, run / "s.npz", 0)
    with np.load(run / "s.npz") as f:
        assert f["x"].shape == (32, 4, 2) and np.isfinite(f["log_q"]).all()
    assert info["n_nonfinite"] == 0
