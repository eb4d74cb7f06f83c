"""Autograd glue of the Leaky step: the fused Triton kernels when they apply,
the reference (PyTorch ops and the LocalZO spike function) otherwise."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _backend
from ...distributions import Distribution
from ...stats import ActivityMeter
from ..spike import spike
from . import reference


class FusedLeakyStep(torch.autograd.Function):
    """Saves one byte per neuron (active samples and reset flag) and the seed."""

    @staticmethod
    def forward(ctx, x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz):
        from . import triton as kernels

        spk, mem_out, code, seed = kernels.leaky_step_forward(
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, absz
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(code, seed, beta, graded, absz)
        ctx.reset_mechanism, ctx.dist, ctx.samples, ctx.meter = reset_mechanism, dist, samples, meter
        ctx.dtype = x.dtype
        ctx.has_mem = mem is not None
        return spk, mem_out

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        from . import triton as kernels

        code, seed, beta, graded, absz = ctx.saved_tensors
        count = None
        if ctx.meter is not None and grad_spk is not None:
            count = torch.zeros(1, dtype=torch.int32, device=code.device)
        need_gmp = ctx.has_mem and ctx.needs_input_grad[1]
        gx, gmp = kernels.leaky_step_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.reset_mechanism, ctx.dist,
            ctx.samples, ctx.dtype, need_gmp, absz=absz, count=count,
        )
        if count is not None:
            ctx.meter.update(count[0], code.numel())
        return gx, gmp, None, None, None, None, None, None, None, None


def fused_supported(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    samples: int,
) -> bool:
    """Whether the fused kernels cover these arguments (else: reference)."""
    if not _backend.use_triton(x):
        return False
    from .. import zo_triton

    if not zo_triton.supports(x, samples):
        return False
    if mem is not None and (mem.dtype != x.dtype or mem.device != x.device):
        return False
    for p in (beta, threshold, graded):
        if p.numel() != 1 or p.requires_grad or p.dtype != torch.float32 or p.device != x.device:
            return False
    return True


def leaky_step(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    dist: Distribution,
    samples: int = 1,
    meter: Optional[ActivityMeter] = None,
    absz: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Leaky step with the LocalZO spike function: ``(spk, mem')``.

    :param mem: previous membrane, or None for a zero membrane
    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, *x.shape]``
    """
    if fused_supported(x, mem, beta, threshold, graded, samples):
        x = x.contiguous()
        mem = mem.contiguous() if mem is not None else None
        if absz is not None:
            absz = absz.to(torch.float32).contiguous()
        return FusedLeakyStep.apply(
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz
        )
    return reference.leaky_step(
        x, mem, beta, threshold, graded, reset_mechanism,
        lambda u: spike(u, dist, samples, meter, absz),
    )
