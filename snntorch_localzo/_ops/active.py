"""Which entries of a spike tensor have a non-zero LocalZO estimate.

A fused LocalZO layer marks the spike tensor it returns with its code (one
byte per entry, non-zero where the estimate is). A sparse layer that takes
that very tensor as input knows that the layer below only ever reads the
gradient at those entries, and computes its input gradient there alone.
The mark is ignored once the tensor is modified in place.
"""

from __future__ import annotations

from typing import Optional

import torch

_ATTR = "_localzo_active"


def mark(spk: torch.Tensor, code: torch.Tensor) -> None:
    """Marks ``spk`` with its code (not inside ``torch.compile``, which traces
    no attributes on tensors: there the layer above takes the dense path)."""
    if torch.compiler.is_compiling():
        return
    setattr(spk, _ATTR, (code, spk._version))


def code_of(x: torch.Tensor) -> Optional[torch.Tensor]:
    """The code of ``x`` if a fused LocalZO layer produced it unchanged, else None."""
    info = None if torch.compiler.is_compiling() else getattr(x, _ATTR, None)
    if info is None:
        return None
    code, version = info
    if x._version != version or code.shape != x.shape:
        return None
    return code
