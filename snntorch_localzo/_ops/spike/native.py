"""Native CPU path of the LocalZO spike function's backward.

It receives ``u = mem - threshold`` itself and applies the spec's step.

* **Fused** (float32, a law with a closed-form sampler, the C loops built):
  one C pass per sample (``_scan.c`` spike_backward) computes the step of
  every entry (the adaptive rule, the same bits as
  :meth:`AdaptiveDelta.delta <snntorch_localzo.adaptive.AdaptiveDelta.delta>`),
  draws ``|z|`` only where the estimate can be non-zero (the near entries,
  and tail events at the far ones: ``sampling``'s scheme) from a
  counter-based stream seeded by one draw of torch's generator, and writes
  ``grad_out * G``. No tensor operation runs per call but the seed and the
  output, so it pays from the smallest layer on.
* **Sparse** (everything else: float64, the table laws, no C compiler): the
  step in PyTorch, then ``sampling.sparse_estimate``.

Both give ``grad_out * 0`` where the estimate is zero, as the reference (an
infinite or NaN incoming gradient stays NaN), and, given the magnitudes
``|z|`` (``absz``), the reference's bits.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch

from ... import distributions as D
from ..._backend import Path, device_path
from .. import layout, rng
from ..clib import c_module, compact
from ..workspace import scratch
from ..sampling import TAIL, _MARGIN, sparse_estimate, tail_level
from ..spec import ZOSpec
from . import reference
from .op import register_backward

#: The samplers the fused pass draws from (``_scan.c``'s kinds).
FUSED_KINDS = (D.NORMAL.kind, D.UNIFORM.kind, D.EXPONENTIAL.kind, D.LOMAX2.kind)


def spike_forward(u: torch.Tensor) -> torch.Tensor:
    """The Heaviside forward ``1[u > 0]`` in ``u``'s dtype, in one C pass for a
    contiguous float32/float64 CPU tensor (the reference takes two tensor
    operations); the reference elsewhere and while ``torch.compile`` traces.
    The same bits either way."""
    if (u.dtype not in (torch.float32, torch.float64) or u.device.type != "cpu"
            or not u.is_contiguous() or torch.compiler.is_compiling()):
        return reference.spike_forward(u)
    module = c_module()
    if module is None:
        return reference.spike_forward(u)
    out = torch.empty_like(u)
    module.heaviside(u.data_ptr(), out.data_ptr(), u.numel(), int(u.dtype == torch.float64))
    return out


def fused(u: torch.Tensor, spec: ZOSpec) -> bool:
    """Whether the fused C pass runs the backward of ``u`` (the planner asks)."""
    if u.dtype != torch.float32 or u.device.type != "cpu" or spec.kind not in FUSED_KINDS:
        return False
    module = c_module()
    return module is not None and hasattr(module, "spike_backward")


@functools.lru_cache(maxsize=1024)
def _settings(spec: ZOSpec, shape: tuple) -> tuple:
    """The C pass's arguments after the tensors for a call on ``u`` of
    ``shape``: rows, entries per row, the rule's constants (None: the fixed
    step), the law, the near and tail levels (:func:`_tail`)."""
    rows = shape[0] if len(shape) >= 2 else 1
    n = math.prod(shape) // rows if rows else 0
    rule = spec.step.constants(spec.law, spec.samples, (rows, n) if len(shape) < 2 else shape) \
        if spec.step.adaptive and n else None
    return (rows, n, rule, spec.kind, int(spec.p == 1), spec.samples, float(spec.delta), float(spec.coef),
            float(spec.kparam), *_tail(spec, rule.x_e if rule is not None else 0.0))


def _tail(spec: ZOSpec, x_e: float):
    """``(z_near, z_tail, tail_p)``: a tail event (``|z| >= z_tail = Q(1 - tail_p)``)
    has probability ``tail_p`` per entry and direction, and below ``z_near``
    (``z_tail`` with a margin, in the units of the compared membrane) an
    entry draws every direction. ``tail_p`` is ``sampling.TAIL``, or twice the
    probability of a direction beyond the adaptive step's entry floor ``x_e``
    where that is larger (a small layer): entries held at the floor then
    count as far."""
    floor_p = float(spec.law.abs_sf(x_e)) if x_e > 0 else 0.0
    tail_p = min(max(TAIL, 2.0 * floor_p), 0.5)
    z_tail = tail_level(spec, spec.table("cpu"), tail_p)
    return spec.delta * z_tail * (1.0 + _MARGIN), z_tail, tail_p


def _float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous float32 tensor (itself where it is one)."""
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.to(torch.float32).contiguous()


