"""Opt-in, cheap bookkeeping of how many neurons the backward pass touched."""

from __future__ import annotations

from typing import Dict

import torch

from ._ops.layout import ACTIVE, CALLS, LAST_ACTIVE, LAST_TOTAL, METER_SLOTS, TOTAL, record_nonzero

__all__ = ["ActivityMeter"]


class ActivityMeter:
    """Counts the non-zero entries of LocalZO gradient estimates.

    The counts live in a small int64 tensor on each device the estimates are
    computed on; the backward passes add to it in place without
    synchronising (also inside graphs compiled with ``torch.compile``), and reading
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
            acc = self._acc[device] = torch.zeros(METER_SLOTS, dtype=torch.int64, device=device)
        return acc

    def record_nonzero(self, grad: torch.Tensor) -> None:
        """Counts the non-zero entries of ``grad`` as one backward call, on
        ``grad``'s device and without synchronising (for spike gradients
        other than LocalZO, whose backward passes count for themselves)."""
        record_nonzero(self.accumulator(grad.device), grad)

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
        """Fraction of non-zero estimates since the last reset (0.0 before the
        first counted backward pass)."""
        total = self.total
        return self.active / total if total else 0.0

    @property
    def last_fraction(self) -> float:
        """Fraction of non-zero estimates in the most recent backward call (of
        each device)."""
        total = self._sum(LAST_TOTAL)
        return self._sum(LAST_ACTIVE) / total if total else 0.0

    def __repr__(self) -> str:
        return f"ActivityMeter(active={self.active}, total={self.total}, calls={self.calls})"
