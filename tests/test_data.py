"""Tests of reference-data generation, splits, dataset files and validation (eqbg.data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eqbg import io
from eqbg.data import (
    DatasetError,
    NotConvergedError,
    assign_chains,
    check_disjoint,
    load_dataset,
    make_reference_data,
    metropolis,
    minimise,
    random_nonoverlapping,
    resolve_settings,
)
from eqbg.data.diagnostics import configurational_temperature
from eqbg.systems import get_system

# A DW4 run small enough for a unit test (~2 s) that still passes every convergence check.
DW4_SMALL = {
    "n_chains": 16,
    "splits": {"train": 600, "val": 100, "test": 200},
    "burn_in": 2000,
    "thin": 50,
    "target_acceptance": 0.3,
    "conf_temp_samples": 600,
    "convergence": {"min_ess": 100, "rhat_max": 1.1},
}


@pytest.fixture(scope="module")
def dw4_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("dw4")
    diag = make_reference_data("dw4", DW4_SMALL, seed=11, out_dir=out)
    return out, diag


def test_dw4_reference_data_is_converged_and_at_kt_1(dw4_data):
    out, diag = dw4_data
    assert diag["converged"], diag["failed_checks"]
    ct = diag["conf_temp"]
    assert abs(ct["value"] - 1.0) < 4 * ct["se"] + 0.02, ct
    assert ct["se"] < 0.06
    assert 0.2 < diag["acceptance"]["mean"] < 0.4
    assert diag["iat"]["mean"] >= 0.5 and diag["ess"] > 100
    # the EFM DW4 test data have mean energy -22.45 +- 1.90 (PAPERS.md); ours must be close
    assert abs(diag["energy"]["mean"] + 22.45) < 0.6
    assert abs(diag["energy"]["std"] - 1.9) < 0.3


def test_dw4_files_provenance_and_round_trip(dw4_data):
    out, diag = dw4_data
    system = get_system("dw4")
    sizes = DW4_SMALL["splits"]
    for split, n in sizes.items():
        x = load_dataset(out / f"{split}.npz", system=system, split=split)
        assert x.shape == (n, 4, 2) and x.dtype == torch.float32
        assert float(x.mean(1).abs().max()) < 1e-5
        with np.load(out / f"{split}.npz") as f:
            assert str(f["system"]) == "dw4" and str(f["split"]) == split
            np.testing.assert_array_equal(f["x"], x.numpy())
    prov = io.read_json(out / "provenance.json")
    assert prov["system"] == "dw4" and prov["seed"] == 11 and prov["sampler"] == "mcmc"
    assert prov["settings"]["thin"] == 50 and prov["settings"]["n_chains"] == 16
    assert "git_commit" in prov and "torch" in prov["versions"]
    assert prov["diagnostics"]["conf_temp"]["value"] == pytest.approx(diag["conf_temp"]["value"])
    assert not (out / "diagnostics.failed.json").exists()


def test_dw4_splits_share_no_chain_and_no_configuration(dw4_data):
    out, diag = dw4_data
    chains = {k: set(v) for k, v in diag["chains"].items()}
    assert not (chains["train"] & chains["val"] or chains["train"] & chains["test"] or chains["val"] & chains["test"])
    assert set().union(*chains.values()) == set(range(DW4_SMALL["n_chains"]))
    rows = {k: {r.tobytes() for r in load_dataset(out / f"{k}.npz").numpy()} for k in chains}
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"] or rows["val"] & rows["test"])


def test_same_seed_same_data(tmp_path, dw4_data):
    out, _ = dw4_data
    make_reference_data("dw4", DW4_SMALL, seed=11, out_dir=tmp_path)
    for split in ("train", "val", "test"):
        assert torch.equal(load_dataset(tmp_path / f"{split}.npz"), load_dataset(out / f"{split}.npz"))


def test_assign_chains_and_check_disjoint():
    chains = assign_chains(20, {"train": 1000, "val": 100, "test": 200}, np.random.default_rng(0))
    assert [len(chains[k]) for k in ("train", "val", "test")] == [15, 2, 3]
    assert sorted(np.concatenate(list(chains.values())).tolist()) == list(range(20))
    data = {k: np.random.default_rng(i).normal(size=(5, 3, 2)) for i, k in enumerate(chains)}
    check_disjoint(chains, data)
    bad = dict(chains, val=np.append(chains["val"], chains["train"][0]))
    with pytest.raises(AssertionError, match="share chains"):
        check_disjoint(bad, data)
    data["test"][0] = data["train"][3]
    with pytest.raises(AssertionError, match="identical configurations"):
        check_disjoint(chains, data)



def test_lj_convention_check_fails_for_the_wrong_convention():
    """Samples of the 'ordered' LJ13 give T_conf = 1 under 'ordered' and far from 1 under 'unique'.

    A short run from minimised structures: T_conf is a local (per-configuration) identity, so it
    settles long before the chains have mixed between basins.
    """
    ordered = get_system("lj13", pair_convention="ordered")
    unique = get_system("lj13", pair_convention="unique")
    gen = torch.Generator().manual_seed(0)
    x0 = random_nonoverlapping(48, 13, 3, radius=2.0, min_dist=0.9, generator=gen)
    x0, _ = minimise(ordered.energy, x0, n_iter=150, com_free=True)
    res = metropolis(ordered.energy, x0, n_steps=600, burn_in=900, thin=20, step_size=0.03,
                     target_acceptance=0.3, com_free=True, generator=gen)
    x = res.samples.reshape(-1, 13, 3)
    groups = np.repeat(np.arange(48), res.samples.shape[1])
    right = configurational_temperature(ordered.energy, x, groups=groups)
    wrong = configurational_temperature(unique.energy, x, groups=groups)
    assert abs(right["value"] - 1.0) < 4 * right["se"] + 0.05, right
    assert abs(wrong["value"] - 1.0) > 0.3 and abs(wrong["value"] - 1.0) > 10 * wrong["se"], wrong


def test_not_converged_raises_and_keeps_diagnostics(tmp_path):
    settings = dict(DW4_SMALL, convergence={"rhat_max": 0.5, "min_ess": 100})
    with pytest.raises(NotConvergedError, match=r"R-hat of the energy [0-9.]+ > rhat_max 0.5") as err:
        make_reference_data("dw4", settings, seed=3, out_dir=tmp_path)
    failed = json.loads((tmp_path / "diagnostics.failed.json").read_text())
    assert failed["diagnostics"]["converged"] is False
    assert failed["diagnostics"]["rhat"] == pytest.approx(err.value.diagnostics["rhat"])
    assert not (tmp_path / "train.npz").exists() and not (tmp_path / "provenance.json").exists()


def test_unconverged_start_is_caught(tmp_path):
    # no burn-in from minimised structures: the energy still drifts, R-hat and T_conf say so
    settings = dict(DW4_SMALL, burn_in=0, thin=1, splits={"train": 300, "val": 64, "test": 64},
                    n_chains=16, convergence={"min_ess": 10})
    with pytest.raises(NotConvergedError, match="R-hat|configurational temperature|effective sample size"):
        make_reference_data("dw4", settings, seed=5, out_dir=tmp_path)


def test_settings_validation():
    with pytest.raises(ValueError, match=r"unknown data settings .*key\(s\) \['n_chain'\]"):
        resolve_settings("dw4", "mcmc", {"n_chain": 10})
    with pytest.raises(ValueError, match=r"unknown convergence key\(s\) \['rhat'\]"):
        resolve_settings("dw4", "mcmc", {"convergence": {"rhat": 1.1}})
    with pytest.raises(ValueError, match="unknown split"):
        resolve_settings("dw4", "mcmc", {"splits": {"training": 10}})
    with pytest.raises(ValueError, match="sampled with 'mcmc'"):
        resolve_settings("dw4", "mcmc", {"sampler": "md"})
    with pytest.raises(ValueError, match="init must be"):
        resolve_settings("dw4", "mcmc", {"init": "lattice"})
    s = resolve_settings("lj55", "mcmc", {"thin": 3})
    assert s["thin"] == 3 and s["init_radius"] == 3.0 and s["convergence"]["rhat_max"] == 1.1
    assert s["convergence"]["min_ess"] == 500.0 and s["proposal"] == "mala"
    with pytest.raises(ValueError, match="n_steps=.* keeps"):
        make_reference_data("dw4", dict(DW4_SMALL, n_steps=100), seed=0, out_dir=Path("/nonexistent"))


def test_exact_manywell_matches_exact_mean_energy(tmp_path):
    diag = make_reference_data("manywell32", {"splits": {"train": 3000, "val": 500, "test": 500},
                                              "conf_temp_samples": 500}, seed=2, out_dir=tmp_path)
    system = get_system("manywell32")
    assert diag["log_z"] == pytest.approx(system.log_z)
    assert abs(diag["energy"]["mean_z"]) < 4.0
    assert abs(diag["conf_temp"]["value"] - 1.0) < 4 * diag["conf_temp"]["se"]
    x = load_dataset(tmp_path / "test.npz", system="manywell32", split="test")
    assert x.shape == (500, 16, 2)
    # not CoM-free: the mean position is not removed (the deeper wells sit at x1 ~ +1.7)
    assert float(x[..., 0].mean()) > 0.1


def _write(path: Path, **arrays) -> Path:
    io.save_npz(path, **arrays)
    return path


def test_load_dataset_errors(tmp_path):
    good = np.random.default_rng(0).normal(size=(10, 4, 2)).astype(np.float32)
    good -= good.mean(1, keepdims=True)
    meta = {"system": np.array("dw4"), "split": np.array("train")}
    ok = _write(tmp_path / "ok.npz", x=good, **meta)
    assert load_dataset(ok, system="dw4", split="train").shape == (10, 4, 2)

    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(ok.read_bytes()[:100])
    with pytest.raises(DatasetError, match="corrupt or unreadable.*corrupt.npz|corrupt.npz.*corrupt or unreadable"):
        load_dataset(corrupt)
    with pytest.raises(DatasetError, match="no 'x' array"):
        load_dataset(_write(tmp_path / "nox.npz", y=good, **meta))
    with pytest.raises(DatasetError, match="expected system 'lj13', file says 'dw4'"):
        load_dataset(_write(tmp_path / "lj.npz", x=np.zeros((3, 13, 3), np.float32), **meta), system="lj13")
    with pytest.raises(DatasetError, match="expected split 'test', file says 'train'"):
        load_dataset(ok, split="test")
    with pytest.raises(DatasetError, match=r"shape \(10, 2, 4\) does not match system dw4"):
        load_dataset(_write(tmp_path / "shape.npz", x=good.reshape(10, 2, 4), **meta), system="dw4")
    nan = good.copy()
    nan[3, 1, 0] = np.nan
    with pytest.raises(DatasetError, match="1 configuration\\(s\\) contain NaN"):
        load_dataset(_write(tmp_path / "nan.npz", x=nan, **meta), system="dw4")
    with pytest.raises(DatasetError, match="not centre-of-mass free"):
        load_dataset(_write(tmp_path / "com.npz", x=good + 1.0, **meta), system="dw4")
    with pytest.raises(DatasetError, match=r"shape \(N, n, d\)"):
        load_dataset(_write(tmp_path / "flat.npz", x=good.reshape(10, 8), **meta))


@pytest.mark.slow
def test_aldp_short_md(tmp_path):
    settings = {
        "splits": {"train": 20, "val": 6, "test": 10},
        "n_trajectories": 2,
        "n_workers": 2,
        "equilibration_ps": 1.0,
        "gap_ps": 2.0,
        "split_cycles": 2,
        "check_convergence": False,
    }
    diag = make_reference_data("aldp", settings, seed=1, out_dir=tmp_path)
    x = load_dataset(tmp_path / "train.npz", system="aldp", split="train")
    assert x.shape == (20, 22, 3)
    assert float(x.mean(1).abs().max()) < 1e-5
    assert 0.0 <= diag["phi_positive_fraction"] <= 1.0
    assert {"phi_mean_deg", "psi_mean_deg"} <= set(diag["phi_psi"])
    # from the minimised L-alanine start, a few ps at 300 K stay in the phi < 0 basin
    assert diag["phi_positive_fraction"] < 0.05
    assert diag["phi_psi"]["phi_mean_deg"] < 0
    assert len(diag["seeds"]) == 2 and diag["seeds"][0] != diag["seeds"][1]
    assert all(v > 0 for v in diag["ns_per_day"])
    # two cycles of blocks, each block followed by the gap, in every trajectory
    assert diag["blocks"] == {"train": [[0, 5], [16, 21]], "val": [[7, 9], [23, 25]], "test": [[11, 14], [27, 30]]}
    assert diag["frames_per_trajectory"] == 30
    assert math.isfinite(diag["energy"]["mean"])


# --------------------------------------------------------------------------------------------
# system capabilities used by the data stage; provenance names the proposal actually used
# --------------------------------------------------------------------------------------------

# tiny and unconverged on purpose: only the files and the provenance record are checked
TINY_MCMC = {
    "n_chains": 4, "splits": {"train": 16, "val": 8, "test": 8}, "burn_in": 20, "thin": 1,
    "minimise_steps": 5, "conf_temp_samples": 0, "check_convergence": False,
}


@pytest.mark.parametrize(("name", "proposal", "says", "not_says"), [
    ("lj13", "mala", "MALA", "random-walk"),
    ("dw4", "rw", "random-walk Metropolis", "MALA"),
])
def test_provenance_names_the_proposal_used(tmp_path, name, proposal, says, not_says):
    make_reference_data(name, dict(TINY_MCMC, proposal=proposal), seed=0, out_dir=tmp_path)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["settings"]["proposal"] == proposal
    assert says in prov["sampler_description"]
    assert not_says not in prov["sampler_description"]


def test_sampler_and_defaults_come_from_the_registry():
    from eqbg.data import sampler_for
    from eqbg.data.settings import system_defaults
    from eqbg.systems import KNOWN_SYSTEMS, system_spec

    for name in KNOWN_SYSTEMS:
        spec = system_spec(name)
        assert sampler_for(name) == spec.reference_sampler
        s = resolve_settings(name, spec.reference_sampler, None)  # registry defaults are valid
        for key, value in spec.data_defaults.items():
            got = s[key]
            assert ({k: got[k] for k in value} if key == "convergence" else got) == value, key
    assert sampler_for(get_system("gmm40")) == "exact" and sampler_for(get_system("lj13")) == "mcmc"
    # the per-system numbers are unchanged by the move onto the registry
    assert system_defaults("lj13") == {
        "init_radius": 2.0, "init_min_dist": 0.9, "proposal": "mala", "step_size": 0.03,
        "target_acceptance": 0.57, "n_chains": 64, "burn_in": 10_000, "thin": 200,
    }
    assert system_defaults("dw4")["proposal"] == "rw" and system_defaults("aldp") == {}
    assert system_defaults("unregistered") == {}


def test_conf_temp_is_rejected_for_a_once_differentiable_energy():
    # aldp: OpenMM gives forces but no Hessian, and T_conf needs the Laplacian of the energy
    with pytest.raises(ValueError, match=r"conf_temp: True .*'aldp'.*Laplacian.*set conf_temp: false"):
        resolve_settings("aldp", "md", {"conf_temp": True})
    assert resolve_settings("aldp", "md", {"conf_temp": False})["conf_temp"] is False

    class OnceDifferentiable:
        name = "custom"
        second_derivatives = False

    with pytest.raises(ValueError, match=r"conf_temp_samples: 1000 .*set conf_temp_samples: 0"):
        resolve_settings(OnceDifferentiable(), "mcmc", {"init_radius": 1.0, "init_min_dist": 0.5})
    ok = resolve_settings(OnceDifferentiable(), "mcmc",
                          {"init_radius": 1.0, "init_min_dist": 0.5, "conf_temp_samples": 0})
    assert ok["conf_temp_samples"] == 0


def test_conf_temp_really_needs_second_derivatives(aldp_system):
    # what the rejection protects against: the gradient OpenMM supplies is a constant of the
    # autograd graph, so the double backward of the Laplacian fails
    x = aldp_system.positions[None].clone()
    with pytest.raises(RuntimeError, match="does not require grad"):
        configurational_temperature(aldp_system.energy, x)


@pytest.fixture(scope="module")
def aldp_system():
    return get_system("aldp", n_workers=1)


def test_data_rules_take_their_systems_from_the_registry():
    from eqbg.systems import KNOWN_SYSTEMS

    text = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "data.smk").read_text()
    assert 'name_pattern("mcmc", "exact")' in text and 'name_pattern("md")' in text
    for name in KNOWN_SYSTEMS:
        assert f'"{name}' not in text and f"|{name}" not in text, name


def _two_state_chain(rng, n_traj, n_frames, p_in=0.01, p_out=0.04):
    """0/1 Markov chains with stationary fraction p_in / (p_in + p_out) = 0.2, IAT ~ 2/(p_in + p_out)."""
    out = np.zeros((n_traj, n_frames))
    for t in range(n_traj):
        s = rng.random() < 0.2
        for i in range(n_frames):
            s = (rng.random() >= p_out) if s else (rng.random() < p_in)
            out[t, i] = s
    return out


def test_slow_fraction_agreement_passes_stationary_chains_and_flags_a_stuck_one():
    """The laptop MD's failure mode (one trajectory's excursion into phi > 0 falling into the val
    and test blocks) is flagged; chains that sample the slow state properly are not."""
    from eqbg.data.diagnostics import slow_fraction_agreement

    rng = np.random.default_rng(0)
    blocks = {"train": [[0, 4000]], "val": [[4200, 5000]], "test": [[5200, 6000]]}
    good = slow_fraction_agreement(_two_state_chain(rng, 4, 6000), blocks)
    assert good["agree"] and good["max_z_splits"] < 3 and good["max_z_trajectories"] < 3
    assert 0.1 < good["fraction"] < 0.3 and 10 < good["iat_frames"] < 200
    stuck = np.zeros((2, 6000))
    stuck[0, 4200:5600] = 1.0  # one excursion, covering val and part of test, none in train
    bad = slow_fraction_agreement(stuck, blocks)
    assert not bad["agree"] and bad["per_split"]["train"]["fraction"] == 0.0
    assert bad["entries"] == 1 and good["entries"] > 100


def test_check_convergence_fails_on_slow_coordinate_disagreement_only_when_asked():
    from eqbg.data import check_convergence
    from eqbg.data.settings import CONVERGENCE_DEFAULTS

    diag = {"phi_positive_agreement": {"agree": False, "max_z_trajectories": 5.0, "max_z_splits": 7.0,
                                       "z_max": 3.0, "per_split": {"train": {"fraction": 0.01}}}}
    assert check_convergence(diag, CONVERGENCE_DEFAULTS) == []  # default: warn
    fails = check_convergence(diag, {**CONVERGENCE_DEFAULTS, "phi_agreement": "fail"})
    assert len(fails) == 1 and "7.0 standard errors" in fails[0] and "train 0.010" in fails[0]
    assert "not converged" in fails[0]


def test_md_split_blocks_cycle_disjoint_blocks_with_gaps_and_enough_frames():
    from eqbg.data.splits import md_split_blocks

    sizes = {"train": 1000, "val": 100, "test": 200}
    one = md_split_blocks(sizes, 2, 1, 10)
    assert one == {"train": [[0, 500]], "val": [[510, 560]], "test": [[570, 670]]}
    blocks = md_split_blocks(sizes, 2, 4, 10)
    ranges = sorted((a, b, k) for k, rs in blocks.items() for a, b in rs)
    assert len(ranges) == 12 and [k for *_, k in ranges[:3]] == ["train", "val", "test"]
    for (a0, b0, _), (a1, b1, _) in zip(ranges, ranges[1:]):
        assert a1 - b0 == 10  # every block is followed by the gap; none overlap
    for k, n in sizes.items():
        assert 2 * sum(b - a for a, b in blocks[k]) >= n  # two trajectories hold the split
    with pytest.raises(ValueError, match="cycles >= 1"):
        md_split_blocks(sizes, 2, 0, 10)


def test_cycled_splits_share_a_slow_excursion_that_contiguous_splits_do_not():
    """One long phi > 0 excursion (the laptop MD's failure) lands in the val and test blocks of
    contiguous splits, but cycled blocks give every split its share of it."""
    from eqbg.data.splits import md_split_blocks
    from eqbg.data.diagnostics import slow_fraction_agreement

    sizes = {"train": 8000, "val": 1000, "test": 2000}
    ind = np.zeros((2, 5800))
    ind[0, 4100:5600] = 1.0
    contiguous = slow_fraction_agreement(ind, md_split_blocks(sizes, 2, 1, 10))
    cycled = slow_fraction_agreement(ind, md_split_blocks(sizes, 2, 20, 10))
    assert contiguous["per_split"]["train"]["fraction"] == 0.0 < contiguous["per_split"]["val"]["fraction"]
    fractions = [v["fraction"] for v in cycled["per_split"].values()]
    assert max(fractions) - min(fractions) < 0.2 * ind.mean()
    assert cycled["max_z_splits"] < 0.2 * contiguous["max_z_splits"]


def _grid_density(v, n=20_000):
    grid = -np.pi + (np.arange(n) + 0.5) * (2 * np.pi / n)
    return grid, v(grid)


def test_mbar_populations_recover_a_known_periodic_density():
    """Exact samples of biased windows of p(phi) ~ exp(-V(phi)) with a rarely visited phi > 0
    basin: MBAR's populations and profile match numerical integration within their errors."""
    from eqbg.data.population import _angular_distance, mbar_populations

    def v(phi):  # a deep basin at -1.4 rad and a shallow one at +1.0 rad, ~3.5 kT apart
        return -4.0 * np.exp(-((phi + 1.4) ** 2) / 0.5) - 0.6 * np.exp(-((phi - 1.0) ** 2) / 0.1) + 1.5 * np.cos(phi) ** 2

    grid, u = _grid_density(v)
    p = np.exp(-(u - u.min()))
    p /= p.sum()
    exact = {"pos": float(p[grid > 0].sum()), "mid": float(p[(grid > 0) & (grid < 2)].sum())}
    rng = np.random.default_rng(11)
    centres = -np.pi + (np.arange(24) + 0.5) * (2 * np.pi / 24)
    kappa = 30.0
    phi = []
    for c in centres:
        w = p * np.exp(-0.5 * kappa * _angular_distance(grid, c) ** 2)
        phi.append(rng.choice(grid, size=400, p=w / w.sum()))
    res = mbar_populations(phi, centres, kappa, {"pos": (0.0, np.pi), "mid": (0.0, 2.0)}, decorrelate=False)
    for name, value in exact.items():
        got = res["intervals"][name]
        assert 0 < got["se"] < 0.3 * value
        assert abs(got["fraction"] - value) < 4 * got["se"], (name, got, value)
        assert got["delta_f_kt"] == pytest.approx(-np.log(got["fraction"] / (1 - got["fraction"])))
    # the profile: F(phi) at the two basins' centres, relative, in kT
    edges, f = np.asarray(res["profile"]["edges"]), np.asarray(res["profile"]["f_kt"])
    centre_bin = lambda a: int(np.searchsorted(edges, a) - 1)  # noqa: E731
    assert f[centre_bin(1.0)] - f[centre_bin(-1.4)] == pytest.approx(v(np.array(1.0)) - v(np.array(-1.4)), abs=0.5)
    assert res["n_samples_per_window"] == [400] * 24


@pytest.mark.slow  # ~5 s: four 20-ps windows of real MD
def test_umbrella_windows_hold_phi_at_their_centres_and_report_populations():
    from eqbg.data.population import phi_population

    system = get_system("aldp", n_workers=1)
    report, phi = phi_population(system, {"n_windows": 4, "ns_per_window": 0.02, "equilibration_ps": 5.0,
                                          "frame_interval_ps": 0.1, "n_workers": 2})
    centres = np.asarray(report["centres_rad"])
    assert phi.shape == (4, 200) and np.allclose(centres, [-3 * np.pi / 4, -np.pi / 4, np.pi / 4, 3 * np.pi / 4])
    mean = np.angle(np.exp(1j * phi.astype(np.float64)).mean(axis=1))
    # the bias (k = 100 kJ/mol/rad^2 = 40 kT/rad^2) holds the windows at -45 and +45 degrees,
    # on the barrier at phi = 0 that the unbiased MD never crosses, within 0.25 rad; at 135
    # degrees the free energy falls by ~20 kT towards the beta basin at 180 and pulls the
    # window's mean ~0.5 rad that way
    offset = np.angle(np.exp(1j * (mean - centres)))
    assert np.all(np.abs(offset[1:3]) < 0.25) and np.all(np.abs(offset) < 0.7), np.degrees(mean)
    assert set(report["intervals"]) == {"phi_positive", "phi_0_to_2"}
    assert report["simulated_ns"] == pytest.approx(4 * 0.025)
    with pytest.raises(ValueError, match="unknown population setting"):
        phi_population(system, {"n_window": 4})


def test_run_trajectories_rejects_per_trajectory_inputs_of_the_wrong_length():
    from eqbg.data.md import run_trajectories

    with pytest.raises(ValueError, match="3 seeds but 2 systems"):
        run_trajectories(["<a/>", "<b/>"], np.zeros((22, 3)), [1, 2, 3], n_frames=1)


def test_every_sampler_a_system_may_name_is_registered():
    """systems.base lists the names (systems sit below data, so they cannot read the registry);
    data.samplers registers the samplers: the two hold the same names."""
    from eqbg.data import sampler_for
    from eqbg.data.samplers import REFERENCE_SAMPLERS as registered
    from eqbg.systems import REFERENCE_SAMPLERS as named

    assert set(registered) == set(named)
    with pytest.raises(ValueError, match="declares no valid reference_sampler"):
        sampler_for(type("Bare", (), {"name": "bare", "reference_sampler": "hmc"})())