def fused_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, absz, acc,
                   shift: float = 0.0) -> torch.Tensor:
    """The backward by the fused C pass at ``u = mem - threshold`` (where
    :func:`fused` holds; the spike function calls it directly in eager mode),
    or at ``u - shift`` (a step passes its membrane and threshold: the pass
    subtracts, rounding as ``torch.sub``)."""
    u = _float32(u)
    out = torch.empty_like(u)  # (u: contiguous float32)
    n = u.numel()
    if n:
        grad = _float32(grad_out)
        if absz is not None:
            absz = _float32(absz)
        count = c_module().spike_backward(
            u.data_ptr(), grad.data_ptr(), out.data_ptr(), *_settings(spec, tuple(u.shape)),
            0 if absz is None else absz.data_ptr(), n, rng.host_seed(), 0, shift,
        )
        layout.record(acc, count, n)
    return out if grad_out.dtype == torch.float32 else out.to(grad_out.dtype)


def draw(mem: torch.Tensor, threshold: float, spec: ZOSpec, rows_shape: tuple) -> Tuple[torch.Tensor, torch.Tensor]:
    """One draw of the estimate ``G`` at ``u = mem - threshold`` (float32, on
    the CPU, where :func:`fused` holds), as a sequence layer keeps it: the
    sorted flat int64 indices of its non-zero entries and their float32
    values. ``rows_shape``: ``mem``'s shape with each call's sample as a row
    (:func:`~snntorch_localzo.step.sample_rows`), the rule's unit. The fused
    pass without an incoming gradient (it subtracts the threshold row by row,
    rounding as ``torch.sub``), then one compaction: the law of
    :func:`~snntorch_localzo._ops.sampling.sparse_estimate` (tested by Monte
    Carlo), from a stream seeded by one draw of torch's generator."""
    mem = _float32(mem)
    n = mem.numel()
    module = c_module()
    g = scratch("drawn", (n,), torch.float32)
    count = module.spike_backward(mem.data_ptr(), 0, g.data_ptr(), *_settings(spec, tuple(rows_shape)), 0, n,
                                  rng.host_seed(), 0, float(threshold)) if n else 0
    return compact(g, count)


def exact_fused(u: torch.Tensor, spec: ZOSpec) -> bool:
    """Whether the C passes give the expected value of a small call
    (``Path.EXACT``, :func:`exact_backward`): float32 on the CPU where the
    mode gives it the native path, the normal or uniform law under the
    adaptive step with its entry floor (a step per entry), outside
    ``torch.compile``."""
    if (u.dtype != torch.float32 or u.device.type != "cpu" or type(spec.law) not in (D.Normal, D.Uniform)
            or not spec.step.adaptive or torch.compiler.is_compiling()
            or not u.numel() or device_path(u) is not Path.NATIVE):
        return False
    module = c_module()
    return module is not None and hasattr(module, "exact_uniform") and _settings(spec, tuple(u.shape))[2].x_e > 0


