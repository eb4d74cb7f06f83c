"""Benchmark-only prototypes of a data-adaptive LocalZO step ``delta`` (issue 10).

Not part of the library: the rule the evidence picks is moved into
``snntorch_localzo`` by the lead. Everything here is plain PyTorch (the
reference path), on whatever device ``u`` lives on, without host
synchronisation in the backward pass.

A spike gradient here is :class:`AdaptiveLocalZO` (a callable for snnTorch's
``spike_grad``): Heaviside forward, and in backward the LocalZO estimate

.. math::

    G_m(u) = \\frac{1}{2\\delta_t m}\\sum_{i=1}^m |z_i|\\,\\mathbb{1}[|u| < \\delta_t |z_i|],
    \\qquad z_i \\sim \\lambda,

whose step :math:`\\delta_t` is computed by a *rule* from the tensor ``u`` of
that very call (or, for :class:`Controller`, from state). Given
:math:`\\delta_t`, :math:`E_z[G_m] = g_{\\delta_t}(u)`: for the normal law a
Gaussian of width :math:`\\delta_t`, :math:`\\varphi(u/\\delta_t)/\\delta_t`.
``delta_t`` is computed in backward only: snnTorch's detached reset call and
inference pay nothing.

Rules (each picklable, deterministic given ``u``):

* :class:`Fixed` -- today's estimator (``delta`` constant);
* :class:`ActiveFraction` -- per call, the ``delta`` at which the *expected*
  active fraction of the call is ``rho_t = max(rho, per_row / n)`` (``n`` the
  entries per sample, ``numel / shape[0]``):
  ``mean_i (1 - F(|u_i| / delta)^m) = rho_t``, solved on a fixed pseudo-random
  subsample of ``|u|`` (2048 entries) with a 32-point log-spaced grid and
  interpolation of ``log f`` in ``1/delta^2``, clamped to ``[floor, ceil]``;
  optionally with a per-neuron *column floor* ``column_p``:
  ``delta_j = max(delta_t, min_b |u_bj| / x_p)``, ``x_p`` the ``|z|`` level
  exceeded with probability ``column_p``, so that no neuron is cut off from
  gradient (its nearest entry along dim 0 is active with probability
  ``>= column_p``);
* :class:`Bootstrap` -- ``ActiveFraction`` whose target rises towards
  ``rho_silent`` when fewer than ``rate`` of the call's entries fire
  (``u > 0``): dense estimates wake silent layers, sparse ones once they fire.
  ``Bootstrap(0.02, 0.3, 0.01, per_row=1, column_p=0.1)`` is the rule issue 10
  picked (see ``benchmarks/defaults.py``);
* :class:`Controller` -- stateful: ``log delta`` follows the measured active
  fraction of the previous calls towards ``rho`` (one state per object: give
  each layer its own object).

Given the rule's ``delta`` (a 0-d tensor, or one value per neuron with the
column floor), the expected gradient is the law's surrogate of that width
(:meth:`AdaptiveLocalZO.expected_grad`).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Dict, Optional

import torch

from snntorch_localzo.distributions import get_distribution
from snntorch_localzo._ops.layout import record
from snntorch_localzo.stats import ActivityMeter

__all__ = [
    "Rule", "Fixed", "ActiveFraction", "Bootstrap", "Controller",
    "AdaptiveLocalZO", "subsample", "solve_active_fraction", "expected_active_fraction",
    "LAWS",
]

#: Laws of ``z`` with ``p = 1, c = 1`` (the paper's, unit variance).
LAWS = ("normal", "uniform", "laplace")

#: Multiplier of the pseudo-random subsample positions (Knuth's prime 2654435761).
_HASH = 2654435761


def _law(name: str):
    if name not in LAWS:
        raise ValueError(f"`law` must be one of {LAWS}, got {name!r}")
    return get_distribution(name, delta=1.0)


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number in (0, 1), got {type(value).__name__}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1), got {value}")
    return float(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a positive number, got {type(value).__name__}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return float(value)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value}")
    return value


def abs_cdf(law: str, x: torch.Tensor) -> torch.Tensor:
    """CDF of ``|z|`` at ``x >= 0`` in ``x``'s dtype (float32 on the device)."""
    if law == "normal":
        return torch.erf(x * (1.0 / math.sqrt(2.0)))
    if law == "uniform":
        return (x * (1.0 / math.sqrt(3.0))).clamp(0.0, 1.0)
    if law == "laplace":
        return -torch.expm1(-math.sqrt(2.0) * x)
    raise ValueError(f"`law` must be one of {LAWS}, got {law!r}")


