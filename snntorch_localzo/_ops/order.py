"""Order statistics of each row and the other passes over a call's membrane
that the adaptive step (:mod:`snntorch_localzo.adaptive`) makes: what it
reads of each sample's membrane (:func:`row_stats`) and the floors it puts
under each entry's step (:func:`floors`).

On the CPU the C selection of ``leaky/_scan.c`` (``row_kth2``) finds the
same values as ``torch.kthvalue`` (the exact order statistics), both ranks
of a row from one counting pass: a radix selection by the top bits of an
order-preserving key, then a quickselect inside the one bin that holds the
rank. Inside ``torch.compile``, off the CPU, or without the C loops,
``torch.kthvalue`` runs. The C passes of :func:`row_stats` and :func:`floors`
compute the same bits as their PyTorch forms (the same float32 operations),
in one pass each instead of several tensor operations.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch


def _selection(t: torch.Tensor):
    """The C module when it runs on ``t`` here (float32 on the CPU, outside
    ``torch.compile``), else None (imported on first use: the Leaky package
    imports the adaptive step)."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or torch.compiler.is_compiling():
        return None
    from .leaky import native

    return native.c_module()


def abs_far(u: torch.Tensor) -> torch.Tensor:
    """``|u|`` in float32 with NaN as +infinity (a NaN membrane counts as far
    away: it must not poison its sample's step)."""
    return torch.nan_to_num(u.to(torch.float32).abs(), nan=math.inf)


def row_stats(u: torch.Tensor, k1: int, k2: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row of ``u [R, n]`` (float32): the ``k1``-th and ``k2``-th
    smallest of :func:`abs_far` (1-based) and the fraction of entries above
    0; three ``[R]`` float32 tensors."""
    if k1 > k2:
        q2, q1, fire = row_stats(u, k2, k1)
        return q1, q2, fire
    R, n = u.shape
    module = _selection(u)
    if module is None:
        a = abs_far(u)
        q1, q2 = kth_smallest2(a, k1, k2)
        return q1, q2, (u > 0).sum(1).to(torch.float32) / n
    u = u.contiguous()
    out = torch.empty(2, R, dtype=torch.float32)
    fire = torch.empty(R, dtype=torch.int64)
    module.rule_stats(u.data_ptr(), R, n, k1, k2, out[0].data_ptr(), out[1].data_ptr(), fire.data_ptr())
    return out[0], out[1], fire.to(torch.float32) / n


def floors(u: torch.Tensor, d: torch.Tensor, groups: int, x_q: float, x_e: float,
           ceil: float) -> torch.Tensor:
    """Each entry's step: the step ``d [R]`` of its row of ``u [R, n]`` (the
    ``n`` entries in ``groups`` channels of equal size), widened to the
    channel floor ``min(min over the channel of |u| / x_q, ceil)`` (``x_q > 0``)
    and the entry floor ``min(|u| / x_e, ceil)`` (``x_e > 0``, else every entry
    of a channel gets its channel's step); float32 shaped like ``u``."""
    R, n = u.shape
    module = _selection(u)
    if module is None:
        a = abs_far(u).reshape(R, groups, -1)
        dc = d.reshape(R, 1, 1)
        if x_q > 0:
            dc = torch.maximum(dc, (a.amin(2, keepdim=True) / x_q).clamp(max=ceil))
        if x_e > 0:
            return torch.maximum(dc, (a / x_e).clamp(max=ceil)).reshape(R, n)
        return dc.expand(R, groups, n // groups).reshape(R, n)
    u = u.contiguous()
    out = torch.empty(R, n, dtype=torch.float32)
    module.rule_floors(u.data_ptr(), d.contiguous().data_ptr(), R, groups, n // groups, x_q, x_e, ceil,
                       out.data_ptr())
    return out


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
