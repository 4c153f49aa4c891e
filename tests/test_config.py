"""The config: its schema generated from the registries' settings classes, keys checked per
component, keys that moved named with their new place, and a model, loss and metric registered
from a plugin module taken by the schema, a run of the pipeline and its tables with no other
edit."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from eqbg.config import config_schema
from eqbg.config.check import ConfigError, check_config, check_schema
from eqbg.flows.registry import MODELS
from eqbg.losses import LOSSES
from eqbg.settings import SettingsError
from eqbg.training.settings import MOVED_TRAINING_KEYS, RENAMED_TRAINING_KEYS, resolve_run_settings

ROOT = Path(__file__).resolve().parents[1]


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _settings_schemas(schema: dict) -> list[dict]:
    """Every section of ``schema`` generated from a settings dataclass (its description names it)."""
    found = []
    if isinstance(schema, dict):
        if schema.get("additionalProperties") is False and re.search(r"\(eqbg\.[\w.]+\.[A-Z]\w*\)$", schema.get("description", "")):
            found.append(schema)
        for value in schema.values():
            found += _settings_schemas(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _settings_schemas(value)
    return found


def test_every_setting_of_every_component_is_documented_in_the_schema():
    """Each key's description comes from the ``#:`` comment beside its field: a field without
    one would reach users undocumented."""
    sections = _settings_schemas(config_schema())
    assert len(sections) > 20
    undocumented = [
        (section["description"].rsplit("(", 1)[-1], key)
        for section in sections for key, prop in section["properties"].items()
        if not prop.get("description")
    ]
    assert undocumented == []


def test_each_model_and_loss_has_its_own_branch_of_exactly_its_keys():
    defaults = config_schema()["properties"]["defaults"]["properties"]
    for section, registry in (("model", MODELS), ("loss", LOSSES)):
        branches = defaults[section]["properties"]
        assert set(branches) == set(registry)
        for name, spec in registry.items():
            assert set(branches[name]["properties"]) == {f.name for f in dataclasses.fields(spec.settings)}


@pytest.mark.parametrize(
    "mutate, message",
    [
        # a key of another component, in defaults
        (lambda c: c["defaults"]["model"]["egnn"].update(n_bins=8), r"defaults.model.egnn.*'n_bins'"),
        (lambda c: c["defaults"]["loss"].update(ml={"sigma": 0.1}), r"defaults.loss.ml.*'sigma'"),
        # ... in an override that names its component
        (lambda c: c["overrides"].append({"when": {"loss": "eqotfm"}, "loss": {"buffer": False}}),
         r"overrides.\d+.loss.*'buffer'"),
        (lambda c: c["overrides"].append({"when": {"model": "eacf"}, "model": {"hidden": 8}}),
         r"overrides.\d+.model.*'hidden'"),
        # a nested section of a loss
        (lambda c: c["defaults"]["loss"].update(fab={"ais": {"n_leapfrogs": 3}}), r"defaults.loss.fab.ais.*'n_leapfrogs'"),
        # reference-data keys of another system's sampler
        (lambda c: c["systems"]["aldp"]["data"].update(n_chains=8), r"systems.aldp.data.*'n_chains'"),
        (lambda c: c["systems"]["dw4"]["data"].update(n_trajectories=2), r"systems.dw4.data.*'n_trajectories'"),
        (lambda c: c["defaults"]["evaluate"].update(ais={"m": 3}), r"defaults.evaluate.ais.*'m'"),
    ],
    ids=["model-key-of-eacf", "loss-key-of-fm", "override-loss-key-of-fab", "override-model-key-of-egnn",
         "fab-ais-typo", "md-data-key-of-mcmc", "mcmc-data-key-of-md", "evaluate-ais-typo"],
)
def test_a_key_of_another_component_fails_naming_where(mutate, message):
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        check_schema(config)


def test_an_override_for_every_loss_is_resolved_against_each_run_s_loss():
    """An override that names no loss may only set keys every loss it reaches has: the schema
    cannot tell which runs it reaches, the parse-time resolution can, and names the run."""
    config = default_config()
    config["overrides"].append({"when": {"system": "dw4"}, "loss": {"sigma": 0.1}})
    check_schema(copy.deepcopy(config))  # sigma is some loss's key
    with pytest.raises(ConfigError, match=r"run dw4/egnn/ml/seed0: unknown loss\[ml\] setting\(s\) \['sigma'\]"):
        check_config(config)


def test_values_are_checked_when_the_workflow_is_parsed():
    config = default_config()
    config["overrides"].append({"when": {"model": "eacf"}, "evaluate": {"ais": {"alpha": 2.0}}})
    with pytest.raises(ConfigError, match=r"run dw4/eacf/ml/seed0: .*alpha must be 1"):
        check_config(config)
    config = default_config()
    config["overrides"].append({"when": {"loss": "eqotfm"}, "loss": {"init": "random"}})
    with pytest.raises(ConfigError, match=r"run dw4/egnn/eqotfm/seed0: loss\[eqotfm\]: init must be one of"):
        check_config(config)


@pytest.mark.parametrize("old", sorted(MOVED_TRAINING_KEYS))
def test_a_training_key_that_moved_names_its_new_place(old):
    losses, new = MOVED_TRAINING_KEYS[old]
    *section, leaf = new.split(".")
    for where in ("defaults", "override"):
        config = default_config()
        if where == "defaults":
            config["defaults"]["train"][old] = 1
        else:
            config["overrides"].append({"when": {"loss": losses[0]}, "train": {old: 1}})
        with pytest.raises(ConfigError) as err:
            check_config(config)
        message = str(err.value)
        assert f"train.{old} is a setting of the loss" in message and losses[0] in message
        assert f"{leaf}: ...}}" in message and f".{new}`" in message
        assert all(f"{{{name}: " in message for name in section), message
    # the library says the same to a caller of train_run
    with pytest.raises(SettingsError, match=f"training.{old} is a setting of the loss"):
        resolve_run_settings({"training": {old: 1}}, losses[0])


@pytest.mark.parametrize("old", sorted(RENAMED_TRAINING_KEYS))
def test_a_validation_solver_key_names_its_section(old):
    section, leaf = RENAMED_TRAINING_KEYS[old].split(".")
    config = default_config()
    config["overrides"].append({"when": {"system": "dw4"}, "train": {old: 1}})
    with pytest.raises(ConfigError, match=rf"overrides\[\d+\].train.{old} is overrides\[\d+\].train.{section}.{leaf} now: "
                                          rf"write `train: {{{section}: {{{leaf}: ...}}}}`"):
        check_config(config)


PLUGIN = '''
"""A user's components, registered from their own module: a model, a loss and a metric."""
from dataclasses import dataclass

