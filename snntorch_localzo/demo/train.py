"""The main job: train one small spiking network on spike-encoded digits with
a given spike gradient, and report accuracy, backward sparsity and speed.

Used by the CLI (``snntorch-localzo``) and by ``benchmarks/accuracy.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn as nn
import snntorch as snn

from ..estimator import LocalZO
from ..stats import ActivityMeter
from .data import SpikeDataset, spiking_digits
from .models import DigitsNet

__all__ = ["SpikeGradProbe", "RunResult", "train_digits", "batches_per_epoch"]


class SpikeGradProbe:
    """Wraps any ``spike_grad`` and counts the non-zero entries of the gradient
    that reaches the membrane through it (for surrogates other than LocalZO,
    whose own meter does this)."""

    def __init__(self, spike_grad: Callable):
        self.spike_grad = spike_grad
        self.meter = ActivityMeter()

    def __call__(self, mem_shift: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and mem_shift.requires_grad:
            mem_shift.register_hook(self._count)
        return self.spike_grad(mem_shift)

    def _count(self, grad: torch.Tensor) -> None:
        self.meter.record_nonzero(grad)


@dataclass
class RunResult:
    """What one training run measured."""

    name: str
    seed: int
    #: after each epoch; with a validation split, once after the last epoch
    test_acc: List[float] = field(default_factory=list)
    val_acc: List[float] = field(default_factory=list)  # after each epoch, when measured
    active_frac: List[float] = field(default_factory=list)  # backward, per epoch
    epoch_s: List[float] = field(default_factory=list)  # training time per epoch

    @property
    def final_acc(self) -> float:
        return self.test_acc[-1]


def _meter_of(spike_grad) -> Optional[ActivityMeter]:
    if isinstance(spike_grad, (LocalZO, SpikeGradProbe)):
        return spike_grad.meter
    return None


def train_digits(
    spike_grad,
    *,
    name: str = "",
    seed: int = 0,
    epochs: int = 15,
    hidden: int = 128,
    num_steps: int = 25,
    batch_size: int = 64,
    lr: float = 2e-3,
    device=None,
    data: Optional[SpikeDataset] = None,
    progress=None,
    leaky=snn.Leaky,
) -> RunResult:
    """Trains :class:`DigitsNet` with ``spike_grad`` and measures each epoch.

    ``torch.manual_seed(seed)`` is set first, so two runs with the same seed
    start from the same weights and see batches in the same order.
    ``progress`` is an optional callable advanced by one per batch. Training
    spikes come from ``data.train_batch`` (fresh at every presentation unless
    the dataset was made with ``redraw=False``). When ``data`` has a
    validation split, it is measured after every epoch and the test split
    once, after the last epoch; otherwise the test split after every epoch.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if data is None:
        data = spiking_digits(num_steps=num_steps, seed=seed, device=device)
    meter = _meter_of(spike_grad)
    torch.manual_seed(seed)
    net = DigitsNet(spike_grad, hidden=hidden, leaky=leaky).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    result = RunResult(name=name, seed=seed)
    n_train = data.x_train.shape[1]
    for _ in range(epochs):
        if meter is not None:
            meter.reset()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        net.train()
        order = torch.randperm(n_train, device=device)
        for first in range(0, n_train, batch_size):
            idx = order[first : first + batch_size]
            mem = net(data.train_batch(idx))
            loss = loss_fn(mem.mean(0), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        result.epoch_s.append(time.perf_counter() - start)
        result.active_frac.append(meter.fraction if meter is not None else float("nan"))
        net.eval()
        if data.x_val is not None:
            result.val_acc.append(_accuracy(net, data.x_val, data.y_val))
        else:
            result.test_acc.append(_accuracy(net, data.x_test, data.y_test))
    if data.x_val is not None:
        result.test_acc.append(_accuracy(net, data.x_test, data.y_test))
    return result


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (net(x).mean(0).argmax(1) == y).float().mean().item()


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)