def _exact(u: torch.Tensor, grad: Optional[torch.Tensor], spec: ZOSpec, rows_shape: tuple,
           shift: float = 0.0) -> Tuple[torch.Tensor, int]:
    """``(grad * E[G], count)`` at the float32 ``u = mem - threshold`` (``E[G]``
    itself where ``grad`` is None; rows: ``rows_shape``; at ``u - shift``
    where given: the passes subtract, rounding as ``torch.sub``), with the bits of
    ``reference.exact_estimate`` on ``spec.scale(u)`` and the product, in a
    few calls instead of a dozen tensor operations: for the uniform law the
    rule and the value in one C pass; for the normal law the rule and the
    exponent in one C pass, PyTorch's ``exp``, then the scale (and the
    product) in another. ``count``: the non-zero values of ``E[G]``."""
    out = torch.empty_like(u)  # (u: contiguous float32)
    if not u.numel():
        return out, 0
    rows, n, rule = _settings(spec, tuple(rows_shape))[:3]
    module = c_module()
    law = spec.law
    gptr = 0 if grad is None else grad.data_ptr()
    if type(law) is D.Uniform:
        count = module.exact_uniform(u.data_ptr(), gptr, out.data_ptr(), rows, n, rule,
                                     float(law.delta), law.denominator, spec.inverse_height(), D.SQRT3, shift)
    else:
        w = torch.empty_like(u)
        module.exact_exponent(u.data_ptr(), rows, n, rule, float(law.delta), w.data_ptr(), shift)
        w.exp_()
        count = module.exact_scale(gptr, w.data_ptr(), out.data_ptr(), u.numel(), law.denominator,
                                   spec.inverse_height())
    return out, count


def exact_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, acc: torch.Tensor,
                   shift: float = 0.0) -> torch.Tensor:
    """``grad_out`` times the estimate's expected value at ``u = mem - threshold``
    (not yet scaled: the step is computed here; at ``u - shift`` where given)
    where :func:`exact_fused` holds, with the bits of ``reference.exact_backward``
    on ``spec.scale(u)`` (:func:`_exact`)."""
    u = _float32(u)
    out, count = _exact(u, _float32(grad_out), spec, tuple(u.shape), shift)
    layout.record(acc, count, u.numel())
    return out if grad_out.dtype == torch.float32 else out.to(grad_out.dtype)


