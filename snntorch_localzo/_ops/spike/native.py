"""Native CPU path of the LocalZO spike function's backward: only the
entries that can have a non-zero estimate draw their directions
(``sampling.sparse_estimate``); the others get ``grad_out * 0``, as in the
reference (an infinite or NaN incoming gradient stays NaN)."""

from __future__ import annotations

from typing import List, Optional

import torch

from .. import layout, oplib, rng
from ..sampling import sparse_estimate
from ..spec import ZOSpec


def _backward(
    grad_out: torch.Tensor,
    u: torch.Tensor,
    spec_ints: List[int],
    spec_floats: List[float],
    table: torch.Tensor,
    absz: Optional[torch.Tensor],
    acc: torch.Tensor,
) -> torch.Tensor:
    spec = ZOSpec.unflat(spec_ints, spec_floats)
    index, g = sparse_estimate(u, spec, table, generator=rng.generator(u.device), absz=absz)
    out = grad_out.mul(0).contiguous()
    flat = out.view(-1)
    flat[index] = (grad_out.reshape(-1)[index].to(g.dtype) * g).to(out.dtype)
    layout.record(acc, index.numel(), u.numel())
    return out


backward = oplib.register(
    "spike_backward_native", _backward, lambda grad_out, *args: torch.empty_like(grad_out),
    mutates=("acc",), seeded=True,
)