def active_prob(law: str, x: torch.Tensor, samples: int) -> torch.Tensor:
    """``1 - F(x)^m`` (erfc for the normal law with one sample: exact in the tail)."""
    if law == "normal" and samples == 1:
        return torch.erfc(x * (1.0 / math.sqrt(2.0)))
    return 1.0 - abs_cdf(law, x) ** samples


def expected_active_fraction(uabs: torch.Tensor, delta, law: str = "normal",
                             samples: int = 1) -> torch.Tensor:
    """``mean_i (1 - F(|u_i| / delta)^m)`` (float64 reference, for tests and the study)."""
    x = uabs.to(torch.float64) / torch.as_tensor(delta, dtype=torch.float64)
    if law == "normal":
        a = torch.erfc(x / math.sqrt(2.0))
        return (1.0 - (1.0 - a) ** samples).mean() if samples > 1 else a.mean()
    return (1.0 - abs_cdf(law, x) ** samples).mean()


def subsample(flat: torch.Tensor, size: int) -> torch.Tensor:
    """A fixed pseudo-random subsample of ``size`` entries of the 1-d ``flat``
    (all of it when it is not larger): positions ``(k * 2654435761) mod n``,
    distinct when ``n`` is not a multiple of that prime. Depends on ``n`` only:
    deterministic, no random numbers, no host synchronisation, and it does not
    alias with channel or feature strides as a plain stride would."""
    n = flat.numel()
    if n <= size:
        return flat
    idx = (torch.arange(size, device=flat.device, dtype=torch.int64) * _HASH) % n
    return flat.index_select(0, idx)


def solve_active_fraction(uabs: torch.Tensor, rho: float, *, law: str = "normal",
                          samples: int = 1, floor: float = 1e-3, ceil: float = 10.0,
                          grid: int = 32) -> torch.Tensor:
    """The ``delta`` (0-d float32 tensor on ``uabs``'s device) at which
    ``f(delta) = mean_i (1 - F(|u_i|/delta)^m) = rho`` over the entries of
    ``uabs`` (already subsampled): ``f`` on ``grid`` log-spaced points of
    ``[floor, ceil]``, then linear interpolation of ``log f`` in ``1/delta^2``
    between the two points around ``rho``; ``floor`` when even ``f(floor) >= rho``, ``ceil`` when
    ``f(ceil) < rho``. ``f`` increases with ``delta``. No host sync."""
    s = uabs.reshape(-1).to(torch.float32)
    s = torch.nan_to_num(s, nan=float("inf"))  # a NaN membrane counts as far away
    deltas = torch.logspace(math.log10(floor), math.log10(ceil), grid,
                            device=s.device, dtype=torch.float32)
    f = active_prob(law, s.unsqueeze(0) / deltas.unsqueeze(1), samples).mean(1)  # [grid]
    below = (f < rho).sum()
    hi = below.clamp(max=grid - 1)
    lo = (below - 1).clamp(min=0)
    # between neighbouring grid points, log f is close to linear in 1 / delta^2
    # (exactly so for a Gaussian tail: the clustered, far-away case)
    lf_lo, lf_hi = f[lo].clamp_min(1e-30).log(), f[hi].clamp_min(1e-30).log()
    log_rho = torch.as_tensor(rho, dtype=torch.float32, device=s.device).log()
    t = ((log_rho - lf_lo) / (lf_hi - lf_lo)).nan_to_num(0.0).clamp(0.0, 1.0)
    v_lo, v_hi = deltas[lo].pow(-2), deltas[hi].pow(-2)
    return (v_lo + t * (v_hi - v_lo)).rsqrt()


