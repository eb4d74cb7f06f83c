"""Noise injection and feedback connections of OPZO.

* :func:`draw_noise`: the perturbation directions ``z`` (Gaussian, Rademacher,
  or uniform on the sphere of radius ``sqrt(n)``; all three have
  ``E[z z^T] = I`` per sample).
* :class:`NoiseStream`: one layer's ``z`` at each step; with dual noise the
  step after a draw uses ``-z`` (antithetic pairs, lower variance).
* :func:`momentum_update`: ``M <- lam M + (1 - lam) mean_batch(z o~^T) / alpha``,
  whose expectation over ``z`` is the transpose Jacobian of the output with
  respect to the perturbed activity (for a smooth network; for spikes, of the
  noise-smoothed network).

Everything here runs without autograd and in place, so the feedback state is
a fixed number of tensors whatever the sequence length.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .._checks import check_choice

__all__ = ["NOISES", "draw_noise", "NoiseStream", "momentum_update"]

#: noise laws accepted by ``noise=``
NOISES = ("gaussian", "rademacher", "sphere")


def draw_noise(
    kind: str,
    shape,
    *,
    device=None,
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Directions ``z`` of ``shape`` (first dimension: batch) with ``E[z z^T] = I``
    per sample: ``"gaussian"`` N(0, 1) entries, ``"rademacher"`` +-1 entries,
    ``"sphere"`` uniform on the sphere of radius ``sqrt(n)`` per sample (``n``
    the entries of one sample)."""
    check_choice("noise", kind, NOISES)
    shape = tuple(shape)
    if kind == "gaussian":
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, device=device, generator=generator)
        return bits.to(dtype).mul_(2).sub_(1)
    z = torch.randn(shape, device=device, dtype=dtype, generator=generator)  # "sphere"
    flat = z.reshape(shape[0], -1)
    n = flat.shape[1]
    flat.mul_(math.sqrt(n) / flat.norm(dim=1, keepdim=True).clamp_min(1e-30))
    return z


class NoiseStream:
    """The directions of one layer, step after step. With ``dual=True`` draws
    alternate with their negatives: ``z, -z, z', -z', ...`` (call
    :meth:`restart` at the start of a sequence)."""

    def __init__(self, kind: str, dual: bool, generator: Optional[torch.Generator] = None):
        self.kind = kind
        self.dual = dual
        self.generator = generator
        self._pending: Optional[torch.Tensor] = None

    def restart(self) -> None:
        self._pending = None

    def next(self, like: torch.Tensor) -> torch.Tensor:
        if self._pending is not None and self._pending.shape == like.shape:
            z = self._pending.neg_()
            self._pending = None
            return z
        z = draw_noise(self.kind, like.shape, device=like.device, dtype=like.dtype,
                       generator=self.generator)
        self._pending = z.clone() if self.dual else None
        return z


def momentum_update(
    M: torch.Tensor, z: torch.Tensor, o_tilde: torch.Tensor, alpha: float, momentum: float
) -> torch.Tensor:
    """In place: ``M <- momentum * M + (1 - momentum) * mean_b(z_b o~_b^T) / alpha``.

    :param M: ``[n, n_out]`` feedback matrix of a layer with ``n`` neurons
    :param z: ``[B, ...]`` the directions injected at that layer (``n`` entries per sample)
    :param o_tilde: ``[B, n_out]`` the perturbed output of the same step
    """
    batch = z.shape[0]
    flat = z.reshape(batch, -1).to(M.dtype)
    M.mul_(momentum)
    M.addmm_(flat.t(), o_tilde.to(M.dtype), alpha=(1.0 - momentum) / (alpha * batch))
    return M
