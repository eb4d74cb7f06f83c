"""Triton kernel of the LocalZO spike function's backward.

The forward is the Heaviside step (one PyTorch op) and saves ``u``, as
snnTorch's surrogates do: snnTorch also calls the spike function to compute
its detached reset, so drawing anything in forward would be wasted there.
The backward is one kernel: it draws the directions from a Philox stream
seeded by torch's generator, computes the estimate, multiplies the incoming
gradient, and optionally counts the non-zero estimates. A spec that samples
by the incoming gradient (``make(sampling="gradient")``, the uniform law
with one direction) takes another kernel, one program per sample
(:func:`weighted_bwd_kernel`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import distributions as D
from .. import rng
from .. import triton_common as tc
from ...step import sample_rows
from ..spec import ZOSpec
from .op import register_backward


@triton.jit
def spike_bwd_kernel(
    grad_ptr,
    u_ptr,
    out_ptr,
    count_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    n,
    delta,
    coef,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TRACK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tc.block_offsets(BLOCK)
    mask = offs < n
    u = tl.load(u_ptr + offs, mask=mask, other=float("inf")).to(tl.float32)
    seed = tl.load(seed_ptr)
    g = tc.zo_estimate(
        tl.abs(u), offs, n, mask, seed, absz_ptr, table_ptr, delta, coef, kparam,
        KIND, P, M, EXTERNAL,
    )
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, tc.cast(grad * g, out_ptr.dtype.element_ty), mask=mask)
    if TRACK:
        tc.count_active(count_ptr, g, mask)


@triton.jit
def _weighted_terms(u_ptr, grad_ptr, offs, mask, law_delta, sqrt3_64, denom, inv_h, edge):
    """An entry's expected value ``g`` (float32, the reference's bits), the
    law's active probability ``p`` and the weight ``w = |g grad|`` (float64;
    ``p`` 0 at a NaN membrane, ``w`` 0 where not finite)."""
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.math.div_rn(u, law_delta.to(tl.float32))
    g = tl.math.div_rn(3.0 - v * v, denom)
    g = tl.where(tl.abs(v) < edge, g, 0.0) * inv_h
    x = tl.abs(u).to(tl.float64) / law_delta / sqrt3_64
    p = tl.where(x <= 1.0, 1.0 - x, 0.0)
    go = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.abs(g.to(tl.float64) * go.to(tl.float64))
    w = tl.where((w == w) & (w < float("inf")) & mask, w, 0.0)
    return g, tl.where(mask, p, 0.0), w, go


@triton.jit
def weighted_bwd_kernel(
    grad_ptr, u_ptr, out_ptr, count_ptr, seed_ptr, unif_ptr, consts_ptr, n, denom, inv_h, edge,
    EXTERNAL: tl.constexpr, TRACK: tl.constexpr, BLOCK: tl.constexpr,
):
    """One sample (row of ``n`` entries at ``u / step``): the budget
    ``K = sum p`` and ``S = sum w``, then capping rounds (``out`` holds the
    capped flags meanwhile) until none is new, then the draw: one uniform per
    entry (Philox from the seed, or given), ``out = grad * (g / q)`` where it
    falls below ``q = min(1, c w)`` (1 where capped), ``grad * 0`` elsewhere.
    ``_ops/weighted.py`` is the reference; its sums run in another order."""
    base = tl.program_id(0).to(tl.int64) * n
    law_delta = tl.load(consts_ptr)
    sqrt3_64 = tl.load(consts_ptr + 1)
    K = tl.zeros((), tl.float64)
    S = tl.zeros((), tl.float64)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < n
        g, p, w, go = _weighted_terms(u_ptr, grad_ptr, base + idx, mask, law_delta, sqrt3_64, denom, inv_h, edge)
        K += tl.sum(p, axis=0)
        S += tl.sum(w, axis=0)
        tl.store(out_ptr + base + idx, tl.zeros((BLOCK,), tl.float32), mask=mask)
    ncap = tl.zeros((), tl.float64)
    free = S
    c = tl.zeros((), tl.float64)
    changed = 1
    while changed != 0:
        left = tl.maximum(K - ncap, 0.0)
        c = tl.where(free > 0.0, left / tl.where(free > 0.0, free, 1.0), 0.0)
        now = tl.zeros((), tl.float64)
        rest = tl.zeros((), tl.float64)
        for start in range(0, n, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            mask = idx < n
            g, p, w, go = _weighted_terms(u_ptr, grad_ptr, base + idx, mask, law_delta, sqrt3_64, denom, inv_h,
                                          edge)
            was = tl.load(out_ptr + base + idx, mask=mask, other=0.0) != 0.0
            cap = was | ((w > 0.0) & (c * w >= 1.0))
            tl.store(out_ptr + base + idx, cap.to(tl.float32), mask=mask)
            now += tl.sum((cap & mask).to(tl.float64), axis=0)
            rest += tl.sum(tl.where(cap, 0.0, w), axis=0)
        changed = (now != ncap).to(tl.int32)
        ncap = now
        free = rest
    seed = tl.load(seed_ptr)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < n
        g, p, w, go = _weighted_terms(u_ptr, grad_ptr, base + idx, mask, law_delta, sqrt3_64, denom, inv_h, edge)
        cap = tl.load(out_ptr + base + idx, mask=mask, other=0.0) != 0.0
        q = tl.where(cap, 1.0, tl.minimum(c * w, 1.0))
        if EXTERNAL:
            r = tl.load(unif_ptr + base + idx, mask=mask, other=1.0).to(tl.float32)
        else:
            r = tl.rand(seed, (base + idx).to(tl.int32))
        on = (r.to(tl.float64) < q) & mask
        est = tl.where(on, g.to(tl.float64) / tl.where(on, q, 1.0), 0.0).to(tl.float32)
        tl.store(out_ptr + base + idx, tc.cast(go * est, out_ptr.dtype.element_ty), mask=mask)
        if TRACK:
            tc.count_active(count_ptr, est, mask)


def _weighted_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, unif, acc) -> torch.Tensor:
    """``grad_out`` times the weighted estimate at ``u`` (as the estimate sees
    it: ``spec.scale(u)``), one program per sample; ``unif``: the test hook's
    uniforms (shaped like ``u``) or None."""
    u = u.contiguous()
    n_all = u.numel()
    grad_out = grad_out.to(torch.float32).contiguous()
    out = torch.empty_like(u, dtype=torch.float32)
    if not n_all:
        return out.to(grad_out.dtype)
    rows = sample_rows(u.shape)[0]
    law = spec.law
    consts = tc.float64_constants(u.device, (float(law.delta), D.SQRT3))
    seed = rng.philox_seed(u.device)
    count, track = tc.meter_target(acc, n_all, table)
    with tc.on_device(u):
        weighted_bwd_kernel[(rows,)](
            grad_out, u, out, count, seed, table if unif is None else unif.to(torch.float32).contiguous(), consts,
            n_all // rows, float(law.denominator), spec.inverse_height(), D.SQRT3,
            EXTERNAL=unif is not None, TRACK=track, BLOCK=tc.BLOCK, **tc.LAUNCH,
        )
    return out


def _backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz, acc) -> torch.Tensor:
    """``grad_out * G(u)``; adds the number of non-zero estimates to the meter
    ``acc`` (unless it is empty)."""
    if spec.weighted:
        return _weighted_backward(grad_out, u, spec, table, absz, acc).to(grad_out.dtype)
    u = u.contiguous()
    n = u.numel()
    grad_out = grad_out.contiguous()
    out = torch.empty_like(u, dtype=grad_out.dtype)
    seed = rng.philox_seed(u.device)
    count, track = tc.meter_target(acc, n, table)
    with tc.on_device(u):
        spike_bwd_kernel[tc.grid(n)](
            grad_out, u, out, count, seed,
            table if absz is None else absz, table, n, spec.delta, spec.coef, spec.kparam,
            KIND=spec.kind, P=spec.p, M=spec.samples, EXTERNAL=absz is not None,
            TRACK=track, BLOCK=tc.BLOCK, **tc.LAUNCH,
        )
    return out


spike_backward = register_backward("triton", _backward)
