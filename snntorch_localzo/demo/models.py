"""The networks of the demo, the benchmarks and the tutorials, defined once.

* :class:`DigitsNet`: the demo's 64-hidden-10 Leaky network, read out by the
  output membrane (snnTorch's tutorial set-up), in step mode or built from
  :class:`~snntorch_localzo.LinearLeaky` sequence layers.
* :class:`StepMLP`: Linear + Leaky layers driven one time step at a time, as
  in snnTorch's tutorials; returns the output spike counts.
* :class:`SequenceMLP`: layers that each take the whole ``[T, batch,
  features]`` sequence; returns the output spike counts.
* :class:`LinearThenSequence` and :class:`SpikesOf`: the sequence layers
  :class:`SequenceMLP` is built from.
"""

from __future__ import annotations

from typing import Callable, Sequence

import snntorch as snn
import torch
import torch.nn as nn

from ..neurons import Leaky, LinearLeaky

__all__ = ["DigitsNet", "StepMLP", "SequenceMLP", "LinearThenSequence", "SpikesOf"]


class DigitsNet(nn.Module):
    """64 - hidden - 10 fully connected Leaky network read out by the output
    membrane potential (the snnTorch tutorials' set-up).

    :param leaky: the neuron class of the step loop (``snn.Leaky`` or
        ``localzo.Leaky``), or ``"linear_leaky"``: the same network built from
        two :class:`~snntorch_localzo.LinearLeaky` layers, each run over the
        whole sequence (same forward values as the step loop, same weights from
        the same seed)
    """

    def __init__(self, spike_grad, hidden: int = 128, beta: float = 0.9, leaky=snn.Leaky):
        super().__init__()
        self.sequence = leaky == "linear_leaky"
        if self.sequence:
            self.l1 = LinearLeaky(beta, 64, hidden, spike_grad=spike_grad)
            self.l2 = LinearLeaky(beta, hidden, 10, spike_grad=spike_grad)
        else:
            self.fc1 = nn.Linear(64, hidden)
            self.lif1 = leaky(beta=beta, spike_grad=spike_grad)
            self.fc2 = nn.Linear(hidden, 10)
            self.lif2 = leaky(beta=beta, spike_grad=spike_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: spikes ``[T, B, 64]``; returns output membranes ``[T, B, 10]``."""
        if self.sequence:
            spk1, _ = self.l1(x)
            _, mem2 = self.l2(spk1)
            return mem2
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        mems = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            mems.append(mem2)
        return torch.stack(mems)


class StepMLP(nn.Module):
    """Linear + Leaky layers of the given ``sizes`` driven one time step at a
    time (snnTorch style); ``make_leaky()`` builds each neuron. Returns the
    output spike counts ``[B, sizes[-1]]``."""

    def __init__(self, sizes: Sequence[int], make_leaky: Callable[[], nn.Module]):
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
        self.lifs = nn.ModuleList([make_leaky() for _ in self.fcs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mems = [lif.init_leaky() for lif in self.lifs]
        counts = 0
        for t in range(x.shape[0]):
            h = x[t]
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                h, mems[i] = lif(fc(h), mems[i])
            counts = counts + h
        return counts


class SequenceMLP(nn.Module):
    """Layers ``make_layer(n_in, n_out)`` of the given ``sizes``, each called
    once on the whole sequence ``[T, B, features]``. Returns the output spike
    counts ``[B, sizes[-1]]``."""

    def __init__(self, sizes: Sequence[int], make_layer: Callable[[int, int], nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList([make_layer(a, b) for a, b in zip(sizes, sizes[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.sum(0)


class LinearThenSequence(nn.Module):
    """``nn.Linear`` on all steps at once, then
    :meth:`localzo.Leaky.forward_sequence <snntorch_localzo.Leaky.forward_sequence>`
    from rest; returns the spikes."""

    def __init__(self, n_in: int, n_out: int, spike_grad, beta: float = 0.9):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.lif = Leaky(beta=beta, spike_grad=spike_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk, _ = self.lif.forward_sequence(self.fc(x))  # from rest, as the step loop
        return spk


class SpikesOf(nn.Module):
    """A layer returning ``(spk, mem)`` (such as ``LinearLeaky``), reduced to its spikes."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]
