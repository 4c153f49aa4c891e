"""The workflow itself: lint, formatting, schema validation, dry runs of every preset/profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eqbg.config.check import ConfigError, check_schema

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_and_presets_validate():
    for path in [ROOT / "config.yaml", *sorted((ROOT / "workflow" / "presets").glob("*.yaml"))]:
        check_schema(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(devise="cpu"), "devise"),
        (lambda c: c["systems"].update(dw5=c["systems"]["dw4"]), "dw5"),
        (lambda c: c["grid"][0].update(system="argon"), "argon"),
        (lambda c: c["grid"][0].update(losses=["fm", "wasserstein"]), "wasserstein"),
        (lambda c: c["grid"][0].update(seeds="0"), "'0'"),
        (lambda c: c["defaults"]["train"].update(stepz=10), "stepz"),
        (lambda c: c["baselines"]["mcmc"].update(budgets=["half"]), "half"),
        (lambda c: c["systems"]["gmm40"]["mcmc"].update(n_chain=4), "n_chain"),
    ],
    ids=["unknown-key", "unknown-system", "unknown-grid-system", "unknown-loss", "wrong-type", "typo-in-settings",
         "unknown-mcmc-budget", "typo-in-mcmc-settings"],
)
def test_schema_rejects_bad_config_naming_the_problem(mutate, message):
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError) as err:
        check_schema(config)
    assert message in str(err.value)


def test_bad_config_fails_at_parse_time_with_the_schema_message(tmp_path):
    config = default_config()
    config["systems"]["argon13"] = config["systems"]["dw4"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "argon13" in result.stdout + result.stderr


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_check_passes():
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "workflow" / "rules").glob("*.smk")))]
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--configfile", "workflow/presets/paper.yaml"],
        ["--workflow-profile", "profiles/slurm", "--configfile", "workflow/presets/paper.yaml"],
    ],
    ids=["default", "paper", "slurm"],
)
def test_dry_run_resolves_the_whole_grid(args, tmp_path):
    """From an empty working directory the dry run schedules one training, sampling and
    evaluation per run of the grid, one MCMC run per baseline entry, one report."""
    import re

    from eqbg.baselines.grid import iter_mcmc_runs
    from eqbg.pipeline import deep_merge, iter_runs

    # in an empty directory, as a user's run: config.yaml, then the preset over it
    preset = args[args.index("--configfile") + 1] if "--configfile" in args else None
    others = [a for a in args if a not in ("--configfile", preset)]
    result = snakemake("-n", "--quiet", "rules", "--snakefile", str(ROOT / "Snakefile"),
                       "--directory", str(tmp_path), *others,
                       "--configfile", str(ROOT / "config.yaml"), *([str(ROOT / preset)] if preset else []))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    config = default_config()
    if preset:
        config = deep_merge(config, yaml.safe_load((ROOT / preset).read_text()))
    runs, mcmc = list(iter_runs(config)), list(iter_mcmc_runs(config))
    assert runs and counts["train"] == counts["sample"] == len(runs), out
    assert counts["evaluate"] == len(runs) and counts.get("mcmc", 0) == len(mcmc), out
    assert counts["html_report"] == counts["claims"] == 1, out


def test_training_size_preset_expands_to_every_size_model_and_seed():
    """The training-set-size study (Satorras et al. 2021) as run variants: 2 systems x 3 models
    x 4 sizes x 3 seeds trainings, each in its variant's folder with its size and epochs."""
    import re

    result = snakemake("-n", "--configfile", "workflow/presets/training_size.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    models = re.findall(r"output: results/runs/([^ ]+)/model\.pt", out)
    expected = {
        f"{system}/{model}/ml/n{size}/seed{seed}"
        for system, sizes in (("dw4", (100, 1000, 10000, 100000)), ("lj13", (10, 100, 1000, 10000)))
        for model in ("egnn", "kernel", "mlp")
        for size in sizes
        for seed in (0, 1, 2)
    }
    assert set(models) == expected and len(models) == 72

    from eqbg.pipeline import Run, train_params

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    preset = yaml.safe_load((ROOT / "workflow" / "presets" / "training_size.yaml").read_text())
    from eqbg.pipeline import deep_merge

    merged = deep_merge(config, preset)
    for variant, n_train, steps in (("n100", 100, 1000), ("n100000", 100000, 6000)):
        training = train_params(merged, Run("dw4", "kernel", "ml", 1, variant))["settings"]["training"]
        assert (training["n_train"], training["steps"], training["batch_size"]) == (n_train, steps, 100)
    lj = train_params(merged, Run("lj13", "egnn", "ml", 0, "n10"))["settings"]["training"]
    assert (lj["n_train"], lj["batch_size"], lj["steps"]) == (10, 10, 500)
