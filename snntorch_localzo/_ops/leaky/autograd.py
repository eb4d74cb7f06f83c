"""Autograd glue of the Leaky neuron: the fused Triton kernels when they
apply, the reference (PyTorch ops and the LocalZO spike function) otherwise."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _backend
from ...distributions import Distribution
from ...stats import ActivityMeter, no_meter
from .. import active, oplib
from .. import zo_triton as zt
from ..spike import spike
from . import reference


class FusedLeaky(torch.autograd.Function):
    """Over ``[T, ...]`` (``steps = T``) or one step (``steps = 0``, no time
    dimension); keeps one byte per neuron and step (active samples and reset
    flag) and the Philox seed. Returns ``(spk, mem, code)`` shaped like ``x``."""

    @staticmethod
    def forward(
        ctx, x, mem0, beta, threshold, graded, reset_mechanism, dist, samples, acc, absz, steps
    ):
        from . import triton as kernels

        ctx.dist_args = oplib.dist_args(dist)
        spk, mem, code, seed = kernels.leaky_forward(
            x, mem0, beta, threshold, graded, reset_mechanism, *ctx.dist_args, samples, absz,
            steps,
        )
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(code)
        ctx.save_for_backward(code, seed, beta, graded, absz)
        ctx.reset_mechanism, ctx.samples, ctx.acc = reset_mechanism, samples, acc
        ctx.dtype, ctx.steps, ctx.has_mem0 = x.dtype, steps, mem0 is not None
        return spk, mem, code

    @staticmethod
    def backward(ctx, grad_spk, grad_mem, _grad_code):
        from . import triton as kernels

        code, seed, beta, graded, absz = ctx.saved_tensors
        need_gmem0 = ctx.has_mem0 and ctx.needs_input_grad[1]
        gx, gmem0 = kernels.leaky_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.reset_mechanism, *ctx.dist_args,
            ctx.samples, ctx.dtype, need_gmem0, absz,
            ctx.acc if grad_spk is not None else no_meter(code.device), ctx.steps,
        )
        return (gx, gmem0 if need_gmem0 else None) + (None,) * 9


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
    """One step (``steps = 0``) keeps a dense layout it shares with ``mem``
    (channels-last stays channels-last); otherwise tensors are made contiguous."""
    keep = steps == 0 and absz is None and zt.dense_layout(x, *([mem] if mem is not None else []))
    if not keep:
        x = x.contiguous()
        mem = mem.contiguous() if mem is not None else None
    if absz is not None:
        absz = absz.to(torch.float32).contiguous()
    acc = meter.accumulator(x.device) if meter is not None else no_meter(x.device)
    return FusedLeaky.apply(
        x, mem, beta, threshold, graded, reset_mechanism, dist, samples, acc, absz, steps
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
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz, 0
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
    if x.shape[0] == 0:  # an empty sequence
        return torch.zeros_like(x), torch.zeros_like(x)
    if fused_supported(x, mem, beta, threshold, graded, samples):
        spk, mem_seq, code = _fused(
            x, mem, beta, threshold, graded, reset_mechanism, dist, samples, meter, absz,
            x.shape[0],
        )
        if spk.requires_grad:
            active.mark(spk, code)
        return spk, mem_seq
    fns = [
        (lambda u, t=t: spike(u, dist, samples, meter, None if absz is None else absz[:, t]))
        for t in range(x.shape[0])
    ]
    return reference.leaky_seq(x, mem, beta, threshold, graded, reset_mechanism, fns)
