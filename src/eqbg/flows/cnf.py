"""Continuous normalizing flow (CNF) with exact or Hutchinson log-likelihoods.

Time convention (CONTRACT.md): ``t = 0`` is the prior, ``t = 1`` is data; ``dx/dt = v(t, x)``.
Along a trajectory ``d log p(x_t)/dt = -div v(t, x_t)``, hence

    log q(x_1) = log p_0(x_0) - int_0^1 div v(t, x_t) dt.

Sampling integrates ``(x, l, path)`` from 0 to 1 with ``dl/dt = -div v``, ``d path/dt = |v|``;
``log_prob`` integrates ``(x, l)`` from 1 to 0 starting at ``l(1) = 0`` and returns
``log p_0(x_0) - l(0)``. Inference runs under ``torch.no_grad`` and every ODE step frees its
divergence graph (``create_graph=False``); training (:meth:`CNF.nll`) uses torchdiffeq's
``odeint_adjoint`` so memory does not grow with the number of solver steps.

For CoM-free priors the divergence is the trace on the ``(n-1)d`` subspace (see
:mod:`eqbg.flows.divergence`). A field exposing ``forward_and_divergence(t, x)`` or
``divergence(t, x)`` (e.g. :class:`eqbg.nn.KernelField`) gets its closed form used for the exact
trace.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from eqbg.geometry import remove_mean

from .divergence import (
    ProbeKind,
    TraceMethod,
    make_probe,
    subspace_basis,
    value_and_exact_divergence,
    value_and_hutchinson_divergence,
)

__all__ = ["CNF", "SampleResult", "ADAPTIVE_METHODS", "FIXED_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3")


@dataclass
class SampleResult:
    """Output of :meth:`CNF.sample`.

    Attributes:
        x: ``(N, n, d)`` samples at t = 1 (CoM-free for CoM-free priors).
        log_q: ``(N,)`` model log density of ``x`` (nats, project convention), or ``None`` when
            sampled with ``with_log_q=False``.
        nfe: vector-field evaluations summed over batches (each evaluation is one batched call
            of the field plus its divergence); per trajectory it is ``nfe / n_batches``.
        path_length: mean over samples of ``int_0^1 |v(x_t, t)| dt`` (Euclidean norm over all
            ``n*d`` coordinates).
        wall_time_s: wall-clock seconds for the whole call.
        n_batches: number of integrations (``ceil(N / batch_size)``).
    """

    x: Tensor
    log_q: Tensor | None
    nfe: int
    path_length: float
    wall_time_s: float
    n_batches: int = 1


class _Dynamics(nn.Module):
    """Augmented dynamics ``(x, l[, path]) -> (v, -div v[, |v|])`` for torchdiffeq.

    Registered as a module so ``odeint_adjoint`` finds the field's parameters.
    """

    def __init__(self, field: nn.Module, com_free: bool) -> None:
        super().__init__()
        self.field = field
        self.com_free = com_free
        self.exact = True
        self.trace_method: str = "auto"
        self.chunk_size: int | None = None
        self.eps: Tensor | None = None
        self.with_logp = True
        self.with_path = False
        self.nfe = 0

    def _v_div(self, t: Tensor, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor | None]:
        field = self.field
        if not self.with_logp:
            v = field(t, x)
            return v, None
        if self.exact:
            if hasattr(field, "forward_and_divergence"):
                return field.forward_and_divergence(t, x)
            if hasattr(field, "divergence"):
                return field(t, x), field.divergence(t, x)
            return value_and_exact_divergence(
                lambda y: field(t, y), x, com_free=self.com_free, method=self.trace_method,
                create_graph=create_graph, chunk_size=self.chunk_size,
            )
        assert self.eps is not None, "Hutchinson probe not set"
        return value_and_hutchinson_divergence(
            lambda y: field(t, y), x, self.eps, create_graph=create_graph
        )

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        x = state[0]
        # Grad mode is on only when gradients are wanted: training or the adjoint backward pass.
        create_graph = torch.is_grad_enabled()
        v, div = self._v_div(t, x, create_graph)
        if not create_graph:
            v = v.detach()
            div = None if div is None else div.detach()
        out: list[Tensor] = [v]
        if self.with_logp:
            out.append(-div)
        if self.with_path:
            out.append(v.flatten(1).norm(dim=1))
        return tuple(out)


def _first_norm(n_control: int):
    """Error norm over the first ``n_control`` states (max of RMS norms): the path-length
    accumulator must not change the solver's step sequence."""

    def norm(states: tuple[Tensor, ...]) -> Tensor:
        return torch.stack([s.pow(2).mean().sqrt() for s in states[:n_control]]).max()

    return norm


