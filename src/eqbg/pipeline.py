"""What the Snakemake rules need from the library: the run grid, per-rule settings, and logging.

The config layout (validated by ``workflow/schemas/config.schema.yaml``)::

    device: cpu
    systems:                 # every system whose reference data is made
      lj13:
        options: {pair_convention: ordered}
        data: {seed: 0, ...}  # sampler settings, see eqbg.data
    grid:                    # what is trained: system x models x losses x variants x seeds
      - {system: dw4, models: [egnn], losses: [fm, eqotfm], seeds: [0]}
      - {system: dw4, models: [egnn], losses: [ml], variants: [n100, n1000], seeds: [0, 1]}
    defaults:                # settings shared by every run
      model: {egnn: {...}}   # each model's settings (eqbg.flows.registry)
      loss: {ml: {...}}      # each loss's settings (eqbg.losses.registry)
      train: {...}
      ode: {...}
      sample: {...}
      evaluate: {...}
    overrides:               # applied in order to the runs they match
      - when: {system: dw4, loss: ml}
        train: {steps: 500}
        loss: {atol: 1.0e-3}  # the settings of the run's loss (here ml's)
      - when: {variant: n100}
        train: {n_train: 100}

A *variant* is a named grid cell (for example a training-set size): its name becomes a folder of
the run's path (``results/runs/{system}/{model}/{loss}/{variant}/seed{seed}``), overrides match
it like any other field, and tables show it as a column; what it changes is said by the
overrides that name it. Each rule receives only the settings that change its outputs
(:func:`train_params`, :func:`sample_params`, :func:`evaluate_params`), so editing the sampling
settings re-runs sampling and evaluation, never training.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eqbg.losses import LOSSES, loss_needs_data
from eqbg.scale import (
    scale_of,
    smoke_coupling_settings,
    smoke_data_settings,
    smoke_population_settings,
    smoke_run_settings,
)
from eqbg.systems import system_spec

#: Sections of ``defaults`` that an override may change (``model`` and ``loss``: the settings of
#: the run's model and loss, which ``defaults`` keeps by name).
SETTING_SECTIONS = ("model", "loss", "train", "ode", "sample", "evaluate")
#: Sections of ``defaults`` keyed by component name: the run's component picks its settings.
COMPONENT_SECTIONS = ("model", "loss")
#: Fields of a run that an override's ``when:`` may match.
MATCH_FIELDS = ("system", "model", "loss", "variant", "seed")


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a model trained with one loss (in one variant) and one seed on one
    system."""

    system: str
    model: str
    loss: str
    seed: int
    variant: str | None = None

    @property
    def path(self) -> str:
        """The run folder below ``results/runs``."""
        variant = f"{self.variant}/" if self.variant else ""
        return f"{self.system}/{self.model}/{self.loss}/{variant}seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The run's identity as recorded in its ``config.json``."""
        return asdict(self)


def iter_runs(config: Mapping[str, Any]) -> Iterator[Run]:
    """Every run of the grid, in config order, without duplicates."""
    seen: set[Run] = set()
    for entry in config.get("grid", []):
        for model in entry["models"]:
            for loss in entry["losses"]:
                for variant in entry.get("variants") or [None]:
                    for seed in entry["seeds"]:
                        run = Run(entry["system"], model, loss, int(seed), variant)
                        if run not in seen:
                            seen.add(run)
                            yield run


