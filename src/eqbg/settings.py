"""Settings as dataclasses: built from plain dicts (``config.yaml`` through Snakemake) with unknown
keys rejected, validated, and turned back into JSON-friendly dicts for ``config.json``.

Every settings dataclass of the library (ODE, training, sampling, models, losses) goes through
:func:`resolve`, so a typo fails at once with the valid keys listed instead of silently falling
back to a default. A dataclass may define ``validate(self) -> None`` that raises
:class:`SettingsError` for invalid values; :func:`resolve` calls it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

__all__ = [
    "SettingsError", "resolve", "asdict", "nested_settings", "resolve_device", "resolve_dtype",
]

T = TypeVar("T")


class SettingsError(ValueError):
    """Invalid or unknown settings key or value (the message names it)."""


def resolve(cls: type[T], given: Mapping[str, Any] | None, where: str) -> T:
    """Instantiate settings dataclass ``cls`` from ``given``, rejecting unknown keys.

    Args:
        cls: a dataclass whose fields all have defaults.
        given: the user's keys (``None``: all defaults).
        where: what the settings are, for error messages (``"training"``, ``"model[egnn]"``).
    """
    given = dict(given or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise SettingsError(f"unknown {where} setting(s) {unknown}; valid keys: {sorted(fields)}")
    nested = nested_settings(cls)
    for name, value in given.items():
        # YAML gives lists where a tuple field is declared (e.g. Adam's betas)
        if isinstance(value, list) and "tuple" in str(fields[name].type):
            given[name] = tuple(value)
        elif name in nested and not isinstance(value, nested[name]):
            # a nested section's keys override the field's default (not the class defaults)
            default = fields[name].default_factory() if callable(fields[name].default_factory) else None
            base = dataclasses.asdict(default) if default is not None else {}
            given[name] = resolve(nested[name], {**base, **dict(value or {})}, f"{where}.{name}")
    obj = cls(**given)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except SettingsError as err:
            raise SettingsError(f"{where}: {err}") from None
    return obj


def nested_settings(cls: type) -> dict[str, type]:
    """The fields of settings dataclass ``cls`` that are settings dataclasses themselves (a
    section inside the section, e.g. FAB's ``ais``), by name."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name] for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def asdict(obj: Any) -> dict[str, Any]:
    """Dataclass to a JSON-friendly dict (tuples become lists)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SettingsError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    return torch.device(device)


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"`` / ``"float64"`` to the torch dtype."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise SettingsError(f"dtype must be float32 or float64, got {name!r}")
    return dtypes[name]
