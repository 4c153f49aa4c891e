"""The model registry: the one place where a model name becomes a :class:`~eqbg.flows.Flow`.

A model is a settings dataclass (every field a config key under ``defaults.model.<name>``, with
its default and a comment that documents it) and a builder ``build(system, settings, ode) ->
Flow``. :func:`register_model` adds one; :func:`build_flow` validates the settings and builds it
(:func:`eqbg.rundir.load_flow` rebuilds a trained one from its ``model.pt``). The config
schema's model names are held equal to :data:`MODELS` by a test.

Keys common to every model: ``name`` (the registry name) and ``prior_scale`` (std of the Gaussian
base distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from eqbg.flows.augmented import FRAMES, AugmentedCouplingFlow
from eqbg.flows.base import Flow
from eqbg.flows.cnf import CNF
from eqbg.flows.priors import make_prior
from eqbg.flows.realnvp import RealNVPFlow
from eqbg.flows.solver import ODESettings
from eqbg.nn import EGNNField, KernelField, MLPField
from eqbg.settings import SettingsError, asdict, resolve

__all__ = [
    "EGNNSettings",
    "KernelSettings",
    "MLPSettings",
    "EACFSettings",
    "RealNVPSettings",
    "ModelSpec",
    "MODELS",
    "register_model",
    "resolve_model_settings",
    "model_settings_dict",
    "build_flow",
]


@dataclass
class EGNNSettings:
    """EGNN vector field (Satorras et al. 2021; EFM) in a CNF. Atom types come from the system."""

    name: str = "egnn"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    hidden: int = 64  #: width of every MLP
    n_layers: int = 4  #: E(n) message-passing layers
    attention: bool = True  #: sigmoid edge gate
    tanh: bool = True  #: bound coordinate updates by tanh * coords_range / n_layers
    coords_range: float = 15.0  #: see tanh
    time_freqs: int = 0  #: sinusoidal time frequencies on top of the scalar t feature
    normalize_aggregation: bool = False  #: divide neighbour sums by n - 1


@dataclass
class KernelSettings:
    """Gradient field of an invariant RBF potential (Köhler, Klein, Noé 2020) in a CNF."""

    name: str = "kernel"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    n_rbf: int = 50  #: radial basis functions over pair distances
    r_max: float = 8.0  #: largest RBF centre
    gamma: float = 0.5  #: RBF width parameter
    n_time_rbf: int = 10  #: RBFs over time
    time_gamma: float = 0.3  #: time RBF width
    init_scale: float = 0.0  #: initial weight scale


def _cnf(system: Any, field: torch.nn.Module, prior_scale: float, ode: ODESettings) -> CNF:
    return CNF(
        field,
        make_prior(system, scale=prior_scale),
        solver=ode.solver,
        trace_method=ode.trace_method,
        trace_chunk_size=ode.trace_chunk_size,
        probe=ode.probe,
        adjoint_seminorm=ode.adjoint_seminorm,
    )


def _build_egnn(system: Any, s: EGNNSettings, ode: ODESettings) -> Flow:
    types = system.atom_types
    field = EGNNField(
        int(system.n_particles),
        int(system.spatial_dim),
        hidden=s.hidden,
        n_layers=s.n_layers,
        n_atom_types=int(types.max()) + 1,
        atom_types=types,
        attention=s.attention,
        tanh=s.tanh,
        coords_range=s.coords_range,
        com_free=bool(system.com_free),
        time_freqs=s.time_freqs,
        normalize_aggregation=s.normalize_aggregation,
    )
    return _cnf(system, field, s.prior_scale, ode)


def _build_kernel(system: Any, s: KernelSettings, ode: ODESettings) -> Flow:
    if not system.com_free:
        raise SettingsError(f"model 'kernel' needs a CoM-free system, {system.name} is not")
    field = KernelField(
        int(system.n_particles),
        int(system.spatial_dim),
        n_rbf=s.n_rbf,
        r_max=s.r_max,
        gamma=s.gamma,
        n_time_rbf=s.n_time_rbf,
        time_gamma=s.time_gamma,
        init_scale=s.init_scale,
    )
    return _cnf(system, field, s.prior_scale, ode)


@dataclass
class MLPSettings:
    """Non-equivariant baseline: an MLP vector field on the CoM-free coordinates in a CNF."""

    name: str = "mlp"  #: registry name
    prior_scale: float = 1.0  #: std of the (CoM-free) Gaussian prior
    hidden: int = 128  #: width of every hidden layer
    n_layers: int = 3  #: hidden layers
    time_freqs: int = 0  #: sinusoidal time frequencies on top of the scalar t feature


def _build_mlp(system: Any, s: MLPSettings, ode: ODESettings) -> Flow:
    field = MLPField(
        int(system.n_particles),
        int(system.spatial_dim),
        hidden=s.hidden,
        n_layers=s.n_layers,
        time_freqs=s.time_freqs,
        com_free=bool(system.com_free),
    )
    return _cnf(system, field, s.prior_scale, ode)


@dataclass
class EACFSettings:
    """SE(3)-equivariant augmented coupling flow (Midgley et al. 2023); no ODE, one pass.

    Defaults are the paper's DW4/LJ13 settings (EACF_FAB.md section A); the density is an
    importance-sampled marginal over the augmented variables (kind ``estimate``).
    """

    name: str = "eacf"  #: registry name
    prior_scale: float = 1.0  #: std of the CoM-free Gaussian base of x (in units of length_scale)
    n_aug: int = 1  #: augmented variable sets per particle (A)
    n_blocks: int = 12  #: blocks of two couplings (a given x, x given a)
    #: per-node frame: spherical (paper default), proj, along_vector
    frame: str = "spherical"
    #: multiply the handed frame axis by a sign that flips under reflection: E(3)- instead of
    #: SE(3)-equivariant (paper default False: mirror images get different densities)
    reflection_invariant: bool = False
    n_bins: int = 8  #: rational-quadratic spline bins
    proj_transform: str = "affine"  #: proj frame: affine or spline
    egnn_hidden: int = 64  #: conditioner EGNN width
    egnn_layers: int = 3  #: conditioner EGNN message-passing layers
    egnn_features: int = 128  #: invariant features per node into the parameter head
    head_hidden: int = 64  #: width of the two hidden layers of the parameter head
    aug_scale: float = 0.1  #: sigma of pi(a|x) = N(a; x, sigma^2 I) and of the base's a (length_scale units)
    marginal_k: int = 20  #: K of the importance-sampled marginal log q(x) (NLL)
    aux_loss_weight: float = 0.0  #: weight of the 3D frame collinearity loss in training (every loss)
    #: the flow's internal length unit in system units (positions divided by it on the way in;
    #: EACF trains alanine dipeptide in units of 0.16626292 nm)
    length_scale: float = 1.0
    scaling_layer: bool = False  #: a scaling block ends every block (EACF's alanine dipeptide flow)
    scaling_layer_conditioned: bool = True  #: its shrink conditioned on the augmented centres
    identical_init: bool = True  #: every block starts from the first block's parameters

    def validate(self) -> None:
        if self.frame not in FRAMES:
            raise SettingsError(f"model[eacf].frame must be one of {sorted(FRAMES)}, got {self.frame!r}")
        if self.proj_transform not in ("affine", "spline"):
            raise SettingsError(f"model[eacf].proj_transform must be affine or spline, got {self.proj_transform!r}")
        for key in ("n_aug", "n_blocks", "marginal_k", "egnn_hidden", "egnn_layers", "egnn_features", "head_hidden"):
            if getattr(self, key) < 1:
                raise SettingsError(f"model[eacf].{key} must be >= 1, got {getattr(self, key)}")
        if self.n_bins < 2:
            raise SettingsError(f"model[eacf].n_bins must be >= 2, got {self.n_bins}")
        if not (self.aug_scale > 0 and self.prior_scale > 0 and self.length_scale > 0):
            raise SettingsError("model[eacf].aug_scale, prior_scale and length_scale must be positive")


def _build_eacf(system: Any, s: EACFSettings, ode: ODESettings) -> Flow:
    if not system.com_free or int(system.spatial_dim) not in (2, 3):
        raise SettingsError(
            f"model 'eacf' needs a CoM-free system in 2 or 3 dimensions, {system.name} is not"
        )
    return AugmentedCouplingFlow(
        int(system.n_particles), int(system.spatial_dim), n_aug=s.n_aug, n_blocks=s.n_blocks,
        frame=s.frame, reflection_invariant=s.reflection_invariant, n_bins=s.n_bins,
        proj_transform=s.proj_transform, egnn_hidden=s.egnn_hidden, egnn_layers=s.egnn_layers,
        egnn_features=s.egnn_features, head_hidden=s.head_hidden, prior_scale=s.prior_scale,
        aug_scale=s.aug_scale, marginal_k=s.marginal_k, aux_loss_weight=s.aux_loss_weight,
        length_scale=s.length_scale, scaling_layer=s.scaling_layer,
        scaling_layer_conditioned=s.scaling_layer_conditioned,
        identical_init=s.identical_init, atom_types=system.atom_types,
    )


@dataclass
class RealNVPSettings:
    """Non-equivariant affine coupling flow (the FAB paper's GMM-40 / Many-Well-32 flow)."""

    name: str = "realnvp"  #: registry name
    prior_scale: float = 1.0  #: initial std of the trainable diagonal Gaussian base
    n_layers: int = 15  #: affine coupling layers (FAB GMM-40: 15; Many-Well-32: 10)
    hidden: int = 80  #: conditioner MLP width (FAB GMM-40: 80; Many-Well-32: 320)
    n_hidden_layers: int = 2  #: hidden layers per conditioner MLP
    trainable_base: bool = True  #: learn the base's mean and scales
    lu_linear: bool = True  #: LU-parameterised invertible linear maps between couplings

    def validate(self) -> None:
        for key in ("n_layers", "hidden", "n_hidden_layers"):
            if getattr(self, key) < 1:
                raise SettingsError(f"model[realnvp].{key} must be >= 1, got {getattr(self, key)}")
        if not self.prior_scale > 0:
            raise SettingsError("model[realnvp].prior_scale must be positive")


def _build_realnvp(system: Any, s: RealNVPSettings, ode: ODESettings) -> Flow:
    if system.com_free:
        raise SettingsError(
            f"model 'realnvp' is for targets without translation symmetry; {system.name} is "
            "CoM-free (use an equivariant model)"
        )
    return RealNVPFlow(
        int(system.n_particles), int(system.spatial_dim), n_layers=s.n_layers, hidden=s.hidden,
        n_hidden_layers=s.n_hidden_layers, prior_scale=s.prior_scale,
        trainable_base=s.trainable_base, lu_linear=s.lu_linear,
    )


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its settings dataclass and its builder."""

    settings: type
    build: Callable[[Any, Any, ODESettings], Flow]


#: name -> model; the only list of model names
MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str, settings_cls: type, build: Callable[[Any, Any, ODESettings], Flow]
) -> None:
    """Make ``name`` buildable by :func:`build_flow`.

    Args:
        name: registry name (the config's ``models:`` entries and run paths use it).
        settings_cls: dataclass of the model's settings, with a ``name`` field.
        build: ``build(system, settings, ode_settings) -> Flow`` (flows without an ODE ignore
            ``ode_settings``).
    """
    if "name" not in {f.name for f in dataclasses.fields(settings_cls)}:
        raise TypeError(f"{settings_cls.__name__} needs a 'name' field")
    MODELS[name] = ModelSpec(settings_cls, build)


register_model("egnn", EGNNSettings, _build_egnn)
register_model("kernel", KernelSettings, _build_kernel)
register_model("mlp", MLPSettings, _build_mlp)
register_model("eacf", EACFSettings, _build_eacf)
register_model("realnvp", RealNVPSettings, _build_realnvp)


def resolve_model_settings(model_cfg: Mapping[str, Any] | None, name: str | None = None):
    """Resolve model settings (defaults filled, unknown keys and names rejected)."""
    cfg = dict(model_cfg or {})
    cfg_name = cfg.get("name")
    if name is not None and cfg_name is not None and cfg_name != name:
        raise SettingsError(f"model settings say name={cfg_name!r} but the run is for {name!r}")
    name = name or cfg_name or "egnn"
    if name not in MODELS:
        raise SettingsError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    cfg["name"] = name
    return resolve(MODELS[name].settings, cfg, f"model[{name}]")


def model_settings_dict(model_cfg: Mapping[str, Any] | None, name: str | None = None) -> dict:
    """Resolved model settings as a plain dict (what ``config.json`` records)."""
    return asdict(resolve_model_settings(model_cfg, name))


def build_flow(
    system: Any,
    model_cfg: Mapping[str, Any] | None,
    ode_cfg: Mapping[str, Any] | ODESettings | None = None,
) -> Flow:
    """Build the flow of a registered model for ``system`` (an ``eqbg.systems.System``).

    Args:
        system: target system (particle count, dimension, atom types, CoM-freedom).
        model_cfg: model settings; ``name`` selects the registered model (default ``egnn``).
        ode_cfg: :class:`ODESettings` keys (default solver and divergence of ODE flows).

    Returns:
        A float32 :class:`Flow` on the CPU.
    """
    ms = resolve_model_settings(model_cfg)
    ode = ode_cfg if isinstance(ode_cfg, ODESettings) else resolve(ODESettings, ode_cfg, "ode")
    return MODELS[ms.name].build(system, ms, ode)