import numpy as np

from eqbg.evaluation import register_metric
from eqbg.flows.cnf import CNF
from eqbg.flows.priors import make_prior
from eqbg.flows.registry import register_model
from eqbg.losses import FlowMatching, IndependentCoupling, register_loss
from eqbg.nn import MLPField


@dataclass
class NarrowMLPSettings:
    """A one-layer MLP field in a CNF."""

    name: str = "narrowmlp"  #: registry name
    prior_scale: float = 1.0  #: std of the prior
    width: int = 4  #: hidden width


def build_narrow_mlp(system, s, ode):
    field = MLPField(system.n_particles, system.spatial_dim, hidden=s.width, n_layers=1,
                     com_free=bool(system.com_free))
    return CNF(field, make_prior(system, scale=s.prior_scale), solver=ode.solver)


@dataclass
class NoisyFMSettings:
    """Flow matching with a wide path."""

    sigma: float = 0.3  #: noise of the path
    weight: float = 1.0  #: multiplies the loss


class WeightedFlowMatching(FlowMatching):
    def __init__(self, sigma, weight):
        super().__init__(IndependentCoupling(), sigma)
        self.weight = weight

    def objective(self, flow, batch, *, generator):
        return self.weight * super().objective(flow, batch, generator=generator)


register_model("narrowmlp", NarrowMLPSettings, build_narrow_mlp)
register_loss("noisyfm", WeightedFlowMatching, NoisyFMSettings,
              lambda s, system, batch_size: WeightedFlowMatching(s.sigma, s.weight), "weighted flow matching")
register_metric("n_below_zero", lambda ctx: ({"n_below_zero": int(np.sum(ctx.u_flow < 0))}, {}),
                ("n_below_zero",), "samples with u < 0", labels={"n_below_zero": "u < 0 (count)"})
'''


@pytest.fixture
def plugin(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_components.py").write_text(textwrap.dedent(PLUGIN))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT / "src")])}
    return folder, env


def _plugin_config(tmp_path: Path) -> Path:
    config = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    config.update(plugins=["my_components"], scale="smoke", baselines={})
    config["grid"] = [{"system": "dw4", "models": ["narrowmlp"], "losses": ["noisyfm"], "seeds": [0]}]
    config["defaults"]["model"] = {"narrowmlp": {"width": 6}}
    config["defaults"]["loss"] = {"noisyfm": {"weight": 2.0}}
    config["overrides"] = []
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # a smoke-size run of the plugin's model and loss: ~1 min
def test_a_model_loss_and_metric_registered_by_a_plugin_need_no_other_edit(plugin, tmp_path):
    """A plugin module named in the config's ``plugins:`` registers a model, a loss and a metric:
    the printed schema has their branches, the workflow parses and runs the grid of them (every
    job imports the plugin), the run's metrics have the plugin's metric and the per-system table
    its column; a key of the plugin's model under its loss is refused."""
    folder, env = plugin
    schema = subprocess.run([sys.executable, "-m", "eqbg.config", "my_components"], env=env,
                            capture_output=True, text=True, check=True).stdout
    defaults = yaml.safe_load(schema)["properties"]["defaults"]["properties"]
    assert set(defaults["model"]["properties"]["narrowmlp"]["properties"]) == {"name", "prior_scale", "width"}
    assert defaults["loss"]["properties"]["noisyfm"]["properties"]["weight"]["description"] == "multiplies the loss"

    configfile = _plugin_config(tmp_path)
    run = "results/runs/dw4/narrowmlp/noisyfm/seed0"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(configfile), "--cores", "2"]
    result = subprocess.run([*cmd, f"{run}/metrics.json", "results/tables/dw4/summary.md"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / run
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["model_settings"] == {"name": "narrowmlp", "prior_scale": 1.0, "width": 6}
    assert recorded["loss_settings"] == {"sigma": 0.3, "weight": 2.0}
    metrics = json.loads((out / "metrics.json").read_text())
    import numpy as np

    u = np.load(out / "eval.npz")["energy_flow"]
    assert metrics["n_below_zero"] == int(np.sum(u < 0)) and len(u) == 8  # smoke size: 8 samples
    table = (tmp_path / "results" / "tables" / "dw4" / "summary.md").read_text()
    assert "u < 0 (count)" in table and "narrowmlp" in table

    bad = yaml.safe_load(configfile.read_text())
    bad["defaults"]["loss"]["noisyfm"]["width"] = 6
    configfile.write_text(yaml.safe_dump(bad))
    result = subprocess.run([*cmd, "-n"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "defaults.loss.noisyfm" in result.stdout + result.stderr
