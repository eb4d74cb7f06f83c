"""Autograd glue of the spike function: picks the Triton kernels or the reference."""

from __future__ import annotations

from typing import Optional

import torch

from ... import _backend
from ...distributions import Distribution
from ...stats import ActivityMeter
from . import reference


class ReferenceSpike(torch.autograd.Function):
    """Saves ``u`` (as snnTorch's surrogates do) and draws ``|z|`` in backward
    from torch's generator of ``u``'s device."""

    @staticmethod
    def forward(ctx, u, dist, samples, meter, absz):
        ctx.dist, ctx.samples, ctx.meter = dist, samples, meter
        ctx.save_for_backward(u, absz)
        return reference.spike_forward(u)

    @staticmethod
    def backward(ctx, grad_out):
        u, absz = ctx.saved_tensors
        if absz is None:
            absz = reference.draw_abs_z(
                ctx.dist,
                ctx.samples,
                u.shape,
                device=u.device,
                dtype=reference.compute_dtype(u.dtype),
            )
        grad_in, g = reference.spike_backward(grad_out, u, absz, ctx.dist)
        if ctx.meter is not None:
            ctx.meter.update(torch.count_nonzero(g), g.numel())
        return grad_in, None, None, None, None


class TritonSpike(torch.autograd.Function):
    """Fused kernels; saves one byte per entry (the code) and the Philox seed."""

    @staticmethod
    def forward(ctx, u, dist, samples, meter, absz):
        from . import triton as kernels

        spk, code, seed = kernels.spike_forward(u.contiguous(), dist, samples, absz)
        ctx.dist, ctx.samples, ctx.meter = dist, samples, meter
        ctx.save_for_backward(code, seed, absz)
        return spk

    @staticmethod
    def backward(ctx, grad_out):
        from . import triton as kernels

        code, seed, absz = ctx.saved_tensors
        count = None
        if ctx.meter is not None:
            count = torch.zeros(1, dtype=torch.int32, device=code.device)
        grad_in = kernels.spike_backward(
            grad_out, code, seed, ctx.dist, ctx.samples, absz=absz, count=count
        )
        if count is not None:
            ctx.meter.update(count[0], code.numel())
        return grad_in, None, None, None, None


def spike(
    u: torch.Tensor,
    dist: Distribution,
    samples: int = 1,
    meter: Optional[ActivityMeter] = None,
    absz: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """LocalZO spike function of ``u = mem - threshold``.

    :param absz: test hook: fixed magnitudes ``|z|`` of shape
        ``[samples, *u.shape]`` instead of random ones
    """
    if not (torch.is_grad_enabled() and u.requires_grad):
        return reference.spike_forward(u)  # no backward: no random numbers
    if _backend.use_triton(u):
        from .. import zo_triton

        if zo_triton.supports(u.dtype, u.numel(), samples):
            if absz is not None:
                absz = absz.to(torch.float32).contiguous()
            return TritonSpike.apply(u, dist, samples, meter, absz)
    return ReferenceSpike.apply(u, dist, samples, meter, absz)
