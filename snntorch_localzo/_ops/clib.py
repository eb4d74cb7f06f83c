"""The C loops (``_scan.c``, compiled by ``setup.py`` where a C compiler is
at hand): the one place that loads them, checks the build and says whether
they run. The spike function's fused pass, the Leaky layers' time loops,
the Linear + Leaky layer's event passes, the adaptive step's order
statistics, the estimate's compaction and the meter all call
:func:`c_module`; ``SNNTORCH_LOCALZO_NO_C=1`` at import turns them off, and the
PyTorch forms, which give the same bits, run instead.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import torch

from .resets import RESET_NONE, RESET_SUBTRACT, RESET_ZERO

try:
    from . import _scan
except ImportError:  # built without a C compiler
    _scan = None

#: The reset numbers the C loops were compiled with (setup.py passes resets.py's).
C_RESETS = None if _scan is None else tuple(
    getattr(_scan, name, None) for name in ("RESET_SUBTRACT", "RESET_ZERO", "RESET_NONE")
)
if C_RESETS is not None and C_RESETS != (RESET_SUBTRACT, RESET_ZERO, RESET_NONE):
    warnings.warn(
        f"{_scan.__file__} was built with other reset numbers than resets.py (a stale build; "
        "rebuild it with `python setup.py build_ext --inplace`): the PyTorch loops run instead",
        RuntimeWarning,
    )
    _scan = None

#: Dtypes the C loops take.
C_DTYPES = (torch.float32, torch.float64)


#: Whether the C loops may run: False where ``SNNTORCH_LOCALZO_NO_C=1`` was
#: set when the package was imported (read once: every call asks
#: :func:`c_module`; the tests switch this flag).
ENABLED = os.environ.get("SNNTORCH_LOCALZO_NO_C", "0") in ("", "0")


def c_module():
    """The C module (``_scan.c``) when it runs here: built, and not turned off
    (:data:`ENABLED`, ``SNNTORCH_LOCALZO_NO_C=1``); else None."""
    return _scan if ENABLED else None


def use_c(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether the C loops run for these tensors (float32 or float64, all alike)."""
    if c_module() is None:
        return False
    present = [t for t in tensors if t is not None]
    return present[0].dtype in C_DTYPES and all(t.dtype == present[0].dtype for t in present)


def compact(g: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` non-zero entries of the contiguous float32/float64 ``g``:
    their sorted flat int64 indices and their values (one C pass; the C loops
    must run)."""
    spare = _scan.COMPACT_SPARE  # (the pass stores whole blocks past the last entry)
    index = torch.empty(count + spare, dtype=torch.int64)
    values = torch.empty(count + spare, dtype=g.dtype)
    kept = _scan.compact(g.data_ptr(), g.numel(), index.data_ptr(), values.data_ptr(), g.dtype == torch.float64)
    assert kept == count, (kept, count)
    return index[:count], values[:count]
