"""The spiking network that :func:`~snntorch_localzo.conversion.convert` builds:
snnTorch neurons with a temporal bias, driven one time step at a time."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from .._checks import check_count

__all__ = ["ConvertedSNN", "IFNeuron", "ChannelAffine"]


class ChannelAffine(nn.Module):
    """``y = x * scale + shift`` per channel (dimension 1): a BatchNorm frozen
    at its running statistics, as :func:`convert` keeps it when it is not
    folded into the layer before it."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())
        self.shift = nn.Parameter(shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


class IFNeuron(nn.Module):
    """
    An integrate-and-fire layer of a converted network: an snnTorch neuron
    (``beta=1``, subtractive reset, threshold and graded spike size
    ``lam``) whose input current gets a per-step, per-channel bias, and
    whose membrane starts at ``lam / 2``.

    At step ``t`` (from 0) the neuron receives ``current + bias[t]``, the
    bias broadcast over dimension 1 (channels or features). ``bias`` is a
    buffer of shape ``[T, channels]`` set by
    :func:`~snntorch_localzo.conversion.calibrate`; before calibration it is
    empty (plain conversion: nothing is added, any number of steps runs).
    A layer calibrated for ``T`` steps runs for at most ``T`` steps.

    Example::

        import snntorch as snn
        import torch
        from snntorch_localzo.conversion import IFNeuron

        layer = IFNeuron(snn.Leaky(beta=1.0, threshold=2.0, graded_spikes_factor=2.0,
                                   reset_mechanism="subtract"))
        spk, mem = layer(torch.randn(8, 16), t=0)   # first step: mem starts at 1.0

    :param neuron: the spiking neuron, called as ``neuron(current, mem)`` and
        returning ``(spk, mem)`` as ``snn.Leaky`` does
    :type neuron: torch.nn.Module
    """

    def __init__(self, neuron: nn.Module):
        super().__init__()
        if not isinstance(neuron, nn.Module) or not hasattr(neuron, "threshold"):
            raise TypeError(
                "`neuron` must be an snnTorch-style neuron module with a `threshold`, got "
                f"{type(neuron).__name__}"
            )
        self.neuron = neuron
        self.register_buffer("bias", torch.zeros(0))
        mem = getattr(neuron, "mem", None)  # snnTorch >= 0.8 keeps a state placeholder
        self._mem_shape = tuple(mem.shape) if isinstance(mem, torch.Tensor) else None

    @property
    def threshold(self) -> float:
        """The firing threshold (``lam`` of the QCFS activation it replaces)."""
        return float(self.neuron.threshold)

    @property
    def steps(self) -> int:
        """Number of calibrated steps (0: plain conversion, no bias)."""
        return self.bias.shape[0] if self.bias.dim() == 2 else 0

    def initial_mem(self, current: torch.Tensor) -> torch.Tensor:
        """The membrane before the first step: ``lam / 2`` everywhere."""
        return torch.full_like(current, self.threshold / 2)

    def bias_at(self, t: int, current: torch.Tensor) -> torch.Tensor:
        """``bias[t]`` shaped to broadcast over ``current`` (channels on dimension 1)."""
        if current.dim() < 2 or current.shape[1] != self.bias.shape[1]:
            raise ValueError(
                f"the temporal bias has {self.bias.shape[1]} channels but the current has "
                f"shape {tuple(current.shape)} (channels on dimension 1)"
            )
        return self.bias[t].view((1, -1) + (1,) * (current.dim() - 2))

    def forward(self, current: torch.Tensor, t: int, mem: torch.Tensor = None):
        """One time step: returns ``(spk, mem)``; ``mem=None`` starts from ``lam / 2``."""
        if mem is None:
            mem = self.initial_mem(current)
        if self.steps:
            if t >= self.steps:
                raise ValueError(
                    f"this layer was calibrated for {self.steps} time steps; step {t + 1} has "
                    "no bias (calibrate for more steps, or run fewer)"
                )
            current = current + self.bias_at(t, current)
        return self.neuron(current, mem)

    def release_state(self) -> None:
        """Puts back the placeholder membrane that snnTorch (>= 0.8) keeps in
        the neuron: the converted network passes the state explicitly, and
        the last membrane kept there would hold on to the autograd graph,
        block ``deepcopy`` and (snnTorch 0.8, where it is saved) change the
        ``state_dict``."""
        mem = getattr(self.neuron, "mem", None)
        if self._mem_shape is not None and isinstance(mem, torch.Tensor) and (
            tuple(mem.shape) != self._mem_shape or mem.requires_grad
        ):
            self.neuron.mem = torch.zeros(self._mem_shape, device=mem.device, dtype=mem.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the bias takes the shape of the one loaded (plain or calibrated for any T)
        stored = state_dict.get(prefix + "bias")
        if isinstance(stored, torch.Tensor) and stored.shape != self.bias.shape:
            self.bias = torch.zeros_like(stored, device=self.bias.device, dtype=self.bias.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:.4g}, calibrated_steps={self.steps}"


class ConvertedSNN(nn.Module):
    """
    A spiking network converted from an ANN by
    :func:`~snntorch_localzo.conversion.convert`: the ANN's layers (Linear,
    Conv2d, pooling, ...) with every QCFS activation replaced by an
    :class:`IFNeuron`. The analog input is fed again at every step; the
    output is the mean over the steps of the last layer's output.

    Example::

        from snntorch_localzo import conversion

        snn_net = conversion.convert(ann)
        logits = snn_net(x, num_steps=8)                         # [batch, classes]
        per_step = snn_net(x, num_steps=8, return_steps=True)    # [8, batch, classes]

    :param layers: the modules in order, :class:`IFNeuron` among them
    :type layers: list of torch.nn.Module
    """

    def __init__(self, layers: List[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @property
    def neurons(self) -> List[IFNeuron]:
        """The spiking layers, in order."""
        return [m for m in self.layers if isinstance(m, IFNeuron)]

    @property
    def calibrated_steps(self) -> int:
        """The number of steps the temporal biases cover; 0 for plain conversion."""
        steps = {n.steps for n in self.neurons}
        return min(steps) if steps else 0

    def reset_bias(self) -> None:
        """Back to plain conversion: removes every temporal bias."""
        for n in self.neurons:
            n.bias = torch.zeros(0, device=n.bias.device, dtype=n.bias.dtype)

    def forward(self, x: torch.Tensor, num_steps: int, return_steps: bool = False) -> torch.Tensor:
        """Runs ``num_steps`` steps on the analog input ``x`` (``[batch, ...]``,
        as the ANN takes it).

        :param x: the input, given again at every step
        :type x: torch.Tensor
        :param num_steps: time steps; at most :attr:`calibrated_steps` once calibrated
        :type num_steps: int
        :param return_steps: return the output of every step, ``[T, batch, ...]``,
            instead of their mean. Defaults to False
        :type return_steps: bool, optional
        :return: mean output over the steps ``[batch, ...]`` (or every step's)
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                "`x` must be a floating-point tensor (the ANN's input), got "
                f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        check_count("num_steps", num_steps)
        calibrated = self.calibrated_steps
        if calibrated and num_steps > calibrated:
            raise ValueError(
                f"`num_steps`={num_steps} but the network was calibrated for {calibrated} "
                f"steps: run at most {calibrated} steps (the first T' biases are used for "
                "T' <= T), or calibrate for more"
            )
        layers = list(self.layers)
        first = next(i for i, m in enumerate(layers) if isinstance(m, IFNeuron))
        head = x
        for layer in layers[:first]:  # the same at every step: computed once
            head = layer(head)
        mems = [None] * len(layers)
        outputs = []
        try:
            for t in range(num_steps):
                h = head
                for i in range(first, len(layers)):
                    if isinstance(layers[i], IFNeuron):
                        h, mems[i] = layers[i](h, t, mems[i])
                    else:
                        h = layers[i](h)
                outputs.append(h)
        finally:
            for n in self.neurons:
                n.release_state()
        out = torch.stack(outputs)
        return out if return_steps else out.mean(0)
