"""A run folder, ``results/runs/{system}/{model}/{loss}[/{variant}]/seed{k}``: its files and
their typed readers and writers, in one place.

Every stage that reads or writes a run's files goes through :class:`RunDir`, so the folder's
contract is written down once:

* ``config.json`` -- the run's identity (:data:`IDENTITY_KEYS`) and resolved settings, with
  provenance (written by training, or by the MCMC baseline);
* ``checkpoint.pt`` -- the resumable state of training (or of MCMC chains);
* ``model.pt`` -- the trained weights with the settings that rebuild the flow (:func:`load_flow`);
* ``train.csv`` -- one row per training step;
* ``samples.npz`` -- samples with their log densities (the sampling stage);
* ``metrics.json`` and ``eval.npz`` -- the evaluation's scalars and the figures' arrays
  (:meth:`RunDir.write_evaluation`).

It sits above the flows and systems (it rebuilds a trained flow) and below every stage.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from eqbg import io
from eqbg.flows.base import Flow
from eqbg.flows.registry import build_flow
from eqbg.settings import resolve_device, resolve_dtype
from eqbg.systems import get_system

__all__ = ["IDENTITY_KEYS", "RunDir", "DataDir", "json_clean", "load_flow", "run_identifiers"]

#: Fields of a run's identity, as its ``config.json`` records them.
IDENTITY_KEYS = ("system", "model", "loss", "variant", "seed")


def run_identifiers(config: Mapping[str, Any]) -> dict[str, Any]:
    """``system``, ``model``, ``loss``, ``variant``, ``seed`` of a run, read from its
    ``config.json`` (never parsed back from the path: a variant adds a folder to it)."""
    missing = [k for k in ("system", "model", "loss", "seed") if not isinstance(config.get(k), (str, int))]
    if missing:
        raise ValueError(f"run config lacks its identity {missing}: was it written by train_run?")
    return {key: config.get(key) for key in IDENTITY_KEYS}


def json_clean(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON), recursively."""
    if isinstance(obj, Mapping):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


@dataclass(frozen=True)
class _Folder:
    """A folder of named files (:attr:`NAMES`: attribute -> file name); each is ``root/<its
    name>`` unless ``files`` names its path: a stage built from the paths its rule declares
    (:meth:`from_files`) reads exactly those."""

    root: Path
    files: Mapping[str, Path] = field(default_factory=dict)

    NAMES: ClassVar[Mapping[str, str]] = MappingProxyType({})  #: overridden: attribute -> file name
    KIND: ClassVar[str] = "folder"  #: what the folder holds, for error messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        unknown = sorted(set(self.files) - set(self.NAMES))
        if unknown:
            raise ValueError(f"unknown {self.KIND} files {unknown}; a {self.KIND} folder has {sorted(self.NAMES)}")
        object.__setattr__(self, "files", MappingProxyType({k: Path(v) for k, v in self.files.items()}))

    @classmethod
    def from_files(cls, root: str | Path | None = None, **files: str | Path | None):
        """The folder of the files a rule declared (``None``: not declared); its root is the
        folder of the first declared file unless given."""
        paths = {name: Path(path) for name, path in files.items() if path is not None}
        if root is None:
            if not paths:
                raise ValueError("a folder needs its root or at least one declared file")
            root = next(iter(paths.values())).parent
        return cls(Path(root), paths)

    def _file(self, name: str) -> Path:
        return self.files.get(name, self.root / self.NAMES[name])


