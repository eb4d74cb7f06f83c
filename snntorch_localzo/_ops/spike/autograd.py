"""Autograd glue of the spike function: runs the path the planner picks."""

from __future__ import annotations

from typing import Optional

import torch

from .. import layout
from ..planner import Path, c_passes, spike_plan
from ..spec import ZOSpec
from . import native, reference


def _backward_impl(path: Path):
    if path is Path.TRITON:
        from .triton import spike_backward

        return spike_backward
    if path is Path.EXACT:
        return reference.exact_backward
    return native.backward if path is Path.NATIVE else reference.backward


class LocalZOSpike(torch.autograd.Function):
    """Heaviside forward; saves ``u`` (as snnTorch's surrogates do). The
    backward draws the directions from torch's generator of ``u``'s device
    (or a stream seeded from it), on the membrane the spec's step gives
    (``u / delta_t`` for the adaptive step, ``u`` itself for a fixed one:
    :meth:`ZOSpec.scale`; the native path scales it itself)."""

    @staticmethod
    def forward(ctx, u, spec, acc, absz, path, fused):
        # the meter's accumulator changes in every backward: kept aside, not saved
        ctx.spec, ctx.acc, ctx.path = spec, acc, path
        # the planner's C passes run directly in eager mode (while compiling,
        # the native path through its registered operator, the expected value
        # in PyTorch)
        ctx.fused = fused and not torch.compiler.is_compiling()
        ctx.save_for_backward(u, absz)
        return native.spike_forward(u)

    @staticmethod
    def backward(ctx, grad_out):
        u, absz = ctx.saved_tensors
        return spike_backward(grad_out, u, ctx.spec, absz, ctx.acc, ctx.path, ctx.fused), None, None, None, None, None


def spike_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, absz: Optional[torch.Tensor],
                   acc: torch.Tensor, path: Path, fused: bool, threshold: Optional[float] = None) -> torch.Tensor:
    """The spike function's input gradient at ``u = mem - threshold`` on the
    planner's ``path`` (``fused``: its C passes, in eager mode). Where
    ``threshold`` is given, ``u`` is the membrane itself: the C passes
    subtract the threshold as they read it (rounding as ``torch.sub``), the
    other paths first."""
    shift = 0.0 if threshold is None else threshold
    if fused and path is Path.EXACT:
        return native.exact_backward(grad_out, u, spec, acc, shift)
    if fused:
        backward = native.weighted_backward if spec.weighted else native.fused_backward
        return backward(grad_out, u, spec, absz, acc, shift)
    if threshold is not None:
        u = u - threshold
    # (the native path applies the step itself, fused with its draw)
    u = u if path is Path.NATIVE else spec.scale(u)
    return _backward_impl(path)(grad_out, u, spec, absz, acc)


def spike(
    u: torch.Tensor,
    spec: ZOSpec,
    meter=None,
    absz: Optional[torch.Tensor] = None,
    path: Optional[Path] = None,
) -> torch.Tensor:
    """LocalZO spike function of ``u = mem - threshold``.

    :param meter: an ActivityMeter counting the non-zero estimates, or None
    :param absz: test hook: fixed magnitudes ``|z|`` of shape ``[samples, *u.shape]``
    :param path: force a path (tests); by default the planner decides
    """
    if not (torch.is_grad_enabled() and u.requires_grad):
        return native.spike_forward(u)  # no backward: no random numbers
    spec = spec.resolved(u.dtype)  # (make()'s sampling="auto": the gradient's draw or the law's)
    path, fused = spike_plan(u, spec) if path is None else (path, c_passes(u, spec, path))
    if absz is not None:
        absz = absz.to(device=u.device, dtype=torch.float32 if path is Path.TRITON else absz.dtype).contiguous()
    return LocalZOSpike.apply(u, spec, layout.accumulator(meter, u.device), absz, path, fused)
