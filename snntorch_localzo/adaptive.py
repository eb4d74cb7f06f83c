"""The adaptive step of ``make()``: a ``delta`` chosen per call from the membrane.

A fixed ``delta`` cannot suit every layer: what is "near threshold" depends
on the layer's membrane statistics (``benchmarks/delta_study.py``). With
``delta=0.05`` the output layer of snnTorch's convolutional tutorial never
gets an estimate and nothing learns. :class:`AdaptiveDelta` computes, at each
call of the spike function and from that call's ``u = mem - threshold``
alone (no state, nothing to save or synchronise), a step
:math:`δ_t(u)`; given it, the estimate is the unit-step estimate at
:math:`u/δ_t`, scaled to height one at threshold:

.. math::

    G_m(u) = \\frac{c}{2 m\\, g_1(0)}\\sum_{i=1}^m |z_i|^p\\,\\mathbb{1}[|u| < δ_t|z_i|],
    \\qquad \\mathbb{E}_z[G_m(u) \\mid δ_t] = \\frac{g_1(u/δ_t)}{g_1(0)} = \\frac{δ_t\\, g_{δ_t}(u)}{g_1(0)},

with :math:`g_δ` the law's surrogate of width :math:`δ` (section 2 of
``docs/method.md``): for the normal law the Gaussian bump
:math:`\\exp(-u^2 / 2δ_t^2)`, of height one and width :math:`δ_t`, the
convention of snnTorch's surrogates (ATan and fast sigmoid have height one at
threshold). Scaled to height one rather than to area one, the estimate's
size does not depend on :math:`δ_t`, which differs from layer to layer, step
to step and neuron to neuron.

The rule, for a call on ``u`` of shape
``[batch, *neurons]``:

1. *target*: :math:`ρ_t = ρ + (ρ_s - ρ)\\,\\mathrm{clamp}(1 - r/r_0, 0, 1)`,
   :math:`r` the fraction of entries that fire (:math:`u > 0`): a layer
   that does not fire (:math:`r = 0`) gets the wide band :math:`ρ_s`, one
   that fires at :math:`r_0` or more the sparse :math:`ρ`; then at least
   ``per_sample`` expected active entries per sample,
   :math:`ρ_t \\ge` ``per_sample / neurons`` (at most one half);
2. *layer step*: :math:`δ_0`, the step at which the expected active
   fraction of the call is :math:`ρ_t`,
   :math:`\\frac1n\\sum_k 1 - F(|u_k|/δ_0)^m = ρ_t` (:math:`F` the CDF of
   :math:`|z|`), solved on a fixed subsample of ``subsample`` entries over a
   ``grid``-point log grid of ``[floor, ceil]``;
3. *neuron floor*: :math:`δ_{t,j} = \\max(δ_0, \\min_b |u_{bj}| / x_q)`, with
   :math:`x_q` the level :math:`|z|` exceeds with probability ``neuron``:
   every neuron's entry nearest to threshold over the batch is active with
   probability at least ``neuron``, so no neuron is cut off from gradient.

:math:`δ_t` is a detached function of ``u`` (per neuron, shape
``[1, *neurons]``): every path (reference, native CPU, Triton) runs on the
scaled membrane :math:`u/δ_t` with the unit step and
the coefficient :math:`c / (2 m g_1(0))`, so all give the same bits.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from statistics import NormalDist

import torch

__all__ = ["AdaptiveDelta", "LAWS"]

#: Laws the adaptive step supports (the paper's: unit variance, ``p = 1``, ``c = 1``).
LAWS = ("normal", "uniform", "laplace")

#: Multiplier of the subsample positions (Knuth's 2654435761, prime).
_HASH = 2654435761


def _fraction(name, value, *, low_open=True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number in (0, 1), got {type(value).__name__}")
    v = float(value)
    if not ((0.0 < v if low_open else 0.0 <= v) and v < 1.0):
        raise ValueError(f"`{name}` must be in {'(0' if low_open else '[0'}, 1), got {value}")
    return v


def _positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return v


def _integer(name, value, low) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value}")
    return int(value)


def active_prob(law: str, x: torch.Tensor, samples: int) -> torch.Tensor:
    """``1 - F(x)^m`` for ``|z|`` of the unit-variance ``law`` at ``x >= 0``,
    in ``x``'s dtype (erfc for the normal law with one direction: exact in
    the tail)."""
    if law == "normal":
        if samples == 1:
            return torch.erfc(x * (1.0 / math.sqrt(2.0)))
        cdf = torch.erf(x * (1.0 / math.sqrt(2.0)))
    elif law == "uniform":
        cdf = (x * (1.0 / math.sqrt(3.0))).clamp(0.0, 1.0)
    elif law == "laplace":
        cdf = -torch.expm1(-math.sqrt(2.0) * x)
    else:
        raise ValueError(f"`law` must be one of {LAWS}, got {law!r}")
    return 1.0 - cdf**samples


def abs_quantile(law: str, q: float) -> float:
    """``F^{-1}(q)`` for ``|z|`` of the unit-variance ``law``."""
    if law == "normal":
        return NormalDist().inv_cdf(0.5 + 0.5 * q)
    if law == "uniform":
        return math.sqrt(3.0) * q
    if law == "laplace":
        return -math.log1p(-q) / math.sqrt(2.0)
    raise ValueError(f"`law` must be one of {LAWS}, got {law!r}")


def peak(dist) -> float:
    """``g_1(0)``: the expected gradient at threshold of ``dist`` with the unit
    step (``1/sqrt(2 pi)`` for the normal law)."""
    return float(dist.expected_grad(torch.zeros((), dtype=torch.float64)))


def subsample_positions(n: int, size: int, device) -> torch.Tensor:
    """``size`` fixed pseudo-random positions in ``[0, n)`` (all of them when
    ``n <= size``): ``(k * 2654435761) mod n``. Depends on ``n`` only, uses no
    random numbers and does not alias with channel or feature strides."""
    if n <= size:
        return torch.arange(n, device=device)
    return (torch.arange(size, device=device, dtype=torch.int64) * _HASH) % n


@dataclass(frozen=True, repr=False)
class AdaptiveDelta:
    """The step rule of ``make()``'s default estimate (module docstring).

    :param active: target active fraction :math:`ρ` of a layer that fires.
        Defaults to 0.05
    :param silent: target :math:`ρ_s` of a layer that does not fire.
        Defaults to 0.3
    :param rate: firing fraction :math:`r_0` from which a layer counts as
        firing. Defaults to 0.01
    :param per_sample: expected active entries per sample at least.
        Defaults to 1
    :param neuron: probability with which every neuron's nearest entry over
        the batch is active at least (0 turns the floor off). Defaults to 0.1
    :param floor: smallest step. Defaults to 1e-3
    :param ceil: largest step. Defaults to 10
    :param subsample: entries the layer step is solved on. Defaults to 1024
    :param grid: points of the log grid of ``[floor, ceil]``. Defaults to 32
    """

    active: float = 0.05
    silent: float = 0.3
    rate: float = 0.01
    per_sample: float = 1.0
    neuron: float = 0.1
    floor: float = 1e-3
    ceil: float = 10.0
    subsample: int = 1024
    grid: int = 32

    def __post_init__(self):
        _fraction("active", self.active)
        _fraction("silent", self.silent)
        _fraction("rate", self.rate)
        _fraction("neuron", self.neuron, low_open=False)
        if isinstance(self.per_sample, bool) or not isinstance(self.per_sample, numbers.Real) \
                or not 0 <= self.per_sample < math.inf:
            raise ValueError(f"`per_sample` must be a number >= 0, got {self.per_sample!r}")
        _positive("floor", self.floor)
        _positive("ceil", self.ceil)
        if self.ceil <= self.floor:
            raise ValueError(f"`ceil` ({self.ceil}) must be larger than `floor` ({self.floor})")
        _integer("subsample", self.subsample, 1)
        _integer("grid", self.grid, 2)

    def __repr__(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != f.default]
        return f"AdaptiveDelta({', '.join(changed)})"

    # ------------------------------------------------------------------ rule
    def target(self, fire_rate: torch.Tensor, neurons: int) -> torch.Tensor:
        """:math:`ρ_t` (step 1) for firing fractions ``fire_rate`` and
        ``neurons`` entries per sample."""
        w = (1.0 - fire_rate / self.rate).clamp(0.0, 1.0)
        rho = self.active + (self.silent - self.active) * w
        least = min(self.per_sample / max(neurons, 1), 0.5)
        return rho.clamp(min=least)

    def solve(self, uabs: torch.Tensor, target: torch.Tensor, law: str, samples: int) -> torch.Tensor:
        """Step 2 for each row of ``uabs [R, K]`` (float32): the step at which
        ``mean_k 1 - F(|u_k|/δ)^m`` equals ``target [R]``: that fraction on the
        log grid, then linear interpolation of its log in :math:`1/δ^2` (exact
        for a Gaussian tail) between the two grid points around the target;
        ``floor`` when even it gives more, ``ceil`` when even it gives less.
        No host synchronisation."""
        deltas = torch.logspace(math.log10(self.floor), math.log10(self.ceil), self.grid,
                                device=uabs.device, dtype=torch.float32)
        s = torch.nan_to_num(uabs, nan=math.inf)  # a NaN membrane counts as far away
        f = active_prob(law, s.unsqueeze(1) / deltas.view(1, -1, 1), samples).mean(2)  # [R, grid]
        below = (f < target.unsqueeze(1)).sum(1, keepdim=True)
        hi = below.clamp(max=self.grid - 1)
        lo = (below - 1).clamp(min=0)
        lf_lo = f.gather(1, lo).clamp_min(1e-30).log()
        lf_hi = f.gather(1, hi).clamp_min(1e-30).log()
        t = ((target.unsqueeze(1).log() - lf_lo) / (lf_hi - lf_lo)).nan_to_num(0.0).clamp(0.0, 1.0)
        v_lo, v_hi = deltas[lo].pow(-2), deltas[hi].pow(-2)
        return (v_lo + t * (v_hi - v_lo)).rsqrt().squeeze(1)

    def delta(self, u: torch.Tensor, law: str, samples: int, steps: int = 0) -> torch.Tensor:
        """:math:`δ_t` for a call on ``u = mem - threshold`` (detached, float32).

        ``steps = 0``: ``u`` is one call ``[batch, *neurons]`` (a 0-d or 1-d
        ``u`` is one sample); returns ``[1, *neurons]``. ``steps = T``: ``u``
        is ``T`` calls ``[T, batch, *neurons]``, each solved as its own call
        (the same numbers as ``T`` separate calls); returns
        ``[T, 1, *neurons]``."""
        u = u.detach()
        if steps == 0:
            if u.dim() >= 2:
                return self.delta(u.unsqueeze(0), law, samples, 1)[0]
            return self.delta(u.reshape(1, 1, -1), law, samples, 1).reshape(u.shape)
        T = steps
        if u.dim() <= 2:  # steps of one sample each, as one-sample calls
            return self.delta(u.reshape(T, 1, -1), law, samples, steps).reshape(u.shape)
        rows = u.reshape(T, -1).to(torch.float32)
        n = rows.shape[1]
        batch = u.shape[1] if u.dim() > 1 else 1
        neurons = max(n // max(batch, 1), 1)
        s = rows.index_select(1, subsample_positions(n, self.subsample, u.device))
        fire = (s > 0).to(torch.float32).mean(1)
        d = self.solve(s.abs(), self.target(fire, neurons), law, samples)  # [T]
        d = d.view(T, 1)
        if self.neuron > 0 and batch > 0 and n > 0:
            x = abs_quantile(law, (1.0 - self.neuron) ** (1.0 / samples))
            # [T, neurons]; a NaN membrane counts as far away (it must not widen or
            # poison the step of the neuron's other entries)
            near = torch.nan_to_num(rows.view(T, batch, neurons).abs(), nan=math.inf).amin(dim=1)
            d = torch.maximum(d, (near / x).clamp(max=self.ceil))
            return d.reshape((T, 1) + tuple(u.shape[2:]))
        return d.reshape((T,) + (1,) * (u.dim() - 1))

    def expected_active_fraction(self, u: torch.Tensor, delta: torch.Tensor, law: str,
                                 samples: int) -> torch.Tensor:
        """``mean 1 - F(|u|/δ)^m`` in float64 (for tests and the study)."""
        x = u.detach().to(torch.float64).abs() / delta.to(torch.float64)
        return active_prob(law, x, samples).mean()