def exact_entries(u: torch.Tensor, spec: ZOSpec, rows_shape: tuple,
                  shift: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """The expected value at the float32 ``u = mem - threshold`` (each row of
    ``rows_shape`` one call's sample, where :func:`exact_fused` holds; at
    ``u - shift`` where given: a sequence layer passes its membranes and
    threshold, the passes subtract, rounding as ``torch.sub``) as a
    sequence layer keeps it: the sorted flat int64 indices of its non-zero
    entries and their float32 values, the bits of
    ``sampling.nonzero_entries(sampling.expected_estimate(spec.scale(u)))``
    in two C passes and PyTorch's ``exp`` (:func:`_exact`, then the
    compaction the draw uses)."""
    g, count = _exact(_float32(u), None, spec, rows_shape, shift)
    return compact(g.view(-1), count)


def weighted_fused(u: torch.Tensor, spec: ZOSpec) -> bool:
    """Whether a C pass draws a weighted spec's estimate
    (:mod:`~snntorch_localzo._ops.weighted`): float32 on the CPU, the uniform
    law with one direction under the adaptive step, outside ``torch.compile``
    (the planner asks; every other weighted call takes the reference)."""
    if (not spec.weighted or u.dtype != torch.float32 or u.device.type != "cpu" or type(spec.law) is not D.Uniform
            or spec.samples != 1 or not spec.step.adaptive or torch.compiler.is_compiling() or not u.numel()):
        return False
    module = c_module()
    return module is not None and hasattr(module, "weighted_uniform")


@functools.lru_cache(maxsize=1024)
def _weighted_settings(spec: ZOSpec, rows_shape: tuple) -> tuple:
    """The weighted C pass's arguments between the tensors and the uniforms
    for rows of ``rows_shape``: rows, entries per row, the rule's constants,
    the law's step, denominator and edge and the spec's inverse height
    (worked out once per spec and shape)."""
    rows, n, rule = _settings(spec, rows_shape)[:3]
    law = spec.law
    return rows, n, rule, float(law.delta), law.denominator, spec.inverse_height(), D.SQRT3


def _weighted(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, unif: Optional[torch.Tensor],
              rows_shape: tuple, product: bool, shift: float = 0.0) -> Tuple[torch.Tensor, int]:
    """``(out, count)``: the C pass of :func:`weighted_backward` (``product``)
    or :func:`weighted_entries` on the float32 ``u - shift`` (rows:
    ``rows_shape``; the pass subtracts, rounding as ``torch.sub``)."""
    out = torch.empty_like(u)  # (u: contiguous float32)
    if not u.numel():
        return out, 0
    unif = None if unif is None else _float32(unif.reshape(u.shape))
    grad = _float32(grad_out)  # (held while the pass reads it: a copy of a strided gradient)
    count = c_module().weighted_uniform(
        u.data_ptr(), grad.data_ptr(), out.data_ptr(), *_weighted_settings(spec, tuple(rows_shape)),
        0 if unif is None else unif.data_ptr(), rng.host_seed() if unif is None else 0, product, shift,
    )
    return out, count


def weighted_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, unif: Optional[torch.Tensor],
                      acc: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``grad_out`` times the weighted estimate at ``u = mem - threshold``
    (not yet scaled; at ``u - shift`` where given) where
    :func:`weighted_fused` holds: the rule and the
    draw in one C pass per call, with the bits of the reference
    (``weighted.weighted_estimate`` on ``spec.scale(u)``) given the same
    uniforms ``unif`` (test hook; by default a counter-based stream seeded by
    one draw of torch's generator), up to the last bit of the sums that
    decide ``c`` (the C pass adds in lanes)."""
    u = _float32(u)
    out, count = _weighted(grad_out, u, spec, unif, tuple(u.shape), True, shift)
    layout.record(acc, count, u.numel())
    return out if grad_out.dtype == torch.float32 else out.to(grad_out.dtype)


def weighted_entries(grad_out: torch.Tensor, mem: torch.Tensor, threshold: torch.Tensor, spec: ZOSpec,
                     rows_shape: tuple, unif: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The weighted estimate ``G`` a sequence layer draws in its backward, at
    ``u = mem - threshold`` (float32, rounded as ``torch.sub``) for the
    spike function's incoming gradient ``grad_out`` (each row of
    ``rows_shape`` one call's sample; :func:`weighted_fused` holds), as the
    law's draw is kept: the sorted flat int64 indices of its non-zero
    entries and their float32 values, the bits of
    :func:`weighted_backward`'s ``G`` (``grad_out * G`` there) given the same
    uniforms ``unif``. Not counted into a meter (the caller counts)."""
    g, count = _weighted(grad_out, _float32(mem), spec, unif, rows_shape, False,
                         float(threshold.to(torch.float32)))
    return compact(g.view(-1), count)


def _sparse_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz, acc) -> torch.Tensor:
    index, g = sparse_estimate(spec.scale(u), spec, table, generator=rng.generator(u.device), absz=absz)
    out = grad_out.mul(0).contiguous()
    flat = out.view(-1)
    flat[index] = (grad_out.reshape(-1)[index].to(g.dtype) * g).to(out.dtype)
    layout.record(acc, index.numel(), u.numel())
    return out


def _backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz: Optional[torch.Tensor],
              acc: torch.Tensor) -> torch.Tensor:
    if spec.weighted:
        if weighted_fused(u, spec):
            return weighted_backward(grad_out, u, spec, absz, acc)
        return reference.backward(grad_out, spec.scale(u), spec, absz, acc)
    if fused(u, spec):
        return fused_backward(grad_out, u, spec, absz, acc)
    return _sparse_backward(grad_out, u, spec, table, absz, acc)


backward = register_backward("native", _backward)