# --------------------------------------------------------------------------- rules
class Rule:
    """Maps ``|u|`` of one call to ``delta`` (a tensor broadcastable to ``u``)."""

    name = "rule"

    def delta(self, uabs: torch.Tensor, law: str, samples: int) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, active: torch.Tensor, total: int) -> None:
        """Told the non-zero count of the estimate it produced (controllers)."""

    def params(self) -> Dict[str, float]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Fixed(Rule):
    """Today's estimator: ``delta`` constant."""

    name = "fixed"

    def __init__(self, delta: float = 0.05):
        self.value = _check_positive("delta", delta)

    def delta(self, uabs, law, samples):
        return torch.tensor(self.value, dtype=torch.float32, device=uabs.device)

    def params(self):
        return {"delta": self.value}


class ActiveFraction(Rule):
    """Per call: the ``delta`` at which the expected active fraction is ``rho``
    (on a subsample of ``subsample`` entries), clamped to ``[floor, ceil]``."""

    name = "active_fraction"

    def __init__(self, rho: float = 0.01, *, per_row: float = 0.0, column_p: float = 0.0,
                 floor: float = 1e-3, ceil: float = 10.0, subsample: int = 2048, grid: int = 32):
        self.rho = _check_fraction("rho", rho)
        if isinstance(column_p, bool) or not isinstance(column_p, (int, float)) or not 0 <= column_p < 1:
            raise ValueError(f"`column_p` must be a number in [0, 1), got {column_p!r}")
        self.column_p = float(column_p)
        if isinstance(per_row, bool) or not isinstance(per_row, (int, float)) or per_row < 0:
            raise ValueError(f"`per_row` must be a number >= 0, got {per_row!r}")
        self.per_row = float(per_row)
        self.floor = _check_positive("floor", floor)
        self.ceil = _check_positive("ceil", ceil)
        if self.ceil <= self.floor:
            raise ValueError(f"`ceil` ({ceil}) must be larger than `floor` ({floor})")
        self.subsample = _check_int("subsample", subsample, 1)
        self.grid = _check_int("grid", grid, 2)

    def target(self, uabs) -> float:
        """``max(rho, per_row / n)``, ``n = numel / shape[0]`` the entries per
        sample (step mode: ``u`` is ``[batch, ...]``)."""
        if self.per_row and uabs.dim() >= 1 and uabs.shape[0] > 0 and uabs.numel() > 0:
            n = uabs.numel() // uabs.shape[0]
            return min(max(self.rho, self.per_row / n), 0.5)
        return self.rho

    def column_floor(self, d: torch.Tensor, u: torch.Tensor, law: str, samples: int) -> torch.Tensor:
        """``max(d, min_b |u_b,j| / x)`` per neuron ``j`` (every index past dim 0),
        ``x`` the ``|z|`` level exceeded with probability ``column_p`` (by the largest
        of ``samples`` draws): each neuron's nearest entry along dim 0 (the batch in
        step mode) is active with probability >= ``column_p``. Off when 0."""
        if not self.column_p or u.dim() < 2:
            return d
        x = _abs_quantile(law, (1.0 - self.column_p) ** (1.0 / samples))
        near = u.abs().to(torch.float32).amin(dim=0, keepdim=True)
        return torch.maximum(d, (near / x).clamp(max=self.ceil))

    def delta(self, uabs, law, samples):
        s = subsample(uabs.reshape(-1), self.subsample)
        d = solve_active_fraction(s, self.target(uabs), law=law, samples=samples,
                                  floor=self.floor, ceil=self.ceil, grid=self.grid)
        return self.column_floor(d, uabs, law, samples)

    def params(self):
        return {"rho": self.rho, "per_row": self.per_row, "column_p": self.column_p,
                "floor": self.floor, "ceil": self.ceil,
                "subsample": self.subsample, "grid": self.grid}


