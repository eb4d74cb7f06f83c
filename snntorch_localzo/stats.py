"""Opt-in, cheap bookkeeping of how many neurons the backward pass touched."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["ActivityMeter"]


class ActivityMeter:
    """Counts the non-zero entries of LocalZO gradient estimates.

    ``update`` adds on the device without synchronising; reading
    :attr:`fraction` synchronises once. ``reset`` starts a new window (for
    example each epoch).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forgets every count."""
        self._active: Optional[torch.Tensor] = None
        self._total = 0
        self._last_active: Optional[torch.Tensor] = None
        self._last_total = 0
        self.calls = 0

    def update(self, active: torch.Tensor, total: int) -> None:
        """Adds one backward call: ``active`` (a 0-d integer tensor) non-zero
        entries out of ``total``."""
        active = active.detach().to(torch.int64)
        if self._active is None:
            self._active = active.clone()
        else:
            self._active = self._active.to(active.device) + active
        self._total += int(total)
        self._last_active = active
        self._last_total = int(total)
        self.calls += 1

    @property
    def active(self) -> int:
        """Non-zero entries counted since the last reset."""
        return 0 if self._active is None else int(self._active)

    @property
    def total(self) -> int:
        """Entries seen by backward since the last reset."""
        return self._total

    @property
    def fraction(self) -> float:
        """Fraction of non-zero estimates since the last reset (nan if none)."""
        return self.active / self._total if self._total else float("nan")

    @property
    def last_fraction(self) -> float:
        """Fraction of non-zero estimates in the most recent backward call."""
        if not self._last_total:
            return float("nan")
        return int(self._last_active) / self._last_total

    def __repr__(self) -> str:
        return f"ActivityMeter(active={self.active}, total={self.total}, calls={self.calls})"
