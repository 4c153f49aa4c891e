"""The run grid and per-rule settings (eqbg.pipeline): merging, overrides, variants, the checks
the schema cannot make, what each rule receives, and a dry run of a grid with variants."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from eqbg.config.check import ConfigError, check_schema

from eqbg.pipeline import (
    Run,
    check_grid,
    deep_merge,
    evaluate_params,
    iter_runs,
    run_settings,
    sample_params,
    train_inputs,
    train_params,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def scribble(value) -> None:
    """Mutate every mapping and list inside ``value`` (to show that nothing is shared)."""
    if isinstance(value, dict):
        for item in value.values():
            scribble(item)
        value["scribbled"] = True
    elif isinstance(value, list):
        for item in value:
            scribble(item)
        value.append("scribbled")


def make_config(**changes) -> dict:
    config = {
        "device": "cpu",
        "systems": {
            "dw4": {"data": {"seed": 0}},
            "lj13": {"options": {"pair_convention": "unique"}, "data": {"seed": 0}},
        },
        "grid": [{"system": "dw4", "models": ["egnn"], "losses": ["fm"], "seeds": [0]}],
        "defaults": {
            "model": {"egnn": {"hidden": 16, "n_layers": 2}, "kernel": {"n_rbf": 8}},
            "train": {"steps": 100, "lr": 1.0e-3, "val_every": 50},
            "ode": {"method": "dopri5", "atol": 1.0e-4},
            "sample": {"n_samples": 64, "method": "rk4", "n_steps": 10},
            "evaluate": {"nll_n": 32},
        },
        "overrides": [],
    }
    config.update(changes)
    return config


# --- deep_merge ---------------------------------------------------------------------------


def test_deep_merge_merges_nested_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2, 3], "c": 3, "d": {"k": 1}, "e": 5}
    update = {"a": {"y": {"q": 20, "r": 30}, "z": 0}, "b": [9], "c": {"new": 1}, "d": 7, "f": "added"}
    assert deep_merge(base, update) == {
        "a": {"x": 1, "y": {"p": 1, "q": 20, "r": 30}, "z": 0},
        "b": [9],  # lists replace, never concatenate
        "c": {"new": 1},  # a mapping replaces a scalar
        "d": 7,  # a scalar replaces a mapping
        "e": 5,
        "f": "added",
    }


def test_deep_merge_a_none_value_replaces():
    # `n_train: null` in an override must mean "all of it", not "keep the default".
    assert deep_merge({"n_train": 100, "grad_clip": 1.0}, {"n_train": None}) == {
        "n_train": None,
        "grad_clip": 1.0,
    }
    assert deep_merge({"nll_ode": {"method": "rk4"}}, {"nll_ode": None}) == {"nll_ode": None}


def test_deep_merge_leaves_its_inputs_alone_and_shares_nothing_with_them():
    base = {"kept": {"deep": [1]}, "merged": {"x": [1]}, "list": [1]}
    update = {"merged": {"y": [2]}, "list": [3], "new": {"z": [4]}}
    before = copy.deepcopy((base, update))
    merged = deep_merge(base, update)
    assert (base, update) == before
    scribble(merged)
    assert (base, update) == before


# --- run_settings -------------------------------------------------------------------------

OVERRIDES = [
    {"when": {"system": "dw4"}, "train": {"steps": 200}},
    {"when": {"loss": "ml"}, "train": {"steps": 300, "lr": 1.0e-4}},
    {"when": {"model": "kernel"}, "model": {"n_rbf": 16}},
    {"when": {"seed": 1}, "sample": {"n_samples": 10}},
    {"when": {"variant": "n64"}, "train": {"n_train": 64}},
    {"when": {"system": "dw4", "loss": "ml", "variant": "n64"}, "train": {"steps": 999}},
    {"when": {"system": "lj13"}, "ode": {"atol": 1.0e-6}},
    {"when": {"loss": "ml", "seed": 1}, "evaluate": {"nll_n": 8}},
    {"when": {"system": "lj13", "loss": "fm"}, "train": {"steps": 1}},  # matches no run below
]


def test_run_settings_apply_matching_overrides_in_order():
    config = make_config(overrides=OVERRIDES)

    s = run_settings(config, Run("dw4", "egnn", "ml", 0, "n64"))
    # system (200), loss (300) then the combination (999): the last matching override wins.
    assert s["train"] == {"steps": 999, "lr": 1.0e-4, "val_every": 50, "n_train": 64}
    assert s["ode"] == {"method": "dopri5", "atol": 1.0e-4}  # the lj13 override does not match
    assert s["sample"]["n_samples"] == 64 and s["evaluate"] == {"nll_n": 32}

    s = run_settings(config, Run("dw4", "egnn", "ml", 0, "n128"))
    assert s["train"] == {"steps": 300, "lr": 1.0e-4, "val_every": 50}

    s = run_settings(config, Run("dw4", "egnn", "ml", 0))  # no variant: variant overrides skip it
    assert s["train"] == {"steps": 300, "lr": 1.0e-4, "val_every": 50}

    s = run_settings(config, Run("dw4", "egnn", "fm", 1))
    assert s["train"] == {"steps": 200, "lr": 1.0e-3, "val_every": 50}
    assert s["sample"] == {"n_samples": 10, "method": "rk4", "n_steps": 10}
    assert s["evaluate"] == {"nll_n": 32}  # needs loss ml *and* seed 1

    s = run_settings(config, Run("lj13", "kernel", "ml", 1))
    assert s["model"] == {"n_rbf": 16}  # the run's model only, with its override
    assert s["train"] == {"steps": 300, "lr": 1.0e-4, "val_every": 50}
    assert s["ode"] == {"method": "dopri5", "atol": 1.0e-6}  # merged into, not replaced
    assert s["evaluate"] == {"nll_n": 8}
    assert s["system_options"] == {"pair_convention": "unique"}


def test_run_settings_model_holds_only_the_run_s_model_and_device_and_options_are_filled():
    config = make_config()
    s = run_settings(config, Run("dw4", "egnn", "fm", 0))
    assert s["model"] == {"hidden": 16, "n_layers": 2}
    assert s["system_options"] == {} and s["device"] == "cpu"
    assert s["loss"] == {} and set(s) == {"model", "loss", "train", "ode", "sample", "evaluate", "system_options", "device"}
    assert run_settings(make_config(device="cuda"), Run("dw4", "egnn", "fm", 0))["device"] == "cuda"
    del config["device"]
    assert run_settings(config, Run("dw4", "egnn", "fm", 0))["device"] == "cpu"


def test_run_settings_later_overrides_win():
    first = {"when": {"loss": "fm"}, "train": {"steps": 1}}
    second = {"when": {"system": "dw4"}, "train": {"steps": 2}}
    run = Run("dw4", "egnn", "fm", 0)
    assert run_settings(make_config(overrides=[first, second]), run)["train"]["steps"] == 2
    assert run_settings(make_config(overrides=[second, first]), run)["train"]["steps"] == 1


def test_run_settings_do_not_mutate_or_alias_the_config():
    config = make_config(overrides=OVERRIDES)
    before = copy.deepcopy(config)
    for run in (Run("dw4", "egnn", "ml", 0, "n64"), Run("lj13", "kernel", "ml", 1)):
        scribble(run_settings(config, run))
    assert config == before


# --- iter_runs and Run ---------------------------------------------------------------------


def test_iter_runs_in_config_order_without_duplicates_and_with_variants():
    config = make_config(
        grid=[
            {"system": "dw4", "models": ["egnn", "kernel"], "losses": ["fm", "ml"], "seeds": [1, 0]},
            {"system": "dw4", "models": ["egnn"], "losses": ["fm"], "seeds": [0, 2]},
            {"system": "dw4", "models": ["egnn"], "losses": ["ml"], "variants": ["n64", "n128"], "seeds": [0, 1]},
            {"system": "lj13", "models": ["egnn"], "losses": ["ml"], "variants": ["n64"], "seeds": [0]},
            {"system": "dw4", "models": ["egnn"], "losses": ["ml"], "variants": ["n128"], "seeds": [0]},
        ]
    )
    runs = list(iter_runs(config))
    assert runs == [
        Run("dw4", "egnn", "fm", 1),
        Run("dw4", "egnn", "fm", 0),
        Run("dw4", "egnn", "ml", 1),
        Run("dw4", "egnn", "ml", 0),
        Run("dw4", "kernel", "fm", 1),
        Run("dw4", "kernel", "fm", 0),
        Run("dw4", "kernel", "ml", 1),
        Run("dw4", "kernel", "ml", 0),
        Run("dw4", "egnn", "fm", 2),  # dw4/egnn/fm/seed0 came already
        Run("dw4", "egnn", "ml", 0, "n64"),  # a variant is a run of its own; seeds vary fastest
        Run("dw4", "egnn", "ml", 1, "n64"),
        Run("dw4", "egnn", "ml", 0, "n128"),
        Run("dw4", "egnn", "ml", 1, "n128"),
        Run("lj13", "egnn", "ml", 0, "n64"),
    ]
    assert all(run.variant is None for run in runs[:9])
    assert len({run.path for run in runs}) == len(runs)
    assert list(iter_runs({})) == []


def test_run_path_and_identity():
    assert Run("dw4", "egnn", "ml", 0).path == "dw4/egnn/ml/seed0"
    assert Run("lj13", "kernel", "eqotfm", 12, "n64").path == "lj13/kernel/eqotfm/n64/seed12"
    assert Run("dw4", "egnn", "ml", 3, "n64").identity() == {
        "system": "dw4", "model": "egnn", "loss": "ml", "seed": 3, "variant": "n64",
    }
    assert Run("dw4", "egnn", "ml", 3).identity()["variant"] is None


def test_identity_is_what_train_run_takes():
    from eqbg.training import train_run

    identity = Run("dw4", "egnn", "ml", 3, "n64").identity()
    inspect.signature(train_run).bind(**identity, settings=None, data_dir=None, run_dir="run")


# --- check_grid ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"grid": [{"system": "lj55", "models": ["egnn"], "losses": ["fm"], "seeds": [0]}]}, "'lj55'"),
        ({"grid": [{"system": "dw4", "models": ["egnn", "other"], "losses": ["fm"], "seeds": [0]}]}, "'other'"),
        (
            {
                "grid": [{"system": "dw4", "models": ["egnn"], "losses": ["ml"], "variants": ["n64", "n256"], "seeds": [0]}],
                "overrides": [{"when": {"variant": "n64"}, "train": {"n_train": 64}}],
            },
            "'n256'",
        ),
    ],
    ids=["system-without-data", "model-without-defaults", "variant-without-override"],
)
def test_check_grid_names_what_is_missing(changes, name):
    with pytest.raises(ValueError, match=name):
        check_grid(make_config(**changes))


def test_check_grid_passes_a_valid_grid():
    config = make_config(
        grid=[
            {"system": "dw4", "models": ["egnn", "kernel"], "losses": ["fm", "ml"], "seeds": [0]},
            {"system": "lj13", "models": ["kernel"], "losses": ["ml"], "variants": ["n64", "n128"], "seeds": [0, 1]},
        ],
        overrides=[
            {"when": {"variant": "n64"}, "train": {"n_train": 64}},
            {"when": {"loss": "ml", "variant": "n128"}, "train": {"n_train": 128}},
        ],
    )
    check_grid(config)  # raises on an invalid grid (the test above)
    check_grid(make_config(grid=[]))


# --- what each rule receives --------------------------------------------------------------

RUN = Run("dw4", "egnn", "ml", 0, "n64")


def all_params(config: dict, run: Run = RUN) -> dict:
    return {
        "train": train_params(config, run),
        "sample": sample_params(config, run),
        "evaluate": evaluate_params(config, run),
    }


def test_each_rule_gets_only_its_own_sections():
    config = make_config(
        overrides=[{"when": {"variant": "n64"}, "train": {"n_train": 64}}],
        systems={"dw4": {"options": {"a": 0.9}, "data": {"seed": 0}}},
    )
    p = all_params(config)
    assert p["train"] == {
        "identity": RUN.identity(),
        "system_options": {"a": 0.9},
        "settings": {
            "model": {"hidden": 16, "n_layers": 2},
            "loss": {},
            "ode": {"method": "dopri5", "atol": 1.0e-4},
            "training": {"device": "cpu", "steps": 100, "lr": 1.0e-3, "val_every": 50, "n_train": 64},
        },
    }
    assert p["sample"] == {
        "n_samples": 64,
        "seed": 0,
        "settings": {"method": "rk4", "n_steps": 10, "device": "cpu"},
    }
    assert p["evaluate"] == {"evaluate": {"nll_n": 32}, "device": "cpu", "system_options": {"a": 0.9}}


@pytest.mark.parametrize(
    "section, value, changed",
    [
        ("sample", {"n_samples": 65}, {"sample"}),
        ("sample", {"method": "dopri5", "atol": 1.0e-6}, {"sample"}),
        ("evaluate", {"nll_n": 100, "bootstrap_reps": 50}, {"evaluate"}),
        ("train", {"steps": 101}, {"train"}),
        ("ode", {"atol": 1.0e-6}, {"train"}),
        ("model", {"egnn": {"hidden": 17}}, {"train"}),
        ("model", {"kernel": {"n_rbf": 9}}, set()),  # another model's settings change nothing
    ],
)
def test_a_settings_edit_changes_only_the_params_of_the_rules_it_affects(section, value, changed):
    config = make_config()
    before = all_params(config)
    edited = copy.deepcopy(config)
    edited["defaults"][section] = deep_merge(edited["defaults"][section], value)
    after = all_params(edited)
    assert {rule for rule in before if before[rule] != after[rule]} == changed


def test_an_override_changes_only_the_runs_it_matches():
    config = make_config(overrides=[{"when": {"variant": "n128"}, "sample": {"n_samples": 5}}])
    assert all_params(config) == all_params(make_config())
    assert sample_params(config, Run("dw4", "egnn", "ml", 0, "n128"))["n_samples"] == 5


def test_the_config_device_applies_unless_a_rule_s_settings_name_one():
    config = make_config(device="cuda")
    assert train_params(config, RUN)["settings"]["training"]["device"] == "cuda"
    assert sample_params(config, RUN)["settings"]["device"] == "cuda"
    assert evaluate_params(config, RUN)["device"] == "cuda"
    config["defaults"]["train"]["device"] = "cpu"
    config["overrides"] = [{"when": {"loss": "ml"}, "sample": {"device": "cuda:1"}}]
    assert train_params(config, RUN)["settings"]["training"]["device"] == "cpu"
    assert sample_params(config, RUN)["settings"]["device"] == "cuda:1"
    assert sample_params(config, Run("dw4", "egnn", "fm", 0))["settings"]["device"] == "cuda"


def test_params_leave_the_config_alone():
    config = make_config(overrides=OVERRIDES)
    before = copy.deepcopy(config)
    for run in (RUN, Run("lj13", "kernel", "ml", 1)):
        scribble(all_params(config, run))
    assert config == before


def reversed_keys(value):
    """The same value with every mapping's keys in reverse order: an equal config, written in
    another order."""
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(item) for item in value]
    return value


def test_params_do_not_depend_on_the_order_of_keys_in_the_config():
    """Snakemake's params trigger compares repr(params) (snakemake.persistence), where a dict's
    key order counts: the same settings written in another order must give the same params, or
    reformatting config.yaml throws away every result."""
    config = make_config(overrides=OVERRIDES)
    reordered = reversed_keys(config)
    assert reordered == config
    for run in (RUN, Run("lj13", "kernel", "ml", 1), Run("dw4", "egnn", "fm", 1)):
        before, after = all_params(config, run), all_params(reordered, run)
        assert before == after
        for rule in before:
            assert repr(before[rule]) == repr(after[rule]), rule


# --- train_inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["ml", "fm", "otfm", "eqotfm"])
def test_data_losses_read_the_training_data(loss):
    inputs = train_inputs(make_config(), Run("lj13", "egnn", loss, 0))
    assert inputs == {"train": "results/data/lj13/train.npz", "val": "results/data/lj13/val.npz"}


def test_an_energy_only_loss_reads_no_training_data():
    assert train_inputs(make_config(), Run("dw4", "egnn", "kl", 0)) == {"val": "results/data/dw4/val.npz"}


def test_validation_data_is_read_iff_val_every_is_positive():
    from eqbg.training import TrainingSettings

    config = make_config(overrides=[{"when": {"loss": "fm"}, "train": {"val_every": 0}}])
    assert train_inputs(config, Run("dw4", "egnn", "fm", 0)) == {"train": "results/data/dw4/train.npz"}
    assert "val" in train_inputs(config, Run("dw4", "egnn", "ml", 0))
    assert train_inputs(config, Run("dw4", "egnn", "kl", 0)) == {"val": "results/data/dw4/val.npz"}
    config["overrides"].append({"when": {"loss": "kl"}, "train": {"val_every": 0}})
    assert train_inputs(config, Run("dw4", "egnn", "kl", 0)) == {}
    # Unset, val_every takes the library's default, which validates.
    del config["defaults"]["train"]["val_every"]
    default = {f.name: f.default for f in dataclasses.fields(TrainingSettings)}["val_every"]
    assert default > 0 and "val" in train_inputs(config, Run("dw4", "egnn", "ml", 0))


# --- schema -------------------------------------------------------------------------------


def variant_config() -> dict:
    config = yaml.safe_load(TINY.read_text())
    config["grid"].append(
        {"system": "dw4", "models": ["egnn"], "losses": ["ml"], "variants": ["n64", "n128"], "seeds": [0]}
    )
    config["overrides"] = [
        {"when": {"variant": "n64"}, "train": {"n_train": 64}},
        {"when": {"variant": "n128", "loss": "ml"}, "train": {"n_train": 128}},
    ]
    return config


def test_schema_accepts_variants_and_overrides_matching_them():
    check_schema(variant_config())


@pytest.mark.parametrize("name", ["N64", "n/64", "-n64", ""])
@pytest.mark.parametrize("where", ["grid", "when"])
def test_schema_rejects_a_bad_variant_name_naming_it(name, where):
    config = variant_config()
    if where == "grid":
        config["grid"][-1]["variants"] = ["n128", name]
    else:
        config["overrides"][0]["when"]["variant"] = name
    with pytest.raises(ConfigError) as err:
        check_schema(config)
    assert f"'{name}'" in str(err.value), str(err.value)


# --- the workflow on a grid with variants -------------------------------------------------


def dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            sys.executable, "-m", "snakemake", "--dry-run",
            "--snakefile", str(ROOT / "Snakefile"),
            "--configfile", str(configfile),
            "--directory", str(tmp_path),
            "--cores", "1",
        ],
        capture_output=True, text=True, timeout=600,
    )


def job_blocks(out: str) -> list[tuple[str, str]]:
    """(rule, block text) of every job a dry run lists."""
    starts = list(re.finditer(r"^(?:local)?rule (\w+):$", out, flags=re.M))
    ends = [m.start() for m in starts[1:]] + [len(out)]
    return [(m.group(1), out[m.end() : end]) for m, end in zip(starts, ends)]


@pytest.mark.pipeline
def test_dry_run_expands_variants_into_their_own_run_folders(tmp_path):
    config = variant_config()
    config["grid"].append({"system": "dw4", "models": ["egnn"], "losses": ["ml"], "seeds": [0]})
    result = dry_run(tmp_path, config)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    paths = {
        "dw4/egnn/fm/seed0",
        "dw4/egnn/eqotfm/seed0",
        "dw4/egnn/ml/n64/seed0",
        "dw4/egnn/ml/n128/seed0",
        "dw4/egnn/ml/seed0",  # the same loss without a variant sits beside its variants
    }
    jobs = job_blocks(out)
    counts = Counter(rule for rule, _ in jobs)
    assert counts["train"] == counts["sample"] == counts["evaluate"] == len(paths), counts
    assert counts["reference_data"] == 1 and counts["collect"] == 1, counts
    for rule in ("train", "sample", "evaluate"):
        runs = {re.search(r"wildcards: run=(\S+)", block).group(1) for r, block in jobs if r == rule}
        assert runs == paths, (rule, runs)
    for rule, block in jobs:
        if rule == "train":
            # every loss here trains on data and tiny.yaml validates (val_every 15)
            assert "results/data/dw4/train.npz" in block and "results/data/dw4/val.npz" in block, block
    for path in paths:
        for name in ("model.pt", "samples.npz", "metrics.json"):
            assert f"results/runs/{path}/{name}" in out, (path, name)
    collect = next(block for rule, block in jobs if rule == "collect")
    assert all(f"results/runs/{path}/metrics.json" in collect for path in paths), collect


@pytest.mark.pipeline
def test_a_variant_no_override_defines_fails_at_parse_time_naming_it(tmp_path):
    config = variant_config()
    config["grid"][-1]["variants"].append("n256")
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "'n256'" in result.stdout + result.stderr, result.stdout + result.stderr


def test_canonical_params_sort_every_mapping_and_keep_values():
    """data.smk hands the reference-data settings over through canonical() as well."""
    from eqbg.pipeline import canonical

    a = {"b": {"y": 1, "x": [{"q": 2, "p": 1}]}, "a": None}
    b = {"a": None, "b": {"x": [{"p": 1, "q": 2}], "y": 1}}
    assert repr(canonical(a)) == repr(canonical(b)) and canonical(a) == a
    assert list(canonical(a)) == ["a", "b"] and list(canonical(a)["b"]["x"][0]) == ["p", "q"]


@pytest.mark.parametrize("preset", [None, "paper.yaml", "training_size.yaml", "eqot.yaml"])
def test_every_run_of_the_config_and_presets_resolves_its_settings(preset):
    """The workflow resolves every run's model, loss, training, ODE, sampling and evaluation
    settings when it is parsed (eqbg.config.check), so a bad key fails before any job: the
    config and each preset pass, and one override that reaches a run it was not written for
    fails naming that run and the component."""
    from eqbg.config.check import check_config

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if preset:
        config = deep_merge(config, yaml.safe_load((ROOT / "workflow" / "presets" / preset).read_text()))
    check_config(copy.deepcopy(config))
    # the EACF's block count, written for every DW4 run: the EGNN runs on DW4 have no such key
    config["overrides"].append({"when": {"system": "dw4"}, "model": {"n_blocks": 2}})
    with pytest.raises(ConfigError, match=r"run dw4/egnn/\S+: unknown model\[egnn\] setting\(s\) \['n_blocks'\]"):
        check_config(config)
