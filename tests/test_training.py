"""Training: settings validation, model building, losses, the loop (checkpoint/resume, NaN guard,
outputs), sampling runs, and a short DW4 run that must lower the validation NLL."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from eqbg.flows import CNF, ODESolver, remove_mean
from eqbg.flows.registry import build_flow
from eqbg.rundir import load_flow
from eqbg.losses import build_loss, flow_matching_loss, resolve_loss_settings
from eqbg.sampling import sample_run
from eqbg.settings import SettingsError
from eqbg.systems import get_system
from eqbg.training import CSV_COLUMNS, TrainingDivergedError, lr_multiplier, train_run
from eqbg.training.loop import _make_optimizer
from eqbg.training.settings import TrainingSettings

TINY_MODEL = {"hidden": 16, "n_layers": 2}



@pytest.fixture(scope="module")
def dw4_data(tmp_path_factory):
    """A small DW4 dataset from the project's own MCMC sampler (a few seconds)."""
    from eqbg.data import make_reference_data

    out = tmp_path_factory.mktemp("dw4data")
    make_reference_data(
        "dw4",
        {
            "splits": {"train": 2000, "val": 300, "test": 100},
            "check_convergence": False,
            "n_chains": 64,
            "burn_in": 1000,
            "thin": 10,
        },
        0,
        out,
    )
    return out


def _settings(**training):
    base = {
        "steps": 12,
        "batch_size": 32,
        "checkpoint_every": 4,
        "val_every": 0,
        "progress": False,
        "lr": 1e-3,
        "device": "cpu",
    }
    base.update(training)
    return {"model": dict(TINY_MODEL), "training": base}


# ----------------------------------------------------------------------------- settings/models


def test_unknown_settings_are_rejected_with_clear_messages():
    dw4 = get_system("dw4")
    with pytest.raises(SettingsError, match=r"unknown model\[egnn\] setting\(s\) \['hiden'\]"):
        build_flow(dw4, {"hiden": 3}, {})
    with pytest.raises(SettingsError, match="unknown model 'transformer'.*egnn"):
        build_flow(dw4, {"name": "transformer"}, {})
    with pytest.raises(SettingsError, match=r"unknown ode setting\(s\) \['tol'\]"):
        build_flow(dw4, {}, {"tol": 1e-3})
    with pytest.raises(SettingsError, match="unknown training setting.*'stpes'"):
        train_run("dw4", "egnn", "fm", 0, {"training": {"stpes": 3}}, ".", ".")
    with pytest.raises(SettingsError, match="unknown top-level"):
        train_run("dw4", "egnn", "fm", 0, {"optimiser": {}}, ".", ".")
    with pytest.raises(SettingsError, match="unknown loss 'kl2'"):
        train_run("dw4", "egnn", "kl2", 0, {}, ".", ".")
    with pytest.raises(SettingsError, match="schedule must be"):
        train_run("dw4", "egnn", "fm", 0, {"training": {"schedule": "linear"}}, ".", ".")
    with pytest.raises(SettingsError, match="name='kernel' but the run is for 'egnn'"):
        train_run("dw4", "egnn", "fm", 0, {"model": {"name": "kernel"}}, ".", ".")


def test_build_flow_uses_system_atom_types_and_ode_settings():
    lj = get_system("lj13")
    flow = build_flow(lj, {"hidden": 8, "n_layers": 1}, {"atol": 1e-3, "rtol": 1e-2})
    assert isinstance(flow, CNF)
    assert flow.solver == ODESolver("dopri5", 1e-3, 1e-2) and flow.com_free
    assert torch.equal(flow.field.atom_types, lj.atom_types)
    kernel = build_flow(get_system("dw4"), {"name": "kernel", "n_rbf": 8}, None)
    x = remove_mean(torch.randn(3, 4, 2))
    assert kernel.field(torch.tensor(0.5), x).shape == (3, 4, 2)


