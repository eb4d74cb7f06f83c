"""The adaptive step of ``make()``: a ``delta`` chosen per call and per sample
from the sample's own membrane.

A fixed ``delta`` cannot suit every layer: what is "near threshold" depends
on the layer's membrane statistics (``benchmarks/delta_study.py``). With
``delta=0.05`` the output layer of snnTorch's convolutional tutorial never
gets an estimate and nothing learns. :class:`AdaptiveDelta` computes, at each
call of the spike function, for each sample ``b`` and from that sample's
``u_b = mem_b - threshold`` alone (no state, nothing to save or synchronise,
nothing shared with the other samples of the batch), a step
:math:`δ_b(u_b)`; given it, the estimate is the unit-step estimate at
:math:`u/δ_b`, scaled to height one at threshold:

.. math::

    G_m(u) = \\frac{c}{2 m\\, g_1(0)}\\sum_{i=1}^m |z_i|^p\\,\\mathbb{1}[|u| < δ_b|z_i|],
    \\qquad \\mathbb{E}_z[G_m(u) \\mid δ_b] = \\frac{g_1(u/δ_b)}{g_1(0)},

with :math:`g_δ` the law's surrogate of width :math:`δ` (section 2 of
``docs/method.md``): for the uniform law (``make()``'s) the parabola
:math:`\\max(0, 1 - u^2 / 3δ_b^2)`, for the normal law the Gaussian bump
:math:`\\exp(-u^2 / 2δ_b^2)`, of height one and width :math:`δ_b`, the
convention of snnTorch's surrogates (ATan and fast sigmoid have height one at
threshold). Scaled to height one rather than to area one, the estimate's
size does not depend on :math:`δ_b`.

The rule, for a call on ``u`` of shape ``[batch, *neurons]``, each sample
``b`` with its ``n`` entries:

1. *band*: :math:`q_b(ρ)`, the distance to threshold of the sample's
   :math:`\\mathrm{round}(ρ n)`-th nearest entry (at least the first), and
   :math:`δ_b = q_b(ρ_b) / \\mathrm{med}|z|`: the sample's nearest
   :math:`ρ_b n` entries lie in the band, the :math:`ρ_b n`-th active with
   probability one half (:math:`\\mathrm{med}|z|`: the median of
   :math:`\\max_i |z_i|` with :math:`m` directions);
2. *silent samples*: :math:`ρ_b` is :math:`ρ` (``active`` for inputs
   without channels, ``conv_active`` for inputs with channels: a fully
   connected layer trains as well with a fifth of the band a deep
   convolutional stack needs, ``docs/method.md`` section 7) for a sample
   whose layer fires (a fraction :math:`r_b \\ge` ``rate`` of its entries above
   threshold) and widens, log-linearly in :math:`q_b`, to ``silent``
   (:math:`ρ_s`) as :math:`r_b` falls to 0:
   :math:`\\log q = (1 - w)\\log q_b(ρ) + w \\log q_b(ρ_s)`,
   :math:`w = \\mathrm{clamp}(1 - r_b / r_0, 0, 1)` (in float64, and the
   statistic itself where :math:`w` is 0 or 1: :meth:`AdaptiveDelta.row_step`);
3. *channel floor* (inputs with channels, ``[batch, channels, ...]``):
   :math:`δ_{b,c} = \\max(δ_b, \\min_{x} |u_{b,c,x}| / x_q)`, with :math:`x_q` the
   level :math:`\\max_i|z_i|` exceeds with probability ``channel``: in every
   sample, every channel's entry nearest to threshold is active with
   probability at least ``channel``, so no channel (whose weights all its
   positions share) is cut off from gradient;
4. *entry floor*: :math:`δ_{b,j} = \\max(δ_b, |u_{b,j}| / x_e)`, with
   :math:`x_e` the level :math:`\\max_i|z_i|` exceeds with probability
   :math:`\\min(` ``entry`` :math:`, 1/n)`: in a large layer about one extra
   expected estimate per sample, in a smaller one every neuron of every
   sample active with probability ``entry`` or more, so no neuron is cut
   off from gradient;
5. :math:`δ` clamped to ``[floor, ceil]``;
6. *small layers*: a call whose samples have at most ``exact`` entries each
   (an output layer of a few classes) gets the estimate's expected value
   :math:`g_1(u/δ)/g_1(0)` itself instead of a draw, the limit of infinitely
   many directions. Its few entries cost next to nothing, and the noise of a
   draw there would reach every layer below: on ``benchmarks/defaults.py``'s
   deep conv net the draw at its 10 outputs cost about 2 points of
   validation accuracy (``docs/method.md`` section 7).

:math:`δ` is a detached function of ``u`` (one step per entry with the entry
floor; ``[batch, 1, ...]`` or ``[batch, channels, 1, ...]`` without; on the
CPU one C pass per sample computes it, ``_ops/order.py``'s ``rule_delta``, the
same bits as the PyTorch form), and every path
(reference, native CPU, Triton) runs on the scaled membrane :math:`u/δ` with
the unit step and the coefficient :math:`c / (2 m g_1(0))`, so all give the
same bits. Because each sample's step is its own, a sample's expected
gradient does not depend on its batch-mates: micro-batches, gradient
accumulation and DDP shards train the same surrogate as the full batch
(``tests/test_per_sample.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from ._checks import check_choice, check_count, check_fraction, check_positive
from ._ops.order import abs_far, floors, row_stats, rule_delta
from .distributions import ADAPTIVE_LAWS as LAWS, Distribution, get_distribution
from .step import Step, sample_entries, sample_rows

__all__ = ["AdaptiveDelta", "LAWS", "RuleConstants"]


def _law(law) -> Distribution:
    """The law of ``|z|``: a Distribution, or the name of one the rule supports."""
    if isinstance(law, Distribution):
        if not law.adaptive:
            raise ValueError(f"the adaptive step supports {LAWS}, not {law.name!r}")
        return law
    return get_distribution(check_choice("law", law, LAWS), delta=1.0)


def _rank(fraction: float, n: int) -> int:
    """``round(fraction * n)``, at least the first and at most the last."""
    return min(max(round(fraction * n), 1), n)


@dataclass(frozen=True, repr=False)
class AdaptiveDelta(Step):
    """The step rule of ``make()``'s default estimate (module docstring): a
    step per sample, widened per channel and per entry by the floors, from
    that sample's membrane alone.

    :param active: share :math:`ρ` of a firing sample's entries in the band,
        for inputs without channels (``[batch, neurons]``, fully connected
        layers). Defaults to 0.01
    :param conv_active: the same share for inputs with channels
        (``[batch, channels, ...]``, convolutional layers). Defaults to 0.045
        (0.05 before ``make()`` drew by the incoming gradient: chosen on the
        validation split with it, ``docs/method.md`` section 8)
    :param silent: share :math:`ρ_s` of a sample that does not fire.
        Defaults to 0.3
    :param rate: firing fraction :math:`r_0` from which a sample counts as
        firing. Defaults to 0.01
    :param channel: probability with which every channel's nearest entry of
        every sample is active at least (inputs with channels; 0 turns the
        floor off). Defaults to 0.1
    :param entry: entry floor: every entry of a sample with ``n`` entries is
        active with probability at least ``min(entry, 1/n)`` (0 turns it
        off): about one extra expected estimate per sample in a large layer,
        every neuron of a small one (an output layer) reachable.
        Defaults to 0.1
    :param floor: smallest step. Defaults to 1e-3
    :param ceil: largest step. Defaults to 10
    :param exact: a call whose samples have at most this many entries gets
        the expected value instead of a draw (0 turns it off). Defaults to 64
    """

    active: float = 0.01
    conv_active: float = 0.045
    silent: float = 0.3
    rate: float = 0.01
    channel: float = 0.1
    entry: float = 0.1
    floor: float = 1e-3
    ceil: float = 10.0
    exact: int = 64

    def __post_init__(self):
        check_fraction("active", self.active)
        check_fraction("conv_active", self.conv_active)
        check_fraction("silent", self.silent)
        check_fraction("rate", self.rate)
        check_fraction("channel", self.channel, low_open=False)
        check_fraction("entry", self.entry, low_open=False)
        check_positive("floor", self.floor)
        check_positive("ceil", self.ceil)
        check_count("exact", self.exact, minimum=0)
        if self.ceil <= self.floor:
            raise ValueError(f"`ceil` ({self.ceil}) must be larger than `floor` ({self.floor})")

    def __repr__(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != f.default]
        return f"AdaptiveDelta({', '.join(changed)})"

    def __setstate__(self, state):
        # pickles of the batch-wide rule (before issue 19) carry other fields:
        # they load as the rule of today with the fields both have
        for f in fields(self):
            object.__setattr__(self, f.name, state.get(f.name, f.default))

    # ------------------------------------------------------------------ rule
    def delta(self, u: torch.Tensor, law, samples: int, steps: int = 0) -> torch.Tensor:
        """:math:`δ` for a call on ``u = mem - threshold`` (detached, float32).

        ``steps = 0``: ``u`` is one call ``[batch, *neurons]``; returns a
        step per entry (shaped like ``u``) with the entry floor on, else
        ``[batch, 1, ...]``, or ``[batch, channels, 1, ...]`` for inputs with
        channels (``u`` of 3 or more dimensions) and the channel floor on; a
        1-d ``u`` is one sample, a 0-d one one entry. ``steps = T``: ``u`` is
        ``T`` calls ``[T, batch, *neurons]``, each as its own call (a ``u`` of
        2 or fewer dimensions: ``T`` calls of one sample); returns
        ``[T, ...]`` alike."""
        u = u.detach()
        law = _law(law)
        if steps:  # each call's sample one row (sample_rows)
            d = self.delta(u.reshape(sample_rows(u.shape, steps)), law, samples)
            if u.dim() <= 2:  # T calls of one sample
                return d.reshape(u.shape if d.numel() == u.numel() else (steps,) + (1,) * (u.dim() - 1))
            return d.reshape((steps, u.shape[1]) + tuple(d.shape[1:]))
        if u.dim() <= 1:
            d = self.delta(u.reshape(1, -1), law, samples)
            return d.reshape(u.shape if d.numel() == u.numel() else (1,))
        batch = u.shape[0]
        if u.numel() == 0:  # no entries: any step will do
            return torch.ones((batch,) + (1,) * (u.dim() - 1), dtype=torch.float32, device=u.device)
        flat = u.reshape(batch, -1).to(torch.float32)
        rule = self.constants(law, samples, tuple(u.shape))
        if rule.x_e > 0:  # a step per entry
            d = rule_delta(flat, rule)  # (the C pass or the kernel, where they run)
            if d is not None:
                return d.reshape(u.shape)
        q, q_silent, fire = row_stats(flat, rule.k1, rule.k2)
        d = self.row_step(q, q_silent, fire, rule)
        if rule.x_e > 0:
            return floors(flat, d, rule.groups, rule.x_q, rule.x_e, rule.ceil).reshape(u.shape)
        d = d.reshape((batch,) + (1,) * (u.dim() - 1))
        if rule.x_q > 0:
            near = abs_far(u).flatten(2).amin(2).reshape(tuple(u.shape[:2]) + (1,) * (u.dim() - 2))
            d = torch.maximum(d, (near / rule.x_q).clamp(max=rule.ceil))
        return d

    def constants(self, law, samples: int, shape: tuple) -> "RuleConstants":
        """The rule's constants for one call on a membrane of ``shape``
        ``[batch, *neurons]`` (2 or more dimensions), as the C pass and the
        kernel take them (:class:`RuleConstants`). Cached."""
        return _constants(self, _law(law), samples, len(shape), int(shape[1]), sample_entries(shape))

    def row_step(self, q: torch.Tensor, q_silent: torch.Tensor, fire: torch.Tensor,
                 rule: "RuleConstants") -> torch.Tensor:
        """The step of each row (float32 ``[R]``) from its statistics
        (:func:`~snntorch_localzo._ops.order.row_stats`), in float64 as the C
        pass computes it: the statistics clamped to ``[low, high]``, their
        log-linear blend by the silence weight ``w`` (either one alone where
        ``w`` is 0 or 1), over ``x_med``, clamped to ``[floor, ceil]``."""
        w = (1.0 - fire.to(torch.float64) / rule.rate).clamp(0.0, 1.0)
        qa = q.to(torch.float64).clamp(rule.low, rule.high)
        qb = q_silent.to(torch.float64).clamp(rule.low, rule.high)
        t = torch.where(w <= 0, qa, torch.where(w >= 1, qb, torch.lerp(qa.log(), qb.log(), w).exp()))
        return (t / rule.x_med).clamp(rule.floor, rule.ceil).to(torch.float32)

    def expected_active_fraction(self, u: torch.Tensor, delta: torch.Tensor, law,
                                 samples: int) -> torch.Tensor:
        """``mean 1 - F(|u|/δ)^m`` in float64 (for tests and the study; a draw,
        also where :meth:`is_exact` would give the expected value)."""
        x = u.detach().to(torch.float64) / delta.to(torch.float64)
        return _law(law).active_prob(x, samples).mean()

    # ------------------------------------------------------------------ Step
    adaptive = True

    def divisor(self, u, spec, steps=0):
        return self.delta(u, spec.law, spec.samples, steps)

    def height(self, dist) -> float:
        return dist.peak()

    def delta_of(self, u, dist, samples):
        return self.delta(u, dist, samples)

    def expected_grad(self, dist, u, samples):
        d = self.delta(u, dist, samples).to(torch.float64)
        return dist.expected_grad(u.to(torch.float64) / d) / dist.peak()

    def active_prob(self, dist, u, samples):
        if self.is_exact(sample_entries(u.shape)):  # the expected value: non-zero where it is
            return (self.expected_grad(dist, u, samples) != 0).to(torch.float64)
        d = self.delta(u, dist, samples).to(torch.float64)
        return dist.active_prob(u.to(torch.float64) / d, samples)

    def is_exact(self, entries):
        return entries <= self.exact

    def op_floats(self):
        return tuple(float(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def from_floats(cls, floats):
        values = dict(zip((f.name for f in fields(cls)), floats))
        values["exact"] = int(values["exact"])
        return cls(**values)


class RuleConstants(NamedTuple):
    """The adaptive rule's constants for one call (:meth:`AdaptiveDelta.constants`),
    in the order ``_scan.c`` reads them."""

    #: ranks (1-based) of the band's and of the silent band's statistic
    k1: int
    k2: int
    #: firing fraction from which a sample counts as firing
    rate: float
    #: the statistics are clamped to ``[low, high]``
    low: float
    high: float
    #: the median level of :math:`\max_i |z_i|`
    x_med: float
    #: the step's clamp
    floor: float
    ceil: float
    #: channels per sample (1: no channel floor)
    groups: int
    #: the channel floor's and the entry floor's levels (0: off)
    x_q: float
    x_e: float


@functools.lru_cache(maxsize=1024)
def _constants(rule: AdaptiveDelta, law: Distribution, samples: int, dims: int, width: int,
               n: int) -> RuleConstants:
    x_med = _quantile(law, 0.5 ** (1.0 / samples))
    rho = rule.conv_active if dims >= 3 else rule.active
    channels = dims >= 3 and rule.channel > 0
    x_q = _quantile(law, (1.0 - rule.channel) ** (1.0 / samples)) if channels else 0.0
    x_e = _quantile(law, (1.0 - min(rule.entry, 1.0 / n)) ** (1.0 / samples)) if rule.entry > 0 else 0.0
    return RuleConstants(_rank(rho, n), _rank(rule.silent, n), rule.rate, rule.floor * x_med,
                         rule.ceil * x_med, x_med, rule.floor, rule.ceil, width if channels else 1, x_q, x_e)


@functools.lru_cache(maxsize=1024)
def _quantile(law: Distribution, q: float) -> float:
    """``F^{-1}(q)`` of ``|z|`` (cached: the rule asks for a few levels only)."""
    return law.abs_quantile(q)
