"""Triton kernel of the LocalZO spike function's backward.

The forward is the Heaviside step (one PyTorch op) and saves ``u``, as
snnTorch's surrogates do: snnTorch also calls the spike function to compute
its detached reset, so drawing anything in forward would be wasted there.
The backward is one kernel: it draws the directions from a Philox stream
seeded by torch's generator, computes the estimate, multiplies the incoming
gradient, and optionally counts the non-zero estimates.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import rng
from .. import triton_common as tc
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


def _backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz, acc) -> torch.Tensor:
    """``grad_out * G(u)``; adds the number of non-zero estimates to the meter
    ``acc`` (unless it is empty)."""
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
