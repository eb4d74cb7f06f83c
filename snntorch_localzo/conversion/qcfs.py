"""The QCFS activation (quantization-clip-floor-shift) and the helper that
puts it in place of a model's ``nn.ReLU`` modules."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .._checks import check_count, check_positive

__all__ = ["QCFS", "swap_relu"]


class _FloorSTE(torch.autograd.Function):
    """``floor`` in the forward pass, the identity in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """
    Quantization-clip-floor-shift activation (Bu et al., *Optimal ANN-SNN
    Conversion for High-accuracy and Ultra-low-latency Spiking Neural
    Networks*, ICLR 2022): a ReLU replacement whose output is what an
    integrate-and-fire neuron with threshold ``lam``, subtractive reset and
    initial membrane ``lam / 2`` fires on average over ``levels`` time steps.

    .. math::

            a = \\lambda \\, \\mathrm{clip}\\left(\\frac{1}{L}
                \\left\\lfloor \\frac{z L}{\\lambda} + \\frac{1}{2} \\right\\rfloor, 0, 1\\right)

    The threshold ``lam`` is a trainable parameter (one per layer); the floor
    passes the gradient straight through, so ``lam`` learns from the inputs
    above it (Bu et al.'s gradient). Computed as in the authors' code,
    ``lam * floor(clamp(z / lam, 0, 1) * L + 1/2) / L``, which has the same
    values as the formula above.

    Example::

        import torch.nn as nn
        from snntorch_localzo.conversion import QCFS

        ann = nn.Sequential(nn.Linear(64, 256), QCFS(levels=8), nn.Linear(256, 10))

    :param levels: quantization levels ``L`` (an integer >= 1). Defaults to 8,
        as the FTBC authors' code
    :type levels: int, optional

    :param lam: initial threshold, a finite number > 0. Defaults to 8.0
    :type lam: float, optional
    """

    def __init__(self, levels: int = 8, lam: float = 8.0):
        super().__init__()
        self.levels = check_count("levels", levels)
        self.lam = nn.Parameter(torch.tensor(check_positive("lam", lam)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.clamp(z / self.lam, 0.0, 1.0)
        return _FloorSTE.apply(u * self.levels + 0.5) / self.levels * self.lam

    def clip(self, z: torch.Tensor) -> torch.Tensor:
        """``clip(z, 0, lam)``: the limit of the spiking layer's average
        output as the number of time steps grows (no quantization)."""
        return torch.minimum(torch.relu(z), self.lam)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lam={self.lam.item():.4g}"


def swap_relu(model: nn.Module, levels: int = 8, lam: float = 8.0) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by a fresh
    :class:`QCFS` (``levels``, initial ``lam``): train (or fine-tune) the copy
    to get a network ready for :func:`~snntorch_localzo.conversion.convert`.
    ``model`` itself is not changed. Only ``nn.ReLU`` *modules* are found:
    a ``torch.relu`` / ``F.relu`` call inside a ``forward`` is not.

    Example::

        import torch.nn as nn
        from snntorch_localzo.conversion import swap_relu

        ann = swap_relu(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)))

    :param model: any module
    :type model: torch.nn.Module

    :param levels: quantization levels of the new activations. Defaults to 8
    :type levels: int, optional

    :param lam: initial threshold of the new activations. Defaults to 8.0
    :type lam: float, optional

    :return: the copy, with as many QCFS modules as ``model`` had ReLUs
    :rtype: torch.nn.Module
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    check_count("levels", levels)
    check_positive("lam", lam)
    if isinstance(model, nn.ReLU):
        return QCFS(levels, lam)
    out = copy.deepcopy(model)
    ref = next(model.parameters(), None)
    _swap_in_place(out, lambda: QCFS(levels, lam) if ref is None
                   else QCFS(levels, lam).to(ref.device, ref.dtype))
    return out


def _swap_in_place(module: nn.Module, make) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, make())
        else:
            _swap_in_place(child, make)
