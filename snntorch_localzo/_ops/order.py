"""Order statistics of each row: what the adaptive step reads of a sample's
membrane (:mod:`snntorch_localzo.adaptive`).

On the CPU the C selection of ``leaky/_scan.c`` (``row_kth2``) finds the
same values as ``torch.kthvalue`` (the exact order statistics), both ranks
of a row from one counting pass: a radix selection by the top bits of an
order-preserving key, then a quickselect inside the one bin that holds the
rank. Inside ``torch.compile``, off the CPU, or without the C loops,
``torch.kthvalue`` runs.
"""

from __future__ import annotations

from typing import Tuple

import torch


def _selection():
    """The C module when it runs here, else None (imported on first use: the
    Leaky package imports the adaptive step)."""
    from .leaky import native

    return native.c_module()


def kth_smallest2(rows: torch.Tensor, k1: int, k2: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k1``-th and ``k2``-th smallest values of each row of a float32
    ``rows [R, n]`` (1-based; NaN counts as larger than everything): two
    ``[R]`` tensors, equal to ``rows.kthvalue(k, 1).values``."""
    module = None
    if rows.device.type == "cpu" and rows.dtype == torch.float32 and not torch.compiler.is_compiling():
        module = _selection()
    if module is None:
        return rows.kthvalue(k1, 1).values, rows.kthvalue(k2, 1).values
    rows = rows.contiguous()
    R, n = rows.shape
    lo, hi = min(k1, k2), max(k1, k2)
    out = torch.empty(2, R, dtype=torch.float32)
    module.row_kth2(rows.data_ptr(), R, n, lo, hi, out[0].data_ptr(), out[1].data_ptr())
    return (out[0], out[1]) if k1 <= k2 else (out[1], out[0])
