"""Triton kernels of the sparse weight gradient of a Linear + Leaky layer.

With subtractive (or no) reset, a scalar beta and the reset detached,

    dL/dW[j, :] = sum over active (t, b) of e[t, b, j] * trace[t, b, :],
    trace[t] = beta * trace[t-1] + x[t],

with ``e = G * dL/dS`` exactly zero away from the active entries
(docs/method.md section 4). Nothing here waits for the host: no ``nonzero``,
no ``bincount``, no counts read back. ``sparse_dw_kernel`` gives each program
one output neuron ``j`` and one tile of input columns; it walks neuron
``j``'s column of ``e`` (transposed, so the walk is contiguous) in blocks of
rows, skips blocks without an active entry, and loads trace rows only where
``e`` is non-zero. The trace is built chunk by chunk in time (bounded memory).
Each program is the only writer of its tile of ``dW``: no atomics, a fixed
summation order, reproducible results.

The input gradient is one dense matrix product on the GPU: at the activity
LocalZO trains with (about 1% of the lower layer's entries), nearly every
tile of ``dL/dx`` holds an active entry, so a sparse kernel would do the
dense product's arithmetic with less efficient memory access.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import oplib
from .. import triton_common as tc
from .reference import trace_chunk_steps

#: Rows of ``e`` a program looks at per iteration, and input columns per program.
BLOCK_R, BLOCK_IN = 64, 64


@triton.jit
def trace_kernel(x_ptr, carry_ptr, trace_ptr, beta_ptr, t0, steps, n, BLOCK: tl.constexpr):
    """trace[t - t0] = beta * trace[t - 1] + x[t] for t in [t0, t0 + steps);
    ``carry`` holds trace[t0 - 1] and receives the last one (float32)."""
    DT: tl.constexpr = x_ptr.dtype.element_ty
    offs = tc.block_offsets(BLOCK)
    mask = offs < n
    b = tc.load_beta(beta_ptr, DT)
    tr = tl.load(carry_ptr + offs, mask=mask, other=0.0)
    for i in range(steps):
        x = tl.load(x_ptr + tc.step_offsets(t0 + i, n, offs), mask=mask, other=0.0).to(tl.float32)
        tr = b * tr + x
        tl.store(trace_ptr + tc.step_offsets(i, n, offs), tr, mask=mask)
    tl.store(carry_ptr + offs, tr, mask=mask)


@triton.jit
def sparse_dw_kernel(
    et_ptr, trace_ptr, dw_ptr, rows_total, row0, rows, IN,
    BLOCK_R: tl.constexpr, BLOCK_IN: tl.constexpr,
):
    """dW[j, tile] += sum over rows r of this chunk with e[r, j] != 0 of
    e[r, j] * trace[r, tile]; ``et`` is ``e`` transposed, ``[out, rows_total]``."""
    j = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_IN + tl.arange(0, BLOCK_IN)
    cmask = cols < IN
    acc = tl.zeros([BLOCK_IN], dtype=tl.float32)
    for r0 in range(0, rows, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rmask = r < rows
        ev = tl.load(et_ptr + j * rows_total + row0 + r, mask=rmask, other=0.0).to(tl.float32)
        act = ev != 0.0
        if tl.max(act.to(tl.int32), axis=0) != 0:
            tr = tl.load(
                trace_ptr + r.to(tl.int64)[:, None] * IN + cols[None, :],
                mask=act[:, None] & cmask[None, :], other=0.0,
            )
            acc += tl.sum(ev[:, None] * tr, axis=0)
    out = dw_ptr + j * IN + cols
    tl.store(out, tl.load(out, mask=cmask, other=0.0) + acc, mask=cmask)


def _sparse_weight_grad(
    x: torch.Tensor, e: torch.Tensor, beta: torch.Tensor, weight_dtype: torch.dtype
) -> torch.Tensor:
    """dL/dW from ``e [T, B, out]`` (zero away from the active entries) and the
    input trace of ``x [T, B, in]``."""
    T, B, IN = x.shape
    OUT = e.shape[2]
    device = x.device
    dw = torch.zeros(OUT, IN, dtype=torch.float32, device=device)
    et = e.reshape(T * B, OUT).t().contiguous()
    x = x.contiguous()
    chunk = trace_chunk_steps(T, B, IN, torch.float32)
    carry = torch.zeros(B * IN, dtype=torch.float32, device=device)
    trace = torch.empty(chunk, B * IN, dtype=torch.float32, device=device)
    with tc.on_device(x):
        for t0 in range(0, T, chunk):
            steps = min(chunk, T - t0)
            trace_kernel[tc.scan_grid(B * IN)](
                x, carry, trace, beta, t0, steps, B * IN, BLOCK=tc.SCAN_BLOCK, **tc.LAUNCH,
            )
            sparse_dw_kernel[(OUT, triton.cdiv(IN, BLOCK_IN))](
                et, trace, dw, T * B, t0 * B, steps * B, IN,
                BLOCK_R=BLOCK_R, BLOCK_IN=BLOCK_IN, **tc.LAUNCH,
            )
    return dw.to(weight_dtype)


sparse_weight_grad = oplib.register(
    "sparse_weight_grad_triton",
    _sparse_weight_grad,
    lambda x, e, beta, weight_dtype: x.new_empty((e.shape[2], x.shape[2]), dtype=weight_dtype),
)
