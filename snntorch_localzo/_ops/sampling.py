"""Drawing ``|z|`` and computing the LocalZO estimate in PyTorch.

* :func:`estimate` is the estimate's definition, given the magnitudes
  ``|z|``: every path is tested against it bit for bit (the kernels through
  the ``absz`` test hook).
* :func:`draw_abs_z` draws ``|z|`` for every entry (the reference path).
* :func:`expected_estimate` is the estimate's expected value, which a call
  too small for a draw gets instead (``Path.EXACT``).
* :func:`sparse_estimate` draws only what decides the few non-zero
  estimates (the native CPU path where the spike function's fused C pass,
  which splits the entries the same way, does not run: float64, the table
  laws, no C compiler), with the same law:

  For a uniform ``U``, ``|z| = Q(U)`` with ``Q`` the quantile function of
  ``|z|``. Split ``U`` at ``1 - TAIL``: with probability ``TAIL`` (a *tail
  event*) ``|z| >= z_hi = Q(1 - TAIL)``, otherwise ``|z| < z_hi``. An entry
  with ``|u| >= delta * z_hi`` (almost all of them) can only be active through
  a tail event, and tail events are rare: their positions over all entries
  are drawn as a Bernoulli(``TAIL``) process with geometric gaps, so their
  cost does not grow with the number of entries that are far from
  threshold. Entries near threshold (``|u| < delta * z_hi``) draw their ``U``
  below ``1 - TAIL`` unless a tail event hit them. Every ``U`` is then
  uniform on [0, 1) as the definition asks, and ``|z|`` is drawn (in float64,
  from ``q = 1 - U``, so that far tails keep their precision) only for the
  entries that can be active. When many entries are near threshold (an
  untrained, silent layer with the adaptive step's wide band), deciding them
  one by one costs more than drawing every entry: then (the planner's
  ``native_draws_densely``) it draws every entry as the reference does.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..distributions import SAMPLERS, TABLE, compute_dtype
from . import planner
from .clib import c_module, compact, use_c
from .workspace import scratch
from .spec import ZOSpec

#: Probability of a tail event per entry and direction.
TAIL = 2.0**-8
#: Relative margin on ``z_hi``: float rounding of the quantile function never
#: moves a draw below ``1 - TAIL`` above it.
_MARGIN = 1e-5


def estimate(u: torch.Tensor, absz: torch.Tensor, spec: ZOSpec) -> torch.Tensor:
    """``G_m(u)`` from given magnitudes ``absz`` (``[m, *u.shape]``), in the
    compute dtype (float32, float64 for float64 ``u``):
    ``coef * sum_i |z_i|**p * 1[|u| < delta |z_i|]``."""
    cdtype = compute_dtype(u.dtype)
    uabs = u.to(cdtype).abs()
    acc = torch.zeros_like(uabs)
    for i in range(absz.shape[0]):
        a = absz[i].to(cdtype)
        w = a if spec.p == 1 else 1.0 / a
        acc = acc + torch.where(uabs < spec.delta * a, w, torch.zeros_like(w))
    return acc * spec.coef


def nonzero_entries(g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(index, values)``: the sorted flat indices of the non-zero entries of
    ``g`` and their values."""
    g = g.reshape(-1)
    index = torch.nonzero(g, as_tuple=True)[0]
    return index, g[index]


def expected_estimate(u: torch.Tensor, spec: ZOSpec) -> torch.Tensor:
    """The estimate's expected value at ``u`` (as the operators see it), in
    the compute dtype: ``g(u) / height``, what a call the step gives no draw
    gets (:meth:`Step.is_exact <snntorch_localzo.step.Step.is_exact>`)."""
    law = spec.law
    return law.expected_grad(u.to(compute_dtype(u.dtype))) * spec.inverse_height()


