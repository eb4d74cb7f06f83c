"""Reusable scratch tensors of the native CPU path.

A large tensor allocated afresh at every call costs the CPU a page fault per
4 KiB page each time: glibc gives big freed blocks back to the operating
system. On the development machine those faults took as long as the
arithmetic of a training step. Temporaries that never leave an operator
(never returned, never saved for backward) are therefore taken from here:
one buffer per role and thread, grown when a call needs more, reused by the
next call. They stay allocated for the life of the thread.
"""

from __future__ import annotations

import math
import sys
import threading

import torch

_LOCAL = threading.local()


def scratch(role: str, shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape`` for temporary use under ``role``:
    valid until the next call with the same role on this thread."""
    buffers = getattr(_LOCAL, "buffers", None)
    if buffers is None:
        buffers = _LOCAL.buffers = {}
    numel = math.prod(shape)
    buf = buffers.get((role, dtype))
    if buf is None or buf.numel() < numel:
        buf = buffers[(role, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(tuple(shape))


# ------------------------------------------------------------------ outputs
#: Tensors kept per (role, shape, dtype) for reuse as outputs.
POOL_SIZE = 4


def _counts(t: torch.Tensor):
    """References to ``t``: Python's, C++'s (autograd's saved tensors, views'
    bases) and its storage's (other tensors on it)."""
    return (sys.getrefcount(t), t._use_count(),
            torch._C._storage_Use_Count(t.untyped_storage()._cdata))


def _baseline():
    """The counts of a tensor held by a pool alone, seen from output()'s loop."""
    if not (hasattr(torch.Tensor, "_use_count") and hasattr(torch._C, "_storage_Use_Count")):
        return None
    pool = [torch.empty(1)]
    for t in pool:  # the same references as in output()'s loop
        return _counts(t)


_BASE = _baseline()


def output(role: str, shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor of ``shape`` for an operator's
    output (returned to autograd or the user): always a new tensor (no
    autograd history, hooks or attributes of an earlier one), on memory
    recycled from this thread's pool when no tensor of an earlier output of
    the same role and shape is left (not held by Python, autograd or a view),
    else on new memory kept in the pool (``POOL_SIZE`` per role and shape)."""
    shape = tuple(shape)
    if _BASE is None:
        return torch.empty(shape, dtype=dtype)
    pools = getattr(_LOCAL, "pools", None)
    if pools is None:
        pools = _LOCAL.pools = {}
    pool = pools.setdefault((role, shape, dtype), [])
    for t in pool:
        if _counts(t) == _BASE:  # its memory is held by the pool alone
            return torch.empty(0, dtype=dtype).set_(t.untyped_storage(), 0, shape)
    t = torch.empty(shape, dtype=dtype)
    if len(pool) < POOL_SIZE:
        pool.append(t)
        return torch.empty(0, dtype=dtype).set_(t.untyped_storage(), 0, shape)
    return t


def clear() -> None:
    """Drops this thread's scratch tensors and output pools."""
    _LOCAL.__dict__.clear()
