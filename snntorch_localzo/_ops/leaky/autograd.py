"""Autograd glue of the Leaky neuron: the fused Triton kernels when they
apply, the reference (PyTorch ops and the LocalZO spike function) otherwise."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _backend
from ...distributions import Distribution
from ...stats import ActivityMeter
from .. import active
from ..spike import spike
from . import reference


class FusedLeaky(torch.autograd.Function):
    """Over ``[T, ...]`` (``steps=None``) or one step (``steps=1``, no time
    dimension); keeps one byte per neuron and step (active samples and reset
    flag) and the Philox seed. Returns ``(spk, mem, code)`` shaped like ``x``."""

    @staticmethod
    def forward(
        ctx, x, mem0, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz, steps
    ):
        from . import triton as kernels

        spk, mem, code, seed = kernels.leaky_forward(
            x, mem0, beta, threshold, graded, reset_mechanism, dist, samples, absz, steps
        )
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(code, seed, beta, graded, absz)
        ctx.reset_mechanism, ctx.dist, ctx.samples, ctx.meter = reset_mechanism, dist, samples, meter
        ctx.dtype, ctx.steps = x.dtype, steps
        ctx.mem0_shape = mem0.shape if mem0 is not None else None
        return spk, mem, code

    @staticmethod
    def backward(ctx, grad_spk, grad_mem, _grad_code):
        from . import triton as kernels

        code, seed, beta, graded, absz = ctx.saved_tensors
        count = None
        if ctx.meter is not None and grad_spk is not None:
            count = torch.zeros(1, dtype=torch.int32, device=code.device)
        gx, gmem0 = kernels.leaky_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.reset_mechanism, ctx.dist,
            ctx.samples, ctx.dtype, ctx.mem0_shape if ctx.needs_input_grad[1] else None,
            absz=absz, count=count, steps=ctx.steps,
        )
        if count is not None:
            ctx.meter.update(count[0], code.numel())
        return gx, gmem0, None, None, None, None, None, None, None, None, None


def fused_supported(
    x: torch.Tensor,
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    samples: int,
    numel: Optional[int] = None,
) -> bool:
    """Whether the fused kernels cover these arguments (else: reference).
    ``numel``: entries the kernels will process, if not ``x.numel()``."""
    if not _backend.use_triton(x):
        return False
    from .. import zo_triton

    if not zo_triton.supports(x.dtype, x.numel() if numel is None else numel, samples):
        return False
    if mem is not None and (mem.dtype != x.dtype or mem.device != x.device):
        return False
    for p in (beta, threshold, graded):
        if p.numel() != 1 or p.requires_grad or p.dtype != torch.float32 or p.device != x.device:
            return False
    return True


def _fused(x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz, steps):
    mem = mem.contiguous() if mem is not None else None
    if absz is not None:
        absz = absz.to(torch.float32).contiguous()
    return FusedLeaky.apply(
        x.contiguous(), mem, beta, threshold, graded, reset_mechanism, dist, samples, meter,
        absz, steps,
    )


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
        spk, mem, _ = _fused(
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz, 1
        )
        return spk, mem
    return reference.leaky_step(
        x, mem, beta, threshold, graded, reset_mechanism,
        lambda u: spike(u, dist, samples, meter, absz),
    )


def leaky_seq(
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
    """A whole sequence ``x: [T, ...]``: ``(spk [T, ...], mem [T, ...])``, equal
    to ``leaky_step`` applied T times. With the fused kernels the spikes carry
    the code of active entries, which a following sparse layer reads.

    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, *x.shape]``
    """
    if fused_supported(x, mem, beta, threshold, graded, samples):
        spk, mem_seq, code = _fused(
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz, None
        )
        if spk.requires_grad:
            active.mark(spk, code)
        return spk, mem_seq
    fns = [
        (lambda u, t=t: spike(u, dist, samples, meter, None if absz is None else absz[:, t]))
        for t in range(x.shape[0])
    ]
    return reference.leaky_seq(x, mem, beta, threshold, graded, reset_mechanism, fns)