class CNF(nn.Module):
    """Continuous normalizing flow ``x_1 = x_0 + int_0^1 v(t, x_t) dt`` with ``x_0 ~ prior``.

    Args:
        field: ``nn.Module`` with ``forward(t: Tensor () or (B,), x: (B, n, d)) -> (B, n, d)``.
        prior: :class:`eqbg.flows.CoMFreeGaussian` or :class:`eqbg.flows.StandardGaussian`.
        method: torchdiffeq solver; adaptive ones (``dopri5`` ...) use ``atol``/``rtol``,
            fixed-step ones (``euler``, ``midpoint``, ``rk4``) need ``n_steps``.
        atol, rtol: adaptive tolerances (the log-density state is error-controlled as well).
        n_steps: number of uniform steps for fixed-step methods.
        trace_method: exact-trace implementation (``auto``, ``loop``, ``batched_vjp``, ``jacrev``,
            ``jvp``), see :mod:`eqbg.flows.divergence`.
        trace_chunk_size: vmap chunk for ``batched_vjp``/``jvp``/``jacrev`` (memory bound).
        probe: Hutchinson probe distribution for training (``rademacher`` or ``gaussian``);
            projected onto the CoM-free subspace for CoM-free priors.
        adjoint_seminorm: use the seminorm for the adjoint pass (Kidger et al. 2021: fewer
            backward steps, same gradients up to tolerance).

    The flow's dtype/device follow the module (``cnf.to(torch.float64)``); inputs are cast.
    """

    def __init__(
        self,
        field: nn.Module,
        prior: nn.Module,
        *,
        method: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        n_steps: int | None = None,
        trace_method: TraceMethod | str = "auto",
        trace_chunk_size: int | None = None,
        probe: ProbeKind = "rademacher",
        adjoint_seminorm: bool = True,
    ) -> None:
        super().__init__()
        if method in FIXED_METHODS:
            if n_steps is None or int(n_steps) < 1:
                raise ValueError(f"fixed-step method {method!r} needs n_steps >= 1, got {n_steps}")
        elif method in ADAPTIVE_METHODS:
            if n_steps is not None:
                raise ValueError(
                    f"n_steps={n_steps} given with adaptive method {method!r}; use one of "
                    f"{FIXED_METHODS} for fixed steps"
                )
        else:
            raise ValueError(f"unknown method {method!r}; use {ADAPTIVE_METHODS + FIXED_METHODS}")
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"unknown probe {probe!r}; use 'rademacher' or 'gaussian'")
        self.field = field
        self.prior = prior
        self.method = method
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.n_steps = None if n_steps is None else int(n_steps)
        self.trace_method = trace_method
        self.trace_chunk_size = trace_chunk_size
        self.probe = probe
        self.adjoint_seminorm = adjoint_seminorm
        self.com_free = bool(getattr(prior, "com_free", False))
        # Dynamics are built per call (not registered: the field's weights appear once in the
        # state_dict), and the adjoint backward pass keeps its own instance with its probe.
        object.__setattr__(self, "_dyn", None)

    # ------------------------------------------------------------------ helpers
    @property
    def event_shape(self) -> tuple[int, int]:
        return (int(self.prior.n_particles), int(self.prior.spatial_dim))

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = next(self.field.parameters(), None)
        if p is None:
            a = self.prior._anchor
            return a.dtype, a.device
        return p.dtype, p.device

    def _times(self, t0: float, t1: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        if self.n_steps is None:
            return torch.tensor([t0, t1], dtype=dtype, device=device)
        # Fixed-grid solvers step exactly on the supplied grid.
        return torch.linspace(t0, t1, self.n_steps + 1, dtype=dtype, device=device)

    def _solve(self, state: tuple[Tensor, ...], t: Tensor, n_control: int) -> tuple[Tensor, ...]:
        kwargs: dict = {"method": self.method}
        if self.n_steps is None:
            kwargs.update(atol=self.atol, rtol=self.rtol, options={"norm": _first_norm(n_control)})
        sol = odeint(self._dyn, state, t, **kwargs)
        return tuple(s[-1] for s in sol)

    def _check_x(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"expected x of shape (B, {self.event_shape[0]}, {self.event_shape[1]}), "
                f"got {tuple(x.shape)}"
            )
        dtype, device = self._dtype_device()
        return x.to(dtype=dtype, device=device)

    def _make_dyn(self, *, exact: bool, with_logp: bool, with_path: bool) -> _Dynamics:
        d = _Dynamics(self.field, self.com_free)
        d.exact, d.with_logp, d.with_path = exact, with_logp, with_path
        d.trace_method, d.chunk_size = self.trace_method, self.trace_chunk_size
        return d

    def _configure(self, *, exact: bool, with_logp: bool, with_path: bool) -> None:
        object.__setattr__(
            self, "_dyn", self._make_dyn(exact=exact, with_logp=with_logp, with_path=with_path)
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        exact: bool = True,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        with_log_q: bool = True,
    ) -> SampleResult:
        """Draw ``num`` samples with their model log density.

        Args:
            num: number of samples.
            exact: exact divergence (else one Hutchinson probe per trajectory: an unbiased but
                noisy ``log_q`` that is *not* suitable for importance weights).
            generator: RNG for the prior draws (and probes); must live on the model's device.
            batch_size: integrate at most this many samples at once (memory bound; the adaptive
                step size is shared within a batch).
            with_log_q: integrate the log density (else ``log_q`` is ``None``; much cheaper).

        Returns:
            :class:`SampleResult`.
        """
        start = time.perf_counter()
        dtype, device = self._dtype_device()
        bs = num if not batch_size else int(batch_size)
        xs, lqs, nfe, path_sum, n_batches = [], [], 0, 0.0, 0
        self._configure(exact=exact, with_logp=with_log_q, with_path=True)
        t = self._times(0.0, 1.0, dtype, device)
        for s in range(0, num, max(bs, 1)):
            m = min(bs, num - s)
            x0 = self.prior.sample(m, generator=generator, dtype=dtype, device=device)
            state: list[Tensor] = [x0]
            if with_log_q:
                state.append(torch.zeros(m, dtype=dtype, device=device))
                if not exact:
                    self._dyn.eps = make_probe(x0, self.probe, self.com_free, generator)
            state.append(torch.zeros(m, dtype=dtype, device=device))
            self._dyn.nfe = 0
            out = self._solve(tuple(state), t, n_control=2 if with_log_q else 1)
            nfe += self._dyn.nfe
            n_batches += 1
            xs.append(out[0])
            if with_log_q:
                lqs.append(self.prior.log_prob(x0) + out[1])
            path_sum += float(out[-1].sum())
        self._dyn.eps = None
        x = torch.cat(xs) if xs else torch.zeros(0, *self.event_shape, dtype=dtype, device=device)
        log_q = None
        if with_log_q:
            log_q = torch.cat(lqs) if lqs else torch.zeros(0, dtype=dtype, device=device)
        return SampleResult(
            x=x, log_q=log_q, nfe=nfe, path_length=path_sum / max(num, 1),
            wall_time_s=time.perf_counter() - start, n_batches=n_batches,
        )

    @torch.no_grad()
    def log_prob(
        self,
        x: Tensor,
        *,
        exact: bool = True,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Model log density of data ``x`` ``(B, n, d)`` -> ``(B,)`` (integrates t = 1 -> 0).

        CoM-free flows centre ``x`` first (the density lives on the subspace).
        ``exact=False`` uses one Hutchinson probe per sample (drawn from ``generator``).
        """
        x = self._check_x(x)
        if self.com_free:
            x = remove_mean(x)
        dtype, device = x.dtype, x.device
        B = x.shape[0]
        bs = B if not batch_size else int(batch_size)
        self._configure(exact=exact, with_logp=True, with_path=False)
        t = self._times(1.0, 0.0, dtype, device)
        out_lp = []
        for s in range(0, B, max(bs, 1)):
            xb = x[s : s + bs]
            if not exact:
                self._dyn.eps = make_probe(xb, self.probe, self.com_free, generator)
            x0, l0 = self._solve((xb, torch.zeros(xb.shape[0], dtype=dtype, device=device)), t, 2)
            out_lp.append(self.prior.log_prob(x0) - l0)
        self._dyn.eps = None
        return torch.cat(out_lp) if out_lp else torch.zeros(0, dtype=dtype, device=device)

    # ------------------------------------------------------------------ training
    def nll(
        self, x: Tensor, *, exact: bool = False, generator: torch.Generator | None = None,
        adjoint: bool = True,
    ) -> Tensor:
        """Mean negative log-likelihood of ``x`` ``(B, n, d)``, differentiable, scalar.

        Integrates t = 1 -> 0 with ``odeint_adjoint`` (memory independent of the step count).
        ``exact=False`` uses one Hutchinson probe per sample for the whole trajectory (FFJORD);
        ``exact=True`` uses the field's closed-form divergence if it has one, else the exact
        trace with a differentiable graph (expensive for large systems).
        ``adjoint=False`` backpropagates through the solver instead (small systems/tests only).
        """
        x = self._check_x(x)
        if self.com_free:
            x = remove_mean(x)
        self._configure(exact=exact, with_logp=True, with_path=False)
        if not exact:
            self._dyn.eps = make_probe(x, self.probe, self.com_free, generator)
        t = self._times(1.0, 0.0, x.dtype, x.device)
        state = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
        kwargs: dict = {"method": self.method}
        if self.n_steps is None:
            kwargs.update(atol=self.atol, rtol=self.rtol, options={"norm": _first_norm(2)})
        if adjoint:
            params = tuple(p for p in self._dyn.parameters() if p.requires_grad)
            adj_opts = {"norm": "seminorm"} if self.adjoint_seminorm else {}
            if self.n_steps is not None:
                adj_opts = {}
            sol = odeint_adjoint(
                self._dyn, state, t, adjoint_params=params, adjoint_options=adj_opts, **kwargs
            )
        else:
            sol = odeint(self._dyn, state, t, **kwargs)
        x0, l0 = sol[0][-1], sol[1][-1]
        return -(self.prior.log_prob(x0) - l0).mean()

    def nll_hutchinson(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Training loss: mean NLL with Hutchinson's estimator through ``odeint_adjoint``."""
        return self.nll(x, exact=False, generator=generator)

    @property
    def last_nfe(self) -> int:
        """Field evaluations of the last forward integration (training diagnostics)."""
        return 0 if self._dyn is None else self._dyn.nfe
