"""Native CPU path of the Leaky neuron over a sequence ``[T, ...]`` (one step
is ``T = 1``).

Forward: the membrane scan, one vectorised update per time step with no
autograd bookkeeping, then the spikes of all steps at once and one draw of
the LocalZO estimate where it can be non-zero: for float32 and the laws it
samples, the spike function's fused C pass (``spike.native.draw``: every
step of every sample one row of the rule, no incoming gradient), otherwise
``sampling.sparse_estimate``. Only the active entries and their estimates
are kept for backward (a few bytes per active entry), plus the reset flags
for zero reset.

Backward: the incoming spike gradient times the estimate at the active
entries (``grad * 0`` elsewhere, as the reference), then the reverse scan.

Every operation is the reference's (``reference.py``) in the same order and
dtype, so spikes, membranes and, given the same ``|z|`` (``absz``), gradients
equal the reference's bit for bit. The time loops run in C (``_scan.c``,
built with the package where a C compiler is at hand) for float32 and
float64, as vectorised PyTorch operations otherwise (and with
``SNNTORCH_LOCALZO_NO_C=1``); both give the same bits.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from .. import layout, oplib, rng
from ..workspace import output, scratch
from ..sampling import compute_dtype, expected_estimate, nonzero_entries, sparse_estimate, sparse_estimate_abs
from ..clib import c_module, use_c
from ..resets import RESET_NONE, RESET_SUBTRACT, RESET_ZERO
from ..planner import use_event_reverse_scan
from ..spec import ZOSpec
from ...step import Step, sample_entries, sample_rows
from .reference import LeakyParams, clamped_beta

def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _with_time(t: torch.Tensor, steps: int) -> torch.Tensor:
    """``t`` with its time dimension first: ``steps`` steps, or one step
    without a time dimension when ``steps == 0`` (then ``t.unsqueeze(0)``)."""
    return t if steps else t.unsqueeze(0)


def _output(role: str, x: torch.Tensor, steps: int) -> torch.Tensor:
    """A new contiguous output shaped like ``x``: a sequence's on the
    workspace's recycled memory (:func:`~snntorch_localzo._ops.workspace.output`),
    a step's (``steps == 0``) from torch's allocator: a step loop's graph
    holds every step's outputs, so the pool would only be searched."""
    if steps:
        return output(role, x.shape, x.dtype)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _time_shape(shape, steps: int) -> tuple:
    """:func:`_with_time` of a shape."""
    return tuple(shape) if steps else (1,) + tuple(shape)


