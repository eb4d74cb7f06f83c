"""Autograd glue of the spike function: picks the Triton kernels or the reference."""

from __future__ import annotations

from typing import Optional

import torch

from ... import _backend
from ...distributions import Distribution
from ...stats import ActivityMeter, no_meter
from .. import oplib
from . import reference


class LocalZOSpike(torch.autograd.Function):
    """Heaviside forward; saves ``u`` (as snnTorch's surrogates do). The
    backward draws the directions from torch's generator of ``u``'s device:
    one fused Triton kernel (``fused=True``) or the PyTorch reference."""

    @staticmethod
    def forward(ctx, u, dist, samples, acc, absz, fused):
        # the meter's accumulator changes in every backward: kept aside, not saved
        ctx.dist_args, ctx.samples, ctx.acc, ctx.fused = oplib.dist_args(dist), samples, acc, fused
        ctx.save_for_backward(u, absz)
        return reference.spike_forward(u)

    @staticmethod
    def backward(ctx, grad_out):
        u, absz = ctx.saved_tensors
        if ctx.fused:
            from .triton import spike_backward
        else:
            spike_backward = reference.backward
        grad_in = spike_backward(grad_out, u, *ctx.dist_args, ctx.samples, absz, ctx.acc)
        return grad_in, None, None, None, None, None


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
    acc = meter.accumulator(u.device) if meter is not None else no_meter(u.device)
    fused = False
    if _backend.use_triton(u):
        from .. import zo_triton

        fused = zo_triton.supports(u.dtype, u.numel(), samples)
        if fused and absz is not None:
            absz = absz.to(torch.float32).contiguous()
    return LocalZOSpike.apply(u, dist, samples, acc, absz, fused)
