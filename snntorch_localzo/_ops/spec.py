"""The settings of a LocalZO estimate as the operators see them.

A :class:`ZOSpec` is built once per ``(distribution, samples)`` pair (see
:attr:`snntorch_localzo.LocalZO.spec`) and travels unchanged from the neurons
to the launchers. It is flattened into plain ints, floats and the table
tensor only where an operator is called (:meth:`ZOSpec.op_args`), because
``torch.library`` operators take nothing else, and rebuilt on the other side
(:meth:`ZOSpec.unflat`).

How a kernel turns one uniform or normal draw into ``|z|`` is the *kind*:

====================  ==================================  =====================
kind                  ``|z|`` from the draw ``r``          used by
====================  ==================================  =====================
``KIND_NORMAL``       ``|r| * kparam``, ``r ~ N(0, 1)``    normal
``KIND_UNIFORM``      ``r * kparam``, ``r ~ U[0, 1)``      uniform
``KIND_EXPONENTIAL``  ``-log(1 - r) * kparam``             laplace
``KIND_TABLE``        inverse-CDF table at ``r``           atan, sigmoid, others
``KIND_LOMAX2``       ``sqrt(r) / (1 - sqrt(r)) * kparam`` fast_sigmoid
====================  ==================================  =====================

Any other :class:`~snntorch_localzo.distributions.Distribution` subclass is
sampled from the inverse-CDF table of its ``abs_cdf``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import torch

from .. import distributions as D
from ..adaptive import AdaptiveDelta, peak
from . import layout

KIND_NORMAL, KIND_UNIFORM, KIND_EXPONENTIAL, KIND_TABLE, KIND_LOMAX2 = range(5)

#: Distribution class -> (kind, kparam).
_SAMPLERS = {
    D.Normal: (KIND_NORMAL, 1.0),
    D.Uniform: (KIND_UNIFORM, math.sqrt(3.0)),
    D.Laplace: (KIND_EXPONENTIAL, 1.0 / math.sqrt(2.0)),
    D.FastSigmoidTwin: (KIND_LOMAX2, 1.0),
}

#: The law an adaptive spec's kind samples (the laws :mod:`..adaptive` solves for).
_LAW_OF_KIND = {KIND_NORMAL: "normal", KIND_UNIFORM: "uniform", KIND_EXPONENTIAL: "laplace"}

#: Directions per neuron that the code byte holds.
MAX_SAMPLES = layout.MAX_SAMPLES


@dataclass(frozen=True)
class ZOSpec:
    """Constants of one LocalZO estimate: ``G = coef * sum_{i active} |z_i|**p``
    with ``i`` active when ``|u| < delta * |z_i|`` and ``coef = c / (2 delta m)``.

    :param kind: how ``|z|`` is drawn (module docstring)
    :param p: exponent of ``|z|`` in the estimate, +1 or -1
    :param samples: directions ``m`` per neuron
    :param delta: step of the estimate
    :param coef: ``c / (2 delta m)``
    :param kparam: scale the sampler applies to its standard draw
    :param dist: the distribution (for its table; not part of the operators' arguments)
    :param rule: the adaptive step (:class:`~snntorch_localzo.adaptive.AdaptiveDelta`),
        or None for a fixed step. With a rule, ``delta = 1`` and ``coef`` are
        the unit step's over its height at threshold: the operators get
        ``u / delta_t`` from the autograd glue (or, fused, compute it) and
        ``G = G_1(u / delta_t) / g_1(0)``
    """

    kind: int
    p: int
    samples: int
    delta: float
    coef: float
    kparam: float
    dist: Optional[D.Distribution] = field(default=None, compare=False, repr=False)
    rule: Optional[AdaptiveDelta] = None

    @property
    def law(self) -> str:
        """Name of the law the kind samples, which an adaptive rule solves with
        (``""`` for the kinds the rule does not support)."""
        return _LAW_OF_KIND.get(self.kind, "")

    def step(self, u: torch.Tensor, steps: int = 0) -> torch.Tensor:
        """The rule's ``delta_t`` for ``u = mem - threshold`` (see
        :meth:`AdaptiveDelta.delta`); only for an adaptive spec."""
        return self.rule.delta(u, self.law, self.samples, steps)

    # ------------------------------------------------------------- operators
    def op_args(self, device) -> Tuple[List[int], List[float], torch.Tensor]:
        """The spec as operator arguments: ints, floats and the table on
        ``device``; an adaptive spec appends its rule's fields to the floats."""
        floats = [self.delta, self.coef, self.kparam]
        if self.rule is not None:
            floats += [float(getattr(self.rule, f.name)) for f in fields(AdaptiveDelta)]
        return [self.kind, self.p, self.samples], floats, self.table(device)

    @staticmethod
    def unflat(ints: List[int], floats: List[float]) -> "ZOSpec":
        """Inverse of :meth:`op_args` (without the table)."""
        return _unflat(tuple(int(i) for i in ints), tuple(float(f) for f in floats))

    def table(self, device) -> torch.Tensor:
        """The inverse-CDF table of ``|z|`` on ``device`` (float32), or a
        one-element placeholder when the kind needs none."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.kind != KIND_TABLE:
            return _placeholder(device)
        return _device_table(self.dist, device)


@functools.lru_cache(maxsize=256)
def _unflat(ints: Tuple[int, ...], floats: Tuple[float, ...]) -> ZOSpec:
    kind, p, samples = ints
    delta, coef, kparam = floats[:3]
    rule = None
    if len(floats) > 3:
        rule = AdaptiveDelta(**{f.name: (int(v) if f.type in (int, "int") else v)
                                for f, v in zip(fields(AdaptiveDelta), floats[3:])})
    return ZOSpec(kind, p, samples, delta, coef, kparam, rule=rule)


@functools.lru_cache(maxsize=256)
def spec_of(dist: D.Distribution, samples: int, rule: Optional[AdaptiveDelta] = None) -> ZOSpec:
    """The spec of a distribution, a number of directions and, for an
    adaptive step, its rule (then ``dist`` has the unit step). Cached."""
    kind, kparam = _SAMPLERS.get(type(dist), (KIND_TABLE, 1.0))
    coef = dist.scale / samples
    if rule is not None:  # height 1 at threshold (adaptive.py): coef / g_1(0)
        coef = coef / peak(dist)
    return ZOSpec(
        kind=kind, p=dist.p, samples=samples, delta=dist.delta,
        coef=coef, kparam=kparam, dist=dist, rule=rule,
    )


_PLACEHOLDERS: Dict[torch.device, torch.Tensor] = {}
_TABLES: Dict[Tuple, torch.Tensor] = {}


def _placeholder(device: torch.device) -> torch.Tensor:
    if device not in _PLACEHOLDERS:
        _PLACEHOLDERS[device] = torch.zeros(1, dtype=torch.float32, device=device)
    return _PLACEHOLDERS[device]


def _device_table(dist: D.Distribution, device: torch.device) -> torch.Tensor:
    key = (dist, device)
    if key not in _TABLES:
        _TABLES[key] = dist.table().to(device)
    return _TABLES[key]


def kernel_supports(spec: ZOSpec, dtype: torch.dtype) -> bool:
    """Whether the fused kernels handle this spec and dtype (float64 and more
    than ``MAX_SAMPLES`` directions take another path)."""
    return dtype in (torch.float32, torch.float16, torch.bfloat16) and 1 <= spec.samples <= MAX_SAMPLES
