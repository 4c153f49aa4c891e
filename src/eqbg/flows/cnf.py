"""Continuous normalizing flow (CNF) with exact or Hutchinson log-likelihoods.

Time convention: ``t = 0`` is the prior, ``t = 1`` is data; ``dx/dt = v(t, x)``.
Along a trajectory ``d log p(x_t)/dt = -div v(t, x_t)``, hence

    log q(x_1) = log p_0(x_0) - int_0^1 div v(t, x_t) dt.

Sampling integrates ``(x, l, path)`` from 0 to 1 with ``dl/dt = -div v``, ``d path/dt = |v|``;
``log_prob`` integrates ``(x, l)`` from 1 to 0 starting at ``l(1) = 0`` and returns
``log p_0(x_0) - l(0)``. Inference runs under ``torch.no_grad`` and every ODE step frees its
divergence graph (``create_graph=False``); training (:meth:`CNF.nll`, :meth:`CNF.rsample`) uses
torchdiffeq's ``odeint_adjoint`` so memory does not grow with the number of solver steps.

For CoM-free priors the divergence is the trace on the ``(n-1)d`` subspace (see
:mod:`eqbg.flows.divergence`). A field exposing ``forward_and_divergence(t, x)`` or
``divergence(t, x)`` (e.g. :class:`eqbg.nn.KernelField`) gets its closed form used for the exact
trace (:attr:`CNF.closed_form_divergence`).

Every call takes its :class:`~eqbg.flows.solver.ODESolver` as an argument (default: the one the
flow was built with); the flow itself is never reconfigured by a call.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from eqbg.geometry import remove_mean

from .base import Flow, FlowSample
from .divergence import ProbeKind, TraceMethod, make_probe
from .dynamics import NoDonatedBuffers, OdeDynamics, first_norm
from .solver import ODESolver, simpson_weights

__all__ = ["CNF"]


class CNF(Flow):
    """Continuous normalizing flow ``x_1 = x_0 + int_0^1 v(t, x_t) dt`` with ``x_0 ~ prior``.

    Args:
        field: ``nn.Module`` with ``forward(t: Tensor () or (B,), x: (B, n, d)) -> (B, n, d)``.
        prior: :class:`eqbg.flows.CoMFreeGaussian` or :class:`eqbg.flows.StandardGaussian`.
        solver: default :class:`ODESolver` of calls that pass none.
        trace_method: exact-trace implementation (``auto``, ``loop``, ``batched_vjp``, ``jacrev``,
            ``jvp``), see :mod:`eqbg.flows.divergence`.
        trace_chunk_size: vmap chunk for ``batched_vjp``/``jvp``/``jacrev`` (memory bound).
        probe: Hutchinson probe distribution (``rademacher`` or ``gaussian``); projected onto
            the CoM-free subspace for CoM-free priors.
        adjoint_seminorm: use the seminorm for the adjoint pass (Kidger et al. 2021: fewer
            backward steps, same gradients up to tolerance).

    The flow's dtype/device follow the module (``cnf.to(torch.float64)``); inputs are cast.
    ``exact=True`` calls return an ``exact`` density, ``exact=False`` (one Hutchinson probe per
    trajectory) a ``stochastic`` one.
    """

    density = "exact"

    def __init__(
        self,
        field: nn.Module,
        prior: nn.Module,
        *,
        solver: ODESolver | None = None,
        trace_method: TraceMethod | str = "auto",
        trace_chunk_size: int | None = None,
        probe: ProbeKind = "rademacher",
        adjoint_seminorm: bool = True,
    ) -> None:
        super().__init__()
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"unknown probe {probe!r}; use 'rademacher' or 'gaussian'")
        self.field = field
        self.prior = prior
        self.solver = solver or ODESolver()
        self.trace_method = trace_method
        self.trace_chunk_size = trace_chunk_size
        self.probe = probe
        self.adjoint_seminorm = adjoint_seminorm
        self._com_free = bool(getattr(prior, "com_free", False))
        self.last_nfe = 0  # field evaluations of the last integration (diagnostics)

    # ------------------------------------------------------------------ protocol
    @property
    def event_shape(self) -> tuple[int, int]:
        return (int(self.prior.n_particles), int(self.prior.spatial_dim))

    @property
    def com_free(self) -> bool:
        return self._com_free

    @property
    def invariances(self) -> frozenset[str]:
        """Those of the vector field (its ``invariances`` attribute; an equivariant field gives
        an invariant density from an invariant prior)."""
        return frozenset(getattr(self.field, "invariances", ()))

    @property
    def closed_form_divergence(self) -> bool:
        """Whether the field gives its divergence in closed form (no per-coordinate passes)."""
        return hasattr(self.field, "forward_and_divergence") or hasattr(self.field, "divergence")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _times(solver: ODESolver, t0: float, t1: float, dtype, device) -> Tensor:
        if solver.adaptive:
            return torch.tensor([t0, t1], dtype=dtype, device=device)
        # Fixed-grid solvers step exactly on the supplied grid.
        return torch.linspace(t0, t1, solver.n_steps + 1, dtype=dtype, device=device)

    @staticmethod
    def _solver_kwargs(solver: ODESolver, n_control: int) -> dict:
        kwargs: dict = {"method": solver.method}
        if solver.adaptive:
            kwargs.update(atol=solver.atol, rtol=solver.rtol, options={"norm": first_norm(n_control)})
        return kwargs

    def _dynamics(self, *, exact: bool, with_logp: bool, with_path: bool, eps: Tensor | None = None,
                  compile_field: bool = False):
        field = self._compiled_field() if compile_field else self.field
        return OdeDynamics(
            field, self.com_free, exact=exact, with_logp=with_logp, with_path=with_path,
            trace_method=self.trace_method, chunk_size=self.trace_chunk_size, eps=eps,
        )

    def _compiled_field(self) -> nn.Module:
        """``torch.compile`` of the field, made on first use and cached outside the module tree
        (so it never enters ``state_dict``); it shares the field's parameters."""
        cache = self.__dict__.setdefault("_compile_cache", {})
        if "field" not in cache:
            cache["field"] = NoDonatedBuffers(torch.compile(self.field))
        return cache["field"]

    def _solve(self, dyn: OdeDynamics, state: tuple[Tensor, ...], t: Tensor, solver: ODESolver,
               n_control: int, adjoint: bool = False) -> tuple[Tensor, ...]:
        kwargs = self._solver_kwargs(solver, n_control)
        if adjoint:
            params = tuple(p for p in dyn.parameters() if p.requires_grad)
            adj_opts = {"norm": "seminorm"} if self.adjoint_seminorm and solver.adaptive else {}
            sol = odeint_adjoint(dyn, state, t, adjoint_params=params, adjoint_options=adj_opts,
                                 **kwargs)
        else:
            sol = odeint(dyn, state, t, **kwargs)
        self.last_nfe = dyn.nfe
        return tuple(s[-1] for s in sol)

    def _solve_positions_then_quadrature(
        self, x_start: Tensor, t: Tensor, solver: ODESolver, *, exact: bool,
        eps: Tensor | None, with_path: bool, compile_field: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """``log_q_quadrature="simpson"``: the positions alone through the solver on the grid
        ``t`` (``(N + 1,)``, either direction), then the divergence at its grid nodes,
        integrated by Simpson's rule.

        Returns:
            ``(x at t[-1], int_{t[0]}^{t[-1]} div v dt (B,), path length (B,) or None, NFE)``.
        """
        pos = self._dynamics(exact=exact, with_logp=False, with_path=with_path,
                             compile_field=compile_field)
        state = (x_start, torch.zeros_like(x_start[:, 0, 0])) if with_path else (x_start,)
        sol = odeint(pos, state, t, **self._solver_kwargs(solver, 1))
        nodes = sol[0]
        div_dyn = self._dynamics(exact=exact, with_logp=True, with_path=False, eps=eps,
                                 compile_field=compile_field)
        w = simpson_weights(solver.n_steps, dtype=nodes.dtype, device=nodes.device)
        total = torch.zeros_like(x_start[:, 0, 0])
        for k in range(nodes.shape[0]):
            div_dyn.nfe += 1
            _, div = div_dyn._v_div(t[k], nodes[k], create_graph=False)
            total = total + w[k] * div.detach()
        nfe = pos.nfe + div_dyn.nfe
        self.last_nfe = nfe
        path = sol[1][-1] if with_path else None
        return nodes[-1], total * (t[-1] - t[0]), path, nfe

    def _probe(self, x: Tensor, exact: bool, generator: torch.Generator | None) -> Tensor | None:
        return None if exact else make_probe(x, self.probe, self.com_free, generator)

    def _centre(self, x: Tensor) -> Tensor:
        x = self.check_x(x)
        return remove_mean(x) if self.com_free else x

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        with_log_q: bool = True,
        solver: ODESolver | None = None,
        exact: bool = True,
        compile_field: bool = False,
    ) -> FlowSample:
        """Draw ``num`` samples with their model log density.

        Args:
            num: number of samples.
            generator: RNG for the prior draws (and probes); must live on the model's device.
            batch_size: integrate at most this many samples at once (memory bound; the adaptive
                step size is shared within a batch).
            with_log_q: integrate the log density (else ``log_q`` is ``None``; much cheaper).
            solver: ODE solver of this call (default: the flow's).
            exact: exact divergence (else one Hutchinson probe per trajectory: an unbiased but
                noisy ``log_q``, density kind ``stochastic``, not usable in importance weights).
            compile_field: evaluate the field (and its backward passes) through
                ``torch.compile``: the same values up to float round-off, ~1.7-1.8x faster
                divergences on the CPU (bench/README.md), after a one-off compilation of about a
                minute (and again for each new batch shape); needs a C++ compiler on the CPU.

        Returns:
            :class:`FlowSample` with ``nfe``, ``path_length``, ``wall_time_s``, ``n_batches``.
        """
        start = time.perf_counter()
        solver = solver or self.solver
        dtype, device = self.dtype_device()
        bs = num if not batch_size else int(batch_size)
        xs, lqs, nfe, path_sum, n_batches = [], [], 0, 0.0, 0
        t = self._times(solver, 0.0, 1.0, dtype, device)
        for s in range(0, num, max(bs, 1)):
            m = min(bs, num - s)
            x0 = self.prior.sample(m, generator=generator, dtype=dtype, device=device)
            eps = self._probe(x0, exact, generator) if with_log_q else None
            if with_log_q and solver.log_q_quadrature == "simpson":
                x1, div_integral, path, k = self._solve_positions_then_quadrature(
                    x0, t, solver, exact=exact, eps=eps, with_path=True, compile_field=compile_field
                )
                out = (x1, -div_integral, path)
                nfe += k
            else:
                state: list[Tensor] = [x0]
                if with_log_q:
                    state.append(torch.zeros(m, dtype=dtype, device=device))
                state.append(torch.zeros(m, dtype=dtype, device=device))
                dyn = self._dynamics(exact=exact, with_logp=with_log_q, with_path=True, eps=eps,
                                     compile_field=compile_field)
                out = self._solve(dyn, tuple(state), t, solver, n_control=2 if with_log_q else 1)
                nfe += dyn.nfe
            n_batches += 1
            xs.append(out[0])
            if with_log_q:
                lqs.append(self.prior.log_prob(x0) + out[1])
            path_sum += float(out[-1].sum())
        x = torch.cat(xs) if xs else torch.zeros(0, *self.event_shape, dtype=dtype, device=device)
        log_q = None
        if with_log_q:
            log_q = torch.cat(lqs) if lqs else torch.zeros(0, dtype=dtype, device=device)
        return FlowSample(
            x=x, log_q=log_q, density="exact" if exact else "stochastic",
            nfe=nfe, path_length=path_sum / max(num, 1),
            wall_time_s=time.perf_counter() - start, n_batches=n_batches,
        )

    @torch.no_grad()
    def log_prob(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        solver: ODESolver | None = None,
        exact: bool = True,
        compile_field: bool = False,
    ) -> Tensor:
        """Model log density of data ``x`` ``(B, n, d)`` -> ``(B,)`` (integrates t = 1 -> 0).

        CoM-free flows centre ``x`` first (the density lives on the subspace).
        ``exact=False`` uses one Hutchinson probe per sample (drawn from ``generator``);
        ``compile_field`` as in :meth:`sample`.
        """
        solver = solver or self.solver
        x = self._centre(x)
        dtype, device = x.dtype, x.device
        B = x.shape[0]
        bs = B if not batch_size else int(batch_size)
        t = self._times(solver, 1.0, 0.0, dtype, device)
        out_lp = []
        for s in range(0, B, max(bs, 1)):
            xb = x[s : s + bs]
            eps = self._probe(xb, exact, generator)
            if solver.log_q_quadrature == "simpson":
                # l(0) = int_0^1 div dt; the grid runs 1 -> 0, so the signed integral is -l(0)
                x0, div_integral, _, _ = self._solve_positions_then_quadrature(
                    xb, t, solver, exact=exact, eps=eps, with_path=False,
                    compile_field=compile_field,
                )
                l0 = -div_integral
            else:
                dyn = self._dynamics(exact=exact, with_logp=True, with_path=False, eps=eps,
                                     compile_field=compile_field)
                zero = torch.zeros(xb.shape[0], dtype=dtype, device=device)
                x0, l0 = self._solve(dyn, (xb, zero), t, solver, 2)
            out_lp.append(self.prior.log_prob(x0) - l0)
        return torch.cat(out_lp) if out_lp else torch.zeros(0, dtype=dtype, device=device)

    # ------------------------------------------------------------------ training
    def nll(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        solver: ODESolver | None = None,
        exact: bool = False,
        adjoint: bool = True,
    ) -> Tensor:
        """Mean negative log-likelihood of ``x`` ``(B, n, d)``, differentiable, scalar.

        Integrates t = 1 -> 0 with ``odeint_adjoint`` (memory independent of the step count).
        ``exact=False`` uses one Hutchinson probe per sample for the whole trajectory (FFJORD);
        ``exact=True`` uses the field's closed-form divergence if it has one, else the exact
        trace with a differentiable graph ((n-1)d backward passes per evaluation).
        ``adjoint=False`` backpropagates through the solver instead (small systems/tests only).
        """
        solver = solver or self.solver
        x = self._centre(x)
        dyn = self._dynamics(exact=exact, with_logp=True, with_path=False,
                             eps=self._probe(x, exact, generator))
        t = self._times(solver, 1.0, 0.0, x.dtype, x.device)
        state = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
        x0, l0 = self._solve(dyn, state, t, solver, 2, adjoint=adjoint)
        return -(self.prior.log_prob(x0) - l0).mean()

    def rsample(
        self,
        num: int,
        *,
        generator: torch.Generator | None = None,
        solver: ODESolver | None = None,
        exact: bool = True,
        adjoint: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """``(x, log_q)`` of ``num`` samples, differentiable in the field's parameters (reverse
        KL); through ``odeint_adjoint`` unless ``adjoint=False``."""
        solver = solver or self.solver
        dtype, device = self.dtype_device()
        x0 = self.prior.sample(num, generator=generator, dtype=dtype, device=device)
        dyn = self._dynamics(exact=exact, with_logp=True, with_path=False,
                             eps=self._probe(x0, exact, generator))
        t = self._times(solver, 0.0, 1.0, dtype, device)
        state = (x0, torch.zeros(num, dtype=dtype, device=device))
        x1, dl = self._solve(dyn, state, t, solver, 2, adjoint=adjoint)
        return x1, self.prior.log_prob(x0) + dl
