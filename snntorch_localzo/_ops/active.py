"""Which entries of a spike tensor have a non-zero LocalZO estimate.

A fused LocalZO sequence layer marks the spike tensor it returns with its
active set: the code bytes on the Triton path, the flat indices of the
active entries on the native CPU path. A ``LinearLeaky`` that takes that very
tensor as input knows that the layer below only ever reads the gradient at
those entries, and computes its input gradient there alone. The mark is
ignored once the tensor is modified in place, and inside ``torch.compile``
(which traces no attributes on tensors: there the dense product runs).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

_ATTR = "_localzo_active"


class ActiveSet(NamedTuple):
    """``code``: uint8 code bytes shaped like the spikes (Triton path), or
    ``index``: sorted flat indices of the active entries (native path)."""

    code: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


def mark(spk: torch.Tensor, active: ActiveSet) -> None:
    """Marks ``spk`` with its active set (not while compiling)."""
    if torch.compiler.is_compiling() or not spk.requires_grad:
        return
    setattr(spk, _ATTR, (active, spk._version))


def active_of(x: torch.Tensor) -> Optional[ActiveSet]:
    """The active set of ``x`` if a fused LocalZO layer produced it unchanged, else None."""
    info = None if torch.compiler.is_compiling() else getattr(x, _ATTR, None)
    if info is None:
        return None
    active, version = info
    if x._version != version:
        return None
    return active
