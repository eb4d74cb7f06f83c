"""Native CPU path of the LocalZO spike function's backward: only the
entries that can have a non-zero estimate draw their directions
(``sampling.sparse_estimate``); the others get ``grad_out * 0``, as in the
reference (an infinite or NaN incoming gradient stays NaN)."""

from __future__ import annotations

import torch

from .. import layout, rng
from ..sampling import sparse_estimate
from .op import register_backward


def _backward(grad_out: torch.Tensor, u: torch.Tensor, spec, table, absz, acc) -> torch.Tensor:
    index, g = sparse_estimate(u, spec, table, generator=rng.generator(u.device), absz=absz)
    out = grad_out.mul(0).contiguous()
    flat = out.view(-1)
    flat[index] = (grad_out.reshape(-1)[index].to(g.dtype) * g).to(out.dtype)
    layout.record(acc, index.numel(), u.numel())
    return out


backward = register_backward("native", _backward)
