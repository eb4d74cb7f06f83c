"""Opt-in, cheap bookkeeping of how many neurons the backward pass touched."""

from __future__ import annotations

from typing import Dict

import torch

__all__ = ["ActivityMeter"]

# layout of an accumulator: counts since the last reset, then the last call's
ACTIVE, TOTAL, LAST_ACTIVE, LAST_TOTAL, CALLS = range(5)


class ActivityMeter:
    """Counts the non-zero entries of LocalZO gradient estimates.

    The counts live in a small int64 tensor on each device the estimates are
    computed on; the backward passes add to it in place without
    synchronising (also inside ``torch.compile``d graphs), and reading
    :attr:`fraction` synchronises once. :meth:`reset` starts a new window
    (for example each epoch).
    """

    def __init__(self):
        self._acc: Dict[torch.device, torch.Tensor] = {}
        self.accumulator(torch.device("cpu"))

    def accumulator(self, device) -> torch.Tensor:
        """The count tensor of ``device`` (created on first use)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        acc = self._acc.get(device)
        if acc is None:
            acc = self._acc[device] = torch.zeros(5, dtype=torch.int64, device=device)
        return acc

    def reset(self) -> None:
        """Forgets every count (in place: compiled graphs keep their tensors)."""
        for acc in self._acc.values():
            acc.zero_()

    def _sum(self, slot: int) -> int:
        return sum(int(acc[slot]) for acc in self._acc.values())

    @property
    def active(self) -> int:
        """Non-zero entries counted since the last reset."""
        return self._sum(ACTIVE)

    @property
    def total(self) -> int:
        """Entries seen by backward since the last reset."""
        return self._sum(TOTAL)

    @property
    def calls(self) -> int:
        """Backward calls counted since the last reset."""
        return self._sum(CALLS)

    @property
    def fraction(self) -> float:
        """Fraction of non-zero estimates since the last reset (nan if none)."""
        total = self.total
        return self.active / total if total else float("nan")

    @property
    def last_fraction(self) -> float:
        """Fraction of non-zero estimates in the most recent backward call (of
        each device)."""
        total = self._sum(LAST_TOTAL)
        return self._sum(LAST_ACTIVE) / total if total else float("nan")

    def __repr__(self) -> str:
        return f"ActivityMeter(active={self.active}, total={self.total}, calls={self.calls})"


_NO_METER: Dict[torch.device, torch.Tensor] = {}


def no_meter(device) -> torch.Tensor:
    """The empty accumulator that stands for "not counting" in the operators
    (an operator that mutates an argument takes a tensor, not None)."""
    device = torch.device(device)
    if device not in _NO_METER:
        _NO_METER[device] = torch.zeros(0, dtype=torch.int64, device=device)
    return _NO_METER[device]


def record(acc: torch.Tensor, active: torch.Tensor, total: int) -> None:
    """Adds one backward call to an accumulator: ``active`` (0-d) of ``total``."""
    active = active.to(acc.dtype)
    acc[ACTIVE] += active
    acc[TOTAL] += total
    acc[LAST_ACTIVE] = active
    acc[LAST_TOTAL] = total
    acc[CALLS] += 1


def prepare_for_kernel(acc: torch.Tensor, total: int) -> None:
    """Before a kernel atomically adds its count to ``ACTIVE`` and
    ``LAST_ACTIVE``: start the last-call slots and count the call."""
    acc[LAST_ACTIVE] = 0
    acc[LAST_TOTAL] = total
    acc[TOTAL] += total
    acc[CALLS] += 1