def test_lr_schedules():
    cos = lr_multiplier(
        TrainingSettings(steps=100, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    )
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(100) == pytest.approx(0.1)
    assert cos(55) == pytest.approx(0.1 + 0.9 * 0.5)
    warm = lr_multiplier(TrainingSettings(steps=100, schedule="warmup", warmup_steps=4))
    assert [warm(i) for i in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_optimizer_follows_the_adam_and_amsgrad_updates_by_hand(amsgrad):
    """E-NF trains with AMSGrad: after a large then a small gradient the second moment in the
    denominator is the running maximum, not the decayed average (hand-computed updates)."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    ts = TrainingSettings(lr=lr, optimizer="adamw", weight_decay=0.0, amsgrad=amsgrad)
    p = nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = _make_optimizer([p], ts)
    m = v = v_max = x = 0.0
    for t, g in enumerate((10.0, 0.1), start=1):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        v_max = max(v_max, v)
        second = v_max if amsgrad else v
        x -= lr * (m / (1 - b1**t)) / (math.sqrt(second / (1 - b2**t)) + eps)
        # the two rules' second steps differ by ~3e-5 here, far above this tolerance
        assert p.item() == pytest.approx(x, abs=1e-12)


# ----------------------------------------------------------------------------- losses


class _ZeroField(nn.Module):
    """v = 0 (a real, if trivial, field): the FM loss is then the mean squared pair distance."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, t, x):
        self.seen.append(x.detach())
        return torch.zeros_like(x)


def test_flow_matching_loss_values_and_couplings():
    g = torch.Generator().manual_seed(0)
    dw4 = get_system("dw4")
    x0 = remove_mean(torch.randn(64, 4, 2, generator=g))
    x1 = remove_mean(2.0 * torch.randn(64, 4, 2, generator=g))
    field = _ZeroField()
    losses = {}
    for loss in ("fm", "otfm", "eqotfm"):
        paired = build_loss(loss, dw4).coupling(x0, x1)
        value = flow_matching_loss(
            field, x0, paired, sigma=0.0, com_free=True, generator=torch.Generator().manual_seed(1)
        )
        assert value.item() == pytest.approx(((paired - x0) ** 2).mean().item(), rel=1e-6)
        losses[loss] = value.item()
    # OT lowers the transport cost of the pairing; equivariant OT lowers it further
    assert losses["otfm"] < losses["fm"]
    assert losses["eqotfm"] < losses["otfm"]
    # with noise, x_t stays CoM-free
    flow_matching_loss(field, x0, x1, sigma=0.5, com_free=True, generator=g)
    assert field.seen[-1].mean(1).abs().max() < 1e-6


@pytest.mark.parametrize("loss,ratio", [("fm", 0.75), ("otfm", 0.75), ("eqotfm", 0.5)])
def test_fm_losses_finite_and_decreasing(loss, ratio):
    torch.manual_seed(0)
    dw4 = get_system("dw4")
    flow = build_flow(dw4, {"hidden": 16, "n_layers": 2}, {})
    # a tiny "data set": 64 fixed DW4-like configurations (square of side ~4)
    g = torch.Generator().manual_seed(3)
    square = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])
    data = remove_mean(square + 0.2 * torch.randn(64, 4, 2, generator=g))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    objective = build_loss(loss, dw4, {"sigma": 0.01})
    values = []
    for _ in range(120):
        opt.zero_grad()
        value = objective(flow, data, generator=g)
        assert torch.isfinite(value)
        value.backward()
        opt.step()
        values.append(value.item())
    first, last = np.mean(values[:15]), np.mean(values[-15:])
    assert last < ratio * first, (loss, first, last)


