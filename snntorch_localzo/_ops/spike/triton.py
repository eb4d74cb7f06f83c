"""Triton kernels of the LocalZO spike function (one forward, one backward).

Forward: spikes ``1[u > 0]`` and the one-byte code of active samples.
Backward: ``grad_in = grad_out * G``, ``G`` regenerated from the code and the
Philox seed; optionally counts the non-zero estimates (sparsity meter).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...distributions import TABLE_SIZE, Distribution
from .. import zo_triton as zt


@triton.jit
def spike_fwd_kernel(
    u_ptr,
    spk_ptr,
    code_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    n,
    delta,
    kparam,
    KIND: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    seed = tl.load(seed_ptr)
    code = zt.zo_code(
        tl.abs(u), offs, n, mask, seed, absz_ptr, table_ptr, delta, kparam,
        KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE,
    )
    spk = tl.where(u > 0.0, 1.0, 0.0)
    tl.store(spk_ptr + offs, spk.to(spk_ptr.dtype.element_ty), mask=mask)
    tl.store(code_ptr + offs, code.to(tl.uint8), mask=mask)


@triton.jit
def spike_bwd_kernel(
    grad_ptr,
    code_ptr,
    out_ptr,
    count_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    n,
    coef,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TRACK: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    code = tl.load(code_ptr + offs, mask=mask, other=0).to(tl.int32)
    seed = tl.load(seed_ptr)
    g = zt.zo_grad(
        code, offs, n, mask, seed, absz_ptr, table_ptr, coef, kparam,
        KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE,
    )
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, zt.cast(grad * g, out_ptr.dtype.element_ty), mask=mask)
    if TRACK:
        tl.atomic_add(count_ptr, tl.sum((code != 0).to(tl.int32), axis=0))


def spike_forward(
    u: torch.Tensor, dist: Distribution, samples: int, absz: Optional[torch.Tensor] = None
):
    """Returns ``(spikes, code, seed)``; ``u`` must be contiguous."""
    spec = zt.zo_spec(dist, samples)
    n = u.numel()
    spk = torch.empty_like(u)
    code = torch.empty(u.shape, dtype=torch.uint8, device=u.device)
    seed = zt.new_seed(u.device)
    table = zt.table_arg(dist, u.device)
    spike_fwd_kernel[zt.grid(n)](
        u, spk, code, seed, table if absz is None else absz, table, n,
        spec.delta, spec.kparam,
        KIND=spec.kind, M=samples, EXTERNAL=absz is not None,
        TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE, BLOCK=zt.BLOCK,
        **zt.launch_options(u.device),
    )
    return spk, code, seed


def spike_backward(
    grad_out: torch.Tensor,
    code: torch.Tensor,
    seed: torch.Tensor,
    dist: Distribution,
    samples: int,
    absz: Optional[torch.Tensor] = None,
    count: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``grad_out * G``; adds the number of non-zero estimates to ``count``."""
    spec = zt.zo_spec(dist, samples)
    n = code.numel()
    grad_out = grad_out.contiguous()
    out = torch.empty_like(grad_out)
    table = zt.table_arg(dist, code.device)
    spike_bwd_kernel[zt.grid(n)](
        grad_out, code, out, table if count is None else count, seed,
        table if absz is None else absz, table, n, spec.coef, spec.kparam,
        KIND=spec.kind, P=spec.p, M=samples, EXTERNAL=absz is not None,
        TRACK=count is not None, TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE,
        BLOCK=zt.BLOCK, **zt.launch_options(code.device),
    )
    return out
