"""Figures build from synthetic evaluation outputs and land as non-empty PNG + PDF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eqbg.evaluation import common_bins, density_histogram, ramachandran_histogram
from eqbg.io import save_npz, write_json
from eqbg.plots import figure_kinds, make_figures, save_figure, training_curves_plot

METHODS = [("egnn", "ml"), ("egnn", "eqotfm")]


def _write_run(root: Path, system: str, model: str, loss: str, seed: int, rng) -> tuple[Path, Path, dict]:
    run = root / system / model / loss / f"seed{seed}"
    u_data = rng.normal(-20.0, 2.0, 500)
    u_flow = rng.normal(-19.0, 2.5, 400)
    log_w = -0.1 * (u_flow + 19.0) ** 2
    w = np.exp(log_w - log_w.max())
    edges = common_bins(u_data, u_flow, bins=40)
    d_data, d_flow = rng.gamma(4.0, 0.5, 3000), rng.gamma(4.2, 0.5, 2400)
    dedges = np.linspace(0, 6, 41)
    arrays = dict(
        energy_edges=edges,
        energy_hist_data=density_histogram(u_data, edges),
        energy_hist_flow=density_histogram(u_flow, edges),
        energy_hist_reweighted=density_histogram(u_flow, edges, w),
        distance_edges=dedges,
        distance_hist_data=density_histogram(d_data, dedges),
        distance_hist_flow=density_histogram(d_flow, dedges),
        distance_hist_reweighted=density_histogram(d_flow, dedges, np.repeat(w, 6)),
        system=np.asarray(system), model=np.asarray(model), loss=np.asarray(loss), seed=np.asarray(str(seed)),
    )
    if system == "aldp":
        phi = np.where(rng.random(400) < 0.9, rng.normal(-1.5, 0.4, 400), rng.normal(1.0, 0.3, 400))
        psi = rng.normal(2.5, 0.5, 400)
        for kind in ("data", "flow", "reweighted"):
            arrays[f"rama_hist_{kind}"] = ramachandran_histogram(phi, psi, bins=32)[0]
    save_npz(run / "eval.npz", **arrays)
    write_json(run / "config.json", {"system": system, "model": model, "loss": loss, "variant": None, "seed": seed})
    steps = np.arange(0, 200, 10)
    pd.DataFrame({
        "step": steps, "loss": 5.0 * np.exp(-steps / 80) + 0.1 * rng.random(steps.size), "lr": 1e-3,
        "val_nll": np.where(steps % 50 == 0, 8.0 - steps / 100, np.nan), "wall_time_s": steps * 0.1,
    }).to_csv(run / "train.csv", index=False)
    metrics = {"system": system, "model": model, "loss": loss, "seed": seed,
               "ess": float(rng.uniform(0.2, 0.9)), "ess_n": 400, "ess_ci_level": 0.9,
               "path_length": float(rng.uniform(1, 3)), "samples_per_s": float(rng.uniform(10, 1000))}
    metrics["ess_ci_low"], metrics["ess_ci_high"] = metrics["ess"] - 0.05, metrics["ess"] + 0.04
    metrics["ess_per_s"] = 0.8 * metrics["ess"] * metrics["samples_per_s"]
    return run / "eval.npz", run / "train.csv", metrics


@pytest.mark.parametrize("system", ["dw4", "aldp"])
def test_make_figures_writes_every_kind(tmp_path, system):
    rng = np.random.default_rng(0)
    npz, csv, rows = [], [], []
    for model, loss in METHODS:
        for seed in range(2):
            a, b, m = _write_run(tmp_path / "runs", system, model, loss, seed, rng)
            npz.append(a), csv.append(b), rows.append(m)
    out = make_figures(system, pd.DataFrame(rows), npz, csv, tmp_path / "fig")
    every = {"energy_hist", "distance_hist", "ess", "training_curves", "path_length", "sampling_speed",
             "training_size", "cost"}
    assert set(out) == every | ({"ramachandran"} if system == "aldp" else set())
    assert set(out) == set(figure_kinds(system))
    for kind, paths in out.items():
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        for p in paths:
            assert p.stat().st_size > 5000, f"{p} is suspiciously small"
        assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[1].read_bytes()[:5] == b"%PDF-"
    # no temporary files left behind by the atomic writes
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(
        f"{k}.{e}" for k in out for e in ("png", "pdf")
    )


def test_figures_with_missing_inputs_still_write_files(tmp_path):
    empty = pd.DataFrame({"system": [], "model": [], "loss": [], "seed": []})
    out = make_figures("lj13", empty, [], [], tmp_path)
    for paths in out.values():
        assert all(p.stat().st_size > 1000 for p in paths)


def test_training_curves_plot_has_both_panels(tmp_path):
    curves = pd.DataFrame({"method": ["egnn/ml"] * 4, "seed": ["0"] * 4, "step": [0, 1, 2, 3],
                           "loss": [3.0, 2.0, 1.5, 1.2], "val_nll": [9.0, np.nan, 8.0, np.nan]})
    fig = training_curves_plot(curves, "dw4")
    assert len(fig.axes) == 2
    assert fig.axes[1].get_ylabel().startswith("validation NLL")
    paths = save_figure(fig, tmp_path / "curves")
    assert all(p.exists() for p in paths)


def test_load_training_curves_keeps_loss_values(tmp_path):
    from eqbg.plots import load_training_curves

    rng = np.random.default_rng(1)
    _, csv, _ = _write_run(tmp_path, "dw4", "egnn", "fm", 2, rng)
    curves = load_training_curves([csv])
    original = pd.read_csv(csv)
    np.testing.assert_allclose(curves["loss"], original["loss"])
    assert set(curves["method"]) == {"egnn/fm"} and set(curves["seed"]) == {"2"}
    assert len(training_curves_plot(curves, "dw4").axes) == 2


def _speeds(ess_per_s: list[float] | None, samples_per_s: list[float]) -> pd.DataFrame:
    rows = []
    for i, sps in enumerate(samples_per_s):
        row = {"system": "dw4", "model": "egnn", "loss": ["fm", "ml"][i // 2], "seed": i % 2, "samples_per_s": sps}
        if ess_per_s is not None:
            row["ess_per_s"] = ess_per_s[i]
        rows.append(row)
    return pd.DataFrame(rows)


def test_sampling_speed_shows_samples_and_effective_samples_per_second():
    from eqbg.plots import sampling_speed_plot

    fig = sampling_speed_plot(_speeds([30.0, 50.0, 2.0, 4.0], [300.0, 310.0, 40.0, 44.0]), "dw4")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["samples/s", "effective samples/s"]
    assert ax.get_yscale() == "log"  # values span more than a factor 10
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    # one bar per method and quantity at the mean over seeds
    assert heights == pytest.approx([3.0, 40.0, 42.0, 305.0])
    assert "ESS × n" in ax.get_title()


def test_sampling_speed_without_ess_per_s_or_with_zeros():
    from eqbg.plots import sampling_speed_plot

    old = sampling_speed_plot(_speeds(None, [300.0, 310.0, 40.0, 44.0]), "dw4").axes[0]
    assert [t.get_text() for t in old.get_legend().get_texts()] == ["samples/s"]
    flat = sampling_speed_plot(_speeds([0.0, 1.0, 2.0, float("nan")], [3.0, 3.0, 4.0, 4.0]), "dw4").axes[0]
    assert flat.get_yscale() == "linear"  # a zero cannot go on a log axis
    empty = sampling_speed_plot(pd.DataFrame({"model": [], "loss": []}), "dw4")
    assert not empty.axes[0].axison
