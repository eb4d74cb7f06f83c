"""Fused Triton kernels of the Leaky neuron with the LocalZO spike function,
over a whole sequence ``[T, n]`` (a single step is ``T = 1``).

Forward (one kernel, a time loop per block of neurons): reset, state update,
threshold, spike, and the one-byte code of each step (active samples in bits
0-6, the reset flag in bit 7). Backward (one kernel, the time loop reversed):
the estimate from the code, the gradient of the input at every step, the
gradient carried to the previous membrane. Every operation rounds like its
PyTorch counterpart in ``reference.py`` (float16/bfloat16 round after each
operation), so results equal the reference, and chained steps, bit for bit.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...distributions import TABLE_SIZE, Distribution
from .. import zo_triton as zt


@triton.jit
def leaky_fwd_kernel(
    x_ptr,
    mem0_ptr,
    spk_ptr,
    mem_ptr,
    code_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    beta_ptr,
    thr_ptr,
    graded_ptr,
    T,
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
    if HAS_MEM:
        m = tl.load(mem0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        m = tl.zeros([BLOCK], dtype=tl.float32)
    b = zt.round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)
    thr = zt.round_to(tl.load(thr_ptr).to(tl.float32), DT)
    gr = zt.round_to(tl.load(graded_ptr).to(tl.float32), DT)
    seed = tl.load(seed_ptr)
    stride = T * n
    for t in range(T):
        step = t * n + offs
        x = tl.load(x_ptr + step, mask=mask, other=0.0).to(tl.float32)
        reset = tl.where(zt.round_to(m - thr, DT) > 0.0, 1.0, 0.0)
        if RESET == 1:  # zero
            m = (1.0 - reset) * m
        m = zt.round_to(zt.round_to(b * m, DT) + x, DT)
        if RESET == 0:  # subtract
            m = zt.round_to(m - reset * thr, DT)
        u = zt.round_to(m - thr, DT)
        code = zt.zo_code(
            tl.abs(u), step, stride, mask, seed, absz_ptr, table_ptr, delta, kparam,
            KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE,
        )
        code = code | (reset.to(tl.int32) << 7)
        tl.store(spk_ptr + step, zt.cast(tl.where(u > 0.0, gr, 0.0), DT), mask=mask)
        tl.store(mem_ptr + step, zt.cast(m, DT), mask=mask)
        tl.store(code_ptr + step, code.to(tl.uint8), mask=mask)


@triton.jit
def leaky_bwd_kernel(
    gspk_ptr,
    gmem_ptr,
    code_ptr,
    gx_ptr,
    gmem0_ptr,
    count_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    beta_ptr,
    graded_ptr,
    T,
    n,
    coef,
    kparam,
    RESET: tl.constexpr,
    HAS_GSPK: tl.constexpr,
    HAS_GMEM: tl.constexpr,
    NEED_GMEM0: tl.constexpr,
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
    b = zt.round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)
    gr = zt.round_to(tl.load(graded_ptr).to(tl.float32), DT)
    seed = tl.load(seed_ptr)
    stride = T * n
    carry = tl.zeros([BLOCK], dtype=tl.float32)  # gradient reaching mem[t] from step t + 1
    active = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(T):
        t = T - 1 - i
        step = t * n + offs
        code = tl.load(code_ptr + step, mask=mask, other=0).to(tl.int32)
        # what autograd accumulates on mem[t]: the caller's gradient plus the next step's
        if HAS_GMEM:
            gm = zt.round_to(tl.load(gmem_ptr + step, mask=mask, other=0.0).to(tl.float32) + carry, DT)
        else:
            gm = carry
        if HAS_GSPK:
            g = zt.zo_grad(
                code, step, stride, mask, seed, absz_ptr, table_ptr, coef, kparam,
                KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE,
            )
            gs = tl.load(gspk_ptr + step, mask=mask, other=0.0).to(tl.float32)
            gm = zt.round_to(gm + zt.round_to(zt.round_to(gs * gr, DT) * g, DT), DT)
        tl.store(gx_ptr + step, zt.cast(gm, DT), mask=mask)
        carry = zt.round_to(gm * b, DT)
        if RESET == 1:  # zero: d mem[t] / d mem[t-1] = beta * (1 - reset[t])
            carry = tl.where((code & 128) != 0, 0.0 * carry, carry)
        if TRACK:
            active += ((code & 127) != 0).to(tl.int32)
    if NEED_GMEM0:
        tl.store(gmem0_ptr + offs, zt.cast(carry, DT), mask=mask)
    if TRACK:
        tl.atomic_add(count_ptr, tl.sum(active, axis=0))


def leaky_forward(
    x: torch.Tensor,
    mem0: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist: Distribution,
    samples: int,
    absz: Optional[torch.Tensor] = None,
    steps: Optional[int] = None,
):
    """``x``: contiguous, ``steps`` time steps along its first dimension (None: all of
    it), or one step when ``steps=1`` and ``x`` has no time dimension. Returns
    ``(spk, mem, code, seed)`` shaped like ``x``."""
    spec = zt.zo_spec(dist, samples)
    T = x.shape[0] if steps is None else steps
    n = x.numel() // max(T, 1)
    spk = torch.empty_like(x)
    mem = torch.empty_like(x)
    code = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    seed = zt.new_seed(x.device)
    table = zt.table_arg(dist, x.device)
    leaky_fwd_kernel[zt.grid(n)](
        x, x if mem0 is None else mem0, spk, mem, code, seed,
        table if absz is None else absz, table, beta, threshold, graded,
        T, n, spec.delta, spec.kparam,
        RESET=reset_mechanism, HAS_MEM=mem0 is not None, KIND=spec.kind, M=samples,
        EXTERNAL=absz is not None, TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE,
        BLOCK=zt.BLOCK, **zt.launch_options(x.device),
    )
    return spk, mem, code, seed


def leaky_backward(
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
    mem0_shape: Optional[torch.Size],
    absz: Optional[torch.Tensor] = None,
    count: Optional[torch.Tensor] = None,
    steps: Optional[int] = None,
):
    """Returns ``(grad_x shaped like code, grad_mem0 of mem0_shape or None)``."""
    spec = zt.zo_spec(dist, samples)
    T = code.shape[0] if steps is None else steps
    n = code.numel() // max(T, 1)
    need_grad_mem0 = mem0_shape is not None
    gx = torch.empty(code.shape, dtype=dtype, device=code.device)
    gmem0 = torch.empty(mem0_shape, dtype=dtype, device=code.device) if need_grad_mem0 else None
    table = zt.table_arg(dist, code.device)
    gspk = grad_spk.contiguous() if grad_spk is not None else None
    gmem = grad_mem.contiguous() if grad_mem is not None else None
    leaky_bwd_kernel[zt.grid(n)](
        gx if gspk is None else gspk, gx if gmem is None else gmem, code, gx,
        gx if gmem0 is None else gmem0, table if count is None else count, seed,
        table if absz is None else absz, table, beta, graded, T, n, spec.coef, spec.kparam,
        RESET=reset_mechanism, HAS_GSPK=gspk is not None, HAS_GMEM=gmem is not None,
        NEED_GMEM0=need_grad_mem0, KIND=spec.kind, P=spec.p, M=samples,
        EXTERNAL=absz is not None, TRACK=count is not None, TABLE_N=TABLE_SIZE,
        TABLE_SCALE=zt.TABLE_SCALE, BLOCK=zt.BLOCK, **zt.launch_options(code.device),
    )
    return gx, gmem0
