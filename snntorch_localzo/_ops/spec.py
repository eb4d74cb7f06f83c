"""The settings of a LocalZO estimate as the operators see them.

A :class:`ZOSpec` is built once per ``(distribution, samples)`` pair (see
:attr:`snntorch_localzo.LocalZO.spec`) and travels unchanged from the neurons
to the launchers. It is flattened into plain ints, floats and the table
tensor only where an operator is called (:meth:`ZOSpec.op_kwargs`, :meth:`ZOSpec.table`), because
``torch.library`` operators take nothing else, and rebuilt on the other side
(:meth:`ZOSpec.unflat`).

How a kernel turns one uniform or normal draw into ``|z|`` is the law's
*sampler* (:class:`~snntorch_localzo.distributions.Sampler`, its ``kind``
and ``kparam``), and how the membrane is scaled before the estimate is the
spec's *step* (:class:`~snntorch_localzo.step.Step`): both are read from the
law table of :mod:`snntorch_localzo.distributions` and from the step, never
decided here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .. import distributions as D
from ..adaptive import AdaptiveDelta
from ..step import FIXED, FixedStep, Step
from . import layout

#: Directions per neuron that the code byte holds.
MAX_SAMPLES = layout.MAX_SAMPLES

#: The steps, by their id in the operators' arguments.
STEP_KINDS = (FixedStep, AdaptiveDelta)


@dataclass(frozen=True)
class ZOSpec:
    """Constants of one LocalZO estimate: ``G = coef * sum_{i active} |z_i|**p``
    with ``i`` active when ``|u'| < delta * |z_i|``, ``u' = step.scale(u)``.

    :param kind: the law's sampler kind (how ``|z|`` is drawn)
    :param p: exponent of ``|z|`` in the estimate, +1 or -1
    :param samples: directions ``m`` per neuron
    :param delta: step the operators apply (the law's; 1 with an adaptive step)
    :param coef: ``c / (2 delta m)`` over the step's height
    :param kparam: scale the sampler applies to its standard draw
    :param dist: the distribution (for its table; not part of the operators' arguments)
    :param step: the step (:data:`~snntorch_localzo.step.FIXED` or an
        :class:`~snntorch_localzo.adaptive.AdaptiveDelta`). With an adaptive
        step the operators get ``u / delta_t`` (from the autograd glue, or
        fused) and ``G = G_1(u / delta_t) / g_1(0)``
    """

    kind: int
    p: int
    samples: int
    delta: float
    coef: float
    kparam: float
    dist: Optional[D.Distribution] = field(default=None, compare=False, repr=False)
    step: Step = FIXED
    weighted: bool = False
    auto: bool = False

    # Every spike call looks its spec up in a few caches (the planner's, the C
    # passes' settings): the hash of the compared fields is worked out once.
    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.compare))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self):
        # (a hash of strings differs between processes: not pickled)
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def resolved(self, dtype: torch.dtype, call: bool = True) -> "ZOSpec":
        """The spec a call runs: ``make()``'s default sampling (``auto``)
        draws by the incoming gradient (``weighted``) in a float32 call of the
        spike function, where its C pass or kernel runs it, and by the law
        elsewhere (other dtypes; ``call`` False: a sequence layer, whose draw
        is made in forward, or a draw without an incoming gradient). Other
        specs are returned as they are."""
        if not self.auto:
            return self
        return _resolved(self, call and dtype == torch.float32)

    @property
    def law(self) -> D.Distribution:
        """The law of ``|z|`` (with the unit step for an adaptive spec)."""
        return self.dist if self.dist is not None else D.adaptive_law_of(self.kind)

    def divisor(self, u: Optional[torch.Tensor], steps: int = 0) -> Optional[torch.Tensor]:
        """What ``u = mem - threshold`` is divided by before the estimate, or
        None (:meth:`Step.divisor <snntorch_localzo.step.Step.divisor>`)."""
        return self.step.divisor(u, self, steps)

    def scale(self, u: torch.Tensor, steps: int = 0) -> torch.Tensor:
        """The membrane the operators' estimate sees for ``u = mem - threshold``."""
        return self.step.scale(u, self, steps)

    def inverse_height(self) -> float:
        """``1 / step.height(law)``: what the law's surrogate is multiplied by
        for the estimate's expected value. Cached, and computed when the spec
        is built (:func:`spec_of`): never a host read inside a pass."""
        return _inverse_height(self.step, self.law)

    # ------------------------------------------------------------- operators
    def op_kwargs(self) -> Dict[str, list]:
        """The spec's ints and floats as the operators' keyword arguments
        ``spec_ints`` and ``spec_floats`` (the table goes with the tensors)."""
        ints, floats = _flat(self)
        return {"spec_ints": ints, "spec_floats": floats}

    @staticmethod
    def unflat(ints: List[int], floats: List[float]) -> "ZOSpec":
        """Inverse of :meth:`op_kwargs`."""
        return _unflat(tuple(int(i) for i in ints), tuple(float(f) for f in floats))

    def table(self, device) -> torch.Tensor:
        """The inverse-CDF table of ``|z|`` on ``device`` (float32), or a
        one-element placeholder when the sampler needs none."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.kind != D.TABLE.kind:
            return _placeholder(device)
        return _device_table(self.dist, device)


@functools.lru_cache(maxsize=256)
def _resolved(spec: ZOSpec, weighted: bool) -> ZOSpec:
    return dataclasses.replace(spec, weighted=weighted, auto=False)


@functools.lru_cache(maxsize=256)
def _flat(spec: ZOSpec) -> Tuple[List[int], List[float]]:
    ints = [spec.kind, spec.p, spec.samples, STEP_KINDS.index(type(spec.step)), int(spec.weighted), int(spec.auto)]
    return ints, [spec.delta, spec.coef, spec.kparam, *spec.step.op_floats()]


@functools.lru_cache(maxsize=256)
def _unflat(ints: Tuple[int, ...], floats: Tuple[float, ...]) -> ZOSpec:
    kind, p, samples, step_kind, weighted, auto = ints
    delta, coef, kparam = floats[:3]
    return ZOSpec(kind, p, samples, delta, coef, kparam,
                  step=STEP_KINDS[step_kind].from_floats(floats[3:]), weighted=bool(weighted), auto=bool(auto))


@functools.lru_cache(maxsize=256)
def spec_of(dist: D.Distribution, samples: int, step: Step = FIXED, weighted: bool = False,
            auto: bool = False) -> ZOSpec:
    """The spec of a distribution, a number of directions, a step (with an
    adaptive step, ``dist`` has the unit step) and the sampling (``weighted``:
    by the incoming gradient; ``auto``: that or the law's, call by call,
    :meth:`ZOSpec.resolved`). Cached."""
    spec = ZOSpec(
        kind=dist.sampler.kind, p=dist.p, samples=samples, delta=dist.delta,
        coef=dist.scale / samples / step.height(dist), kparam=dist.kparam, dist=dist, step=step,
        weighted=weighted, auto=auto,
    )
    spec.inverse_height()  # (cached now, outside any pass)
    return spec


@functools.lru_cache(maxsize=64)
def _inverse_height(step: Step, law: D.Distribution) -> float:
    return 1.0 / step.height(law)


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
