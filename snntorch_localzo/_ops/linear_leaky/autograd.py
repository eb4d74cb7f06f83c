"""Autograd glue of the Linear + Leaky sequence layer: runs the path the
planner picks.

Forward (fused paths): one matrix product for all steps (on the native path,
for a sparse binary input, the sum of the weight columns of its ones), then
the Leaky scan of the Triton or native path. Backward: the reverse scan gives
``h = dL/dI``; the weight gradient is sparse (from the active entries and the
input trace) where docs/method.md section 4 holds (subtractive or no reset,
fixed scalar beta, the membrane output unused by the loss) and the size
rule expects a gain (both in the planner), dense (one matrix product) otherwise;
on the native path the input gradient is computed only at the active entries
of the layer below when that layer is a native LocalZO sequence layer.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .. import active, layout
from ..leaky import autograd as leaky_glue
from ..leaky import native as leaky_native
from ..leaky.reference import LeakyParams
from ..planner import Path, leaky_spec, linear_leaky_path, use_sparse_weight_grad
from ..spec import ZOSpec
from ..spike import spike
from . import native, reference


class TritonLinearLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mem0, params, spec, acc, absz, sparse):
        from ..leaky import triton as leaky_kernels

        cur = F.linear(x, weight, bias)
        spk, mem, code, seed = leaky_kernels.leaky_forward(
            cur, mem0, params.beta, params.threshold, params.graded, spec.table(x.device), absz,
            reset=params.reset, steps=cur.shape[0], need_code=True, **spec.op_kwargs(),
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, weight, code, seed, params.beta, params.graded, absz)
        ctx.params, ctx.spec, ctx.acc, ctx.sparse = params, spec, acc, sparse
        ctx.has_bias, ctx.has_mem0 = bias is not None, mem0 is not None
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        from ..leaky import triton as leaky_kernels
        from . import triton as kernels

        x, weight, code, seed, beta, graded, absz = ctx.saved_tensors
        need_gmem0 = ctx.has_mem0 and ctx.needs_input_grad[3]
        h, gmem0, e = leaky_kernels.leaky_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.spec.table(code.device), absz,
            ctx.acc if grad_spk is not None else layout.no_meter(code.device),
            reset=ctx.params.reset, dtype=x.dtype, need_grad_mem0=need_gmem0, steps=code.shape[0],
            **ctx.spec.op_kwargs(),
        )
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = h @ weight
        if ctx.needs_input_grad[1]:
            if use_sparse_weight_grad(
                Path.TRITON, sparse=ctx.sparse, reset=ctx.params.reset, grad_spk=grad_spk,
                grad_mem=grad_mem, out_features=weight.shape[0], in_features=weight.shape[1],
                rows=x.numel() // x.shape[-1],
            ):
                gw = kernels.sparse_weight_grad(x, e, beta, weight.dtype)
            else:
                gw = h.reshape(-1, h.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = h.sum((0, 1))
        return gx, gw, gb, (gmem0 if need_gmem0 else None), None, None, None, None, None


class NativeLinearLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mem0, params, spec, acc, absz, sparse):
        # spikes in, as most inputs of this layer are: the current from their ones where
        # that pays, and kept as one byte each until backward
        cur, packed, ones = native.input_current(x, weight, bias, keep_packed=weight.requires_grad)
        spk, mem, index, g, resets = leaky_native.leaky_forward(
            cur, mem0, params.beta, params.threshold, params.graded, spec.table(x.device), absz,
            reset=params.reset, steps=cur.shape[0], **spec.op_kwargs(),
        )
        lower = active.active_of(x) if sparse else None
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(index)
        later = leaky_glue.save_draw(ctx, spec, cur.shape, cur.shape[0], mem, params.threshold, absz)
        ctx.save_for_backward(
            x if packed is None else packed, weight, index, g, resets, params.beta, params.graded,
            None if lower is None else lower.index, *later,
        )
        ctx.x_dtype, ctx.x_ones = x.dtype, ones
        ctx.reset, ctx.acc, ctx.sparse = params.reset, acc, sparse
        ctx.has_bias, ctx.has_mem0 = bias is not None, mem0 is not None
        return spk, mem, (None if later else index)

    @staticmethod
    def backward(ctx, grad_spk, grad_mem, _grad_index):
        # x: the input, or the bytes it was packed to (the backward unpacks them only where it must)
        x, weight, index, g, resets, beta, graded, lower, *later = ctx.saved_tensors
        if later:
            index, g = leaky_glue.drawn(ctx, later, grad_spk, graded)
        needs = [
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2], ctx.has_mem0 and ctx.needs_input_grad[3],
        ]
        grads = native.backward(
            grad_spk, grad_mem, x, weight, index, g, resets, beta, graded, lower, ctx.acc,
            reset=ctx.reset, sparse=ctx.sparse, needs=needs, x_dtype=ctx.x_dtype, x_ones=ctx.x_ones,
        )
        gx, gw, gb, gmem0 = (gr if need else None for gr, need in zip(grads, needs))
        return gx, gw, gb, gmem0, None, None, None, None, None


def linear_leaky(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mem: Optional[torch.Tensor],
    params: LeakyParams,
    spec: ZOSpec,
    meter=None,
    path: Optional[Path] = None,
    absz: Optional[torch.Tensor] = None,
    sparse: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x``: ``[T, B, in]`` -> ``(spk [T, B, out], mem [T, B, out])``.

    :param mem: initial membrane ``[B, out]`` or None (zero)
    :param path: the planner's answer (asked here when None)
    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, T, B, out]``
    :param sparse: use the sparse backward where it applies
    """
    spec = leaky_spec(x, spec, max(x.shape[0], 1))  # (a sequence: its draw is made in forward)
    path = linear_leaky_path(x, weight, bias, mem, params, spec) if path is None else path
    if path is Path.REFERENCE:
        fns = [
            (lambda u, t=t: spike(u, spec, meter, None if absz is None else absz[:, t]))
            for t in range(x.shape[0])
        ]
        return reference.linear_leaky(x, weight, bias, mem, params, fns)
    x = x.contiguous()
    mem = None if mem is None else mem.contiguous()
    if not leaky_glue.wants_grad(x, weight, bias, mem):
        if path is Path.TRITON:
            cur = F.linear(x, weight, bias)
            return leaky_glue.run_triton(cur, mem, params, spec, None, None, cur.shape[0])
        cur, _, _ = native.input_current(x, weight, bias, keep_packed=False)
        spk, mem_seq, _, _ = leaky_native.scan(cur, mem, params, cur.shape[0])
        return spk, mem_seq
    acc = layout.accumulator(meter, x.device)
    if path is Path.TRITON:
        if absz is not None:
            absz = absz.to(device=x.device, dtype=torch.float32).contiguous()
        return TritonLinearLeaky.apply(x, weight, bias, mem, params, spec, acc, absz, sparse)
    spk, mem_seq, index = NativeLinearLeaky.apply(x, weight, bias, mem, params, spec, acc, absz, sparse)
    if index is not None:  # (None where the draw waits for the backward)
        active.mark(spk, active.ActiveSet(index=index))
    return spk, mem_seq
