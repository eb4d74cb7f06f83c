"""Autograd glue of the Linear + Leaky sequence layer.

Forward: one GEMM for all steps, then the fused Leaky scan kernel. Backward:
the reverse scan gives dL/dI; then the weight gradient is sparse (from the
active entries and the input trace) where LOCALZO.md section 4 holds
(subtractive or no reset, fixed scalar beta, the membrane output unused by
the loss), dense (one GEMM) otherwise; the input gradient is computed only at
the active entries of the layer below when that layer is a fused LocalZO
layer of this package, dense otherwise.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ...distributions import Distribution
from ...stats import ActivityMeter, no_meter
from .. import active, oplib
from ..leaky import RESET_NONE, RESET_SUBTRACT
from ..leaky.autograd import fused_supported
from ..spike import spike
from . import reference


class FusedLinearLeaky(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, weight, bias, mem0, beta, threshold, graded, reset_mechanism, dist, samples,
        acc, absz, sparse,
    ):
        from ..leaky import triton as leaky_kernels

        ctx.dist_args = oplib.dist_args(dist)
        cur = F.linear(x, weight, bias)
        spk, mem, code, seed = leaky_kernels.leaky_forward(
            cur, mem0, beta, threshold, graded, reset_mechanism, *ctx.dist_args, samples, absz,
            cur.shape[0],
        )
        lower = active.code_of(x) if sparse else None
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(x, weight, code, seed, beta, graded, absz, lower)
        ctx.reset_mechanism, ctx.samples, ctx.acc = reset_mechanism, samples, acc
        ctx.sparse, ctx.has_bias, ctx.has_mem0 = sparse, bias is not None, mem0 is not None
        return spk, mem, code

    @staticmethod
    def backward(ctx, grad_spk, grad_mem, _grad_code):
        from ..leaky import triton as leaky_kernels
        from . import triton as kernels

        x, weight, code, seed, beta, graded, absz, lower = ctx.saved_tensors
        need_gmem0 = ctx.has_mem0 and ctx.needs_input_grad[3]
        h, gmem0 = leaky_kernels.leaky_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.reset_mechanism, *ctx.dist_args,
            ctx.samples, x.dtype, need_gmem0, absz,
            ctx.acc if grad_spk is not None else no_meter(code.device), code.shape[0],
        )
        gmem0 = gmem0 if need_gmem0 else None
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            if lower is not None:
                gx = kernels.sparse_input_grad(h, weight, lower, x.dtype)
            else:
                gx = h @ weight
        if ctx.needs_input_grad[1]:
            sparse_dw = (
                ctx.sparse
                and grad_mem is None
                and grad_spk is not None
                and ctx.reset_mechanism in (RESET_SUBTRACT, RESET_NONE)
            )
            if sparse_dw:
                gw = kernels.sparse_weight_grad(
                    x, code, grad_spk, seed, beta, graded, *ctx.dist_args, ctx.samples, absz,
                    weight.dtype,
                )
            else:
                gw = h.reshape(-1, h.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = h.sum((0, 1))
        return (gx, gw, gb, gmem0) + (None,) * 9


def linear_leaky(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist: Distribution,
    samples: int = 1,
    meter: Optional[ActivityMeter] = None,
    absz: Optional[torch.Tensor] = None,
    sparse: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x``: ``[T, B, in]`` -> ``(spk [T, B, out], mem [T, B, out])``.

    :param mem: initial membrane ``[B, out]`` or None (zero)
    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, T, B, out]``
    :param sparse: use the sparse backward where it applies
    """
    numel = x.numel() // max(x.shape[-1], 1) * weight.shape[0]
    if (
        fused_supported(x, mem, beta, threshold, graded, samples, numel)
        and weight.dtype == x.dtype
        and weight.device == x.device
        and (bias is None or (bias.dtype == x.dtype and bias.device == x.device))
    ):
        if absz is not None:
            absz = absz.to(torch.float32).contiguous()
        acc = meter.accumulator(x.device) if meter is not None else no_meter(x.device)
        spk, mem_seq, code = FusedLinearLeaky.apply(
            x.contiguous(), weight, bias, None if mem is None else mem.contiguous(), beta,
            threshold, graded, reset_mechanism, dist, samples, acc, absz, sparse,
        )
        if spk.requires_grad:
            active.mark(spk, code)
        return spk, mem_seq
    fns = [
        (lambda u, t=t: spike(u, dist, samples, meter, None if absz is None else absz[:, t]))
        for t in range(x.shape[0])
    ]
    return reference.linear_leaky(
        x, weight, bias, mem, beta, threshold, graded, reset_mechanism, fns
    )