class Bootstrap(ActiveFraction):
    """``ActiveFraction`` whose target rises to ``rho_silent`` in a silent call:
    ``rho_eff = rho + (rho_silent - rho) * clamp(1 - r / rate, 0, 1)`` with ``r``
    the fraction of the call's (subsampled) entries above threshold (``u > 0``),
    then ``max(rho_eff, per_row / n)``. Dense estimates while a layer does not
    fire (to wake it), sparse once it fires at ``rate`` or more."""

    name = "bootstrap"
    needs_sign = True

    def __init__(self, rho: float = 0.01, rho_silent: float = 0.2, rate: float = 0.01, **kwargs):
        super().__init__(rho, **kwargs)
        self.rho_silent = _check_fraction("rho_silent", rho_silent)
        self.rate = _check_fraction("rate", rate)

    def delta(self, u, law, samples):
        s = subsample(u.reshape(-1), self.subsample).to(torch.float32)
        r = (s > 0).to(torch.float32).mean()
        w = (1.0 - r / self.rate).clamp(0.0, 1.0)
        target = self.rho + (self.rho_silent - self.rho) * w
        floor = self.target(u)  # max(rho, per_row / n)
        target = target.clamp(min=floor)
        d = solve_active_fraction(s.abs(), target, law=law, samples=samples,
                                  floor=self.floor, ceil=self.ceil, grid=self.grid)
        return self.column_floor(d, u, law, samples)

    def params(self):
        return {**super().params(), "rho_silent": self.rho_silent, "rate": self.rate}


def _abs_quantile(law: str, p: float) -> float:
    """``F^{-1}(p)`` for ``|z|`` (a Python float: no tensor, no device)."""
    if law == "normal":
        return NormalDist().inv_cdf(0.5 + 0.5 * p)
    if law == "uniform":
        return math.sqrt(3.0) * p
    return -math.log1p(-p) / math.sqrt(2.0)


class Controller(Rule):
    """Stateful: ``log delta <- log delta + gain * (1 - a / rho)`` after each
    backward, ``a`` that call's measured active fraction, clamped to
    ``[floor, ceil]``. The state is a device tensor of this object: one object
    per layer (a shared object mixes the layers' statistics)."""

    name = "controller"

    def __init__(self, rho: float = 0.01, *, delta0: float = 0.05, gain: float = 0.05,
                 floor: float = 1e-3, ceil: float = 10.0):
        self.rho = _check_fraction("rho", rho)
        self.delta0 = _check_positive("delta0", delta0)
        self.gain = _check_positive("gain", gain)
        self.floor = _check_positive("floor", floor)
        self.ceil = _check_positive("ceil", ceil)
        self.state: Dict[torch.device, torch.Tensor] = {}

    def _state(self, device):
        device = torch.device(device)
        if device not in self.state:
            self.state[device] = torch.tensor(math.log(self.delta0), dtype=torch.float32,
                                              device=device)
        return self.state[device]

    def delta(self, uabs, law, samples):
        return self._state(uabs.device).exp()

    def observe(self, active, total):
        log_d = self._state(active.device)
        a = active.to(torch.float32) / total
        log_d.add_(self.gain * (1.0 - a / self.rho))
        log_d.clamp_(math.log(self.floor), math.log(self.ceil))

    def params(self):
        return {"rho": self.rho, "delta0": self.delta0, "gain": self.gain,
                "floor": self.floor, "ceil": self.ceil}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["state"] = {k: v.cpu() for k, v in self.state.items()}
        return d


# --------------------------------------------------------------------------- spike
class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, owner):
        ctx.owner = owner
        ctx.save_for_backward(u)
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (u,) = ctx.saved_tensors
        g = ctx.owner.estimate(u)
        return (grad_out.to(g.dtype) * g).to(grad_out.dtype), None


