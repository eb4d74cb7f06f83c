"""Bit and slot layouts shared by every kernel, its reference and the meter.

**Code byte.** Between the forward and the backward pass the fused layers
keep one byte per neuron and time step: bit ``i`` (``i < MAX_SAMPLES``) is set
when direction ``i`` is active (``|u| < delta |z_i|``), bit ``RESET_BIT`` when
the neuron was reset at that step (zero reset needs it in backward).

**Meter slots.** An :class:`~snntorch_localzo.ActivityMeter` keeps one int64
accumulator per device; backward passes add to these slots in place, on the
device, without synchronising: every update is an in-place ``add_``/``fill_``
of one slot with a Python number or a device tensor, never an assignment
``acc[i] = value`` (which turns the number into a host tensor and copies it
to the device: a blocking copy on a GPU).
"""

from __future__ import annotations

import torch

from .clib import c_module

#: Bit of the code byte that records the reset; the bits below it record the
#: active directions, so at most ``RESET_BIT`` directions per neuron fit.
RESET_BIT = 7
RESET_FLAG = 1 << RESET_BIT
SAMPLE_MASK = RESET_FLAG - 1
MAX_SAMPLES = RESET_BIT

#: Meter slots: counts since the last reset, then the last backward call's.
METER_SLOTS = 5
ACTIVE, TOTAL, LAST_ACTIVE, LAST_TOTAL, CALLS = range(METER_SLOTS)


# ----------------------------------------------------------------- the meter
_NO_METER = {}


def no_meter(device) -> torch.Tensor:
    """The empty accumulator that stands for "not counting" in the operators
    (an operator that mutates an argument takes a tensor, not None)."""
    device = torch.device(device)
    if device not in _NO_METER:
        _NO_METER[device] = torch.zeros(0, dtype=torch.int64, device=device)
    return _NO_METER[device]


def accumulator(meter, device) -> torch.Tensor:
    """``meter``'s accumulator on ``device``, or the empty one when ``meter`` is None."""
    return meter.accumulator(device) if meter is not None else no_meter(device)


def record(acc: torch.Tensor, active: torch.Tensor, total: int) -> None:
    """Adds one backward call to an accumulator (no-op when it is empty):
    ``active`` non-zero estimates (0-d tensor or int) of ``total``. A count
    the host already holds goes into a CPU accumulator in one C call where
    the C loops are built."""
    if not acc.numel():
        return
    if (type(active) is int and acc.device.type == "cpu" and acc.is_contiguous()
            and not torch.compiler.is_compiling()):
        module = c_module()
        if module is not None:
            module.meter_record(acc.data_ptr(), active, int(total))
            return
    acc[ACTIVE].add_(active)
    acc[TOTAL].add_(total)
    acc[LAST_ACTIVE].zero_().add_(active)
    acc[LAST_TOTAL].fill_(total)
    acc[CALLS].add_(1)


def record_nonzero(acc: torch.Tensor, g: torch.Tensor) -> None:
    """:func:`record` of the non-zero entries of ``g``, counted only when the
    meter is on (``acc`` not empty)."""
    if acc.numel():
        record(acc, torch.count_nonzero(g), g.numel())


def prepare_for_kernel(acc: torch.Tensor, total: int) -> None:
    """Before a kernel atomically adds its count to ``ACTIVE`` and
    ``LAST_ACTIVE``: start the last-call slots and count the call."""
    acc[LAST_ACTIVE].zero_()
    acc[LAST_TOTAL].fill_(total)
    acc[TOTAL].add_(total)
    acc[CALLS].add_(1)
