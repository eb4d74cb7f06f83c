"""Triton kernels of the sparse backward of a Linear + Leaky layer.

With subtractive (or no) reset, a scalar beta and the reset detached, the
gradient of the synaptic input is ``dL/dI[s] = sum_{t>=s} beta^(t-s) e[t]``
with ``e = G * dL/dS`` non-zero only where the LocalZO estimate is. So

    dL/dW[j, :] = sum over active (t, b) of e[t, b, j] * trace[t, b, :],
    trace[t] = beta * trace[t-1] + x[t],

touches about 1% of the entries of the dense product (LOCALZO.md section 4).
The trace is built chunk by chunk in time (bounded memory); the active entries
are grouped by (chunk, output neuron), so each program owns one row tile of
dW in a launch: no atomics, a fixed summation order, reproducible results.

When the layer below is a LocalZO layer of this package, it only ever reads
``dL/dx`` where its own estimate is non-zero, so the input gradient
``dL/dx[r, k] = sum_j dL/dI[r, j] W[j, k]`` is computed at those entries only.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl

from ...distributions import TABLE_SIZE
from .. import oplib
from .. import zo_triton as zt

#: Memory the time chunk of the input trace may take in the sparse backward.
TRACE_BUDGET_BYTES = 64 * 2**20


@triton.jit
def trace_kernel(
    x_ptr, carry_ptr, trace_ptr, beta_ptr, t0, steps, n, BLOCK: tl.constexpr
):
    """trace[t - t0] = beta * trace[t - 1] + x[t] for t in [t0, t0 + steps);
    ``carry`` holds trace[t0 - 1] and receives the last one (float32)."""
    DT: tl.constexpr = x_ptr.dtype.element_ty
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    b = zt.round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)
    tr = tl.load(carry_ptr + offs, mask=mask, other=0.0)
    for i in range(steps):
        x = tl.load(x_ptr + (t0 + i) * n + offs, mask=mask, other=0.0).to(tl.float32)
        tr = b * tr + x
        tl.store(trace_ptr + i * n + offs, tr, mask=mask)
    tl.store(carry_ptr + offs, tr, mask=mask)


@triton.jit
def active_grad_kernel(
    pos_ptr,
    code_ptr,
    gspk_ptr,
    e_ptr,
    seed_ptr,
    absz_ptr,
    table_ptr,
    graded_ptr,
    nnz,
    stride,
    coef,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """e = G * graded * dL/dS at the listed flat positions (as the scan's backward)."""
    DT: tl.constexpr = gspk_ptr.dtype.element_ty
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = k < nnz
    pos = tl.load(pos_ptr + k, mask=mask, other=0).to(tl.int32)
    code = tl.load(code_ptr + pos, mask=mask, other=0).to(tl.int32)
    seed = tl.load(seed_ptr)
    g = zt.zo_grad(
        code, pos, stride, mask, seed, absz_ptr, table_ptr, coef, kparam,
        KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE,
    )
    gr = zt.round_to(tl.load(graded_ptr).to(tl.float32), DT)
    gs = tl.load(gspk_ptr + pos, mask=mask, other=0.0).to(tl.float32)
    e = zt.round_to(zt.round_to(gs * gr, DT) * g, DT)
    tl.store(e_ptr + k, e, mask=mask)


@triton.jit
def sparse_dw_kernel(
    ptr_ptr, row_ptr, e_ptr, trace_ptr, dw_ptr, IN, BLOCK_K: tl.constexpr, BLOCK_IN: tl.constexpr
):
    """dW[j, tile] += sum over this chunk's active entries of neuron j of
    e * trace[row, tile], BLOCK_K entries at a time; program (j, tile) is the
    only writer of its tile (fixed order: reproducible)."""
    j = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_IN + tl.arange(0, BLOCK_IN)
    cmask = cols < IN
    start = tl.load(ptr_ptr + j)
    end = tl.load(ptr_ptr + j + 1)
    acc = tl.zeros([BLOCK_IN], dtype=tl.float32)
    for k0 in range(start, end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < end
        rows = tl.load(row_ptr + ks, mask=kmask, other=0)
        e = tl.load(e_ptr + ks, mask=kmask, other=0.0)
        tr = tl.load(
            trace_ptr + rows[:, None] * IN + cols[None, :],
            mask=kmask[:, None] & cmask[None, :],
            other=0.0,
        )
        acc += tl.sum(e[:, None] * tr, axis=0)
    if end > start:
        out = dw_ptr + j * IN + cols
        tl.store(out, tl.load(out, mask=cmask, other=0.0) + acc, mask=cmask)


@triton.jit
def sparse_dx_kernel(
    pos_ptr, h_ptr, wt_ptr, dx_ptr, nnz, IN, OUT, BLOCK_E: tl.constexpr, BLOCK_J: tl.constexpr
):
    """dx[p] = sum_j h[p // IN, j] * W[j, p % IN] at the listed positions p."""
    e = tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)
    emask = e < nnz
    p = tl.load(pos_ptr + e, mask=emask, other=0)
    row = p // IN
    k = p % IN
    acc = tl.zeros([BLOCK_E], dtype=tl.float32)
    for j0 in range(0, OUT, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        jmask = js < OUT
        m2 = emask[:, None] & jmask[None, :]
        h = tl.load(h_ptr + row[:, None] * OUT + js[None, :], mask=m2, other=0.0).to(tl.float32)
        w = tl.load(wt_ptr + k[:, None] * OUT + js[None, :], mask=m2, other=0.0).to(tl.float32)
        acc += tl.sum(h * w, axis=1)
    tl.store(dx_ptr + p, acc.to(dx_ptr.dtype.element_ty), mask=emask)


def active_positions(code: torch.Tensor) -> torch.Tensor:
    """Flat indices of the entries with a non-zero estimate (synchronises)."""
    return torch.nonzero((code & 127).reshape(-1)).reshape(-1)


def _sparse_weight_grad(
    x: torch.Tensor,
    code: torch.Tensor,
    grad_spk: torch.Tensor,
    seed: torch.Tensor,
    beta: torch.Tensor,
    graded: torch.Tensor,
    dist_name: str,
    dist_params: List[float],
    samples: int,
    absz: Optional[torch.Tensor],
    weight_dtype: torch.dtype,
) -> torch.Tensor:
    """dL/dW from the active entries and the input trace. ``x``: [T, B, in],
    ``code``/``grad_spk``: [T, B, out]."""
    dist = oplib.dist_from(dist_name, dist_params)
    T, B, IN = x.shape
    OUT = code.shape[2]
    device = x.device
    dw = torch.zeros(OUT, IN, dtype=torch.float32, device=device)
    chunk = max(1, min(T, TRACE_BUDGET_BYTES // max(1, B * IN * 4)))
    C = -(-T // chunk)
    act = (code & 127) != 0
    if C * chunk != T:
        act = torch.cat([act, act.new_zeros((C * chunk - T, B, OUT))])
    # entries ordered by (chunk, j, step in chunk, b)
    c, j, tt, b = torch.nonzero(act.view(C, chunk, B, OUT).permute(0, 3, 1, 2), as_tuple=True)
    if c.numel() == 0:
        return dw.to(weight_dtype)
    row_in_chunk = (tt * B + b).to(torch.int32)
    pos = ((c * chunk + tt) * B + b) * OUT + j  # flat index into [T, B, OUT]
    ptr = torch.zeros(C * OUT + 1, dtype=torch.int64, device=device)
    ptr[1:] = torch.cumsum(torch.bincount(c * OUT + j, minlength=C * OUT), 0)
    # the estimate times the incoming gradient at every active entry
    spec = zt.zo_spec(dist, samples)
    nnz = pos.numel()
    e = torch.empty(nnz, dtype=torch.float32, device=device)
    table = zt.table_arg(dist, device)
    gspk = grad_spk.contiguous()
    active_grad_kernel[zt.grid(nnz)](
        pos, code, gspk, e, seed, table if absz is None else absz, table, graded,
        nnz, code.numel(), spec.coef, spec.kparam,
        KIND=spec.kind, P=spec.p, M=samples, EXTERNAL=absz is not None,
        TABLE_N=TABLE_SIZE, TABLE_SCALE=zt.TABLE_SCALE, BLOCK=zt.BLOCK,
        **zt.launch_options(device),
    )
    x = x.contiguous()
    carry = torch.zeros(B * IN, dtype=torch.float32, device=device)
    trace = torch.empty(chunk, B * IN, dtype=torch.float32, device=device)
    block_in = 64
    for ci in range(C):
        t0 = ci * chunk
        steps = min(chunk, T - t0)
        trace_kernel[zt.scan_grid(B * IN)](
            x, carry, trace, beta, t0, steps, B * IN, BLOCK=zt.SCAN_BLOCK,
            **zt.launch_options(device),
        )
        sparse_dw_kernel[(OUT, triton.cdiv(IN, block_in))](
            ptr[ci * OUT:], row_in_chunk, e, trace, dw, IN, BLOCK_K=16, BLOCK_IN=block_in,
            **zt.launch_options(device),
        )
    return dw.to(weight_dtype)


def _sparse_input_grad(
    h: torch.Tensor, weight: torch.Tensor, lower_code: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """dL/dx at the entries where the layer below has a non-zero estimate, zero
    elsewhere (the layer below reads nothing else). ``h``: dL/dI [T, B, out]."""
    T, B, OUT = h.shape
    IN = weight.shape[1]
    dx = torch.zeros(T, B, IN, dtype=dtype, device=h.device)
    pos = active_positions(lower_code)
    nnz = pos.numel()
    if nnz == 0:
        return dx
    wt = weight.t().contiguous()
    block_e, block_j = 64, 64
    sparse_dx_kernel[(triton.cdiv(nnz, block_e),)](
        pos, h.contiguous(), wt, dx, nnz, IN, OUT, BLOCK_E=block_e, BLOCK_J=block_j,
        **zt.launch_options(h.device),
    )
    return dx


sparse_weight_grad = oplib.register(
    "sparse_weight_grad",
    _sparse_weight_grad,
    lambda x, code, *args: x.new_empty((code.shape[2], x.shape[2]), dtype=args[-1]),
)
sparse_input_grad = oplib.register(
    "sparse_input_grad",
    _sparse_input_grad,
    lambda h, weight, lower_code, dtype: h.new_empty(lower_code.shape, dtype=dtype),
)