@dataclass(frozen=True)
class RunDir(_Folder):
    """The files of one run folder (paths are not required to exist; a declared path replaces
    ``root/<name>``, see :meth:`from_files`)."""

    NAMES = MappingProxyType({
        "config": "config.json", "checkpoint": "checkpoint.pt", "model": "model.pt",
        "train_curve": "train.csv", "samples": "samples.npz", "metrics": "metrics.json",
        "eval_npz": "eval.npz",
    })
    KIND = "run"

    @property
    def config(self) -> Path:
        return self._file("config")

    @property
    def checkpoint(self) -> Path:
        return self._file("checkpoint")

    @property
    def model(self) -> Path:
        return self._file("model")

    @property
    def train_curve(self) -> Path:
        return self._file("train_curve")

    @property
    def samples(self) -> Path:
        return self._file("samples")

    @property
    def metrics(self) -> Path:
        return self._file("metrics")

    @property
    def eval_npz(self) -> Path:
        return self._file("eval_npz")

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json``."""
        return io.read_json(self.config)

    def read_samples(self, path: str | Path | None = None) -> dict[str, np.ndarray]:
        """The arrays of ``samples.npz`` (or of ``path``); a truncated file is named."""
        path = Path(path) if path else self.samples
        if not path.is_file():
            raise FileNotFoundError(f"{path}: samples file not found")
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"{path}: samples file is truncated or corrupt ({type(exc).__name__}: {exc}); "
                "delete it to sample again"
            ) from exc

    def read_train_curve(self) -> pd.DataFrame | None:
        """``train.csv`` (None for a run that was not trained, such as MCMC)."""
        return pd.read_csv(self.train_curve) if self.train_curve.exists() else None

    def write_evaluation(
        self,
        metrics: Mapping[str, Any],
        arrays: Mapping[str, Any],
        identity: Mapping[str, Any],
        *,
        metrics_path: str | Path | None = None,
        eval_npz_path: str | Path | None = None,
    ) -> None:
        """Write ``eval.npz`` (the arrays, plus the identity as 0-d strings so a figure knows
        whose they are) and then ``metrics.json`` (NaN as null), each atomically.

        Args:
            metrics_path, eval_npz_path: other places than the folder's own (the rules' outputs).
        """
        metrics_path = Path(metrics_path) if metrics_path else self.metrics
        eval_npz_path = Path(eval_npz_path) if eval_npz_path else metrics_path.with_name("eval.npz")
        io.save_npz(
            eval_npz_path,
            **{k: np.asarray(v) for k, v in arrays.items()},
            **{k: np.asarray("" if identity.get(k) is None else str(identity[k])) for k in IDENTITY_KEYS},
        )
        io.write_json(metrics_path, json_clean(dict(metrics)))


@dataclass(frozen=True)
class DataDir(_Folder):
    """The files of a system's reference-data folder, ``results/data/{system}``, that runs read:
    the splits, the data stage's provenance (its cost) and, for systems with backbone dihedrals,
    the umbrella-sampling reference of the phi populations (a declared path replaces
    ``root/<name>``, see :meth:`from_files`)."""

    NAMES = MappingProxyType({
        "train": "train.npz", "val": "val.npz", "test": "test.npz",
        "provenance": "provenance.json", "population": "md_population.json",
    })
    KIND = "data"

    def split(self, name: str) -> Path:
        """``train``, ``val`` or ``test``."""
        return self._file(name)

    @property
    def provenance(self) -> Path:
        return self._file("provenance")

    @property
    def population(self) -> Path:
        return self._file("population")


def load_flow(
    run_dir: str | Path | RunDir,
    *,
    ode: Mapping[str, Any] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> tuple[Flow, dict[str, Any]]:
    """Rebuild the trained flow of ``run_dir`` from its self-describing ``model.pt``.

    Args:
        run_dir: a training run folder (``model.pt``, ``config.json``), or a :class:`RunDir`.
        ode: overrides of the stored ODE settings (e.g. tighter tolerances for the test NLL).
        device: where to put the model (``auto`` allowed).
        dtype: ``float32``/``float64`` (default: the training dtype).

    Returns:
        ``(flow in eval mode without gradients, the run's config.json)``.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    for p in (run.config, run.model):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {run.root} a finished training run?")
    config = run.read_config()
    try:
        saved = torch.load(run.model, map_location="cpu", weights_only=False)
        state_dict, model_cfg = saved["state_dict"], saved["model"]
    except Exception as err:  # a truncated or foreign file: name it
        raise ValueError(
            f"{run.model}: model file is truncated or corrupt, or not an eqbg model file "
            f"({type(err).__name__}: {err}); delete it to train again"
        ) from err
    ode_cfg = {**dict(saved.get("ode") or {}), **dict(ode or {})}
    sys_obj = get_system(saved["system"], **dict(saved.get("system_options") or {}))
    flow = build_flow(sys_obj, model_cfg, ode_cfg)
    flow.load_state_dict(state_dict)
    dt = resolve_dtype(dtype or config.get("training", {}).get("dtype", "float32"))
    flow = flow.to(device=resolve_device(device), dtype=dt).eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    return flow, config
