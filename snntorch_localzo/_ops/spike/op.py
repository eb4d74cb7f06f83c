"""The operator signature every path of the spike function's backward shares."""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

from .. import oplib
from ..spec import ZOSpec


def register_backward(path: str, impl: Callable) -> Callable:
    """Registers ``impl(grad_out, u, spec, table, absz, acc) -> grad_in`` (``u``
    as the estimate sees it, ``absz`` the test hook's magnitudes or None,
    ``acc`` the meter's accumulator, counted into unless empty) as the
    operator ``spike_backward_<path>``, which takes the spec as operator
    arguments (``spec.op_kwargs()`` and its table)."""

    def backward(
        grad_out: torch.Tensor, u: torch.Tensor, table: torch.Tensor, absz: Optional[torch.Tensor],
        acc: torch.Tensor, *, spec_ints: List[int], spec_floats: List[float],
    ) -> torch.Tensor:
        return impl(grad_out, u, ZOSpec.unflat(spec_ints, spec_floats), table, absz, acc)

    def fake(grad_out, u, table, absz, acc, *, spec_ints, spec_floats):
        return torch.empty_like(u, dtype=grad_out.dtype)

    op = oplib.register(f"spike_backward_{path}", backward, fake, mutates=("acc",), seeded=True)

    def call(grad_out: torch.Tensor, u: torch.Tensor, spec: ZOSpec, absz, acc) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return op(grad_out, u, spec.table(u.device), absz, acc, **spec.op_kwargs())
        return impl(grad_out, u, spec, spec.table(u.device), absz, acc)  # (eager: no flattening)

    return call