def draw_abs_z(
    spec: ZOSpec,
    table: torch.Tensor,
    shape,
    *,
    device,
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``spec.samples`` draws of ``|z|`` per entry: shape ``[samples, *shape]``."""
    sampler = SAMPLERS[spec.kind]
    draw = torch.randn if sampler.normal else torch.rand
    r = draw((spec.samples,) + tuple(shape), device=device, dtype=dtype, generator=generator)
    return sampler.from_draw(r, spec.kparam, table).to(dtype)


def abs_z_from_q(spec: ZOSpec, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The quantile ``Q(1 - q)`` of ``|z|`` for ``q`` in (0, 1], in ``q``'s dtype
    (float64 for far tails, float32 is enough for ``q > 2**-8``)."""
    return SAMPLERS[spec.kind].from_q(q, spec.kparam, table)


def tail_level(spec: ZOSpec, table: torch.Tensor, tail_p: float = TAIL) -> float:
    """``Q(1 - tail_p)``: the level ``|z|`` exceeds with probability ``tail_p``
    (a tail event), in float64."""
    return float(abs_z_from_q(spec, table.cpu(), torch.tensor([tail_p], dtype=torch.float64)))


_Z_HI = {}


def _z_hi(spec: ZOSpec, table: torch.Tensor) -> float:
    """``Q(1 - TAIL)`` with its margin (cached per sampler)."""
    key = (spec.kind, spec.kparam, table.data_ptr() if spec.kind == TABLE.kind else 0)
    if key not in _Z_HI:
        _Z_HI[key] = tail_level(spec, table) * (1.0 + _MARGIN)
    return _Z_HI[key]


def _bernoulli_positions(n: int, p: float, generator, device) -> torch.Tensor:
    """Sorted positions in ``[0, n)`` of a Bernoulli(``p``) process, drawn as
    geometric gaps (cost proportional to the number of events)."""
    log1mp = torch.log1p(torch.tensor(-p, dtype=torch.float64)).item()
    parts, end = [], -1
    while True:
        mean = (n - end) * p
        k = int(mean + 6.0 * mean**0.5 + 16)
        v = 1.0 - torch.rand(k, dtype=torch.float64, generator=generator, device=device)
        gaps = torch.floor(torch.log(v) / log1mp).to(torch.int64) + 1
        pos = end + torch.cumsum(gaps, 0)
        parts.append(pos[pos < n])
        if pos[-1].item() >= n:
            return torch.cat(parts)
        end = int(pos[-1].item())


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Sorted flat indices of the True entries of a bool tensor. At the low
    densities met here, finding the non-zero 8-byte words first, then the
    entries inside them, reads the mask once instead of twice."""
    flat = mask.reshape(-1)
    n = flat.numel()
    if n % 8 or not flat.is_contiguous() or n < 2**16:
        return torch.nonzero(flat, as_tuple=True)[0]
    words = torch.nonzero(flat.view(torch.int64), as_tuple=True)[0]
    rows, cols = torch.nonzero(flat.view(-1, 8)[words], as_tuple=True)
    return words[rows] * 8 + cols


def sparse_estimate(
    u: torch.Tensor,
    spec: ZOSpec,
    table: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    absz: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The non-zero entries of one draw of ``G_m(u)``: ``(index, values)``,
    ``index`` the sorted flat indices (int64) into ``u``, ``values`` in the
    compute dtype. ``absz`` (test hook, ``[m, *u.shape]``) fixes the
    magnitudes; then the values equal :func:`estimate`'s bit for bit."""
    if absz is not None:
        return nonzero_entries(estimate(u, absz, spec))
    return sparse_estimate_abs(u.to(compute_dtype(u.dtype)).abs(), spec, table, generator=generator)


def nonzero_estimate(uabs: torch.Tensor, absz: torch.Tensor, spec: ZOSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    """The non-zero entries ``(index, values)`` of :func:`estimate` at the flat
    ``uabs`` (compute dtype) given ``absz [m, n]``: the same bits, in two C
    passes (estimate, then compaction) where the C loops run, else
    :func:`estimate` and ``torch.nonzero``."""
    if not use_c(uabs, absz) or uabs.device.type != "cpu" or torch.compiler.is_compiling():
        return nonzero_entries(estimate(uabs, absz, spec))
    uabs, absz = uabs.contiguous(), absz.contiguous()
    n, f64 = uabs.numel(), uabs.dtype == torch.float64
    c = c_module()
    g = scratch("estimate", (n,), uabs.dtype)
    count = c.dense_estimate(uabs.data_ptr(), absz.data_ptr(), absz.shape[0], n, float(spec.delta),
                             float(spec.coef), int(spec.p == 1), g.data_ptr(), f64)
    return compact(g, count)


def sparse_estimate_abs(
    uabs: torch.Tensor,
    spec: ZOSpec,
    table: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`sparse_estimate` from ``|u|``, already in the compute dtype."""
    cdtype = uabs.dtype
    device = uabs.device
    uabs = uabs.reshape(-1)
    n, m = uabs.numel(), spec.samples
    near_thr = spec.delta * torch.tensor(_z_hi(spec, table), dtype=cdtype)
    near_mask = torch.lt(uabs, near_thr, out=scratch("near", uabs.shape, torch.bool))
    if planner.native_draws_densely(int(torch.count_nonzero(near_mask)), n):
        # many near entries: the reference's draw of every entry
        absz = draw_abs_z(spec, table, (n,), device=device, dtype=cdtype, generator=generator)
        return nonzero_estimate(uabs, absz, spec)
    near = flat_nonzero(near_mask)
    # near entries: U below 1 - TAIL, q = 1 - U in (TAIL, 1] (float32 is precise there)
    v = torch.rand(m, near.numel(), dtype=cdtype, generator=generator, device=device)
    z_near = abs_z_from_q(spec, table, v.mul_(TAIL - 1.0).add_(1.0))
    # tail events, q in (0, TAIL] in float64 (far tails keep their precision)
    tail = _bernoulli_positions(n * m, TAIL, generator, device)
    w = torch.rand(tail.numel(), dtype=torch.float64, generator=generator, device=device)
    z_tail = abs_z_from_q(spec, table, w.mul_(-TAIL).add_(TAIL)).to(cdtype)
    tail_dir, tail_entry = tail // n, tail % n
    # a tail event on a near entry replaces that direction's draw
    slot = torch.searchsorted(near, tail_entry)
    hit = slot < near.numel()
    hit[hit.clone()] = near[slot[hit]] == tail_entry[hit]
    z_near[tail_dir[hit], slot[hit]] = z_tail[hit]
    # the other tail events: entries far from threshold, |z| = 0 in their other directions
    far, far_slot = torch.unique(tail_entry[~hit], return_inverse=True)
    z_far = torch.zeros(m, far.numel(), dtype=cdtype, device=device)
    z_far[tail_dir[~hit], far_slot] = z_tail[~hit]
    g_near = estimate(uabs[near], z_near, spec)
    g_far = estimate(uabs[far], z_far, spec)
    keep_near, keep_far = g_near != 0, g_far != 0
    index = torch.cat([near[keep_near], far[keep_far]])
    values = torch.cat([g_near[keep_near], g_far[keep_far]])
    index, order = torch.sort(index)
    return index, values[order]
