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

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ...distributions import TABLE_SIZE
from ...stats import ACTIVE, LAST_ACTIVE, prepare_for_kernel
from .. import oplib, rng
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
    ACTIVE_SLOT: tl.constexpr = ACTIVE,
    LAST_ACTIVE_SLOT: tl.constexpr = LAST_ACTIVE,
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
    if TRACK:  # the meter's accumulator: this call's and the window's count
        total = tl.sum(active, axis=0).to(tl.int64)
        tl.atomic_add(count_ptr + ACTIVE_SLOT, total)
        tl.atomic_add(count_ptr + LAST_ACTIVE_SLOT, total)


def _forward(
    x: torch.Tensor,
    mem0: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist_name: str,
    dist_params: List[float],
    samples: int,
    absz: Optional[torch.Tensor],
    steps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x``: dense, ``steps`` time steps along its first dimension, or one step
    without a time dimension when ``steps == 0``; ``mem0`` (optional) with the
    strides of one step of ``x``. Returns ``(spk, mem, code, seed)`` like ``x``."""
    dist = oplib.dist_from(dist_name, dist_params)
    spec = zt.zo_spec(dist, samples)
    T = max(steps, 1)
    n = x.numel() // T
    spk = torch.empty_like(x)
    mem = torch.empty_like(x)
    code = torch.empty_like(x, dtype=torch.uint8)
    seed = rng.philox_seed(x.device)
    table = zt.table_arg(dist, x.device)
    leaky_fwd_kernel[zt.scan_grid(n)](
        x, x if mem0 is None else mem0, spk, mem, code, seed,
        table if absz is None else absz, table, beta, threshold, graded,
        T, n, spec.delta, spec.kparam,
        RESET=reset_mechanism, HAS_MEM=mem0 is not None, KIND=spec.kind, M=samples,
        EXTERNAL=absz is not None, TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE,
        BLOCK=zt.SCAN_BLOCK, **zt.launch_options(x.device),
    )
    return spk, mem, code, seed


def _forward_fake(x, mem0, beta, threshold, graded, reset_mechanism, dist_name, dist_params,
                  samples, absz, steps):
    return (
        torch.empty_like(x),
        torch.empty_like(x),
        torch.empty_like(x, dtype=torch.uint8),
        torch.empty(1, dtype=torch.int64, device=x.device),
    )


def _state_like(code: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """An empty membrane of one step, with the layout of ``code``'s steps."""
    one = code if steps == 0 else code[0]
    return torch.empty_like(one, dtype=dtype)


def _backward(
    grad_spk: Optional[torch.Tensor],
    grad_mem: Optional[torch.Tensor],
    code: torch.Tensor,
    seed: torch.Tensor,
    beta: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist_name: str,
    dist_params: List[float],
    samples: int,
    dtype: torch.dtype,
    need_grad_mem0: bool,
    absz: Optional[torch.Tensor],
    acc: torch.Tensor,
    steps: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(grad_x like code, grad_mem0)`` (``grad_mem0`` is empty when
    not needed). Incoming gradients are brought to ``code``'s layout; the
    non-zero estimates are counted into the meter ``acc`` unless it is empty."""
    dist = oplib.dist_from(dist_name, dist_params)
    spec = zt.zo_spec(dist, samples)
    T = max(steps, 1)
    n = code.numel() // T
    gx = torch.empty_like(code, dtype=dtype)
    gmem0 = _state_like(code, steps, dtype) if need_grad_mem0 else gx.new_empty(0)
    table = zt.table_arg(dist, code.device)
    gspk = zt.like(grad_spk, gx) if grad_spk is not None else None
    gmem = zt.like(grad_mem, gx) if grad_mem is not None else None
    track = acc.numel() > 0
    if track:
        prepare_for_kernel(acc, code.numel())
    leaky_bwd_kernel[zt.scan_grid(n)](
        gx if gspk is None else gspk, gx if gmem is None else gmem, code, gx,
        gmem0 if need_grad_mem0 else gx, acc if track else table, seed,
        table if absz is None else absz, table, beta, graded, T, n, spec.coef, spec.kparam,
        RESET=reset_mechanism, HAS_GSPK=gspk is not None, HAS_GMEM=gmem is not None,
        NEED_GMEM0=need_grad_mem0, KIND=spec.kind, P=spec.p, M=samples,
        EXTERNAL=absz is not None, TRACK=track, TABLE_N=TABLE_SIZE,
        TABLE_SCALE=zt.TABLE_SCALE, BLOCK=zt.SCAN_BLOCK, **zt.launch_options(code.device),
    )
    return gx, gmem0


def _backward_fake(grad_spk, grad_mem, code, seed, beta, graded, reset_mechanism, dist_name,
                   dist_params, samples, dtype, need_grad_mem0, absz, acc, steps):
    gx = torch.empty_like(code, dtype=dtype)
    return gx, (_state_like(code, steps, dtype) if need_grad_mem0 else gx.new_empty(0))


leaky_forward = oplib.register("leaky_forward", _forward, _forward_fake, seeded=True)
leaky_backward = oplib.register("leaky_backward", _backward, _backward_fake, mutates=("acc",))
