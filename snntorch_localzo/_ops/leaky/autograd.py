"""Autograd glue of the Leaky neuron: runs the path the planner picks.

* ``Path.TRITON``: fused kernels (CUDA; CPU through Triton's interpreter).
* ``Path.NATIVE``: the native CPU scan and sparse estimate.
* ``Path.REFERENCE``: PyTorch ops and the LocalZO spike function, step by step.

:func:`~snntorch_localzo._ops.planner.leaky_path` decides from the tensors,
the parameters and the spec; the neurons ask it once and pass the answer to
:func:`leaky_step` or :func:`leaky_seq`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import active, layout
from ..planner import Path, c_spike_step, leaky_path, leaky_spec, spike_plan
from ..spec import ZOSpec
from ..spike import spike
from ..spike.autograd import spike_backward
from . import native, reference
from .reference import LeakyParams


def wants_grad(*tensors) -> bool:
    """Whether autograd will need a backward for these tensors (None ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --------------------------------------------------------------------- Triton
class TritonLeaky(torch.autograd.Function):
    """Over ``[T, ...]`` (``steps = T``) or one step (``steps = 0``, no time
    dimension); keeps one byte per neuron and step (active directions and
    reset flag) and the Philox seed."""

    @staticmethod
    def forward(ctx, x, mem0, params, spec, acc, absz, steps):
        from . import triton as kernels

        spk, mem, code, seed = kernels.leaky_forward(
            x, mem0, params.beta, params.threshold, params.graded, spec.table(x.device), absz,
            reset=params.reset, steps=steps, need_code=True, **spec.op_kwargs(),
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(code, seed, params.beta, params.graded, absz)
        ctx.params, ctx.spec, ctx.acc = params, spec, acc
        ctx.dtype, ctx.steps, ctx.has_mem0 = x.dtype, steps, mem0 is not None
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        from . import triton as kernels

        code, seed, beta, graded, absz = ctx.saved_tensors
        need_gmem0 = ctx.has_mem0 and ctx.needs_input_grad[1]
        gx, gmem0, _ = kernels.leaky_backward(
            grad_spk, grad_mem, code, seed, beta, graded, ctx.spec.table(code.device), absz,
            ctx.acc if grad_spk is not None else layout.no_meter(code.device),
            reset=ctx.params.reset, dtype=ctx.dtype, need_grad_mem0=need_gmem0, steps=ctx.steps,
            **ctx.spec.op_kwargs(),
        )
        return gx, (gmem0 if need_gmem0 else None), None, None, None, None, None


def _dense_layout(*tensors) -> bool:
    """Whether the tensors share strides and are contiguous in some memory
    format (channels-last included): then a kernel treats them as flat arrays."""
    first = tensors[0]
    dense = first.is_contiguous() or (
        first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    ) or (first.dim() == 5 and first.is_contiguous(memory_format=torch.channels_last_3d))
    return dense and all(t.stride() == first.stride() for t in tensors[1:])


def run_triton(x, mem, params, spec, meter, absz, steps):
    """One step (``steps = 0``) keeps a dense layout it shares with ``mem``
    (channels-last stays channels-last); otherwise tensors are made contiguous."""
    if not (steps == 0 and absz is None and _dense_layout(x, *([mem] if mem is not None else []))):
        x = x.contiguous()
        mem = mem.contiguous() if mem is not None else None
    if absz is not None:
        absz = absz.to(device=x.device, dtype=torch.float32).contiguous()
    if not wants_grad(x, mem):
        from . import triton as kernels

        spk, mem, _, _ = kernels.leaky_forward(
            x, mem, params.beta, params.threshold, params.graded, spec.table(x.device), None,
            reset=params.reset, steps=steps, need_code=False, **spec.op_kwargs(),
        )
        return spk, mem
    return TritonLeaky.apply(x, mem, params, spec, layout.accumulator(meter, x.device), absz, steps)


# --------------------------------------------------------------------- native
class NativeLeaky(torch.autograd.Function):
    """Over ``[T, ...]`` (``steps = T``) or one step (``steps = 0``); keeps the
    active entries, their estimates and, for zero reset, the reset flags; or,
    where the draw waits for the incoming gradient
    (:func:`~snntorch_localzo._ops.leaky.native.draws_in_backward`), the
    membranes."""

    @staticmethod
    def forward(ctx, x, mem0, params, spec, acc, absz, steps):
        spk, mem, index, g, resets = native.leaky_forward(
            x, mem0, params.beta, params.threshold, params.graded, spec.table(x.device), absz,
            reset=params.reset, steps=steps, **spec.op_kwargs(),
        )
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(index)
        later = save_draw(ctx, spec, x.shape, steps, mem, params.threshold, absz)
        ctx.save_for_backward(index, g, resets, params.beta, params.graded, *later)
        ctx.reset, ctx.acc, ctx.dtype, ctx.shape = params.reset, acc, x.dtype, list(x.shape)
        ctx.steps, ctx.has_mem0 = steps, mem0 is not None
        return spk, mem, (None if later else index)

    @staticmethod
    def backward(ctx, grad_spk, grad_mem, _grad_index):
        index, g, resets, beta, graded, *later = ctx.saved_tensors
        if later:
            index, g = drawn(ctx, later, grad_spk, graded)
        gx, gmem0 = native.leaky_backward(
            grad_spk, grad_mem, index, g, resets, beta, graded, ctx.acc,
            reset=ctx.reset, dtype=ctx.dtype, shape=ctx.shape, steps=ctx.steps,
        )
        need_gmem0 = ctx.has_mem0 and ctx.needs_input_grad[1]
        return gx, (gmem0 if need_gmem0 else None), None, None, None, None, None


def save_draw(ctx, spec: ZOSpec, shape, steps: int, mem, threshold, absz) -> tuple:
    """For a native sequence whose draw waits for the backward
    (``native.draws_in_backward``): the tensors it needs (the membranes, the
    threshold, the test hook's uniforms), to save with ``save_for_backward``
    (never on ``ctx`` itself: the membranes are an output, whose graph would
    then hold itself); ``()`` elsewhere."""
    if not native.draws_in_backward(spec, shape, steps):
        return ()
    ctx.spec, ctx.draw_steps = spec, steps
    return (mem, threshold, absz) if absz is not None else (mem, threshold)


def drawn(ctx, later, grad_spk, graded):
    """``(index, G)`` drawn in backward from what :func:`save_draw` kept."""
    mem, threshold, *absz = later
    return native.weighted_draw(grad_spk, mem, threshold, graded, ctx.spec, ctx.draw_steps,
                                absz[0] if absz else None)


def run_native(x, mem, params, spec, meter, absz, steps):
    """Returns ``(spk, mem, index)`` (``index`` None without grad)."""
    if not wants_grad(x, mem):
        spk, mem_seq, _, _ = native.scan(x, mem, params, steps)
        return spk, mem_seq, None
    if absz is not None:
        absz = absz.to(x.device)
    return NativeLeaky.apply(x, mem, params, spec, layout.accumulator(meter, x.device), absz, steps)


# ------------------------------------------------------- C step, C spike backward
class CSpikeStep(torch.autograd.Function):
    """One Leaky step on the CPU where the spike function's backward is a C
    pass (:func:`~snntorch_localzo._ops.planner.c_spike_step`): the C scan's
    step in forward (reset, update, threshold, spike; the membrane kept), and
    in backward that spike function's backward at ``u = mem' - threshold``,
    then the state update's gradient. The operations of
    :func:`reference.leaky_step <snntorch_localzo._ops.leaky.reference.leaky_step>`
    in its order, so its values and gradients."""

    @staticmethod
    def forward(ctx, x, mem0, params, spec, acc, plan):
        # (floats of x's dtype: the scan's, and backward's products alike)
        ctx.values = params.values(x.dtype)
        spk, mem, resets, _ = native.scan(x, mem0, params, 0, values=ctx.values)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(mem, resets)
        ctx.spec, ctx.acc, ctx.plan = spec, acc, plan
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        mem, resets = ctx.saved_tensors
        b, thr, graded = ctx.values
        grad_u = None
        if grad_spk is not None:
            # spk = spike(u) * graded, u = mem' - threshold (the C passes subtract it as they read mem)
            grad_u = spike_backward(native.graded_grad(grad_spk, graded), mem, ctx.spec, None, ctx.acc,
                                    *ctx.plan, threshold=thr)
        # (the C passes' output is a new tensor: the rest of the step's backward updates it in place)
        grad, grad_mem0 = native.step_grads(grad_u, grad_mem, b, resets, ctx.needs_input_grad[1], ctx.plan[1])
        return grad, grad_mem0, None, None, None, None


def run_c_spike_step(x, mem, params, spec, meter):
    """``(spk, mem')`` of a step :func:`CSpikeStep` runs (the scan alone without grad)."""
    if not wants_grad(x, mem):
        spk, new, _, _ = native.scan(x, mem, params, 0)
        return spk, new
    spec = spec.resolved(x.dtype)  # (the spike function's, as spike() resolves it)
    return CSpikeStep.apply(x, mem, params, spec, layout.accumulator(meter, x.device), spike_plan(x, spec))


# --------------------------------------------------------------------- entries
def leaky_step(x: torch.Tensor, mem: Optional[torch.Tensor], params: LeakyParams, spec: ZOSpec,
               meter=None, path: Optional[Path] = None,
               absz: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Leaky step with the LocalZO spike function: ``(spk, mem')``.

    :param mem: previous membrane, or None for a zero membrane
    :param meter: an ActivityMeter counting the non-zero estimates, or None
    :param path: the planner's answer (asked here when None)
    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, *x.shape]``
    """
    spec = leaky_spec(x, spec)
    path = leaky_path(x, mem, params, spec) if path is None else path
    if path is Path.TRITON:
        return run_triton(x, mem, params, spec, meter, absz, 0)
    if path is Path.NATIVE:
        spk, new, _ = run_native(x, mem, params, spec, meter, absz, 0)
        return spk, new
    if absz is None and c_spike_step(x, mem, params, spec):
        return run_c_spike_step(x, mem, params, spec, meter)
    return reference.leaky_step(x, mem, params, lambda u: spike(u, spec, meter, absz))


def leaky_seq(x: torch.Tensor, mem: Optional[torch.Tensor], params: LeakyParams, spec: ZOSpec,
              meter=None, path: Optional[Path] = None,
              absz: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A whole sequence ``x: [T, ...]``: ``(spk [T, ...], mem [T, ...])``, equal
    to :func:`leaky_step` applied T times. On the native path the spikes carry
    the active entries, which a following sparse layer reads.

    :param absz: test hook: magnitudes ``|z|`` of shape ``[samples, *x.shape]``
    """
    if x.shape[0] == 0:  # an empty sequence
        return torch.zeros_like(x), torch.zeros_like(x)
    spec = leaky_spec(x, spec, x.shape[0])
    path = leaky_path(x, mem, params, spec, x.shape[0]) if path is None else path
    if path is Path.TRITON:
        return run_triton(x, mem, params, spec, meter, absz, x.shape[0])
    if path is Path.NATIVE:
        spk, mem_seq, index = run_native(x, mem, params, spec, meter, absz, x.shape[0])
        if index is not None:  # (None also where the draw waits for the backward)
            active.mark(spk, active.ActiveSet(index=index))
        return spk, mem_seq
    fns = [
        (lambda u, t=t: spike(u, spec, meter, None if absz is None else absz[:, t]))
        for t in range(x.shape[0])
    ]
    return reference.leaky_seq(x, mem, params, fns)
