"""Dense PyTorch reference: ``cur = x @ W.T + b`` for all steps, then the
Leaky reference step by step; autograd does the rest."""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..leaky import reference as leaky_reference
from ..leaky.reference import LeakyParams, clamped_beta
from ..sampling import compute_dtype

#: Memory the time chunk of the input trace may take, on the CPU and on a GPU
#: alike (``trace_chunk_steps``). 16 MiB is the native CPU path's value, which
#: its benchmarks ran with; the Triton path had 64 MiB, never measured on a
#: GPU, where a smaller chunk costs two kernel launches per extra chunk and
#: a larger one its memory.
TRACE_BUDGET_BYTES = 16 * 2**20


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
    dtype = compute_dtype(x.dtype)
    b = clamped_beta(beta, x.dtype).to(dtype)
    if out is None:
        out = torch.empty((steps,) + tuple(x.shape[1:]), dtype=dtype, device=x.device)
    tr = torch.zeros(x.shape[1:], dtype=dtype, device=x.device) if carry is None else carry
    for i in range(steps):
        torch.mul(tr, b, out=out[i])
        out[i] += x[t0 + i]
        tr = out[i]
    return out


def trace_chunk_steps(T: int, B: int, IN: int, dtype: torch.dtype) -> int:
    """Time steps per chunk of the input trace of ``x [T, B, IN]`` held in
    ``dtype`` (the trace's, not ``x``'s): as many as ``TRACE_BUDGET_BYTES``
    holds, at least one, at most ``T``."""
    return max(1, min(T, TRACE_BUDGET_BYTES // max(1, B * IN * dtype.itemsize)))
