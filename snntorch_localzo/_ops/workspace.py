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