class AdaptiveLocalZO:
    """A ``spike_grad`` for snnTorch neurons: Heaviside forward, LocalZO backward
    with ``delta`` from ``rule`` (see the module docstring).

    :param rule: a :class:`Rule`
    :param law: ``"normal"``, ``"uniform"`` or ``"laplace"``
    :param samples: directions ``m`` averaged per entry
    :param track: count non-zero estimates in an ``ActivityMeter`` (``.meter``)
    :param log_deltas: keep each backward call's ``delta`` (mean over its
        entries, a device tensor) in ``.deltas`` (diagnostics)
    """

    def __init__(self, rule: Rule, law: str = "normal", samples: int = 1, *,
                 track: bool = False, log_deltas: bool = False):
        if not isinstance(rule, Rule):
            raise TypeError(f"`rule` must be a Rule, got {type(rule).__name__}")
        self.rule = rule
        self.law = law
        self.dist = _law(law)
        self.samples = _check_int("samples", samples, 1)
        self.meter: Optional[ActivityMeter] = ActivityMeter() if track else None
        self.log_deltas = bool(log_deltas)
        self.deltas = []

    def __call__(self, mem_shift: torch.Tensor) -> torch.Tensor:
        if not isinstance(mem_shift, torch.Tensor) or not mem_shift.is_floating_point():
            raise TypeError("`mem_shift` must be a floating-point tensor")
        if not (torch.is_grad_enabled() and mem_shift.requires_grad):
            return (mem_shift > 0).to(mem_shift.dtype)
        return _Spike.apply(mem_shift, self)

    def delta(self, u: torch.Tensor) -> torch.Tensor:
        """The rule's ``delta`` for a call on ``u`` (float32, broadcastable)."""
        if getattr(self.rule, "needs_sign", False):
            return self.rule.delta(u.detach(), self.law, self.samples)
        return self.rule.delta(u.detach().abs(), self.law, self.samples)

    def estimate(self, u: torch.Tensor, absz: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One draw of ``G_m(u)`` (float32; float64 for float64 ``u``)."""
        cdtype = torch.float64 if u.dtype == torch.float64 else torch.float32
        uabs = u.detach().to(cdtype).abs()
        delta = self.delta(u).to(cdtype)
        if absz is None:
            absz = self.dist.abs_sample((self.samples,) + tuple(u.shape), device=u.device,
                                        dtype=cdtype)
        acc = torch.zeros_like(uabs)
        for i in range(self.samples):
            a = absz[i].to(cdtype)
            acc = acc + torch.where(uabs < delta * a, a, torch.zeros_like(a))
        g = acc * ((0.5 / self.samples) / delta)
        if self.meter is not None or self.log_deltas or isinstance(self.rule, Controller):
            active = torch.count_nonzero(g)
            self.rule.observe(active, g.numel())
            if self.meter is not None:
                record(self.meter.accumulator(u.device), active, g.numel())
            if self.log_deltas:
                self.deltas.append(delta.mean().detach())
        return g

    def expected_grad(self, u: torch.Tensor) -> torch.Tensor:
        """``E_z[G_m(u)]`` given the rule's ``delta`` for this ``u``:
        ``g_delta(u)`` (a Gaussian of width ``delta`` for the normal law)."""
        delta = self.delta(u).to(torch.float64)
        v = u.detach().to(torch.float64) / delta
        if self.law == "normal":
            return torch.exp(-0.5 * v * v) / (delta * math.sqrt(2.0 * math.pi))
        return get_distribution(self.law, delta=1.0).expected_grad(v) / delta

    @property
    def active_fraction(self) -> float:
        if self.meter is None:
            raise RuntimeError("not tracking: create with track=True")
        return self.meter.fraction

    def reset_stats(self) -> None:
        if self.meter is not None:
            self.meter.reset()
        self.deltas = []

    def __repr__(self) -> str:
        return f"AdaptiveLocalZO({self.rule!r}, law={self.law!r}, samples={self.samples})"

    def __getstate__(self):
        return {"rule": self.rule, "law": self.law, "samples": self.samples,
                "track": self.meter is not None, "log_deltas": self.log_deltas}

    def __setstate__(self, state):
        self.__init__(state["rule"], state["law"], state["samples"], track=state["track"],
                      log_deltas=state["log_deltas"])
