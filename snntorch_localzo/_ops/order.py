"""Order statistics of each row and the other passes over a call's membrane
that the adaptive step (:mod:`snntorch_localzo.adaptive`) makes: what it
reads of each sample's membrane (:func:`row_stats`), the floors it puts
under each entry's step (:func:`floors`), and the whole rule in one C pass
(:func:`rule_delta`).

On the CPU the C selection of ``_scan.c`` finds the same values as
``torch.kthvalue`` (the exact order statistics): for a rank of at most 4,
in a row of 64 values or more a min/max network in AVX-512 or AVX2 lanes
(where the CPU has them), else one pass that keeps the smallest values
seen; for larger ranks a search for the rank's order-preserving key by
counting passes (over a narrowed bracket's keys alone once it holds at most
a quarter of them), whose last candidates are ranked in those lanes too.
Inside ``torch.compile``, off the CPU, or without the C loops, the PyTorch
forms run. The C passes compute
the same bits as the PyTorch forms (the same float32 and float64
operations)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._backend import Path, device_path
from .clib import c_module


def _selection(t: torch.Tensor):
    """The C module when it runs on ``t`` here (float32 on the CPU, outside
    ``torch.compile``), else None."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or torch.compiler.is_compiling():
        return None
    return c_module()


def abs_far(u: torch.Tensor) -> torch.Tensor:
    """``|u|`` in float32 with NaN as +infinity (a NaN membrane counts as far
    away: it must not poison its sample's step)."""
    return torch.nan_to_num(u.to(torch.float32).abs(), nan=math.inf)


def row_stats(u: torch.Tensor, k1: int, k2: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row of ``u [R, n]`` (float32): the ``k1``-th and ``k2``-th
    smallest of :func:`abs_far` (1-based), two ``[R]`` float32 tensors, and
    the fraction of entries above 0, ``[R]`` float64."""
    if k1 > k2:
        q2, q1, fire = row_stats(u, k2, k1)
        return q1, q2, fire
    R, n = u.shape
    module = _selection(u)
    if module is None:
        a = abs_far(u)
        q1, q2 = kth_smallest2(a, k1, k2)
        return q1, q2, (u > 0).sum(1).to(torch.float64) / n
    u = u.contiguous()
    out = torch.empty(2, R, dtype=torch.float32)
    fire = torch.empty(R, dtype=torch.int64)
    module.rule_stats(u.data_ptr(), R, n, k1, k2, out[0].data_ptr(), out[1].data_ptr(), fire.data_ptr())
    return out[0], out[1], fire.to(torch.float64) / n


def rule_delta(u: torch.Tensor, rule) -> Optional[torch.Tensor]:
    """The adaptive step of every entry of ``u [R, n]`` (float32) in one C
    pass per row (``_scan.c`` rule_delta: the statistics, the row's step and
    the floors, the same bits as the PyTorch form in
    :meth:`AdaptiveDelta.delta <snntorch_localzo.adaptive.AdaptiveDelta.delta>`),
    given the rule's constants (:meth:`AdaptiveDelta.constants`); None where
    the C pass does not run (then the PyTorch form does). Where the mode
    gives the tensor the Triton path (CUDA; the CPU in the interpreter) one
    kernel computes the same bits (``rule_triton.py``)."""
    if u.dtype == torch.float32 and device_path(u) is Path.TRITON and not torch.compiler.is_compiling():
        from .rule_triton import rule_delta as kernel  # (Triton imports only where it runs)

        return kernel(u.contiguous(), rule)
    module = _selection(u)
    if module is None:
        return None
    u = u.contiguous()
    out = torch.empty(u.shape, dtype=torch.float32)
    module.rule_delta(u.data_ptr(), u.shape[0], u.shape[1], rule, out.data_ptr())
    return out


def floors(u: torch.Tensor, d: torch.Tensor, groups: int, x_q: float, x_e: float,
           ceil: float) -> torch.Tensor:
    """Each entry's step: the step ``d [R]`` of its row of ``u [R, n]`` (the
    ``n`` entries in ``groups`` channels of equal size), widened to the
    channel floor ``min(min over the channel of |u| / x_q, ceil)`` (``x_q > 0``)
    and the entry floor ``min(|u| / x_e, ceil)`` (``x_e > 0``, else every entry
    of a channel gets its channel's step); float32 shaped like ``u``. (Where
    the C passes run, :func:`rule_delta` computes these bits with the rest of
    the rule.)"""
    R, n = u.shape
    a = abs_far(u).reshape(R, groups, -1)
    dc = d.reshape(R, 1, 1)
    if x_q > 0:
        dc = torch.maximum(dc, (a.amin(2, keepdim=True) / x_q).clamp(max=ceil))
    if x_e > 0:
        return torch.maximum(dc, (a / x_e).clamp(max=ceil)).reshape(R, n)
    return dc.expand(R, groups, n // groups).reshape(R, n)


def kth_smallest2(rows: torch.Tensor, k1: int, k2: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k1``-th and ``k2``-th smallest values of each row of a float32
    ``rows [R, n]`` (1-based; NaN counts as larger than everything): two
    ``[R]`` tensors, equal to ``rows.kthvalue(k, 1).values``."""
    module = _selection(rows)
    if module is None:
        return rows.kthvalue(k1, 1).values, rows.kthvalue(k2, 1).values
    rows = rows.contiguous()
    R, n = rows.shape
    lo, hi = min(k1, k2), max(k1, k2)
    out = torch.empty(2, R, dtype=torch.float32)
    module.row_kth2(rows.data_ptr(), R, n, lo, hi, out[0].data_ptr(), out[1].data_ptr())
    return (out[0], out[1]) if k1 <= k2 else (out[1], out[0])
