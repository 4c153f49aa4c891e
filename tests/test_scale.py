"""``scale: smoke`` (eqbg.scale): what it shrinks, what it keeps, and that ``full`` changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eqbg.data.settings import resolve_settings
from eqbg.pipeline import (
    Run,
    coupling_settings,
    data_settings,
    deep_merge,
    evaluate_params,
    iter_runs,
    population_settings,
    run_settings,
    sample_params,
    train_params,
)
from eqbg.scale import SMOKE_CPU_SOLVER, SMOKE_SPLITS, check_smoke_directory, scale_of
from eqbg.systems import system_spec
from eqbg.training import resolve_run_settings
from eqbg.training.settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[1]


def paper_config(scale: str | None = None) -> dict:
    config = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()),
                        yaml.safe_load((ROOT / "workflow" / "presets" / "paper.yaml").read_text()))
    return config if scale is None else {**config, "scale": scale}


def test_full_scale_is_the_config_as_written():
    plain, full = paper_config(), paper_config("full")
    for run in iter_runs(plain):
        assert run_settings(full, run) == run_settings(plain, run)
        assert train_params(full, run) == train_params(plain, run)
    for system in plain["systems"]:
        assert data_settings(full, system) == plain["systems"][system]["data"]
        assert population_settings(full, system) == plain["systems"][system].get("population", {})


def test_unknown_scale_is_named():
    with pytest.raises(ValueError, match=r"scale must be one of \['full', 'smoke'\], got 'tiny'"):
        scale_of({"scale": "tiny"})


def test_smoke_on_cuda_shrinks_sizes_and_keeps_models_dtypes_solvers_and_losses():
    full, smoke = paper_config(), {**paper_config("smoke"), "smoke_device": "cuda"}
    runs = list(iter_runs(full))
    eacf_lj13 = Run("lj13", "eacf", "fab", 0)
    assert eacf_lj13 in runs
    for run in runs:
        f, s = run_settings(full, run), run_settings(smoke, run)
        assert s["model"] == f["model"] and s["ode"] == f["ode"]
        for key in ("dtype", "lr", "val_exact", "val_solver"):
            assert s["train"].get(key) == f["train"].get(key), (run, key)
        for key in ("method", "atol", "sigma", "restarts"):
            assert s["loss"].get(key) == f["loss"].get(key), (run, key)
        for key in ("transition", "spacing"):
            assert s["loss"].get("ais", {}).get(key) == f["loss"].get("ais", {}).get(key), (run, key)
        assert s["train"]["steps"] == 2 and s["train"]["batch_size"] <= 16
        assert s["train"]["scale"] == "smoke" and s["device"] == "cuda"
        assert sample_params(smoke, run)["n_samples"] == 8
        assert {k: v for k, v in sample_params(smoke, run)["settings"].items() if k != "device"} == {
            k: v for k, v in sample_params(full, run)["settings"].items() if k != "device"}
        evaluate = evaluate_params(smoke, run)["evaluate"]
        assert evaluate["nll_n"] <= 8 and evaluate["energy_test_n"] <= SMOKE_SPLITS["test"]
        assert evaluate.get("nll_ode") == f["evaluate"].get("nll_ode") and "nll_exact" not in evaluate
        if f["evaluate"].get("ais"):
            assert evaluate["ais"]["n"] == 8 and evaluate["ais"]["n_intermediate"] == 1
            assert evaluate["ais"].get("transition") == f["evaluate"]["ais"].get("transition")
        if run.loss == "fab":
            assert s["loss"]["ais"]["n_intermediate"] == 1 and s["loss"]["ais"]["n_leapfrog"] <= 2
        else:  # FAB's caps reach FAB only
            assert s["loss"] == f["loss"], run
        # the settings still resolve (no key the training code does not know)
        resolve_run_settings({"model": s["model"], "loss": s["loss"], "ode": s["ode"], "training": s["train"]}, run.loss)
    # FAB's buffer is filled with two batches instead of the paper's 64
    fab = run_settings(smoke, eacf_lj13)["loss"]
    assert (fab["buffer_min_batches"], fab["buffer_batches"], fab["updates_per_ais"]) == (2, 4, 2)


def test_smoke_on_the_cpu_integrates_every_ode_at_its_smallest():
    """On the CPU smoke also shrinks the integrations (one Euler step; a Hutchinson trace for
    validation only) and the exact-likelihood counts with the dimension: an
    exact trace of the paper's LJ55 EGNN costs ~8 s per configuration and evaluation. Models,
    dtypes and losses stay; the settings resolve."""
    full, smoke = paper_config(), paper_config("smoke")
    for run in iter_runs(full):
        f, s = run_settings(full, run), run_settings(smoke, run)
        assert s["model"] == f["model"] and s["device"] == "cpu"
        assert s["train"].get("dtype") == f["train"].get("dtype")
        assert {k: s["ode"][k] for k in SMOKE_CPU_SOLVER} == SMOKE_CPU_SOLVER
        assert (s["train"]["val_solver"]["method"], s["train"]["val_solver"]["n_steps"], s["train"]["val_exact"]) == ("euler", 1, False)
        if run.loss == "ml":  # the loss that integrates
            assert (s["loss"]["method"], s["loss"]["n_steps"]) == ("euler", 1)
        else:
            assert "method" not in s["loss"], run
        sample = sample_params(smoke, run)
        assert {k: sample["settings"][k] for k in SMOKE_CPU_SOLVER} == SMOKE_CPU_SOLVER
        assert sample["settings"].get("exact", True) is True  # importance weights need exact log q
        evaluate = evaluate_params(smoke, run)["evaluate"]
        assert evaluate["nll_ode"]["n_steps"] == 1
        # exact-likelihood samples and test points in proportion to the dimension (at least 2)
        expected = {"dw4": 8, "gmm40": 8, "manywell32": 8, "lj13": 7, "aldp": 4, "lj55": 2}[run.system]
        assert sample["n_samples"] == expected and evaluate["nll_n"] == expected
        resolve_run_settings({"model": s["model"], "loss": s["loss"], "ode": s["ode"], "training": s["train"]}, run.loss)


def test_smoke_caps_the_training_set_and_the_batch_at_it():
    config = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()),
                        yaml.safe_load((ROOT / "workflow" / "presets" / "training_size.yaml").read_text()))
    smoke = {**config, "scale": "smoke"}
    big = run_settings(smoke, Run("dw4", "egnn", "ml", 0, "n100000"))["train"]
    assert big["n_train"] == SMOKE_SPLITS["train"]
    small = run_settings(smoke, Run("lj13", "egnn", "ml", 0, "n10"))["train"]
    assert (small["n_train"], small["batch_size"]) == (10, 10)


@pytest.mark.parametrize("system", ["dw4", "lj55", "aldp", "gmm40", "manywell32"])
def test_smoke_data_settings_resolve_for_every_sampler(system):
    smoke = paper_config("smoke")
    sampler = system_spec(system).reference_sampler
    settings = data_settings(smoke, system)
    settings.pop("seed", None)
    resolved = resolve_settings(system, sampler, settings)
    assert resolved["splits"] == SMOKE_SPLITS and resolved["check_convergence"] is False
    if sampler == "mcmc":
        assert resolved["burn_in"] <= 200 and resolved["n_chains"] <= 12
        assert coupling_settings(smoke, system)["n_batches"] == 2
    if sampler == "md":
        assert resolved["platform"] == "Reference"
        assert population_settings(smoke, system)["n_windows"] == 8


def test_checkpoints_of_full_runs_keep_their_key():
    """A checkpoint written before scales existed resumes: ``scale: full`` is not in the key."""
    full, smoke = TrainingSettings(), TrainingSettings(scale="smoke")
    assert "scale" not in full.result_key() and smoke.result_key()["scale"] == "smoke"
    with pytest.raises(ValueError, match="scale must be full or smoke, got 'tiny'"):
        TrainingSettings(scale="tiny").validate()


def test_schema_takes_the_scale():
    from eqbg.config.check import ConfigError, check_schema

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    check_schema({**config, "scale": "smoke"})
    with pytest.raises(ConfigError, match="tiny"):
        check_schema({**config, "scale": "tiny"})


def test_smoke_refuses_a_directory_with_full_size_results(tmp_path):
    """A smoke check must not overwrite hours of full-size runs and data; smoke results over
    smoke results, and a full run over smoke results, are fine."""
    import json

    results = tmp_path / "results"
    run = results / "runs" / "dw4" / "egnn" / "fm" / "seed0"
    data = results / "data" / "dw4"
    run.mkdir(parents=True)
    data.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"training": {"scale": "smoke"}}))
    (data / "provenance.json").write_text(json.dumps({"settings": {"splits": SMOKE_SPLITS}}))
    check_smoke_directory({"scale": "smoke"}, results)  # smoke over smoke
    (data / "provenance.json").write_text(json.dumps({"settings": {"splits": {"train": 10000}}}))
    with pytest.raises(ValueError, match=r"overwrite full-size results .*1 runs or data sets.*dw4"):
        check_smoke_directory({"scale": "smoke"}, results)
    (data / "provenance.json").unlink()
    (run / "config.json").write_text(json.dumps({"training": {"steps": 2000}}))  # before scales
    with pytest.raises(ValueError, match="--directory DIR"):
        check_smoke_directory({"scale": "smoke"}, results)
    check_smoke_directory({}, results)  # full size: nothing to check
