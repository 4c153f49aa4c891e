"""The SE(3)-equivariant augmented coupling flow (EACF, Midgley et al. 2023) as a :class:`Flow`.

Joint density over positions ``x (n, d)`` (CoM-free) and augmented variables ``a (n, A, d)``:
base ``q0(x, a) = N_CoM(x; 0, s^2 I) prod_c N(a_c; x, sigma^2 I)``, then ``n_blocks`` blocks of two
:class:`~eqbg.flows.augmented.coupling.AugmentedCoupling` s (sampling direction: ``x`` given
``a``, then ``a`` given ``x``); the density direction runs the exact reverse. The density
function first subtracts ``mean(x)`` from every channel, so ``log q(x + t, a + t) = log q(x, a)``.
One forward pass gives a sample and its exact joint density.

**Length unit.** The couplings (spline ranges such as ``rho`` on [0, 10], the EGNN's
``|x_i - x_j| + 1`` normaliser) work in an internal unit of ``length_scale`` system units: states
are divided by it on the way into the couplings and multiplied on the way out, and the base and
``pi`` have standard deviations ``prior_scale`` and ``aug_scale`` in that unit. With the same
parameters, ``log q_s(x) = log q_1(x / s) - D log s`` (``D`` the degrees of freedom). The EACF
authors train alanine dipeptide in units of 0.16626292 nm (``examples/aldp_eval/eval_test.py``).
With ``scaling_layer`` every block ends with a :class:`~eqbg.flows.augmented.scaling.ScalingBlock`
(their alanine dipeptide flow).

The target is extended by the same conditional, ``pi(a | x) = prod_c N(a_c; x, sigma^2 I)``, so
the marginal of ``x`` is the target itself. What each call returns:

* :meth:`sample`: ``log_q = log q(x, a) - log pi(a | x)`` with ``a`` the sample's own augmented
  variables. Importance weights ``exp(-u(x) - log_q)`` are then exactly the paper's joint weights
  ``p(x) pi(a|x) / q(x, a)``: unbiased extended-space importance sampling of ``p(x)``
  (``E_{a ~ q(a|x)}[pi(a|x) / q(x, a)] = 1 / q(x)``). Density kind ``estimate``, ``K = 1``.
* :meth:`log_prob`: the importance-sampled marginal
  ``log q_K(x) = logsumexp_k [log q(x, a_k) - log pi(a_k | x)] - log K``, ``a_k ~ pi(. | x)``
  (``K = marginal_k``, the paper's 20; consistent, biased low by Jensen for finite ``K``). With
  ``K = 1`` these are the paper's forward-ESS weights (one ``a`` per test point).
* :meth:`nll`: ``-mean [log q(x, a) - log pi(a | x)]``, ``a ~ pi``: the augmented maximum-likelihood
  objective (an upper bound on the NLL), samples with non-finite or < -1e4 log density dropped
  (the authors' guard). The frames' collinearity loss, times ``aux_loss_weight``, is
  :meth:`auxiliary_loss`, which every training loss adds (:class:`eqbg.losses.base.Loss`).
* :meth:`rsample`: differentiable samples with the same ``log_q`` as :meth:`sample` (reverse KL
  on the joint space equals ``E_q[log_q - log p(x)]``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from eqbg.flows.augmented.coupling import AugmentedCoupling
from eqbg.flows.augmented.frames import FRAMES
from eqbg.flows.augmented.scaling import ScalingBlock
from eqbg.flows.base import Flow, FlowSample, one_pass_sample, valid_log_q
from eqbg.flows.priors import CoMFreeGaussian
from eqbg.geometry import remove_mean

__all__ = ["AugmentedCouplingFlow"]


class AugmentedCouplingFlow(Flow):
    """Augmented coupling flow on ``n`` particles in ``d`` = 2 or 3 dimensions.

    Args:
        n_particles, spatial_dim: ``n``, ``d``.
        n_aug: augmented channels ``A`` per particle.
        n_blocks: blocks of two couplings.
        frame: ``spherical``, ``proj`` or ``along_vector`` (:mod:`eqbg.flows.augmented.frames`).
        reflection_invariant: E(d)- instead of SE(d)-equivariant frames.
        n_bins: spline bins.
        proj_transform: ``affine`` or ``spline`` (``proj`` frame).
        egnn_hidden, egnn_layers, egnn_features, head_hidden: conditioner sizes.
        prior_scale: std of the CoM-free Gaussian base of ``x`` (internal unit).
        aug_scale: ``sigma`` of ``pi(a | x)`` and of the base's ``a`` (internal unit).
        length_scale: the internal unit in system units (see the module docstring).
        scaling_layer: end every block with a scaling block (EACF's alanine dipeptide flow).
        scaling_layer_conditioned: its shrink factors conditioned on the augmented centres.
        marginal_k: ``K`` of :meth:`log_prob`.
        aux_loss_weight: weight of the collinearity loss in training (3D frames;
            :meth:`auxiliary_loss`).
        identical_init: give every block the parameters of the first (the authors' init).
        atom_types: ``(n,)`` atom types, ``None``: all alike.
    """

    density = "estimate"

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        *,
        n_aug: int = 1,
        n_blocks: int = 12,
        frame: str = "spherical",
        reflection_invariant: bool = False,
        n_bins: int = 8,
        proj_transform: str = "affine",
        egnn_hidden: int = 64,
        egnn_layers: int = 3,
        egnn_features: int = 128,
        head_hidden: int = 64,
        prior_scale: float = 1.0,
        aug_scale: float = 0.1,
        marginal_k: int = 20,
        aux_loss_weight: float = 0.0,
        length_scale: float = 1.0,
        scaling_layer: bool = False,
        scaling_layer_conditioned: bool = True,
        identical_init: bool = True,
        atom_types: Tensor | None = None,
    ) -> None:
        super().__init__()
        if frame not in FRAMES:
            raise ValueError(f"unknown frame {frame!r}; known: {sorted(FRAMES)}")
        if n_aug < 1 or n_blocks < 1 or marginal_k < 1:
            raise ValueError("n_aug, n_blocks and marginal_k must be >= 1")
        if not (prior_scale > 0 and aug_scale > 0 and length_scale > 0):
            raise ValueError("prior_scale, aug_scale and length_scale must be positive")
        self.n, self.d, self.n_aug = int(n_particles), int(spatial_dim), int(n_aug)
        self.length_scale = float(length_scale)
        #: std of pi(a | x) in system units
        self.aug_std = float(aug_scale) * self.length_scale
        self.marginal_k, self.aux_loss_weight = int(marginal_k), float(aux_loss_weight)
        if frame != "proj" and proj_transform != "affine":
            raise ValueError("proj_transform applies to the 'proj' frame only")
        kwargs = {"transform": proj_transform} if frame == "proj" else {}
        frame_obj = FRAMES[frame](spatial_dim, n_bins, reflection_invariant, **kwargs)
        self.frame = frame_obj

        def coupling(swap: bool) -> AugmentedCoupling:
            return AugmentedCoupling(
                n_particles, spatial_dim, n_aug, swap, frame_obj, egnn_hidden=egnn_hidden,
                egnn_layers=egnn_layers, egnn_features=egnn_features, head_hidden=head_hidden,
                atom_types=atom_types,
            )

        # sampling order: x given a (swap=True), then a given x, in every block
        self.couplings = nn.ModuleList(coupling(swap) for _ in range(n_blocks) for swap in (True, False))
        # built after the couplings, so flows without them draw the same initial parameters
        self.scalings = nn.ModuleList(
            ScalingBlock(n_aug, scaling_layer_conditioned) for _ in range(n_blocks if scaling_layer else 0))
        if identical_init:
            for i in range(2, len(self.couplings)):
                self.couplings[i].load_state_dict(self.couplings[i % 2].state_dict())
            for block in self.scalings[1:]:
                block.load_state_dict(self.scalings[0].state_dict())
        self.prior = CoMFreeGaussian(n_particles, spatial_dim, scale=prior_scale * self.length_scale)

    # ------------------------------------------------------------------ protocol
    @property
    def event_shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    @property
    def com_free(self) -> bool:
        return True

    @property
    def invariances(self) -> frozenset[str]:
        """SE(d) and permutations; E(d) with reflection-invariant frames (``along_vector`` always)."""
        mirror = self.frame.reflection_invariant or self.frame.name == "along_vector"
        return frozenset({"rotation", "permutation"} | ({"reflection"} if mirror else set()))

    @property
    def dim(self) -> int:
        """Degrees of freedom of the joint space: ``(n-1) d + n A d``."""
        return (self.n - 1) * self.d + self.n * self.n_aug * self.d

    # ------------------------------------------------------------------ densities
    def log_pi(self, a: Tensor, x: Tensor) -> Tensor:
        """``log pi(a | x)``: ``a (B, n, A, d)``, ``x (B, n, d)`` -> ``(B,)``."""
        s2 = self.aug_std**2
        sq = (a - x.unsqueeze(2)).pow(2).flatten(1).sum(-1)
        return -0.5 * sq / s2 - 0.5 * self.n * self.n_aug * self.d * math.log(2 * math.pi * s2)

    def sample_pi(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``a ~ pi(. | x)``: ``x (B, n, d)`` -> ``(B, n, A, d)``."""
        eps = torch.randn((*x.shape[:2], self.n_aug, self.d), generator=generator,
                          dtype=x.dtype, device=x.device)
        return x.unsqueeze(2) + self.aug_std * eps

    def base_log_prob(self, z: Tensor) -> Tensor:
        """``log q0(x, a)`` of ``z (B, n, 1+A, d)``."""
        x = z[:, :, 0]
        return self.prior.log_prob(x) + self.log_pi(z[:, :, 1:], x)

    def base_sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``z ~ q0``: ``(num, n, 1+A, d)``."""
        x = self.prior.sample(num, generator=generator)
        return torch.cat([x.unsqueeze(2), self.sample_pi(x, generator)], dim=2)

    def _layers(self) -> list[nn.Module]:
        """Couplings and scaling blocks in sampling order."""
        layers: list[nn.Module] = []
        for b in range(len(self.couplings) // 2):
            layers += [self.couplings[2 * b], self.couplings[2 * b + 1]]
            if len(self.scalings):
                layers.append(self.scalings[b])
        return layers

    def forward_joint(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base point -> sample: ``(z', log q(z'))``, both ``(B, n, 1+A, d)`` / ``(B,)``."""
        log_q = self.base_log_prob(z)
        s = self.length_scale
        if s != 1.0:  # conjugation by the unit change: log-determinants are unchanged
            z = z / s
        for layer in self._layers():
            z, ladj = layer(z)
            log_q = log_q - ladj
        return (z * s if s != 1.0 else z), log_q

    def joint_log_prob(self, x: Tensor, a: Tensor) -> Tensor:
        """``log q(x, a)``: ``x (B, n, d)``, ``a (B, n, A, d)`` -> ``(B,)`` (differentiable)."""
        z = torch.cat([x.unsqueeze(2), a], dim=2)
        z = z - x.mean(dim=1, keepdim=True).unsqueeze(2)
        s = self.length_scale
        if s != 1.0:
            z = z / s
        log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in reversed(self._layers()):
            z, ladj = layer.inverse(z)
            log_det = log_det + ladj
        return self.base_log_prob(z * s if s != 1.0 else z) + log_det

    def aux_loss(self) -> Tensor | None:
        """``(B,)`` mean collinearity loss over the couplings of the last differentiable call
        (None when there was none)."""
        terms = [c.last_aux for c in self.couplings if c.last_aux is not None]
        return torch.stack(terms).mean(0) if terms else None

    def auxiliary_loss(self) -> Tensor | None:
        """``aux_loss_weight`` times the batch mean of :meth:`aux_loss` (EACF's
        ``aux_loss * aux_loss_weight``, added to the ml and FAB losses alike); None at weight 0."""
        aux = self.aux_loss() if self.aux_loss_weight else None
        if aux is None or aux.numel() == 0:
            return None
        return self.aux_loss_weight * aux.mean()

    # ------------------------------------------------------------------ sampling state
    # The state of AIS and FAB is the joint (x, a): z (B, n, 1+A, d), target p(x) pi(a|x).

    @torch.no_grad()
    def state_sample(self, num: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return self.forward_joint(self.base_sample(num, generator))

    def state_log_prob(self, z: Tensor) -> Tensor:
        return self.joint_log_prob(z[:, :, 0], z[:, :, 1:])

    def state_target_log_prob(self, z: Tensor, energy) -> Tensor:
        x = z[:, :, 0]
        return -energy(x) + self.log_pi(z[:, :, 1:], x)

    def state_project(self, v: Tensor) -> Tensor:
        # the joint densities are flat along a joint translation of x and a: the orthogonal
        # projection removes that direction (mean over particles and channels)
        return v - v.mean(dim=(1, 2), keepdim=True)

    # ------------------------------------------------------------------ Flow calls
    def _draw(self, num: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        z, log_q = self.forward_joint(self.base_sample(num, generator))
        x, a = z[:, :, 0], z[:, :, 1:]
        return x, log_q - self.log_pi(a, x)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        with_log_q: bool = True,
        **_solver,
    ) -> FlowSample:
        """``num`` samples, ``log_q = log q(x, a) - log pi(a|x)`` (the joint weights; see the
        module docstring). One pass per batch; ``_solver`` keywords (ODE flows') are ignored."""
        return one_pass_sample(lambda m: self._draw(m, generator), num, batch_size, with_log_q,
                               "estimate", density_k=1)

    @torch.no_grad()
    def log_prob(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        marginal_k: int | None = None,
        **_solver,
    ) -> Tensor:
        """``(B,)`` importance-sampled marginal ``log q_K(x)`` (``K = marginal_k`` or the
        flow's), evaluated in chunks of ``batch_size`` configurations."""
        k = int(marginal_k or self.marginal_k)
        x = remove_mean(self.check_x(x))
        bs = max(int(batch_size or x.shape[0]), 1)
        out = []
        for s in range(0, x.shape[0], bs):
            xb = x[s:s + bs].repeat_interleave(k, dim=0)
            a = self.sample_pi(xb, generator)
            lw = (self.joint_log_prob(xb, a) - self.log_pi(a, xb)).view(-1, k)
            out.append(torch.logsumexp(lw, dim=1) - math.log(k))
        return torch.cat(out) if out else x.new_zeros(0)

    def nll(self, x: Tensor, *, generator: torch.Generator | None = None, **_solver) -> Tensor:
        """Differentiable augmented NLL of a data batch (see the module docstring)."""
        x = remove_mean(self.check_x(x))
        a = self.sample_pi(x, generator)
        lw = self.joint_log_prob(x, a) - self.log_pi(a, x)
        ok = valid_log_q(lw)
        if not bool(ok.any()):
            return lw.new_full((), math.inf)
        return -lw[ok].mean()

    def rsample(
        self, num: int, *, generator: torch.Generator | None = None, **_solver
    ) -> tuple[Tensor, Tensor]:
        """Differentiable ``(x, log q(x, a) - log pi(a|x))``."""
        return self._draw(num, generator)