def scan(
    x: torch.Tensor, mem0: Optional[torch.Tensor], params: LeakyParams, steps: int,
    want_uabs: bool = False, values: Optional[Tuple[float, float, float]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``x``: ``steps`` time steps along its first dimension, or one step
    without a time dimension when ``steps == 0``. Returns ``(spk, mem,
    resets, uabs)`` shaped like ``x`` (``spk`` and ``mem`` not views: a state
    the caller may detach in place); ``resets``: for zero reset the reset flag
    of every step (bool); ``uabs``: ``|mem - thr|`` in the compute dtype (a
    scratch tensor) when the C loop computed it on the way and ``want_uabs``,
    else None. ``values``: ``params.values(x.dtype)`` where the caller has
    them."""
    dt = x.dtype
    mem = _output("mem", x, steps)
    xs, mems = _with_time(x, steps), _with_time(mem, steps)
    if use_c(x, mem0):
        b, thr, gr = params.values(dt) if values is None else values
        spk = _output("spk", x, steps)
        uabs = scratch("u", mem.shape, dt) if want_uabs else None
        zero = params.reset == RESET_ZERO
        fired = scratch("fired", mem.shape, torch.bool) if zero else None
        xc = xs.contiguous()
        m0 = None if mem0 is None else mem0.contiguous()
        c_module().leaky_scan(xc.data_ptr(), _ptr(m0), mem.data_ptr(), spk.data_ptr(), _ptr(uabs),
                              _ptr(fired), xs.shape[0], mem.numel() // xs.shape[0], b, thr, gr, params.reset,
                              dt == torch.float64)
        resets = None
        if zero:  # the reset of step t is the spike of step t - 1
            resets = torch.empty(mem.shape, dtype=torch.bool)
            rs, fs = _with_time(resets, steps), _with_time(fired, steps)
            rs[0] = (torch.zeros_like(xs[0]) if mem0 is None else mem0) > thr
            rs[1:] = fs[:-1]
        return spk, mem, resets, uabs
    b, thr, gr = params.scalars(dt)
    m = torch.zeros_like(xs[0]) if mem0 is None else mem0
    # the reset of the first step; ``a > thr`` is ``a - thr > 0`` in IEEE arithmetic
    fired = m > thr
    resets = torch.empty(mem.shape, dtype=torch.bool) if params.reset == RESET_ZERO else None
    reset_steps = None if resets is None else _with_time(resets, steps)
    reset_thr = fired * thr if params.reset == RESET_SUBTRACT else None
    for t in range(xs.shape[0]):
        new = mems[t]
        if params.reset == RESET_ZERO:
            reset_steps[t] = fired
            torch.mul(b, (~fired).to(dt) * m, out=new)  # beta * ((1 - reset) * mem)
        else:
            torch.mul(b, m, out=new)
        new += xs[t]
        if params.reset == RESET_SUBTRACT:
            new -= reset_thr  # reset * thr
        if params.reset != RESET_NONE and t + 1 < xs.shape[0]:
            fired = new > thr
            if params.reset == RESET_SUBTRACT:
                reset_thr = fired * thr
        m = new
    fired_all = torch.gt(mem, thr, out=scratch("fired", mem.shape, torch.bool))
    spk = fired_all.to(dt)
    if float(gr) != 1.0:  # (a CPU scalar: reading it costs nothing)
        spk = spk * gr
    return spk, mem, resets, None


def _forward(
    x: torch.Tensor, mem0: Optional[torch.Tensor], beta: torch.Tensor, threshold: torch.Tensor,
    graded: torch.Tensor, table: torch.Tensor, absz: Optional[torch.Tensor],
    *, reset: int, spec_ints: List[int], spec_floats: List[float], steps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scan and one draw of the estimate: ``(spk, mem, index, g, resets)``
    (``resets`` empty unless zero reset; ``index`` flat into ``x``)."""
    params = LeakyParams(beta, threshold, graded, reset)
    spec = ZOSpec.unflat(spec_ints, spec_floats)
    exact = spec.step.is_exact(sample_entries(x.shape, steps))
    if draws_in_backward(spec, x.shape, steps):  # from the incoming gradient (weighted_draw)
        spk, mem, resets, _ = scan(x, mem0, params, steps)
        resets = torch.empty(0, dtype=torch.bool) if resets is None else resets
        return spk, mem, torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=compute_dtype(x.dtype)), resets
    # the spike function's fused C pass draws where it runs (float32, a law it samples, the C loops built)
    fused = not exact and absz is None and _spike_native().fused(x, spec)
    spk, mem, resets, uabs = scan(x, mem0, params, steps, want_uabs=absz is None and not fused)
    thr = params.threshold.to(x.dtype)
    if resets is None:
        resets = torch.empty(0, dtype=torch.bool)
    rows = sample_rows(x.shape, steps)  # each step's samples as rows: the rule's unit
    if fused:  # one C pass per sample from mem: u, the rule, the draw where it can be non-zero
        index, g = _spike_native().draw(mem, float(thr), spec, rows)
        return spk, mem, index, g, resets
    if exact and _spike_native().exact_fused(mem.reshape(rows), spec):
        # the expected value: the rule and the value in C (the spike function's Path.EXACT)
        index, g = _spike_native().exact_entries(mem, spec, rows, float(thr))  # (the pass subtracts thr)
        return spk, mem, index, g, resets
    # u = mem - thr, rounded to x's dtype as the reference does, once: for the adaptive
    # step of each time step (as the spike function's), |z| given, or no |u| from the C loop
    u = None
    if spec.step.adaptive or exact or absz is not None or uabs is None:
        # (its own scratch role: the C loop's |u| lives under "u")
        u = torch.sub(mem, thr, out=scratch("u_signed", mem.shape, x.dtype))
    d = spec.divisor(u, steps)  # None: the fixed step, applied by the estimate
    if exact:  # no draw: the expected value
        index, g = nonzero_entries(expected_estimate(Step.apply(u, d), spec))
    elif absz is not None:
        index, g = sparse_estimate(Step.apply(u, d), spec, table, absz=absz)
    else:  # |u|, widened to the compute dtype
        if uabs is None:
            cdtype = compute_dtype(x.dtype)
            uabs = u.abs_() if cdtype == x.dtype else u.to(cdtype).abs_()  # (d is computed)
        uabs = Step.apply(uabs, d)
        index, g = sparse_estimate_abs(uabs, spec, table, generator=rng.generator(x.device))
    return spk, mem, index, g, resets


def draws_in_backward(spec: ZOSpec, shape, steps: int) -> bool:
    """Whether the native sequence's estimate is drawn in backward
    (:func:`weighted_draw`): a weighted spec (:mod:`~snntorch_localzo._ops.weighted`)
    whose step gives a draw (not the expected value). Its forward then keeps
    no active entries, and marks none on the spikes."""
    return spec.weighted and not spec.step.is_exact(sample_entries(shape, steps))


def graded_grad(grad: torch.Tensor, graded) -> torch.Tensor:
    """``grad`` times the spike amplitude ``graded`` (a CPU scalar, or a float
    of ``grad``'s dtype: :meth:`LeakyParams.values`): the gradient
    ``spk = spike(u) * graded`` passes back to the spike function, ``grad``
    itself where ``graded`` is 1 (the same values, one operation fewer)."""
    if float(graded) == 1.0:
        return grad
    return grad * (graded.to(grad.dtype) if isinstance(graded, torch.Tensor) else graded)


def step_grads(grad_u: Optional[torch.Tensor], grad_mem: Optional[torch.Tensor], b: float,
               resets: Optional[torch.Tensor], need_mem0: bool, in_place: bool,
               ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The rest of one Leaky step's backward once its spike function's
    gradient ``grad_u`` is in (None: no spike gradient): ``(grad,
    grad_mem0)``, ``grad = grad_u + grad_mem`` (the input's gradient) and
    ``grad_mem0 = grad * b``, times ``1 - resets`` under zero reset (None
    unless ``need_mem0``), the operations of the reference step's backward
    in their order. One C pass (``_scan.c`` step_grad) where ``in_place``
    (``grad_u`` is a new tensor of the caller's, then updated in place) and
    the tensors are contiguous alike; tensor operations elsewhere.

    :param b: beta as :meth:`LeakyParams.values` gives it
    """
    if (grad_u is not None and in_place and grad_u.is_contiguous() and use_c(grad_u, grad_mem)
            and (grad_mem is None or (grad_mem.is_contiguous() and grad_mem.shape == grad_u.shape))
            and (resets is None or (resets.is_contiguous() and resets.dtype == torch.bool))):
        grad_mem0 = torch.empty_like(grad_u) if need_mem0 else None
        c_module().step_grad(grad_u.data_ptr(), _ptr(grad_mem), _ptr(grad_mem0), _ptr(resets), grad_u.numel(),
                             b, grad_u.dtype == torch.float64)
        return grad_u, grad_mem0
    grad = grad_mem if grad_u is None else grad_u if grad_mem is None else grad_u + grad_mem
    if grad is None or not need_mem0:
        return grad, None
    grad_mem0 = grad * b  # (b * mem: MulBackward's product)
    if resets is not None:  # zero reset: b * ((1 - reset) * mem)
        grad_mem0 = grad_mem0 * (1 - resets.to(grad.dtype))
    return grad, grad_mem0


def weighted_draw(
    grad_spk: Optional[torch.Tensor], mem: torch.Tensor, threshold: torch.Tensor, graded: torch.Tensor,
    spec: ZOSpec, steps: int, absz: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The estimate of a sequence whose draw waits for the backward
    (:func:`draws_in_backward`), as the forward keeps the law's: ``(index,
    G)`` at the active entries, drawn from the membranes ``mem`` of every step
    and the spike function's incoming gradient ``grad_spk * graded`` (each
    step's samples one row of the rule, as the step loop's calls), with
    the bits of the reference's step loop given the same uniforms ``absz``
    (``[1, *mem.shape]``). Empty without a spike gradient."""
    if grad_spk is None:
        return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.float32)
    go = graded_grad(grad_spk, graded)
    unif = None if absz is None else absz.reshape(mem.shape)
    return _spike_native().weighted_entries(go, mem, threshold, spec,
                                            sample_rows(mem.shape, steps), unif)


def _spike_native():
    """The spike function's native module (the spike package imports this
    one: imported on first use)."""
    from ..spike import native as spike_native

    return spike_native


def _forward_fake(x, mem0, beta, threshold, graded, table, absz, *, reset, spec_ints, spec_floats,
                  steps):
    k = oplib.dynamic_size()
    return (
        torch.empty_like(x), torch.empty_like(x), x.new_empty(k, dtype=torch.int64),
        x.new_empty(k, dtype=compute_dtype(x.dtype)),
        x.new_empty(x.shape if reset == RESET_ZERO else (0,), dtype=torch.bool),
    )


def finite_sum(t: torch.Tensor) -> bool:
    """Whether ``t`` is finite, in one pass: a NaN or an infinity anywhere makes
    its sum non-finite (so does an overflow of finite values, which then just
    takes the dense path)."""
    return math.isfinite(float(t.sum()))


def spike_grads_for_scan(
    grad_spk: torch.Tensor, index: torch.Tensor, g: torch.Tensor, graded: torch.Tensor,
    finite: Optional[bool] = None,
):
    """What :func:`reverse_scan` takes for the spike gradient, and the values at
    the active entries: ``(e, sparse_e, e_active)``, ``e_active =
    round(round(grad_spk * graded) * G)`` there. With the C loop and a finite
    incoming gradient, ``e`` stays sparse (only the active entries are read);
    otherwise it is made dense, ``grad * 0`` elsewhere as the reference (a NaN
    or infinite gradient then propagates as there; a scratch tensor, valid
    until the next call). ``finite``: :func:`finite_sum` of ``grad_spk``
    where the caller has it."""
    e_active = active_spike_grads(grad_spk, index, g, graded)
    if use_c(grad_spk) and (finite_sum(grad_spk) if finite is None else finite):
        return None, (index, e_active), e_active
    e = scratch("e", grad_spk.shape, grad_spk.dtype)
    torch.mul(graded_grad(grad_spk, graded), 0, out=e)
    e.view(-1)[index] = e_active
    return e, None, e_active


def active_spike_grads(
    grad_spk: torch.Tensor, index: torch.Tensor, g: torch.Tensor, graded: torch.Tensor
) -> torch.Tensor:
    """``round(round(grad_spk * graded) * G)`` at the active entries only (an
    expanded incoming gradient, such as that of a sum over time, is read in
    place, not materialised)."""
    if grad_spk.is_contiguous():
        gs = grad_spk.reshape(-1)[index]
    else:
        gs = grad_spk[torch.unravel_index(index, grad_spk.shape)]
    return (graded_grad(gs, graded).to(g.dtype) * g).to(grad_spk.dtype)


def spike_grads(
    grad_spk: Optional[torch.Tensor], index: torch.Tensor, g: torch.Tensor, graded: torch.Tensor,
    acc: torch.Tensor, for_scan: bool = True, finite: Optional[bool] = None,
):
    """The spike gradient's part of a backward: ``(e, sparse_e, e_active)`` as
    :func:`spike_grads_for_scan` gives them (``finite`` passed on), or
    ``(None, None, e_active)`` when no reverse scan follows (``for_scan``
    False: only the active entries are read); the call is counted into the
    meter ``acc``. All None without a spike gradient."""
    if grad_spk is None:
        return None, None, None
    if for_scan:
        grads = spike_grads_for_scan(grad_spk, index, g, graded, finite)
    else:
        grads = None, None, active_spike_grads(grad_spk, index, g, graded)
    layout.record(acc, index.numel(), grad_spk.numel())
    return grads


def reverse_scan(
    e: Optional[torch.Tensor],
    grad_mem: Optional[torch.Tensor],
    resets: Optional[torch.Tensor],
    beta: torch.Tensor,
    dtype: torch.dtype,
    shape,
    sparse_e: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the input at every step ``[T, ...]`` and of the initial
    membrane: 
    ``gm[t] = grad_mem[t] + carry`` (what autograd accumulates on mem[t]),
    ``gm[t] += e[t]``, ``carry = beta * gm[t]`` (zeroed where zero reset fired).
    ``sparse_e``: ``(index, values)``, ``e`` zero away from those flat indices
    (the C loop only; the other entries then skip the ``+ 0``). Without a
    membrane gradient and with few active entries
    (:func:`~snntorch_localzo._ops.planner.use_event_reverse_scan`) the C
    loop zeroes ``gx`` and then runs only the neurons with an active entry
    at or after each step: the same bits."""
    b = clamped_beta(beta, dtype)
    gx = output("grad", shape, dtype)
    carry = torch.zeros(shape[1:], dtype=dtype)
    e = None if e is None else e.reshape(shape)
    grad_mem = None if grad_mem is None else grad_mem.reshape(shape)
    resets = None if resets is None else resets.reshape(shape)
    if use_c(gx, e, grad_mem, None if sparse_e is None else sparse_e[1]):
        e, grad_mem = (None if t is None else t.contiguous() for t in (e, grad_mem))
        resets = None if resets is None else resets.contiguous()
        index, values = sparse_e if sparse_e is not None else (None, None)
        count = 0 if index is None else index.numel()
        events = e is None and grad_mem is None and index is not None \
            and use_event_reverse_scan(count, carry.numel())
        c_module().reverse_scan(_ptr(e), _ptr(index), _ptr(values), count,
                                _ptr(grad_mem), _ptr(resets), gx.data_ptr(), carry.data_ptr(),
                                shape[0], carry.numel(), float(b), dtype == torch.float64, events)
        return gx, carry
    if sparse_e is not None:
        e = torch.zeros(shape, dtype=dtype)
        e.view(-1)[sparse_e[0]] = sparse_e[1]
    for t in range(shape[0] - 1, -1, -1):
        gm = gx[t]
        if grad_mem is not None:
            torch.add(grad_mem[t], carry, out=gm)
            if e is not None:
                gm += e[t]
        elif e is not None:
            torch.add(carry, e[t], out=gm)
        else:
            gm.copy_(carry)
        carry = gm * b
        if resets is not None:
            carry = torch.where(resets[t], 0.0 * carry, carry)
    return gx, carry


def _backward(
    grad_spk: Optional[torch.Tensor], grad_mem: Optional[torch.Tensor], index: torch.Tensor,
    g: torch.Tensor, resets: torch.Tensor, beta: torch.Tensor, graded: torch.Tensor,
    acc: torch.Tensor, *, reset: int, dtype: torch.dtype, shape: List[int], steps: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_mem0)``, ``grad_x`` of the input's ``shape`` (``steps``
    as in :func:`scan`); counts the active entries into the meter ``acc``."""
    e, sparse_e, _ = spike_grads(grad_spk, index, g, graded, acc)
    seq = _time_shape(shape, steps)
    gx, gmem0 = reverse_scan(e, grad_mem, resets if reset == RESET_ZERO else None, beta, dtype, seq,
                             sparse_e)
    return gx.reshape(shape), gmem0


def _backward_fake(grad_spk, grad_mem, index, g, resets, beta, graded, acc, *, reset, dtype, shape,
                   steps):
    seq = _time_shape(shape, steps)
    return torch.empty(shape, dtype=dtype), torch.empty(seq[1:], dtype=dtype)


leaky_forward = oplib.register("leaky_forward_native", _forward, _forward_fake, seeded=True)
leaky_backward = oplib.register("leaky_backward_native", _backward, _backward_fake, mutates=("acc",))
