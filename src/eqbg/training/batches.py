"""The training and validation configurations of a run, and the minibatches of its passes over
the training data (their order is part of the checkpointed training state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eqbg.data import load_dataset
from eqbg.rundir import DataDir
from eqbg.training.settings import TrainingSettings
from eqbg.training.state import TrainingState

__all__ = ["next_batch", "shuffle", "training_data"]


def _load_split(data: DataDir, split: str, system: Any) -> Tensor:
    return load_dataset(data.split(split), system=system, split=split)


def training_data(
    loss: str, needs_data: bool, data_dir: str | Path | DataDir | None, ts: TrainingSettings, system: Any, seed: int,
    device: torch.device, dtype: torch.dtype,
) -> tuple[Tensor | None, Tensor | None]:
    """``(train_x, val_x)``: the training configurations (``n_train`` of them, drawn with
    ``seed``) when the loss (named ``loss``) trains on data (``needs_data``), and ``val_size`` validation configurations (drawn with
    ``seed + 1``) when ``val_every > 0``; ``None`` where not needed. Shapes ``(N, n, d)``.

    Raises:
        ValueError: no data folder where one is needed, or ``n_train`` / ``batch_size`` larger
            than the training split.
    """
    data = data_dir if isinstance(data_dir, DataDir) or data_dir is None else DataDir(data_dir)
    train_x = None
    if needs_data:
        if data is None:
            raise ValueError(f"loss {loss!r} trains on data, but no data folder was given")
        train_x = _load_split(data, "train", system)
        if ts.n_train is not None:
            if ts.n_train > len(train_x):
                raise ValueError(f"training.n_train={ts.n_train} exceeds the {len(train_x)} training samples")
            sub = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
            train_x = train_x[sub[: ts.n_train]]
        if ts.batch_size > len(train_x):
            raise ValueError(f"training.batch_size={ts.batch_size} exceeds the {len(train_x)} training samples")
        train_x = train_x.to(device=device, dtype=dtype)
    val_x = None
    if ts.val_every > 0:
        if data is None:
            raise ValueError("validation (val_every > 0) needs the data folder with val.npz")
        v = _load_split(data, "val", system)
        sel = torch.randperm(len(v), generator=torch.Generator().manual_seed(seed + 1))
        val_x = v[sel[: ts.val_size]].to(device=device, dtype=dtype)
    return train_x, val_x


def shuffle(state: TrainingState, train_x: Tensor) -> None:
    """Start a new pass over the training data in a fresh random order."""
    state.order = torch.randperm(len(train_x), generator=state.generator, device=train_x.device)
    state.pos = 0


def next_batch(state: TrainingState, train_x: Tensor, batch_size: int) -> Tensor:
    """The next minibatch of the current pass (a new pass starts when this one is exhausted)."""
    if state.pos + batch_size > len(train_x):
        shuffle(state, train_x)
    idx = state.order[state.pos : state.pos + batch_size]
    state.pos += batch_size
    return train_x[idx]
