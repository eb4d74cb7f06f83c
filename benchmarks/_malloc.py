"""glibc's allocator, told to keep freed memory for reuse (Linux only).

By default glibc gives large freed blocks back to the operating system, so a
tensor of several MiB allocated at every training step is faulted in again,
page by page, at every step. Code that allocates large tensors per step (the
native CPU path's sequence layers, any vectorised PyTorch code) then spends
a large part of its time in page faults; snnTorch's step loop, whose tensors
are small, does not. ``retain()`` raises glibc's thresholds so that freed
memory is kept and reused, as ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` would in the environment. It is process-wide and
opt-in: the library never calls it; the benchmarks do when asked
(``--malloc retain``) and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["retain"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def retain(trim_bytes: int = 2**31 - 1, mmap_bytes: int = 2**30, pad_bytes: int = 2**28) -> bool:
    """Keeps up to ``trim_bytes`` of freed heap memory, serves blocks up to
    ``mmap_bytes`` from the heap, grows the heap by ``pad_bytes`` at a time.
    Returns False where glibc's ``mallopt`` is not available (not Linux/glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1
    ok &= mallopt(_M_TOP_PAD, pad_bytes) == 1
    return bool(ok)
