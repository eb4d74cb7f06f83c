"""Plain PyTorch reference of the LocalZO spike function.

The estimate with ``m`` directions (LOCALZO.md section 1) is

    G_m(u) = scale / m * sum_i |z_i|**p * 1[|u| < delta * |z_i|],
    scale = c / (2 delta),

computed in float32 (float64 for float64 inputs). The Triton kernels use the
same operations in the same order, so both agree bit for bit given ``|z|``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ...distributions import Distribution
from ...stats import record
from .. import oplib, rng


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 compute in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def draw_abs_z(
    dist: Distribution,
    samples: int,
    shape,
    *,
    device,
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``samples`` independent draws of ``|z|`` per entry: shape ``[samples, *shape]``."""
    return dist.abs_sample(
        (samples,) + tuple(shape), device=device, dtype=dtype, generator=generator
    )


def estimate(u: torch.Tensor, absz: torch.Tensor, dist: Distribution) -> torch.Tensor:
    """LocalZO estimate ``G_m(u)`` from given magnitudes ``absz`` (``[m, *u.shape]``)."""
    cdtype = compute_dtype(u.dtype)
    uabs = u.to(cdtype).abs()
    samples = absz.shape[0]
    acc = torch.zeros_like(uabs)
    for i in range(samples):
        a = absz[i].to(cdtype)
        w = a if dist.p == 1 else 1.0 / a
        acc = acc + torch.where(uabs < dist.delta * a, w, torch.zeros_like(w))
    return acc * (dist.scale / samples)


def spike_forward(u: torch.Tensor) -> torch.Tensor:
    """Heaviside ``1[u > 0]`` in the dtype of ``u`` (snnTorch's forward)."""
    return (u > 0).to(u.dtype)


def spike_backward(
    grad_out: torch.Tensor, u: torch.Tensor, absz: torch.Tensor, dist: Distribution
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(grad_out * G_m(u), G_m(u))``; the first in ``grad_out``'s dtype."""
    g = estimate(u, absz, dist)
    return (grad_out.to(g.dtype) * g).to(grad_out.dtype), g


def draw_estimate(u: torch.Tensor, dist: Distribution, samples: int, meter=None) -> torch.Tensor:
    """One draw of ``G_m(u)`` from torch's generator (no autograd); counted by
    ``meter`` (an ActivityMeter) when given."""
    absz = draw_abs_z(
        dist, samples, u.shape, device=u.device, dtype=compute_dtype(u.dtype),
        generator=rng.generator(u.device),
    )
    g = estimate(u, absz, dist)
    if meter is not None:
        record(meter.accumulator(u.device), torch.count_nonzero(g), g.numel())
    return g


def _backward(
    grad_out: torch.Tensor,
    u: torch.Tensor,
    dist_name: str,
    dist_params: List[float],
    samples: int,
    absz: Optional[torch.Tensor],
    acc: torch.Tensor,
) -> torch.Tensor:
    """The reference backward: draws ``|z|`` (unless given), returns
    ``grad_out * G`` and adds the non-zero count to the meter ``acc`` (unless
    it is empty)."""
    dist = oplib.dist_from(dist_name, dist_params)
    if absz is None:
        absz = draw_abs_z(
            dist, samples, u.shape, device=u.device, dtype=compute_dtype(u.dtype),
            generator=rng.generator(u.device),
        )
    grad_in, g = spike_backward(grad_out, u, absz, dist)
    if acc.numel():
        record(acc, torch.count_nonzero(g), g.numel())
    return grad_in


backward = oplib.register(
    "spike_backward_reference", _backward, lambda grad_out, *args: torch.empty_like(grad_out),
    mutates=("acc",), seeded=True,
)
