"""The step :math:`δ` of a LocalZO estimate, fixed or chosen at every call.

Every estimate has a step; :class:`Step` is what the rest of the package
asks of it, whichever it is:

* :meth:`Step.divisor` -- the membrane the operators' estimate sees is
  ``u / divisor`` (None: ``u`` itself, the operators apply the law's own
  ``delta``);
* :meth:`Step.scale` -- that membrane;
* :meth:`Step.height` -- what the estimate's coefficient is divided by (one
  for a fixed step; ``g_1(0)`` for the adaptive one, whose surrogate has
  height one at threshold);
* :meth:`Step.expected_grad`, :meth:`Step.active_prob`, :meth:`Step.delta_of`
  -- the theory of the estimate with this step;
* :meth:`Step.is_exact` -- whether a call whose samples have this many entries
  gets the estimate's expected value instead of a draw (the planner asks);
* :meth:`Step.op_floats` / :meth:`Step.from_floats` -- the step as operator
  arguments (``_ops/spec.py``).

:data:`FIXED` is the law's own step (``make(delta=0.05)``, the twins);
:class:`~snntorch_localzo.adaptive.AdaptiveDelta` is ``make()``'s default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["Step", "FixedStep", "FIXED", "sample_entries", "sample_rows"]


def sample_rows(shape, steps: int = 0) -> tuple:
    """A membrane of ``shape`` with the sample of every call as one row,
    ``[samples, *neurons]``: ``[batch, *neurons]`` itself (``steps = 0``;
    1-d or 0-d: one sample, ``[1, n]``) or, for ``steps`` calls ``[T, batch,
    *neurons]``, ``[T * batch, *neurons]`` (2-d or fewer: ``T`` calls of one
    sample, ``[T, n]``), as
    :meth:`AdaptiveDelta.delta <snntorch_localzo.adaptive.AdaptiveDelta.delta>`
    reads them."""
    shape = tuple(int(d) for d in shape)
    if steps and len(shape) >= 3:
        return (shape[0] * shape[1],) + shape[2:]
    if steps and shape:
        return (shape[0], math.prod(shape[1:]))
    return shape if len(shape) >= 2 else (1, math.prod(shape))


def sample_entries(shape, steps: int = 0) -> int:
    """Entries per sample of a call on a membrane of ``shape``
    (:func:`sample_rows`)."""
    return math.prod(sample_rows(shape, steps)[1:])


class Step:
    """The interface of a step (module docstring)."""

    #: whether the step is computed from the membrane at every call
    adaptive: bool = False

    def divisor(self, u: Optional[torch.Tensor], spec, steps: int = 0) -> Optional[torch.Tensor]:
        """What ``u = mem - threshold`` (one call, or ``steps`` calls along its
        first dimension) is divided by before the operators' estimate, or None
        (the operators use ``spec.delta`` on ``u`` itself). A step that does not
        read the membrane (:attr:`adaptive` False) takes ``u = None``."""
        raise NotImplementedError

    @staticmethod
    def apply(u: torch.Tensor, divisor: Optional[torch.Tensor]) -> torch.Tensor:
        """``u / divisor`` in ``u``'s dtype (``u`` when ``divisor`` is None)."""
        return u if divisor is None else (u / divisor).to(u.dtype)

    def scale(self, u: torch.Tensor, spec, steps: int = 0) -> torch.Tensor:
        """The membrane the operators' estimate sees."""
        return self.apply(u, self.divisor(u, spec, steps))

    def height(self, dist) -> float:
        """What the coefficient ``c / (2 delta m)`` is divided by."""
        raise NotImplementedError

    def delta_of(self, u: torch.Tensor, dist, samples: int) -> torch.Tensor:
        """The step of a call on ``u`` (float32 tensor)."""
        raise NotImplementedError

    def expected_grad(self, dist, u: torch.Tensor, samples: int) -> torch.Tensor:
        """The surrogate the estimate equals on average at ``u``."""
        raise NotImplementedError

    def active_prob(self, dist, u: torch.Tensor, samples: int) -> torch.Tensor:
        """The probability of a non-zero estimate at ``u``."""
        raise NotImplementedError

    def is_exact(self, entries: int) -> bool:
        """Whether a call whose samples have ``entries`` entries each gets the
        estimate's expected value (:meth:`expected_grad`) instead of a draw."""
        return False

    def op_floats(self) -> Tuple[float, ...]:
        """The step's settings as operator arguments."""
        return ()

    @classmethod
    def from_floats(cls, floats: Tuple[float, ...]) -> "Step":
        """Inverse of :meth:`op_floats`."""
        raise NotImplementedError


@dataclass(frozen=True)
class FixedStep(Step):
    """The law's own step ``dist.delta``: the operators apply it themselves."""

    def divisor(self, u, spec, steps=0):
        return None

    def height(self, dist) -> float:
        return 1.0

    def delta_of(self, u, dist, samples):
        return torch.tensor(dist.delta, dtype=torch.float32, device=torch.as_tensor(u).device)

    def expected_grad(self, dist, u, samples):
        return dist.expected_grad(u)

    def active_prob(self, dist, u, samples):
        return dist.active_prob(u, samples)

    @classmethod
    def from_floats(cls, floats):
        return FIXED


#: The fixed step.
FIXED = FixedStep()