def test_ml_loss_is_finite_and_differentiable():
    torch.manual_seed(0)
    flow = build_flow(get_system("dw4"), {"hidden": 8, "n_layers": 1}, {})
    x = remove_mean(torch.randn(8, 4, 2))
    objective = build_loss("ml", get_system("dw4"), {"atol": 1e-3, "rtol": 1e-3})
    value = objective(flow, x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


# ----------------------------------------------------------------------------- loop


def test_resume_reproduces_uninterrupted_run(dw4_data, tmp_path):
    settings = _settings(steps=12, checkpoint_every=4, ema_decay=0.9, grad_clip=5.0)
    full = tmp_path / "full"
    train_run("dw4", "egnn", "eqotfm", 3, settings, dw4_data, full)

    class Crash(RuntimeError):
        pass

    def crash_at_6(step, flow, loss):
        if step == 6:
            raise Crash("simulated interruption")

    part = tmp_path / "part"
    with pytest.raises(Crash):
        train_run("dw4", "egnn", "eqotfm", 3, settings, dw4_data, part, callback=crash_at_6)
    ck = torch.load(part / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 4
    seen = []
    train_run(
        "dw4",
        "egnn",
        "eqotfm",
        3,
        settings,
        dw4_data,
        part,
        callback=lambda s, f, l: seen.append(s),
    )
    assert seen == list(range(5, 13))  # resumed after step 4
    a = torch.load(full / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(part / "model.pt", weights_only=False)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = list(csv.DictReader(open(full / "train.csv")))
    rows_b = list(csv.DictReader(open(part / "train.csv")))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert len(rows_a) == 12
    # other settings start a new run from step 1 and keep the old checkpoint aside
    other = _settings(steps=3, checkpoint_every=4, lr=5e-3)
    seen.clear()
    train_run("dw4", "egnn", "eqotfm", 3, other, dw4_data, part, callback=lambda s, f, l: seen.append(s))
    assert seen == [1, 2, 3]
    stale = list(part.glob("checkpoint.stale-*.pt"))
    assert len(stale) == 1
    assert torch.load(stale[0], weights_only=False)["key"]["training"]["lr"] != 5e-3


def test_nan_guard_names_step_and_keeps_checkpoint(dw4_data, tmp_path):
    def poison(step, flow, loss):
        if step == 3:
            with torch.no_grad():
                next(flow.field.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"non-finite loss nan at step 4"):
        train_run(
            "dw4",
            "egnn",
            "fm",
            0,
            _settings(steps=10, checkpoint_every=2),
            dw4_data,
            tmp_path,
            callback=poison,
        )
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_outputs_and_sample_run(dw4_data, tmp_path):
    from eqbg.io import read_json

    settings = _settings(
        steps=8, checkpoint_every=4, val_every=4, val_size=64, val_solver={"atol": 1e-3, "rtol": 1e-3}
    )
    summary = train_run("dw4", "egnn", "otfm", 1, settings, dw4_data, tmp_path)
    assert summary["steps_done"] == 8 and summary["training_time_s"] > 0
    cfg = read_json(tmp_path / "config.json")
    assert cfg["status"] == "done" and cfg["loss"] == "otfm" and cfg["seed"] == 1
    assert cfg["model"] == "egnn" and cfg["variant"] is None
    assert cfg["model_settings"]["hidden"] == 16 and cfg["loss_settings"] == {"sigma": 0.01}
    assert "versions" in cfg and "git_commit" in cfg
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 8
    vals = [float(r["val_nll"]) for r in rows if r["val_nll"]]
    assert len(vals) == 2 and all(math.isfinite(v) for v in vals)
    assert summary["best_val_nll"] == pytest.approx(min(vals))

    flow, config = load_flow(tmp_path)
    assert config["loss"] == "otfm"
    out = tmp_path / "samples.npz"
    info = sample_run(tmp_path, 16, {"atol": 1e-6, "rtol": 1e-6, "dtype": "float64", "device": "cpu"}, out, 5)
    with np.load(out) as f:
        x, log_q = f["x"], f["log_q"]
        assert x.shape == (16, 4, 2) and log_q.shape == (16,)
        assert int(f["n"]) == 16 and str(f["method"]) == "dopri5" and float(f["atol"]) == 1e-6
        assert int(f["nfe"]) == info["nfe"] > 0 and float(f["path_length"]) > 0
    assert np.abs(x.mean(1)).max() < 1e-6
    # the stored log density agrees with the reverse-time exact likelihood of the same points
    flow64, _ = load_flow(tmp_path, ode={"atol": 1e-7, "rtol": 1e-7}, dtype="float64")
    back = flow64.log_prob(torch.from_numpy(x)).numpy()
    assert np.allclose(back, log_q, atol=1e-3)
    # same seed, same samples
    sample_run(
        tmp_path, 16, {"atol": 1e-6, "rtol": 1e-6, "dtype": "float64", "device": "cpu"}, tmp_path / "again.npz", 5
    )
    with np.load(tmp_path / "again.npz") as f:
        assert np.array_equal(f["x"], x)
    with pytest.raises(SettingsError, match="unknown sampling setting"):
        sample_run(tmp_path, 4, {"tolerance": 1e-3, "device": "cpu"}, out, 0)


def _val_curve_and_prior_nll(run_dir, data_dir, settings) -> tuple[list[float], float]:
    """The run's validation NLLs, and the NLL of the same validation configurations under the
    prior (what an untrained, zero-initialised field gives): the loop validates on the val
    configurations picked by a generator seeded with seed + 1 (seed 0 here)."""
    from eqbg.data import load_dataset

    rows = list(csv.DictReader(open(run_dir / "train.csv")))
    vals = [float(r["val_nll"]) for r in rows if r["val_nll"]]
    val = load_dataset(data_dir / "val.npz", "dw4", "val")
    n = settings["training"]["val_size"]
    sel = torch.randperm(len(val), generator=torch.Generator().manual_seed(1))[:n]
    flow0 = build_flow(get_system("dw4"), settings["model"], {})
    return vals, float(-flow0.prior.log_prob(val[sel].double()).mean())


@pytest.mark.slow
def test_short_dw4_training_lowers_validation_nll(dw4_data, tmp_path):
    settings = {
        "model": {"hidden": 32, "n_layers": 3},
        "training": {
            "steps": 120,
            "batch_size": 128,
            "lr": 2e-3,
            "warmup_steps": 20,
            "val_every": 60,
            "val_size": 200,
            "checkpoint_every": 120,
            "progress": False,
            "device": "cpu",
        },
    }
    train_run("dw4", "egnn", "eqotfm", 0, settings, dw4_data, tmp_path)
    vals, prior_nll = _val_curve_and_prior_nll(tmp_path, dw4_data, settings)
    # the untrained field is ~0 (EGNN's last coordinate layer starts near zero), so the prior's
    # NLL is the starting point; training must beat it clearly and keep improving
    print("val NLL", vals, "prior NLL", prior_nll)
    assert vals[-1] < prior_nll - 1.0, (vals, prior_nll)
    assert vals[-1] <= vals[0] + 0.05


# ----------------------------------------------------------------------------- training state


def _run_with_crash(settings, data, run_dir, crash_step, loss="fm", model="egnn"):
    class Crash(RuntimeError):
        pass

    def crash(step, flow, value):
        if step == crash_step:
            raise Crash("simulated interruption")

    with pytest.raises(Crash):
        train_run("dw4", model, loss, 3, settings, data, run_dir, callback=crash)


def test_rerun_of_a_finished_run_delivers_its_best_weights(dw4_data, tmp_path):
    """Snakemake deletes model.pt before re-running a job: the rerun must deliver the best
    weights from the checkpoint again, without training (before, it saved the final ones)."""
    settings = _settings(steps=12, checkpoint_every=4, val_every=4, val_size=64, lr=0.1)
    train_run("dw4", "egnn", "fm", 3, settings, dw4_data, tmp_path)
    first = torch.load(tmp_path / "model.pt", weights_only=False)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    vals = {int(r["step"]): float(r["val_nll"]) for r in rows if r["val_nll"]}
    best_step = min(vals, key=vals.get)
    assert best_step < 12, f"setup must make the best step differ from the last one: {vals}"
    assert first["step"] == best_step and first["val_nll"] == pytest.approx(vals[best_step])
    (tmp_path / "model.pt").unlink()
    seen = []
    train_run("dw4", "egnn", "fm", 3, settings, dw4_data, tmp_path, callback=lambda *a: seen.append(a))
    assert seen == []
    again = torch.load(tmp_path / "model.pt", weights_only=False)
    assert again["step"] == best_step
    for k, v in first["state_dict"].items():
        assert torch.equal(v, again["state_dict"][k]), k


def test_resume_with_validation_restores_the_best_model_and_score(dw4_data, tmp_path):
    settings = _settings(steps=12, checkpoint_every=4, val_every=4, val_size=64, lr=0.1)
    full = tmp_path / "full"
    summary = train_run("dw4", "egnn", "fm", 3, settings, dw4_data, full)
    part = tmp_path / "part"
    _run_with_crash(settings, dw4_data, part, crash_step=10)  # after validations at 4 and 8
    resumed = train_run("dw4", "egnn", "fm", 3, settings, dw4_data, part)
    assert resumed["best_val_nll"] == summary["best_val_nll"]
    assert resumed["best_step"] == summary["best_step"]
    a = torch.load(full / "model.pt", weights_only=False)
    b = torch.load(part / "model.pt", weights_only=False)
    assert a["step"] == b["step"] and a["val_nll"] == b["val_nll"]
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_only_result_changing_settings_invalidate_a_checkpoint(dw4_data, tmp_path):
    settings = _settings(steps=12, checkpoint_every=4)
    _run_with_crash(settings, dw4_data, tmp_path, crash_step=6)
    cosmetic = _settings(steps=12, checkpoint_every=3, num_threads=1, progress=True)
    seen = []
    train_run("dw4", "egnn", "fm", 3, cosmetic, dw4_data, tmp_path, callback=lambda s, f, v: seen.append(s))
    assert seen == list(range(5, 13))  # resumed after the step-4 checkpoint
    assert not list(tmp_path.glob("checkpoint.stale-*.pt"))


def test_nan_gradient_guard_names_the_step_and_keeps_the_checkpoint(dw4_data, tmp_path):
    def poison_gradient(step, flow, value):
        if step == 2:
            next(flow.field.parameters()).register_hook(lambda g: torch.full_like(g, float("nan")))

    with pytest.raises(TrainingDivergedError, match=r"non-finite gradient norm nan at step 3"):
        train_run("dw4", "egnn", "fm", 0, _settings(steps=10, checkpoint_every=2), dw4_data,
                  tmp_path, callback=poison_gradient)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- ml, solvers


def test_fixed_step_ml_and_validation_solvers_take_their_steps(dw4_data):
    from eqbg.settings import resolve
    from eqbg.training.step import _val_nll

    with pytest.raises(SettingsError, match=r"loss\[ml\].*rk4.*n_steps"):
        build_loss("ml", get_system("dw4"), {"method": "rk4"})
    with pytest.raises(SettingsError, match="val_solver.*euler.*n_steps"):
        resolve(TrainingSettings, {"val_solver": {"method": "euler"}}, "training")
    ts = resolve(TrainingSettings, {"val_solver": {"method": "euler", "n_steps": 5}}, "training")
    # the keys given replace the field's defaults, not the solver class's: validation keeps its
    # loose tolerances when only the method is named
    assert resolve(TrainingSettings, {"val_solver": {"method": "bosh3"}}, "training").val_solver.atol == 1e-4
    dw4 = get_system("dw4")
    torch.manual_seed(0)
    flow = build_flow(dw4, TINY_MODEL, {})
    x = remove_mean(torch.randn(8, 4, 2))
    build_loss("ml", dw4, {"method": "rk4", "n_steps": 3})(flow, x, generator=torch.Generator().manual_seed(0))
    assert flow.last_nfe == 4 * 3  # rk4: 4 evaluations per step
    _val_nll(flow, x, ts, torch.Generator().manual_seed(0))
    assert flow.last_nfe == 5


def test_ml_uses_the_closed_form_divergence_of_the_kernel_flow():
    """Maximum likelihood with a closed-form divergence is exact: the loss equals the exact
    NLL of the same solver, with no probe noise (before, training always used Hutchinson)."""
    from eqbg.losses import use_exact_divergence

    dw4, lj13 = get_system("dw4"), get_system("lj13")
    ml = resolve_loss_settings("ml", {"atol": 1e-6, "rtol": 1e-6})
    torch.manual_seed(0)
    kernel = build_flow(dw4, {"name": "kernel", "n_rbf": 8, "init_scale": 0.3}, {}).double()
    egnn = build_flow(lj13, {"hidden": 8, "n_layers": 1}, {})
    assert use_exact_divergence(kernel, "auto", 0)
    assert not use_exact_divergence(egnn, "auto", ml.exact_max_dim)  # 36 > 2 dimensions
    assert use_exact_divergence(egnn, "exact", 0) and not use_exact_divergence(kernel, "hutchinson", 99)
    x = remove_mean(2.0 * torch.randn(16, 4, 2, dtype=torch.float64))
    objective = build_loss("ml", dw4, ml)
    values = [float(objective(kernel, x, generator=torch.Generator().manual_seed(s)).detach()) for s in (0, 1)]
    exact = float(-kernel.log_prob(x, solver=ml.solver).mean())
    assert values[0] == values[1] == pytest.approx(exact, abs=1e-9)


@pytest.mark.slow
def test_maximum_likelihood_training_lowers_validation_nll(dw4_data, tmp_path):
    settings = {
        "model": {"name": "kernel", "n_rbf": 16, "r_max": 8.0},
        "training": {
            "steps": 40, "batch_size": 64, "lr": 2e-2, "val_every": 20, "val_size": 128,
            "checkpoint_every": 40, "progress": False, "device": "cpu",
        },
        "loss": {"atol": 1e-3, "rtol": 1e-3},
    }
    train_run("dw4", "kernel", "ml", 0, settings, dw4_data, tmp_path)
    vals, prior_nll = _val_curve_and_prior_nll(tmp_path, dw4_data, settings)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    # the kernel field starts at zero (init_scale 0): the prior's NLL is the starting point
    assert vals[-1] < prior_nll - 1.0, (vals, prior_nll)
    assert all(r["energy_evals"] == "0" for r in rows)


def test_reverse_kl_trains_from_the_energy_alone_and_counts_its_evaluations(tmp_path):
    settings = {
        "model": {"name": "kernel", "n_rbf": 8, "r_max": 8.0},
        "training": {"steps": 30, "batch_size": 32, "lr": 3e-2, "val_every": 0,
                     "checkpoint_every": 10, "progress": False, "device": "cpu"},
    }
    summary = train_run("dw4", "kernel", "kl", 0, settings, None, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    assert [int(r["energy_evals"]) for r in rows] == [32] * 30
    assert [int(r["n_energy_evals"]) for r in rows] == [32 * (i + 1) for i in range(30)]
    assert summary["n_energy_evals"] == 960 and summary["n_train"] is None
    losses = [float(r["loss"]) for r in rows]
    # the loss is KL(q || p) - log Z: it must fall from the prior's value
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses


def test_dynamic_gradient_control_clips_to_twice_the_median_and_skips_outliers():
    """EACF's rule: median of the last norms; above skip_factor x median (or non-finite) the
    update is skipped, else the gradient is clipped to clip_factor x median; the history
    survives a checkpoint and a run of skips stops training."""
    from eqbg.training.gradients import GradientControl

    p = torch.nn.Parameter(torch.zeros(2))

    def step(control, norm):
        p.grad = torch.tensor([norm, 0.0])
        return control.apply([p])

    control = GradientControl("dynamic", window=3, min_history=3, max_consecutive_skips=3)
    for norm in (1.0, 3.0, 2.0):  # fewer than min_history norms: no clipping yet
        assert not step(control, norm).skip and float(p.grad.norm()) == norm
    decision = step(control, 5.0)  # median 2: clip to 4
    assert not decision.skip and decision.grad_norm == 5.0
    assert math.isclose(float(p.grad.norm()), 4.0, rel_tol=1e-6)
    assert list(control.history) == [3.0, 2.0, 5.0]  # window 3, raw norms kept
    assert step(control, 31.0).skip  # > 10 x median 3
    assert step(control, float("nan")).skip and control.n_skipped == 2
    # finite norms enter the history even when skipped (else a lasting rise is skipped for ever)
    assert list(control.history) == [2.0, 5.0, 31.0]
    restored = GradientControl("dynamic", window=3, min_history=3, max_consecutive_skips=3)
    restored.load_state_dict(control.state_dict())
    assert list(restored.history) == [2.0, 5.0, 31.0] and restored.n_skipped == 2
    with pytest.raises(FloatingPointError, match="3 consecutive"):
        step(restored, float("inf"))
    # a lasting 100-fold rise of the norms: skipped until the median follows, then clipped
    rising = GradientControl("dynamic", window=5, min_history=5)
    for _ in range(5):
        step(rising, 1.0)
    decisions = [step(rising, 100.0).skip for _ in range(6)]
    assert decisions[:3] == [True, True, True] and not any(decisions[3:])
    # norm mode: a plain clip, never a skip
    fixed = GradientControl("norm", 1.5)
    assert not step(fixed, 3.0).skip and math.isclose(float(p.grad.norm()), 1.5, rel_tol=1e-6)


def test_warmup_starts_at_its_initial_ratio():
    ts = TrainingSettings(steps=100, warmup_steps=10, warmup_init_ratio=0.1, schedule="cosine", min_lr_ratio=0.1)
    f = lr_multiplier(ts)
    assert math.isclose(f(0), 0.1 + 0.9 / 10) and math.isclose(f(9), 1.0)
    assert math.isclose(f(100), 0.1)


def test_stages_read_the_files_their_rules_declare(dw4_data, tmp_path):
    """A run folder or data folder built from declared paths reads those paths, wherever they
    are; undeclared files stay root/<name>; a name that is no file of the folder is refused."""
    import shutil

    from eqbg.rundir import DataDir, RunDir
    from eqbg.training.batches import training_data

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(dw4_data / "train.npz", tmp_path / "a" / "declared_train.npz")
    shutil.copy(dw4_data / "val.npz", tmp_path / "b" / "declared_val.npz")
    declared = DataDir.from_files(train=tmp_path / "a" / "declared_train.npz",
                                  val=tmp_path / "b" / "declared_val.npz", population=None)
    assert declared.root == tmp_path / "a" and "population" not in declared.files
    assert declared.split("test") == tmp_path / "a" / "test.npz"
    ts = TrainingSettings(batch_size=16, val_every=5, val_size=32, n_train=64)
    args = ("fm", True)
    rest = (ts, get_system("dw4"), 0, torch.device("cpu"), torch.float32)
    by_folder = training_data(*args, dw4_data, *rest)
    by_files = training_data(*args, declared, *rest)
    assert all(torch.equal(a, b) for a, b in zip(by_folder, by_files))
    # ... and not what lies under the folder's names: an empty file there would fail to load
    (tmp_path / "a" / "train.npz").write_bytes(b"")
    assert torch.equal(training_data(*args, declared, *rest)[0], by_folder[0])
    run = RunDir.from_files(samples=tmp_path / "s.npz", config=tmp_path / "r" / "config.json")
    assert (run.root, run.samples, run.model) == (tmp_path, tmp_path / "s.npz", tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"unknown run files \['sample'\]"):
        RunDir.from_files(sample=tmp_path / "s.npz")
    with pytest.raises(ValueError, match="needs its root or at least one declared file"):
        DataDir.from_files()
