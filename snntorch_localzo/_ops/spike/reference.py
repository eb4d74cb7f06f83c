"""Plain PyTorch reference of the LocalZO spike function: the Heaviside step
forward; in backward, ``|z|`` drawn for every entry from torch's generator and
the estimate of ``sampling.estimate`` (docs/method.md section 1), or, for a
weighted spec, one uniform per entry and ``weighted.weighted_estimate``
(section 8)."""

from __future__ import annotations

import torch

from .. import layout, rng
from ..sampling import compute_dtype, draw_abs_z, estimate, expected_estimate
from ..spec import ZOSpec
from ..weighted import weighted_estimate
from .op import register_backward


def spike_forward(u: torch.Tensor) -> torch.Tensor:
    """Heaviside ``1[u > 0]`` in the dtype of ``u`` (snnTorch's forward)."""
    return (u > 0).to(u.dtype)


def draw_estimate(u: torch.Tensor, spec: ZOSpec, table: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """One draw of ``G_m(u)`` in the compute dtype, counted into ``acc`` (for
    a weighted spec, weighted by ``g(u)`` alone: an incoming gradient of ones)."""
    if spec.weighted:
        g = weighted_estimate(u, None, spec, rng.generator(u.device))
        layout.record_nonzero(acc, g)
        return g
    absz = draw_abs_z(
        spec, table, u.shape, device=u.device, dtype=compute_dtype(u.dtype),
        generator=rng.generator(u.device),
    )
    g = estimate(u, absz, spec)
    layout.record_nonzero(acc, g)
    return g


def exact_estimate(u: torch.Tensor, spec: ZOSpec, acc: torch.Tensor) -> torch.Tensor:
    """The estimate's expected value (no draw, ``Path.EXACT``) in the compute
    dtype, counted into ``acc``."""
    g = expected_estimate(u, spec)
    layout.record_nonzero(acc, g)
    return g


def _backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz, acc) -> torch.Tensor:
    """``grad_out * G(u)`` with ``|z|`` drawn (unless given); adds the
    non-zero count to the meter ``acc`` (unless it is empty). A weighted spec
    draws its estimate for ``grad_out`` (``absz``: its uniforms, shaped like ``u``)."""
    if spec.weighted:
        g = weighted_estimate(u, grad_out, spec, rng.generator(u.device), absz)
        layout.record_nonzero(acc, g)
    elif absz is None:
        g = draw_estimate(u, spec, table, acc)
    else:
        g = estimate(u, absz, spec)
        layout.record_nonzero(acc, g)
    return (grad_out.to(g.dtype) * g).to(grad_out.dtype)


backward = register_backward("reference", _backward)


def _exact_backward(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, table, absz, acc) -> torch.Tensor:
    """``grad_out`` times the expected value (no draw; ``absz`` is not used)."""
    g = exact_estimate(u, spec, acc)
    return (grad_out.to(g.dtype) * g).to(grad_out.dtype)


exact_backward = register_backward("exact", _exact_backward)
