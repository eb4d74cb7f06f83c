"""Timing one training step fairly, as the benchmarks and tutorial 4 do.

GPU work is asynchronous, so a step is timed with CUDA events recorded into
the stream, and the end event is waited for before it is read; elsewhere the
wall clock stands in. Warm-up steps come first (the first calls compile
kernels and fill caches), and on a GPU each step's peak memory is taken above
what was allocated before it.
"""

from __future__ import annotations

import time
from typing import Callable, List, Tuple

import torch
import torch.nn as nn

__all__ = ["Timer", "time_training_steps"]


class Timer:
    """CUDA events on a GPU, ``time.perf_counter`` elsewhere; milliseconds."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, start) -> float:
        """Milliseconds since ``start`` (a value :meth:`start` returned)."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return (time.perf_counter() - start) * 1e3


def time_training_steps(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Tuple[List[float], List[float], List[float]]:
    """Runs ``warmup + repeats`` training steps of ``model`` on ``(x, y)``
    (gradients zeroed, ``loss_fn(model(x), y)``, backward) and returns the
    forward milliseconds, the backward milliseconds and, on a GPU, the peak
    MiB above what was allocated before the step (an empty list elsewhere),
    of each of the last ``repeats`` steps."""
    timer = Timer(device)
    fwd, bwd, peak = [], [], []
    for i in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = timer.start()
        loss = loss_fn(model(x), y)
        f = timer.stop(t0)
        t0 = timer.start()
        loss.backward()
        b = timer.stop(t0)
        if i >= warmup:
            fwd.append(f)
            bwd.append(b)
            if device.type == "cuda":
                peak.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        del loss
    return fwd, bwd, peak
