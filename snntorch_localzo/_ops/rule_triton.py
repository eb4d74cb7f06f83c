"""The adaptive step's whole rule as one Triton kernel (CUDA; the CPU through
Triton's interpreter): one program per sample computes the step of every
entry of its row, the same bits as ``_scan.c``'s ``rule_delta`` and the
PyTorch form of :meth:`AdaptiveDelta.delta
<snntorch_localzo.adaptive.AdaptiveDelta.delta>`, so that the rule costs one
launch instead of some fifty tensor operations.

Per row of ``n`` entries (``|u|`` with NaN as +inf):

* the firing count, the smallest and the largest order-preserving key (the
  bits of a non-negative float as an int32);
* each wanted order statistic by bisection on the keys: the smallest key
  ``t`` with at least ``k`` keys ``<= t``, one counting pass per step (at
  most 31 steps);
* the row's step from the statistics in float64 (``AdaptiveDelta.row_step``);
* per channel group the channel floor, then per entry the entry floor
  (float32, ``order.floors``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_common as tc

#: Entries a program reads at a time.
RULE_BLOCK = 1024
_INT_MAX: tl.constexpr = tl.constexpr(2**31 - 1)


@triton.jit
def _kth_key(base, n, k, lo, hi, BLOCK: tl.constexpr):
    """The k-th smallest key of the row at ``base`` (``lo``, ``hi``: its
    smallest and largest key)."""
    while lo < hi:
        mid = lo + (hi - lo) // 2
        c = tl.zeros((), tl.int32)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            v = tl.load(base + offs, mask=offs < n, other=0.0)
            a = tl.where(v != v, float("inf"), tl.abs(v))
            key = a.to(tl.int32, bitcast=True)
            c += tl.sum(((key <= mid) & (offs < n)).to(tl.int32), axis=0)
        if c >= k:
            hi = mid
        else:
            lo = mid + 1
    return hi


@triton.jit
def rule_delta_kernel(
    u_ptr, out_ptr, consts_ptr, n, groups, pos, k1, k2, x_q, x_e, BLOCK: tl.constexpr,
):
    # the float64 constants: rate, low, high, x_med, floor, ceil
    rate = tl.load(consts_ptr)
    low = tl.load(consts_ptr + 1)
    high = tl.load(consts_ptr + 2)
    x_med = tl.load(consts_ptr + 3)
    floor = tl.load(consts_ptr + 4)
    ceil = tl.load(consts_ptr + 5)
    row = tl.program_id(0).to(tl.int64)
    base = u_ptr + row * n
    count = tl.zeros((), tl.int32)
    kmin = tl.full((), _INT_MAX, tl.int32)
    kmax = tl.zeros((), tl.int32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < n
        v = tl.load(base + offs, mask=m, other=0.0)
        count += tl.sum(((v > 0) & m).to(tl.int32), axis=0)
        a = tl.where(v != v, float("inf"), tl.abs(v))
        key = a.to(tl.int32, bitcast=True)
        kmin = tl.minimum(kmin, tl.min(tl.where(m, key, _INT_MAX), axis=0))
        kmax = tl.maximum(kmax, tl.max(tl.where(m, key, 0), axis=0))
    w = 1.0 - (count.to(tl.float64) / n) / rate
    w = tl.minimum(tl.maximum(w, 0.0), 1.0)
    qa = tl.zeros((), tl.float64)
    qb = tl.zeros((), tl.float64)
    if w < 1.0:
        qa = _kth_key(base, n, k1, kmin, kmax, BLOCK).to(tl.float32, bitcast=True).to(tl.float64)
    if w > 0.0:
        qb = _kth_key(base, n, k2, kmin, kmax, BLOCK).to(tl.float32, bitcast=True).to(tl.float64)
    qa = tl.minimum(tl.maximum(qa, low), high)
    qb = tl.minimum(tl.maximum(qb, low), high)
    t = qa
    if w >= 1.0:
        t = qb
    elif w > 0.0:
        la = tl.log(qa)
        lb = tl.log(qb)
        if w < 0.5:
            t = tl.exp(la + w * (lb - la))
        else:
            t = tl.exp(lb - (lb - la) * (1.0 - w))
    t = t / x_med
    t = tl.minimum(tl.maximum(t, floor), ceil)
    d = t.to(tl.float32)
    ceil32 = ceil.to(tl.float32)
    for g in range(0, groups):
        gbase = base + g * pos
        obase = out_ptr + row * n + g * pos
        dc = d
        if x_q > 0:
            near = tl.full((), float("inf"), tl.float32)
            for start in range(0, pos, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                v = tl.load(gbase + offs, mask=offs < pos, other=float("inf"))
                a = tl.where(v != v, float("inf"), tl.abs(v))
                near = tl.minimum(near, tl.min(a, axis=0))
            f = tl.minimum(near / x_q, ceil32)
            dc = tl.maximum(dc, f)
        for start in range(0, pos, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            m = offs < pos
            if x_e > 0:
                v = tl.load(gbase + offs, mask=m, other=0.0)
                a = tl.where(v != v, float("inf"), tl.abs(v))
                f = tl.minimum(a / x_e, ceil32)
                tl.store(obase + offs, tl.maximum(f, dc), mask=m)
            else:
                tl.store(obase + offs, tl.zeros((BLOCK,), tl.float32) + dc, mask=m)


def rule_delta(u: torch.Tensor, rule) -> torch.Tensor:
    """The step of every entry of ``u [R, n]`` (float32, contiguous) by the
    kernel, given the rule's constants (:meth:`AdaptiveDelta.constants`)."""
    rows, n = u.shape
    out = torch.empty_like(u)
    if rows and n:
        block = min(RULE_BLOCK, triton.next_power_of_2(n))
        consts = tc.float64_constants(u.device, (rule.rate, rule.low, rule.high, rule.x_med, rule.floor, rule.ceil))
        rule_delta_kernel[(rows,)](u, out, consts, n, rule.groups, n // rule.groups, rule.k1, rule.k2,
                                   float(rule.x_q), float(rule.x_e), BLOCK=block)
    return out

