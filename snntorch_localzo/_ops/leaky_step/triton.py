"""Fused Triton kernels of one Leaky step with the LocalZO spike function.

Forward (one kernel): reset, state update, threshold, spike, and the
one-byte code of active samples with the reset flag in bit 7. Backward (one
kernel): the estimate from the code, then the gradients of the input and of
the previous membrane. Every operation rounds like its PyTorch counterpart in
``reference.py`` (float16/bfloat16 round after each operation).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...distributions import TABLE_SIZE, Distribution
from .. import zo_triton as zt


@triton.jit
def leaky_step_fwd_kernel(
    x_ptr,
    mem_ptr,
    spk_ptr,
    mem_out_ptr,
    code_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    beta_ptr,
    thr_ptr,
    graded_ptr,
    n,
    delta,
    kparam,
    RESET: tl.constexpr,
    HAS_MEM: tl.constexpr,
    KIND: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    DT: tl.constexpr = x_ptr.dtype.element_ty
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_MEM:
        m = tl.load(mem_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        m = tl.zeros(x.shape, dtype=tl.float32)
    b = zt.round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)
    thr = zt.round_to(tl.load(thr_ptr).to(tl.float32), DT)
    gr = zt.round_to(tl.load(graded_ptr).to(tl.float32), DT)
    reset = tl.where(zt.round_to(m - thr, DT) > 0.0, 1.0, 0.0)
    if RESET == 1:  # zero
        m = (1.0 - reset) * m
    new = zt.round_to(zt.round_to(b * m, DT) + x, DT)
    if RESET == 0:  # subtract
        new = zt.round_to(new - reset * thr, DT)
    u = zt.round_to(new - thr, DT)
    seed = tl.load(seed_ptr)
    code = zt.zo_code(
        tl.abs(u), offs, n, mask, seed, absz_ptr, table_ptr, delta, kparam,
        KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE,
    )
    code = code | (reset.to(tl.int32) << 7)
    spk = tl.where(u > 0.0, gr, 0.0)
    tl.store(spk_ptr + offs, zt.cast(spk, DT), mask=mask)
    tl.store(mem_out_ptr + offs, zt.cast(new, DT), mask=mask)
    tl.store(code_ptr + offs, code.to(tl.uint8), mask=mask)


@triton.jit
def leaky_step_bwd_kernel(
    gspk_ptr,
    gmem_ptr,
    code_ptr,
    gx_ptr,
    gmp_ptr,
    count_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    beta_ptr,
    graded_ptr,
    n,
    coef,
    kparam,
    RESET: tl.constexpr,
    HAS_GSPK: tl.constexpr,
    HAS_GMEM: tl.constexpr,
    NEED_GMP: tl.constexpr,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TRACK: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    DT: tl.constexpr = gx_ptr.dtype.element_ty
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    code = tl.load(code_ptr + offs, mask=mask, other=0).to(tl.int32)
    gm = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_GSPK:
        seed = tl.load(seed_ptr)
        g = zt.zo_grad(
            code, offs, n, mask, seed, absz_ptr, table_ptr, coef, kparam,
            KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE,
        )
        gr = zt.round_to(tl.load(graded_ptr).to(tl.float32), DT)
        gs = tl.load(gspk_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        gm = zt.round_to(zt.round_to(gs * gr, DT) * g, DT)
    if HAS_GMEM:
        gmem = tl.load(gmem_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        gm = zt.round_to(gmem + gm, DT)
    tl.store(gx_ptr + offs, zt.cast(gm, DT), mask=mask)
    if NEED_GMP:
        b = zt.round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)
        gmp = zt.round_to(gm * b, DT)
        if RESET == 1:  # zero: d mem' / d mem = beta * (1 - reset)
            gmp = tl.where((code & 128) != 0, 0.0 * gmp, gmp)
        tl.store(gmp_ptr + offs, zt.cast(gmp, DT), mask=mask)
    if TRACK:
        tl.atomic_add(count_ptr, tl.sum(((code & 127) != 0).to(tl.int32), axis=0))


def leaky_step_forward(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist: Distribution,
    samples: int,
    absz: Optional[torch.Tensor] = None,
):
    """Returns ``(spk, mem', code, seed)``; tensors must be contiguous."""
    spec = zt.zo_spec(dist, samples)
    n = x.numel()
    spk = torch.empty_like(x)
    mem_out = torch.empty_like(x)
    code = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    seed = zt.new_seed(x.device)
    table = zt.table_arg(dist, x.device)
    leaky_step_fwd_kernel[zt.grid(n)](
        x, x if mem is None else mem, spk, mem_out, code, seed,
        table if absz is None else absz, table, beta, threshold, graded,
        n, spec.delta, spec.kparam,
        RESET=reset_mechanism, HAS_MEM=mem is not None, KIND=spec.kind, M=samples,
        EXTERNAL=absz is not None, TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE,
        BLOCK=zt.BLOCK, **zt.launch_options(x.device),
    )
    return spk, mem_out, code, seed


def leaky_step_backward(
    grad_spk: Optional[torch.Tensor],
    grad_mem: Optional[torch.Tensor],
    code: torch.Tensor,
    seed: torch.Tensor,
    beta: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist: Distribution,
    samples: int,
    dtype: torch.dtype,
    need_grad_mem: bool,
    absz: Optional[torch.Tensor] = None,
    count: Optional[torch.Tensor] = None,
):
    """Returns ``(grad_x, grad_mem_prev or None)``."""
    spec = zt.zo_spec(dist, samples)
    n = code.numel()
    gx = torch.empty(code.shape, dtype=dtype, device=code.device)
    gmp = torch.empty_like(gx) if need_grad_mem else None
    table = zt.table_arg(dist, code.device)
    gspk = grad_spk.contiguous() if grad_spk is not None else None
    gmem = grad_mem.contiguous() if grad_mem is not None else None
    leaky_step_bwd_kernel[zt.grid(n)](
        gx if gspk is None else gspk, gx if gmem is None else gmem, code, gx,
        gx if gmp is None else gmp, table if count is None else count, seed,
        table if absz is None else absz, table, beta, graded, n, spec.coef, spec.kparam,
        RESET=reset_mechanism, HAS_GSPK=gspk is not None, HAS_GMEM=gmem is not None,
        NEED_GMP=need_grad_mem, KIND=spec.kind, P=spec.p, M=samples,
        EXTERNAL=absz is not None, TRACK=count is not None, TABLE_N=TABLE_SIZE,
        TABLE_SCALE=zt.TABLE_SCALE, BLOCK=zt.BLOCK, **zt.launch_options(code.device),
    )
    return gx, gmp
