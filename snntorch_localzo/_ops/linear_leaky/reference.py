"""Dense PyTorch reference: ``cur = x @ W.T + b`` for all steps, then the
Leaky reference step by step; autograd does the rest."""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..leaky import reference as leaky_reference
from ..leaky.reference import LeakyParams


def linear_leaky(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mem: Optional[torch.Tensor],
    params: LeakyParams,
    spike_fns: List[Callable[[torch.Tensor], torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    cur = F.linear(x, weight, bias)
    return leaky_reference.leaky_seq(cur, mem, params, spike_fns)


def input_trace(x: torch.Tensor, beta: torch.Tensor, t0: int = 0, steps: Optional[int] = None,
                carry: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``trace[t] = b * trace[t - 1] + x[t]`` in float32 (float64 for float64
    ``x``) for ``t`` in
    ``[t0, t0 + steps)``, from ``carry = trace[t0 - 1]`` (zero by default);
    ``b`` is ``beta`` clamped to [0, 1] and rounded to ``x``'s dtype, as the
    neuron uses it. The weight gradient of a Leaky layer with subtractive or no
    reset is ``sum over active (t, b, j) of e[t, b, j] * trace[t, b, :]``
    (docs/method.md section 4). ``out``: where to write it (else a new tensor)."""
    steps = x.shape[0] - t0 if steps is None else steps
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    b = beta.clamp(0, 1).to(x.dtype).to(dtype)
    if out is None:
        out = torch.empty((steps,) + tuple(x.shape[1:]), dtype=dtype, device=x.device)
    tr = torch.zeros(x.shape[1:], dtype=dtype, device=x.device) if carry is None else carry
    for i in range(steps):
        torch.mul(tr, b, out=out[i])
        out[i] += x[t0 + i]
        tr = out[i]
    return out
