"""The augmented coupling flow (EACF): the flow checks 1-6 of shared/EACF_FAB.md section C.

1. log-det against autograd Jacobians, float64 round trip; 2. CoM and translation invariance;
3. equivariance under rotations, translations, permutations, and the intended reflection
behaviour; 4. zero heads are the identity; 5. finite values and gradients on degenerate
configurations; 6. with the identity flow the K-sample marginal is the base density. Plus: a
short DW4 training run lowers the validation NLL.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from eqbg.evaluation.weights import kish_ess
from eqbg.flows.augmented import FRAMES, AugmentedCouplingFlow
from eqbg.flows.augmented.splines import spline_forward, spline_inverse
from eqbg.flows.divergence import subspace_basis
from eqbg.geometry import remove_mean

CASES = [(d, frame) for d in (2, 3) for frame in FRAMES]


def _random_rotation(d: int, gen: torch.Generator, proper: bool = True) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) == proper:
        q[:, 0] = -q[:, 0]
    return q


def _flow(d: int, frame: str, n: int = 4, *, perturb: float = 0.3, seed: int = 0, **kw) -> AugmentedCouplingFlow:
    """A float64 flow with randomly perturbed (non-identity) heads."""
    torch.manual_seed(seed)
    flow = AugmentedCouplingFlow(n, d, n_blocks=2, frame=frame, identical_init=False,
                                 egnn_hidden=16, egnn_features=16, head_hidden=16, **kw).double()
    if perturb:
        for c in flow.couplings:
            torch.nn.init.normal_(c.head[-1].weight, std=perturb)
            torch.nn.init.normal_(c.head[-1].bias, std=perturb)
    return flow


def _samples(flow: AugmentedCouplingFlow, num: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z, _ = flow.forward_joint(flow.base_sample(num, gen))
    return z[:, :, 0], z[:, :, 1:]


# ---------------------------------------------------------------- 1. log-det and round trip
@pytest.mark.parametrize("d, frame", CASES)
def test_log_det_equals_the_autograd_jacobian_on_the_free_coordinates(d, frame):
    """log q(z') - log q0(z) = -log|det J| with J the Jacobian of the whole flow in coordinates
    of the joint space: x on an orthonormal basis of the CoM-free subspace, a in full R^{nAd}."""
    n = 4
    flow = _flow(d, frame, n)
    Q = subspace_basis(n, d, True, dtype=torch.float64).reshape(-1, n * d).T  # (n*d, (n-1)*d)
    z0 = flow.base_sample(3, torch.Generator().manual_seed(2))
    for z in z0:
        u0 = torch.cat([Q.T @ z[:, 0].reshape(-1), z[:, 1:].reshape(-1)])

        def f(u):
            x = (Q @ u[: Q.shape[1]]).view(1, n, 1, d)
            a = u[Q.shape[1]:].view(1, n, flow.n_aug, d)
            out, _ = flow.forward_joint(torch.cat([x, a], dim=2))
            return torch.cat([Q.T @ out[0, :, 0].reshape(-1), out[0, :, 1:].reshape(-1)])

        jac = torch.autograd.functional.jacobian(f, u0)
        _, log_q = flow.forward_joint(z.unsqueeze(0))
        ladj = flow.base_log_prob(z.unsqueeze(0)) - log_q
        assert torch.allclose(ladj, torch.linalg.slogdet(jac)[1], atol=1e-8), frame


@pytest.mark.parametrize("d, frame", CASES)
def test_round_trip_and_density_agree_in_float64(d, frame):
    flow = _flow(d, frame, 5)
    z = flow.base_sample(16, torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, log_q = flow.forward_joint(z)
        back = out.clone()
        for c in reversed(flow.couplings):
            back, _ = c.inverse(back)
        log_q_density = flow.joint_log_prob(out[:, :, 0], out[:, :, 1:])
    assert (out - z).abs().max() > 1e-2  # the perturbed flow is not the identity
    assert torch.allclose(back, z, atol=1e-10)
    assert torch.allclose(log_q_density, log_q, atol=1e-9)


def test_splines_invert_at_knots_range_ends_and_beyond():
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(7, 8 * 3 - 1, generator=gen, dtype=torch.float64)
    u = torch.tensor([0.0, 1e-9, 2.5, 5.0, 9.999, 10.0, 14.0], dtype=torch.float64)
    y, ladj = spline_forward(u, params, 0.0, 10.0)
    back, ladj_inv = spline_inverse(y, params, 0.0, 10.0)
    assert torch.allclose(back, u, atol=1e-9)
    assert torch.allclose(ladj, -ladj_inv, atol=1e-9)
    assert y[0] == 0.0 and y[5] == 10.0 and y[6] == 14.0  # ends fixed, identity beyond
    # log-derivative against a finite difference inside the interval
    h = 1e-6
    yp, _ = spline_forward(u[1:5] + h, params[1:5], 0.0, 10.0)
    ym, _ = spline_forward(u[1:5] - h, params[1:5], 0.0, 10.0)
    assert torch.allclose(ladj[2:4], torch.log((yp - ym) / (2 * h))[1:3], atol=1e-6)


# ---------------------------------------------------------------- 2. centre of mass
@pytest.mark.parametrize("d, frame", CASES)
def test_com_stays_zero_and_log_q_is_translation_invariant(d, frame):
    flow = _flow(d, frame, 5)
    z = flow.base_sample(8, torch.Generator().manual_seed(4))
    with torch.no_grad():
        for c in flow.couplings:
            z, _ = c(z)
            assert z[:, :, 0].mean(1).abs().max() < 1e-12
        x, a = z[:, :, 0], z[:, :, 1:]
        t = torch.randn(8, 1, d, dtype=torch.float64) * 3
        lq = flow.joint_log_prob(x, a)
        assert torch.allclose(flow.joint_log_prob(x + t, a + t.unsqueeze(2)), lq, atol=1e-9)


def test_importance_weights_of_the_base_average_to_one():
    """E_q[q0(z)/q(z)] = 1 for any parameters (q and q0 are both normalised on the joint space)."""
    flow = _flow(2, "spherical", 3, perturb=0.05)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z = flow.base_sample(20000, gen)
        out, log_q = flow.forward_joint(z)
        # q0 evaluated at the flow's output, weights q0(z')/q(z') with z' ~ q
        lw = flow.base_log_prob(out) - log_q
    w = torch.exp(lw)
    assert abs(float(w.mean()) - 1.0) < 4 * float(w.std()) / math.sqrt(w.numel()) + 0.02


# ---------------------------------------------------------------- 3. symmetries
@pytest.mark.parametrize("d, frame", CASES)
def test_equivariant_under_rotations_and_permutations(d, frame):
    n = 5
    flow = _flow(d, frame, n)
    gen = torch.Generator().manual_seed(6)
    R = _random_rotation(d, gen)
    perm = torch.randperm(n, generator=gen)
    z = flow.base_sample(6, gen)
    with torch.no_grad():
        out, log_q = flow.forward_joint(z)
        out_t, log_q_t = flow.forward_joint(z[:, perm] @ R)
    assert torch.allclose(out_t, out[:, perm] @ R, atol=1e-9)
    assert torch.allclose(log_q_t, log_q, atol=1e-9)


@pytest.mark.parametrize("d, frame", CASES)
def test_reflections_behave_as_the_option_says(d, frame):
    """Spherical and proj frames are SE(d)-equivariant: a mirror image gets another density;
    with reflection_invariant=True (and along_vector always) the density is E(d)-invariant."""
    gen = torch.Generator().manual_seed(7)
    S = _random_rotation(d, gen, proper=False)
    results = {}
    for invariant in (False, True):
        flow = _flow(d, frame, 5, reflection_invariant=invariant)
        x, a = _samples(flow, 8)
        with torch.no_grad():
            gap = (flow.joint_log_prob(x @ S, a @ S) - flow.joint_log_prob(x, a)).abs().max()
        results[invariant] = float(gap)
    assert results[True] < 1e-7
    if frame == "along_vector":
        assert results[False] < 1e-7
    else:
        assert results[False] > 1e-3


# ---------------------------------------------------------------- 4. identity at init
@pytest.mark.parametrize("d, frame", CASES)
def test_zero_heads_are_the_identity_with_zero_log_det(d, frame):
    flow = _flow(d, frame, 5, perturb=0.0)
    z = flow.base_sample(8, torch.Generator().manual_seed(8))
    with torch.no_grad():
        out, log_q = flow.forward_joint(z)
    assert torch.allclose(out, z, atol=1e-12)
    assert torch.allclose(log_q, flow.base_log_prob(z), atol=1e-11)


# ---------------------------------------------------------------- 5. degenerate inputs
@pytest.mark.parametrize("d, frame", CASES)
def test_degenerate_configurations_give_finite_values_and_gradients(d, frame):
    n = 4
    flow = _flow(d, frame, n, aux_loss_weight=1.0)
    line = torch.zeros(n, d, dtype=torch.float64)
    line[:, 0] = torch.arange(n, dtype=torch.float64)
    coincident = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    coincident[1] = coincident[0]
    x = remove_mean(torch.stack([line, coincident, torch.zeros(n, d, dtype=torch.float64)]))
    for a in (x.unsqueeze(2).clone(), x.unsqueeze(2) + 0.1):  # a on x, and a collinear too
        xr = x.clone().requires_grad_(True)
        lq = flow.joint_log_prob(xr, a)
        loss = -lq.mean() + flow.aux_loss().mean()
        loss.backward()
        assert torch.isfinite(lq).all() and torch.isfinite(loss)
        assert torch.isfinite(xr.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
        flow.zero_grad()


# ---------------------------------------------------------------- 6. marginal estimator
@pytest.mark.parametrize("k", [1, 5, 20])
def test_identity_flow_marginal_is_the_base_density_for_every_k(k):
    flow = _flow(3, "spherical", 5, perturb=0.0)
    x = remove_mean(torch.randn(10, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10)))
    log_q = flow.log_prob(x, generator=torch.Generator().manual_seed(11), marginal_k=k)
    expected = -0.5 * x.pow(2).flatten(1).sum(-1) - 0.5 * 4 * 3 * math.log(2 * math.pi)
    assert torch.allclose(log_q, expected, atol=1e-10)


def test_sample_log_q_gives_the_joint_weights_and_says_it_is_an_estimate():
    flow = _flow(2, "spherical", 4)
    gen = torch.Generator().manual_seed(12)
    res = flow.sample(7, generator=gen, batch_size=3)
    assert res.density == "estimate" and res.density_k == 1 and res.n_batches == 3
    gen = torch.Generator().manual_seed(12)
    parts = [flow.forward_joint(flow.base_sample(m, gen)) for m in (3, 3, 1)]
    z = torch.cat([p[0] for p in parts])
    joint = torch.cat([p[1] for p in parts])
    assert torch.allclose(res.x, z[:, :, 0])
    assert torch.allclose(res.log_q, joint - flow.log_pi(z[:, :, 1:], z[:, :, 0]))


# ---------------------------------------------------------------- registry, devices, training
def test_registry_builds_eacf_with_atom_types_and_rejects_bad_settings():
    from eqbg.flows.registry import build_flow
    from eqbg.settings import SettingsError
    from eqbg.systems import get_system

    flow = build_flow(get_system("dw4"), {"name": "eacf", "n_blocks": 2})
    assert isinstance(flow, AugmentedCouplingFlow) and flow.event_shape == (4, 2)
    with pytest.raises(SettingsError, match="frame"):
        build_flow(get_system("dw4"), {"name": "eacf", "frame": "cartesian"})
    with pytest.raises(SettingsError, match="CoM-free"):
        build_flow(get_system("gmm40"), {"name": "eacf"})


@pytest.mark.slow
def test_short_dw4_training_lowers_the_validation_nll(tmp_path):
    from eqbg.data import make_reference_data
    from eqbg.training import train_run

    data = tmp_path / "data"
    make_reference_data(
        "dw4",
        {"splits": {"train": 1000, "val": 256, "test": 64}, "check_convergence": False,
         "n_chains": 64, "burn_in": 1000, "thin": 10},
        0,
        data,
    )
    settings = {
        "model": {"name": "eacf", "n_blocks": 2, "egnn_hidden": 32, "egnn_features": 32, "head_hidden": 32},
        "training": {"steps": 150, "batch_size": 64, "lr": 1e-3, "val_every": 150, "val_size": 256,
                     "checkpoint_every": 150, "progress": False, "device": "cpu",
                     "grad_clip_mode": "dynamic"},
    }
    run = tmp_path / "run"
    train_run("dw4", "eacf", "ml", 0, settings, data, run)
    import pandas as pd

    curve = pd.read_csv(run / "train.csv")
    from eqbg.rundir import load_flow

    flow, _ = load_flow(run)
    from eqbg.data import load_dataset
    from eqbg.systems import get_system

    val = load_dataset(data / "val.npz", system=get_system("dw4"), split="val")
    untrained = _flow(2, "spherical", 4, perturb=0.0).float()
    gen = torch.Generator().manual_seed(0)
    nll_before = -float(untrained.log_prob(val, generator=gen).mean())
    nll_after = float(curve["val_nll"].dropna().iloc[-1])
    assert nll_after < nll_before - 1.0, (nll_before, nll_after)
    assert math.isclose(-float(flow.log_prob(val[:256], generator=gen).mean()), nll_after, abs_tol=0.3)


@pytest.mark.slow
@pytest.mark.pipeline
def test_pipeline_trains_samples_and_evaluates_eacf_beside_a_cnf(tmp_path):
    """The grid runs eacf by ml next to an EGNN CNF: metrics say its log q is an estimate (K=1
    joint weights for the samples, marginal_k for the NLL, K=1 for the forward ESS), and the
    summary has the sampling-speed table with the ratio to the CNF."""
    import json
    import re

    from test_pipeline import CONFIGS, run_snakemake

    run_snakemake(tmp_path, CONFIGS / "tiny_eacf.yaml")
    results = tmp_path / "results"
    metrics = json.loads((results / "runs/dw4/eacf/ml/seed0/metrics.json").read_text())
    assert metrics["log_q_density"] == "estimate" and metrics["log_q_k"] == 1
    assert metrics["nll_density_k"] == 4 and metrics["forward_ess_density_k"] == 1
    with np.load(results / "runs/dw4/eacf/ml/seed0/eval.npz") as arrays:
        assert metrics["ess"] == kish_ess(arrays["log_w"])[0]
    assert metrics["forward_ess_ci_low"] <= metrics["forward_ess"] <= metrics["forward_ess_ci_high"]
    assert math.isfinite(metrics["nll"]) and metrics["samples_per_s"] > 0
    cnf = json.loads((results / "runs/dw4/egnn/fm/seed0/metrics.json").read_text())
    assert cnf["log_q_density"] == "exact" and cnf["nll_density_k"] is None
    summary = (results / "tables/dw4/summary.md").read_text()
    assert "## Sampling speed" in summary
    row = next(line for line in summary.splitlines() if re.match(r"^\| eacf +\| ml ", line) and "estimate" in line)
    ratio = float(re.findall(r"×([0-9.e+-]+)", row)[0])
    assert math.isclose(ratio, metrics["samples_per_s"] / cnf["samples_per_s"], rel_tol=1e-3)
    curve = pd.read_csv(results / "runs/dw4/eacf/ml/seed0/train.csv")
    assert {"skipped", "grad_norm"} <= set(curve.columns) and curve["step"].max() == 30


def test_paper_preset_gives_eacf_the_paper_settings():
    """workflow/presets/paper.yaml (merged over config.yaml as Snakemake does) resolves the EACF
    runs with the paper's settings, float64 for alanine dipeptide, and valid for the library."""
    from pathlib import Path

    import yaml

    from eqbg.flows.registry import resolve_model_settings
    from eqbg.pipeline import Run, deep_merge, train_params
    from eqbg.settings import resolve
    from eqbg.training import TrainingSettings

    root = Path(__file__).resolve().parents[1]
    config = deep_merge(yaml.safe_load((root / "config.yaml").read_text()),
                        yaml.safe_load((root / "workflow/presets/paper.yaml").read_text()))
    expected_steps = {"dw4": 3125, "lj13": 12500, "aldp": 50000}
    for system, steps in expected_steps.items():
        for seed in (0, 1, 2):
            params = train_params(config, Run(system, "eacf", "ml", seed))["settings"]
            ts = resolve(TrainingSettings, {**params["training"], "device": "cpu"}, "training")
            assert params["training"]["device"] == "cuda"
            model = resolve_model_settings(params["model"], "eacf")
            assert ts.steps == steps and ts.batch_size == 32 and ts.optimizer == "adam"
            assert ts.grad_clip_mode == "dynamic" and ts.lr == 2e-4 and ts.warmup_init_ratio == 0.1
            assert model.n_blocks == 12 and model.egnn_features == 128 and model.n_bins == 8
            assert ts.dtype == ("float64" if system == "aldp" else "float32")
            assert ts.n_train == (None if system == "aldp" else 1000)
            assert model.aux_loss_weight == (10.0 if system == "lj13" else 0.0)
            assert model.marginal_k == (10 if system == "aldp" else 20)


# ---------------------------------------------------------------- length unit and scaling block
def _perturb_scalings(flow: AugmentedCouplingFlow, std: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for block in flow.scalings:
            for p in block.parameters():
                p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("scaling_layer", [False, True])
def test_length_scale_is_a_change_of_unit(scaling_layer):
    """Same parameters, positions in another unit: log q_s(x, a) = log q_1(x/s, a/s) - D log s
    (D: the joint space's degrees of freedom) and the marginal log q_s(x) = log q_1(x/s) -
    (n-1) d log s, to float64 precision (EACF's alanine dipeptide unit, 0.16626292 nm)."""
    n, d, s = 5, 3, 0.16626292
    flows = {}
    for scale in (1.0, s):
        flows[scale] = _flow(d, "spherical", n, length_scale=scale, scaling_layer=scaling_layer)
        _perturb_scalings(flows[scale])
    one, nm = flows[1.0], flows[s]
    x1, a1 = _samples(one, 8)
    dof = (n - 1) * d + n * d
    with torch.no_grad():
        lq_nm = nm.joint_log_prob(x1 * s, a1 * s)
        lq_1 = one.joint_log_prob(x1, a1)
        assert torch.allclose(lq_nm, lq_1 - dof * math.log(s), rtol=0, atol=1e-9)
        m_nm = nm.log_prob(x1 * s, generator=torch.Generator().manual_seed(2), marginal_k=4)
        m_1 = one.log_prob(x1, generator=torch.Generator().manual_seed(2), marginal_k=4)
        assert torch.allclose(m_nm, m_1 - (n - 1) * d * math.log(s), rtol=0, atol=1e-9)
        # sampling: the same base draw lands at s times the unit flow's sample
        z_nm, log_q_nm = nm.forward_joint(nm.base_sample(4, torch.Generator().manual_seed(3)))
        z_1, log_q_1 = one.forward_joint(one.base_sample(4, torch.Generator().manual_seed(3)))
    assert torch.allclose(z_nm, z_1 * s, atol=1e-12)
    assert torch.allclose(log_q_nm, log_q_1 - dof * math.log(s), atol=1e-9)


def test_scaling_block_log_det_equals_the_autograd_jacobian_and_inverts():
    """The scaling block on the joint space (x on a CoM-free basis, a in full R^{nAd}):
    log-det = (n-1) d sum log s_k + d sum log t_c against autograd; inverse round trip; the
    flow with scaling blocks keeps mean(x) = 0 and its density agrees with its sampling."""
    from eqbg.flows.augmented.scaling import ScalingBlock

    n, d, A = 4, 3, 2
    block = ScalingBlock(A).double()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    Q = subspace_basis(n, d, True, dtype=torch.float64).reshape(-1, n * d).T
    for _ in range(3):
        x = remove_mean(torch.randn(1, n, d, generator=gen, dtype=torch.float64))
        a = x.unsqueeze(2) + torch.randn(1, n, A, d, generator=gen, dtype=torch.float64) + 0.7
        z = torch.cat([x.unsqueeze(2), a], dim=2)
        u0 = torch.cat([Q.T @ x.reshape(-1), a.reshape(-1)])

        def f(u):
            xx = (Q @ u[: Q.shape[1]]).view(1, n, 1, d)
            out, _ = block(torch.cat([xx, u[Q.shape[1]:].view(1, n, A, d)], dim=2))
            return torch.cat([Q.T @ out[0, :, 0].reshape(-1), out[0, :, 1:].reshape(-1)])

        out, log_det = block(z)
        assert torch.allclose(log_det, torch.linalg.slogdet(torch.autograd.functional.jacobian(f, u0))[1], atol=1e-10)
        back, log_det_inv = block.inverse(out)
        assert torch.allclose(back, z, atol=1e-12) and torch.allclose(log_det_inv, -log_det, atol=1e-12)
        assert out[:, :, 0].mean(1).abs().max() < 1e-12
    flow = _flow(3, "spherical", n, scaling_layer=True)
    _perturb_scalings(flow)
    with torch.no_grad():
        out, log_q = flow.forward_joint(flow.base_sample(6, gen))
        assert out[:, :, 0].mean(1).abs().max() < 1e-12
        assert torch.allclose(flow.joint_log_prob(out[:, :, 0], out[:, :, 1:]), log_q, atol=1e-9)


@pytest.mark.parametrize("conditioned", [True, False])
def test_flow_with_scaling_blocks_is_equivariant(conditioned):
    """Rotations, reflections (the scaling block alone is E(3)-equivariant), permutations and
    joint translations: outputs transform alike and the joint density of the scaling blocks'
    flow (with the SE(3) spherical frames) is invariant under proper rotations."""
    from eqbg.flows.augmented.scaling import ScalingBlock

    n = 5
    flow = _flow(3, "spherical", n, scaling_layer=True, scaling_layer_conditioned=conditioned)
    _perturb_scalings(flow)
    gen = torch.Generator().manual_seed(8)
    R = _random_rotation(3, gen)
    perm = torch.randperm(n, generator=gen)
    z = flow.base_sample(6, gen)
    with torch.no_grad():
        out, log_q = flow.forward_joint(z)
        out_t, log_q_t = flow.forward_joint(z[:, perm] @ R)
        x, a = out[:, :, 0], out[:, :, 1:]
        t = 2.0 * torch.randn(6, 1, 3, generator=gen, dtype=torch.float64)
        shifted = flow.joint_log_prob(x + t, a + t.unsqueeze(2))
    assert torch.allclose(out_t, out[:, perm] @ R, atol=1e-9)
    assert torch.allclose(log_q_t, log_q, atol=1e-9) and torch.allclose(shifted, log_q, atol=1e-9)
    block = flow.scalings[0]
    assert isinstance(block, ScalingBlock) and block.conditioned == conditioned
    S = _random_rotation(3, gen, proper=False)
    with torch.no_grad():
        y, ld = block(z)
        y_s, ld_s = block(z[:, perm] @ S)
    assert torch.allclose(y_s, y[:, perm] @ S, atol=1e-12) and torch.allclose(ld_s, ld, atol=1e-12)
