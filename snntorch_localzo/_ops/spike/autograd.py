"""Autograd glue of the spike function: the one place that picks its path."""

from __future__ import annotations

from typing import Optional

import torch

from ... import _backend
from ..._backend import Path
from .. import layout
from ..spec import ZOSpec, kernel_supports
from . import native, reference

#: Entries below which drawing for every entry (the reference) costs less than
#: the native path's bookkeeping: on the development machine's CPU (one
#: thread) the two cross between 2**15 and 2**17 entries.
NATIVE_MIN_NUMEL = 2**17


def plan(u: torch.Tensor, spec: ZOSpec) -> Path:
    """The path of the spike function's backward for ``u``."""
    path = _backend.device_path(u)
    if path is Path.TRITON and not kernel_supports(spec, u.dtype):
        return Path.REFERENCE if u.is_cuda else Path.NATIVE
    if path is Path.NATIVE and u.numel() < NATIVE_MIN_NUMEL:
        return Path.REFERENCE
    return path


def _backward_impl(path: Path):
    if path is Path.TRITON:
        from .triton import spike_backward

        return spike_backward
    return native.backward if path is Path.NATIVE else reference.backward


class LocalZOSpike(torch.autograd.Function):
    """Heaviside forward; saves ``u`` (as snnTorch's surrogates do). The
    backward draws the directions from torch's generator of ``u``'s device.
    With an adaptive spec the backward computes the rule's ``delta_t`` from
    ``u`` and runs the path on ``u / delta_t`` (:func:`scale`; the spec has
    the unit step and the height-one coefficient)."""

    @staticmethod
    def forward(ctx, u, spec, acc, absz, path):
        # the meter's accumulator changes in every backward: kept aside, not saved
        ctx.spec, ctx.acc, ctx.path = spec, acc, path
        ctx.save_for_backward(u, absz)
        return reference.spike_forward(u)

    @staticmethod
    def backward(ctx, grad_out):
        u, absz = ctx.saved_tensors
        spec = ctx.spec
        if spec.rule is not None:
            u = scale(u, spec.step(u))
        grad_in = _backward_impl(ctx.path)(grad_out, u, *spec.op_args(u.device), absz, ctx.acc)
        return grad_in, None, None, None, None


def scale(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``u / delta_t`` in ``u``'s dtype: the membrane the unit-step estimate sees."""
    return (u / d).to(u.dtype)


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
    :param path: force a path (tests); by default :func:`plan` decides
    """
    if not (torch.is_grad_enabled() and u.requires_grad):
        return reference.spike_forward(u)  # no backward: no random numbers
    path = plan(u, spec) if path is None else path
    if absz is not None:
        absz = absz.to(device=u.device, dtype=torch.float32 if path is Path.TRITON else absz.dtype).contiguous()
    return LocalZOSpike.apply(u, spec, layout.accumulator(meter, u.device), absz, path)
