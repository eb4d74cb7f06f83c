"""Triton kernels of the Leaky neuron with the LocalZO spike function, over a
whole sequence ``[T, n]`` (a single step is ``T = 1``).

Forward: ``leaky_scan_fwd_kernel`` walks the time loop for a block of
neurons (reset, state update, threshold, spike); when a backward pass will
follow, ``leaky_code_kernel`` then draws the directions for every entry in
parallel and writes the one-byte code (``layout.py``). Under
``torch.no_grad()`` nothing is drawn.

Backward: ``leaky_estimate_kernel`` turns codes into the gradient reaching
each membrane through its spike, in parallel and regenerating Philox only in
blocks with an active entry; ``leaky_scan_bwd_kernel`` walks the time loop
backwards. Every operation rounds like its PyTorch counterpart in
``reference.py`` (float16/bfloat16 round after each operation), so results
equal the reference, and chained steps, bit for bit.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .. import oplib, rng
from .. import triton_common as tc
from ..spec import ZOSpec


@triton.jit
def leaky_scan_fwd_kernel(
    x_ptr, mem0_ptr, spk_ptr, mem_ptr, beta_ptr, thr_ptr, graded_ptr, T, n,
    RESET: tl.constexpr, HAS_MEM: tl.constexpr, BLOCK: tl.constexpr,
):
    DT: tl.constexpr = x_ptr.dtype.element_ty
    offs = tc.block_offsets(BLOCK)
    mask = offs < n
    if HAS_MEM:
        m = tl.load(mem0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        m = tl.zeros([BLOCK], dtype=tl.float32)
    b = tc.load_beta(beta_ptr, DT)
    thr = tc.load_param(thr_ptr, DT)
    gr = tc.load_param(graded_ptr, DT)
    for t in range(T):
        step = tc.step_offsets(t, n, offs)
        x = tl.load(x_ptr + step, mask=mask, other=0.0).to(tl.float32)
        reset = tl.where(tc.round_to(m - thr, DT) > 0.0, 1.0, 0.0)
        if RESET == tc.RESET_ZERO:
            m = (1.0 - reset) * m
        m = tc.round_to(tc.round_to(b * m, DT) + x, DT)
        if RESET == tc.RESET_SUBTRACT:
            m = tc.round_to(m - reset * thr, DT)
        u = tc.round_to(m - thr, DT)
        tl.store(spk_ptr + step, tc.cast(tl.where(u > 0.0, gr, 0.0), DT), mask=mask)
        tl.store(mem_ptr + step, tc.cast(m, DT), mask=mask)


@triton.jit
def leaky_code_kernel(
    mem_ptr, mem0_ptr, code_ptr, seed_ptr, absz_ptr, table_ptr, thr_ptr, step_ptr, total, n, dn,
    delta, kparam,
    HAS_MEM: tl.constexpr, KIND: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
    ADAPTIVE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Code of every entry of ``mem [T, n]`` (``total = T n``): the active
    directions at ``u = mem - thr`` and the reset flag ``mem[t-1] > thr``.
    ``ADAPTIVE``: at ``u / delta_t`` instead, ``delta_t`` of step ``t`` from
    ``step_ptr [T, dn]`` (laid out like ``mem``: ``dn = n``, one step per entry), divided
    with IEEE rounding as the reference's ``u / delta_t``."""
    DT: tl.constexpr = mem_ptr.dtype.element_ty
    offs = tc.block_offsets(BLOCK)
    mask = offs < total
    thr = tc.load_param(thr_ptr, DT)
    m = tl.load(mem_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    first = offs < n
    prev = tl.load(mem_ptr + offs - n, mask=mask & (offs >= n), other=0.0).to(tl.float32)
    if HAS_MEM:
        prev0 = tl.load(mem0_ptr + offs, mask=mask & first, other=0.0).to(tl.float32)
        prev = tl.where(first, prev0, prev)
    reset = (tc.round_to(prev - thr, DT) > 0.0).to(tl.int32)
    u = tc.round_to(m - thr, DT)
    if ADAPTIVE:
        d = tl.load(step_ptr + (offs // n) * dn + offs % dn, mask=mask, other=1.0).to(tl.float32)
        u = tc.round_to(tl.math.div_rn(u, d), DT)
    seed = tl.load(seed_ptr)
    code = tc.zo_code(
        tl.abs(u), offs, total, mask, seed, absz_ptr, table_ptr, delta, kparam, KIND, M, EXTERNAL,
    )
    code = code | (reset << tc.RESET_BIT)
    tl.store(code_ptr + offs, code.to(tl.uint8), mask=mask)


@triton.jit
def leaky_estimate_kernel(
    gspk_ptr, code_ptr, e_ptr, count_ptr, seed_ptr, absz_ptr, table_ptr, graded_ptr, total,
    coef, kparam,
    KIND: tl.constexpr, P: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
    TRACK: tl.constexpr, BLOCK: tl.constexpr,
):
    """``e = round(round(gspk * graded) * G)`` for every entry: what reaches the
    membrane through the spike. Philox runs only in blocks with an active code."""
    DT: tl.constexpr = e_ptr.dtype.element_ty
    offs = tc.block_offsets(BLOCK)
    mask = offs < total
    code = tl.load(code_ptr + offs, mask=mask, other=0).to(tl.int32)
    if tl.max(code & tc.SAMPLE_MASK, axis=0) != 0:
        seed = tl.load(seed_ptr)
        g = tc.zo_grad(
            code, offs, total, mask, seed, absz_ptr, table_ptr, coef, kparam, KIND, P, M, EXTERNAL,
        )
    else:
        g = tl.zeros([BLOCK], dtype=tl.float32)
    gr = tc.load_param(graded_ptr, DT)
    gs = tl.load(gspk_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    e = tc.round_to(tc.round_to(gs * gr, DT) * g, DT)
    tl.store(e_ptr + offs, tc.cast(e, DT), mask=mask)
    if TRACK:
        tc.count_active(count_ptr, g, mask)


@triton.jit
def leaky_scan_bwd_kernel(
    e_ptr, gmem_ptr, code_ptr, gx_ptr, gmem0_ptr, beta_ptr, T, n,
    RESET: tl.constexpr, HAS_E: tl.constexpr, HAS_GMEM: tl.constexpr,
    NEED_GMEM0: tl.constexpr, BLOCK: tl.constexpr,
):
    DT: tl.constexpr = gx_ptr.dtype.element_ty
    offs = tc.block_offsets(BLOCK)
    mask = offs < n
    b = tc.load_beta(beta_ptr, DT)
    carry = tl.zeros([BLOCK], dtype=tl.float32)  # gradient reaching mem[t] from step t + 1
    for i in range(T):
        t = T - 1 - i
        step = tc.step_offsets(t, n, offs)
        # what autograd accumulates on mem[t]: the caller's gradient plus the next step's
        if HAS_GMEM:
            gm = tc.round_to(tl.load(gmem_ptr + step, mask=mask, other=0.0).to(tl.float32) + carry, DT)
        else:
            gm = carry
        if HAS_E:
            gm = tc.round_to(gm + tl.load(e_ptr + step, mask=mask, other=0.0).to(tl.float32), DT)
        tl.store(gx_ptr + step, tc.cast(gm, DT), mask=mask)
        carry = tc.round_to(gm * b, DT)
        if RESET == tc.RESET_ZERO:  # d mem[t] / d mem[t-1] = beta * (1 - reset[t])
            code = tl.load(code_ptr + step, mask=mask, other=0).to(tl.int32)
            carry = tl.where((code & tc.RESET_FLAG) != 0, 0.0 * carry, carry)
    if NEED_GMEM0:
        tl.store(gmem0_ptr + offs, tc.cast(carry, DT), mask=mask)


# ------------------------------------------------------------------ launchers
def _forward(
    x: torch.Tensor, mem0: Optional[torch.Tensor], beta: torch.Tensor, threshold: torch.Tensor,
    graded: torch.Tensor, table: torch.Tensor, absz: Optional[torch.Tensor],
    *, reset: int, spec_ints: List[int], spec_floats: List[float], steps: int, need_code: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x``: dense, ``steps`` time steps along its first dimension, or one step
    without a time dimension when ``steps == 0``; ``mem0`` (optional) with the
    strides of one step of ``x``. Returns ``(spk, mem, code, seed)`` like
    ``x`` (``code`` and ``seed`` empty unless ``need_code``)."""
    T = max(steps, 1)
    n = x.numel() // T
    spk = torch.empty_like(x)
    mem = torch.empty_like(x)
    with tc.on_device(x):
        leaky_scan_fwd_kernel[tc.scan_grid(n)](
            x, x if mem0 is None else mem0, spk, mem, beta, threshold, graded, T, n,
            RESET=reset, HAS_MEM=mem0 is not None, BLOCK=tc.SCAN_BLOCK, **tc.LAUNCH,
        )
        if not need_code:
            return spk, mem, x.new_empty(0, dtype=torch.uint8), x.new_empty(0, dtype=torch.int64)
        spec = ZOSpec.unflat(spec_ints, spec_floats)
        code = torch.empty_like(x, dtype=torch.uint8)
        seed = rng.philox_seed(x.device)
        step = _step_like(spec, mem, threshold, steps)
        leaky_code_kernel[tc.grid(x.numel())](
            mem, mem if mem0 is None else mem0, code, seed, table if absz is None else absz, table,
            threshold, table if step is None else step, x.numel(), n,
            1 if step is None else step.numel() // T, spec.delta, spec.kparam,
            HAS_MEM=mem0 is not None, KIND=spec.kind, M=spec.samples, EXTERNAL=absz is not None,
            ADAPTIVE=step is not None, BLOCK=tc.BLOCK, **tc.LAUNCH,
        )
    return spk, mem, code, seed


def _step_like(spec: ZOSpec, mem: torch.Tensor, threshold: torch.Tensor,
               steps: int) -> Optional[torch.Tensor]:
    """The divisor of every entry (:meth:`ZOSpec.divisor`, from its time step's
    membranes), laid out as ``mem`` is in memory (channels-last stays
    channels-last) so that the code kernel reads the divisor of the entry at
    each physical offset; None for a fixed step (the kernel applies ``delta``)."""
    u = mem - threshold.to(mem.dtype) if spec.step.adaptive else None
    d = spec.divisor(u, steps)
    return None if d is None else torch.empty_like(mem, dtype=d.dtype).copy_(d.expand_as(mem))


def _forward_fake(x, mem0, beta, threshold, graded, table, absz, *, reset, spec_ints, spec_floats,
                  steps, need_code):
    code_shape = x.shape if need_code else (0,)
    return (
        torch.empty_like(x), torch.empty_like(x), x.new_empty(code_shape, dtype=torch.uint8),
        x.new_empty(1 if need_code else 0, dtype=torch.int64),
    )


def spike_grads(
    grad_spk: torch.Tensor,
    code: torch.Tensor,
    seed: torch.Tensor,
    graded: torch.Tensor,
    spec: ZOSpec,
    table: torch.Tensor,
    absz: Optional[torch.Tensor],
    acc: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The gradient reaching each membrane through its spike, like ``code``
    (counted into the meter ``acc`` unless it is empty)."""
    e = torch.empty_like(code, dtype=dtype)
    count, track = tc.meter_target(acc, code.numel(), table)
    with tc.on_device(code):
        leaky_estimate_kernel[tc.grid(code.numel())](
            grad_spk, code, e, count, seed, table if absz is None else absz,
            table, graded, code.numel(), spec.coef, spec.kparam,
            KIND=spec.kind, P=spec.p, M=spec.samples, EXTERNAL=absz is not None, TRACK=track,
            BLOCK=tc.BLOCK, **tc.LAUNCH,
        )
    return e


def _state_like(code: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """An empty membrane of one step, with the layout of ``code``'s steps."""
    one = code if steps == 0 else code[0]
    return torch.empty_like(one, dtype=dtype)


def _backward(
    grad_spk: Optional[torch.Tensor], grad_mem: Optional[torch.Tensor], code: torch.Tensor,
    seed: torch.Tensor, beta: torch.Tensor, graded: torch.Tensor, table: torch.Tensor,
    absz: Optional[torch.Tensor], acc: torch.Tensor,
    *, reset: int, spec_ints: List[int], spec_floats: List[float], dtype: torch.dtype,
    need_grad_mem0: bool, steps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(grad_x, grad_mem0, e)``, like ``code`` (``grad_mem0`` empty when
    not needed, ``e`` empty without a spike gradient). Incoming gradients are
    brought to ``code``'s layout; the non-zero estimates are counted into the
    meter ``acc`` unless it is empty."""
    spec = ZOSpec.unflat(spec_ints, spec_floats)
    T = max(steps, 1)
    n = code.numel() // T
    gx = torch.empty_like(code, dtype=dtype)
    gmem0 = _state_like(code, steps, dtype) if need_grad_mem0 else gx.new_empty(0)
    e = gx.new_empty(0)
    if grad_spk is not None:
        e = spike_grads(tc.like(grad_spk, gx), code, seed, graded, spec, table, absz, acc, dtype)
    gmem = tc.like(grad_mem, gx) if grad_mem is not None else None
    with tc.on_device(code):
        leaky_scan_bwd_kernel[tc.scan_grid(n)](
            e if grad_spk is not None else gx, gx if gmem is None else gmem, code, gx,
            gmem0 if need_grad_mem0 else gx, beta, T, n,
            RESET=reset, HAS_E=grad_spk is not None, HAS_GMEM=gmem is not None,
            NEED_GMEM0=need_grad_mem0, BLOCK=tc.SCAN_BLOCK, **tc.LAUNCH,
        )
    return gx, gmem0, e


def _backward_fake(grad_spk, grad_mem, code, seed, beta, graded, table, absz, acc, *, reset,
                   spec_ints, spec_floats, dtype, need_grad_mem0, steps):
    gx = torch.empty_like(code, dtype=dtype)
    gmem0 = _state_like(code, steps, dtype) if need_grad_mem0 else gx.new_empty(0)
    return gx, gmem0, (gx.new_empty(code.shape) if grad_spk is not None else gx.new_empty(0))


leaky_forward = oplib.register("leaky_forward_triton", _forward, _forward_fake, seeded=True)
leaky_backward = oplib.register("leaky_backward_triton", _backward, _backward_fake, mutates=("acc",))
