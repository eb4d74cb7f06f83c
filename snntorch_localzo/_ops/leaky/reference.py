"""Plain PyTorch reference of the Leaky neuron (snnTorch >= 0.8 semantics,
``reset_delay=True``), with the spike function passed in: one step, and a
sequence as the same step repeated.

    reset = H(mem - thr)                       (detached)
    subtract: mem' = beta * mem + x - reset * thr
    zero:     mem' = beta * ((1 - reset) * mem) + x
    none:     mem' = beta * mem + x
    spk = spike_fn(mem' - thr) * graded

``beta`` is clamped to [0, 1]. Scalars are cast to the dtype of ``x`` before
use (PyTorch's rule for a 0-d tensor on the device of ``x``), so the native
and Triton paths, which do the same operation by operation, match it bit for
bit.
"""

from __future__ import annotations

import struct
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch

from ..resets import RESET_NONE, RESET_SUBTRACT, RESET_ZERO, RESETS  # noqa: F401 (re-exported)


class LeakyParams(NamedTuple):
    """The neuron's parameters as the operators take them: 0-d or 1-element
    tensors ``beta``, ``threshold``, ``graded`` (spike amplitude) and the
    reset mechanism (``RESET_SUBTRACT``, ``RESET_ZERO`` or ``RESET_NONE``)."""

    beta: torch.Tensor
    threshold: torch.Tensor
    graded: torch.Tensor
    reset: int

    def scalars(self, dtype: torch.dtype):
        """``(beta clamped to [0, 1], threshold, graded)`` in ``dtype``."""
        return clamped_beta(self.beta, dtype), self.threshold.to(dtype), self.graded.to(dtype)

    def values(self, dtype: torch.dtype) -> Tuple[float, float, float]:
        """:meth:`scalars` as Python floats (the same numbers: each rounded to
        ``dtype``), read without a tensor operation: the C loops' arguments,
        and factors a tensor of ``dtype`` is multiplied by as it would be by
        the 0-d tensors. A step loop asks every step; :meth:`scalars`'
        clamp and casts cost more than the C step of a small layer."""
        b = float(self.beta)
        b = 0.0 if b < 0.0 else 1.0 if b > 1.0 else b  # (as clamp: NaN stays NaN)
        return _rounded(b, dtype), _rounded(float(self.threshold), dtype), _rounded(float(self.graded), dtype)


def _rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` as a cast rounds it."""
    if dtype == torch.float64:
        return value
    if dtype == torch.float32:
        try:
            return _F32.unpack(_F32.pack(value))[0]  # (the C cast: to nearest)
        except OverflowError:  # (beyond float32's range: the cast's infinity)
            pass
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


_F32 = struct.Struct("f")


def clamped_beta(beta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``beta`` clamped to [0, 1] and cast to ``dtype``: the decay as the neuron
    uses it (the Triton kernels: ``triton_common.load_beta``)."""
    return beta.clamp(0, 1).to(dtype)


def leaky_step(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    params: LeakyParams,
    spike_fn: Callable[[torch.Tensor], torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(spk, mem')``; ``mem=None`` means a zero membrane."""
    dt = x.dtype
    b, thr, graded = params.scalars(dt)
    if mem is None:
        mem = torch.zeros_like(x)
    reset = (mem - thr > 0).to(dt).detach()
    if params.reset == RESET_SUBTRACT:
        new = b * mem + x - reset * thr
    elif params.reset == RESET_ZERO:
        new = b * ((1 - reset) * mem) + x
    elif params.reset == RESET_NONE:
        new = b * mem + x
    else:
        raise ValueError(f"`reset_mechanism` must be 0, 1 or 2, got {params.reset}")
    spk = spike_fn(new - thr) * graded
    return spk, new


def leaky_seq(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    params: LeakyParams,
    spike_fns: List[Callable[[torch.Tensor], torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x``: ``[T, ...]``; ``spike_fns[t]`` is step t's spike function.
    Returns ``(spk [T, ...], mem [T, ...])``."""
    spikes, mems = [], []
    for t in range(x.shape[0]):
        spk, mem = leaky_step(x[t], mem, params, spike_fns[t])
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)