def check_grid(config: Mapping[str, Any]) -> None:
    """Fail with a clear message when the grid names a system without reference data settings,
    a model without default settings, or a variant that no override defines (the schema cannot
    see across sections)."""
    systems = config.get("systems", {})
    models = config.get("defaults", {}).get("model", {})
    defined = {o["when"]["variant"] for o in config.get("overrides", []) if "variant" in o["when"]}
    for run in iter_runs(config):
        if run.system not in systems:
            raise ValueError(
                f"grid trains on system {run.system!r}, but `systems:` has no entry for it "
                f"(it has: {', '.join(sorted(systems)) or 'none'})"
            )
        if run.model not in models:
            raise ValueError(
                f"grid uses model {run.model!r}, but `defaults.model` has no settings for it "
                f"(it has: {', '.join(sorted(models)) or 'none'})"
            )
        if run.variant is not None and run.variant not in defined:
            raise ValueError(
                f"grid uses variant {run.variant!r}, but no override says what it changes "
                f"(add `overrides: - when: {{variant: {run.variant}}}`; defined: "
                f"{', '.join(sorted(defined)) or 'none'})"
            )


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in; nested mappings merge, everything else is
    replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def run_settings(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """The resolved settings of one run: ``defaults`` with every matching override applied in
    order. ``model`` and ``loss`` hold only the settings of ``run.model`` and ``run.loss``;
    ``system_options`` the system's options (e.g. the LJ pair convention); ``device`` the
    config's device."""
    defaults = config.get("defaults", {})
    settings: dict[str, Any] = {
        section: copy.deepcopy(defaults.get(section, {})) for section in SETTING_SECTIONS
    }
    for section in COMPONENT_SECTIONS:
        name = getattr(run, section)
        settings[section] = copy.deepcopy((defaults.get(section) or {}).get(name) or {})
    for override in config.get("overrides", []):
        when = override.get("when", {})
        if all(getattr(run, key) == value for key, value in when.items()):
            for section in SETTING_SECTIONS:
                if section in override:
                    settings[section] = deep_merge(settings[section], override[section])
    settings["system_options"] = copy.deepcopy(system_options(config, run.system))
    settings["device"] = config.get("device", "cpu")
    if scale_of(config) == "smoke":
        settings = smoke_run_settings(settings, config.get("smoke_device", "cpu"),
                                      dim=system_spec(run.system).dim,
                                      # an MCMC baseline's "loss" is its sampler, no registered loss
                                      loss_settings=getattr(LOSSES.get(run.loss), "settings", None))
    return settings


def data_settings(config: Mapping[str, Any], system: str) -> dict[str, Any]:
    """The ``data`` settings of ``system``'s reference sampler as the config gives them, at smoke
    size under ``scale: smoke``."""
    settings = dict(config["systems"][system]["data"])
    if scale_of(config) == "smoke":
        settings = smoke_data_settings(system_spec(system).reference_sampler, settings)
    return settings


def population_settings(config: Mapping[str, Any], system: str) -> dict[str, Any]:
    """The umbrella-sampling settings of ``system`` (``systems.<name>.population``)."""
    settings = dict(config["systems"][system].get("population", {}))
    return smoke_population_settings(settings) if scale_of(config) == "smoke" else settings


def coupling_settings(config: Mapping[str, Any], system: str) -> dict[str, Any]:
    """The transport-cost settings of ``system`` (``systems.<name>.coupling``)."""
    settings = dict(config["systems"][system].get("coupling", {}))
    return smoke_coupling_settings(settings) if scale_of(config) == "smoke" else settings


def canonical(obj: Any) -> Any:
    """``obj`` with every mapping's keys sorted, recursively.

    Snakemake decides whether a job's params changed by comparing their printed form, in which
    a dict's key order counts: params are handed over in this form so that the same settings
    written in another order (or by a tool that sorts YAML keys) re-run nothing.
    """
    if isinstance(obj, Mapping):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def train_params(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """What the train rule needs: the run's identity, its system options and the
    ``{"model", "loss", "ode", "training"}`` settings of :func:`eqbg.training.train_run` (the config's
    ``device`` applies unless ``train`` names one)."""
    s = run_settings(config, run)
    return canonical(
        {
            "identity": run.identity(),
            "system_options": s["system_options"],
            "settings": {
                "model": s["model"],
                "loss": s["loss"],
                "ode": s["ode"],
                "training": {"device": s["device"], **s["train"]},
            },
        }
    )


def sample_params(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """What the sample rule needs: ``n_samples``, the seed, and the sampling settings of
    :func:`eqbg.sampling.sample_run`."""
    s = run_settings(config, run)
    sample = dict(s["sample"])
    if "n_samples" not in sample:
        raise ValueError(
            f"run {run.path} has no sample.n_samples: set it in `defaults.sample` or an override"
        )
    n_samples = int(sample.pop("n_samples"))
    sample.setdefault("device", s["device"])
    return canonical({"n_samples": n_samples, "seed": run.seed, "settings": sample})


def evaluate_params(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """What the evaluate rule needs: the evaluation settings, device and system options (the
    form :func:`eqbg.evaluation.evaluate_run` takes)."""
    s = run_settings(config, run)
    return canonical(
        {"evaluate": s["evaluate"], "device": s["device"], "system_options": s["system_options"]}
    )


def train_inputs(config: Mapping[str, Any], run: Run) -> dict[str, str]:
    """Reference-data files the run's training reads: ``train`` when its loss trains on data,
    ``val`` when it validates."""
    folder = f"results/data/{run.system}"
    inputs = {}
    if loss_needs_data(run.loss):
        inputs["train"] = f"{folder}/train.npz"
    if int(run_settings(config, run)["train"].get("val_every", 500)) > 0:
        inputs["val"] = f"{folder}/val.npz"
    return inputs


def system_options(config: Mapping[str, Any], system: str) -> dict[str, Any]:
    """Options passed to :func:`eqbg.systems.get_system` for ``system`` (empty if none)."""
    return dict(config.get("systems", {}).get(system, {}).get("options", {}))


def setup_logging(log_path: str | Path | None) -> logging.Logger:
    """Send ``logging`` output of a rule's script to its ``log:`` file and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return logging.getLogger("eqbg")


def export_source_path() -> None:
    """Put this package's source folder on ``PYTHONPATH`` so that jobs running in conda
    environments that do not install eqbg (``--sdm conda``) import the same code."""
    src = str(Path(__file__).resolve().parents[1])
    current = os.environ.get("PYTHONPATH", "")
    if src not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, current) if p)
