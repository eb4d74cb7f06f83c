"""Gradient-weighted sampling of the estimate's active entries, in PyTorch
(``make(sampling="gradient")``, docs/method.md section 8).

The law's draw makes an entry active with probability ``p(u)`` (for one
uniform direction ``1 - |u| / (sqrt(3) delta)`` inside the band) whatever
gradient reaches it. In the backward, the incoming gradient ``go`` is known,
and the estimate is only ever used as ``go * G``. For each sample (a row of
:func:`~snntorch_localzo.step.sample_rows`):

* the *budget* ``K = sum_j p(u_j)``, the expected number of active entries
  of the law's draw, stays;
* entry ``j`` is active with probability ``q_j = min(1, c w_j)``,
  ``w_j = |go_j g(u_j)|``, ``g`` the estimate's expected value
  (:func:`~snntorch_localzo._ops.sampling.expected_estimate`), ``c`` such
  that ``sum_j q_j = K`` (:func:`inclusion_probability`);
* the estimate is ``g(u_j) / q_j`` where active, 0 elsewhere.

Its expected value is ``g(u)``, as the law's draw's, and a sample's
expected number of active entries is ``K`` (fewer where ``go`` is zero).
Among all inclusion probabilities with that sum, ``q ∝ |go g|`` minimises
the summed variance of ``go * G`` (a Lagrange multiplier on
``sum_j (go_j g_j)^2 (1/q_j - 1)``). ``c`` scales with ``1 / |go|``, so a
sample's ``q`` does not change when its gradient is scaled (a mean loss over
a chunk of the batch) and does not depend on the other samples.

The planner sends a weighted spec down ``Path.REFERENCE`` (the expected
value, ``Path.EXACT``, where the step gives no draw), or, for float32 with
the uniform law and one direction, to one C pass on the CPU
(``spike.native.weighted_backward``, the adaptive step) or one Triton kernel
(``spike.triton.weighted_bwd_kernel``), which give the reference's values
given the same uniforms.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..distributions import compute_dtype
from ..step import sample_rows
from .sampling import expected_estimate
from .spec import ZOSpec


def inclusion_probability(w: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """``q = min(1, c w)`` row by row, with ``c >= 0`` such that each row's
    ``q`` sums to its ``budget`` (all ones where ``w > 0`` when the budget is
    at least the number of such entries). ``w``: ``[rows, n]``, non-negative
    and finite; ``budget``: ``[rows]``. Computed in float64.

    The entries capped at 1 are the ``k`` largest, ``k`` the first index of
    the descending ``w`` at which ``w_(k+1) c_k < 1``, where
    ``c_k = (budget - k) / (sum of w beyond the k largest)`` is the ``c``
    with the ``k`` largest capped: while ``w_(k+1) c_k >= 1``, capping that
    entry too does not lower ``c`` (``c_(k+1) >= c_k`` exactly when
    ``w_(k+1) >= 1 / c_k``), so the first ``k`` that fails is the smallest
    consistent one, the one repeated capping from none reaches (the C pass
    caps that way). A sort and suffix sums: no loop, no host
    synchronisation (on a GPU too)."""
    w = w.to(torch.float64)
    budget = budget.to(torch.float64)
    n = w.shape[-1]
    if not w.numel():
        return w.clone()
    sorted_w, _ = torch.sort(w, dim=-1, descending=True)
    # the sum beyond the k largest, for k = 0 .. n-1: suffix sums, added from the smallest
    rest = torch.flip(torch.cumsum(torch.flip(sorted_w, dims=(-1,)), dim=-1), dims=(-1,))
    k = torch.arange(n, device=w.device, dtype=torch.float64)
    left = budget[:, None] - k
    tiny = torch.finfo(torch.float64).tiny
    # (masked_fill, not where with a number: no host scalar copied to the device)
    c_k = (left / rest.clamp(min=tiny)).masked_fill(rest <= 0, 0.0)
    caps = (left > 0) & (sorted_w * c_k >= 1)
    # the first k that does not cap (n where every entry caps)
    stop = (~caps).to(torch.int8).argmax(-1).masked_fill(caps.all(-1), n)
    # the capped entries: the stop largest (ties at the boundary: every entry of w >= the stop-th)
    threshold = sorted_w.gather(-1, (stop - 1).clamp(min=0)[:, None]).masked_fill(stop[:, None] == 0, torch.inf)
    capped = (w >= threshold) & (w > 0)
    # c from the sum of the others itself (the prefix sums lose digits when the capped hold most of w)
    free = w.masked_fill(capped, 0.0).sum(-1, keepdim=True)
    left = (budget[:, None] - capped.sum(-1, keepdim=True)).clamp(min=0)
    c = (left / free.clamp(min=tiny)).masked_fill(free <= 0, 0.0)
    return (c * w).clamp(max=1.0).masked_fill(capped, 1.0)


def _rows(u: torch.Tensor) -> int:
    return sample_rows(u.shape)[0]


def weighted_probability(u: torch.Tensor, grad_out: Optional[torch.Tensor], spec: ZOSpec) -> torch.Tensor:
    """The inclusion probability ``q`` (float64, shaped like ``u``) of every
    entry at ``u`` (as the operators see it: ``spec.scale(u)``) for the
    incoming gradient ``grad_out`` (None: ones). An infinite or NaN
    ``grad_out`` entry is never active (its gradient stays NaN)."""
    return _expected_and_probability(u, grad_out, spec)[1]


def _expected_and_probability(u: torch.Tensor, grad_out: Optional[torch.Tensor], spec: ZOSpec):
    """``(g, q)``: the expected value (float64) and :func:`weighted_probability`."""
    g = expected_estimate(u, spec).to(torch.float64)
    p = torch.nan_to_num(spec.law.active_prob(u, spec.samples), nan=0.0)  # (a NaN membrane: never active)
    rows = _rows(u)
    w = g.abs() if grad_out is None else (g * grad_out.to(torch.float64)).abs()
    w = torch.nan_to_num(w, nan=0.0, posinf=0.0)
    q = inclusion_probability(w.reshape(rows, -1), p.reshape(rows, -1).sum(1))
    return g, q.view(u.shape)


def uniforms(shape, device, dtype: torch.dtype, generator: Optional[torch.Generator]) -> torch.Tensor:
    """The draw: one uniform on [0, 1) per entry."""
    return torch.rand(shape, device=device, dtype=dtype, generator=generator)


def weighted_estimate(u: torch.Tensor, grad_out: Optional[torch.Tensor], spec: ZOSpec,
                      generator: Optional[torch.Generator], unif: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw of the gradient-weighted estimate at ``u`` (as the operators
    see it) for the incoming gradient ``grad_out`` (None: ones), in the
    compute dtype: ``g(u) / q`` where a uniform from ``generator`` (one per
    entry, drawn in ``u``'s compute dtype; ``unif``: given instead, the
    test hook) falls below ``q``, else 0."""
    cdtype = compute_dtype(u.dtype)
    g, q = _expected_and_probability(u, grad_out, spec)
    r = uniforms(u.shape, u.device, cdtype, generator) if unif is None else unif.reshape(u.shape)
    active = r.to(torch.float64) < q
    return (g / q.masked_fill(~active, 1.0)).masked_fill(~active, 0.0).to(cdtype)
