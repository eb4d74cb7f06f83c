"""The local factor ``psi(u)`` of the three-factor update: the spike function's
derivative at the membrane, from a LocalZO estimate or an snnTorch surrogate."""

from __future__ import annotations

from typing import Callable

import torch

from ..estimator import LocalZO

__all__ = ["local_derivative", "describe"]


def local_derivative(spike_grad: Callable, mem_shift: torch.Tensor) -> torch.Tensor:
    """``d spike / d mem`` at ``mem_shift = mem - threshold``, without a graph
    through the network.

    * a :class:`~snntorch_localzo.LocalZO` object: one draw of its estimate
      (:meth:`LocalZO.estimate`), exactly zero away from threshold and counted
      by its meter when it tracks;
    * anything else (an snnTorch surrogate such as ``surrogate.atan()``, an
      autograd Function): its backward on a detached leaf, one autograd
      operation; the result carries no graph.
    """
    if isinstance(spike_grad, LocalZO):
        return spike_grad.estimate(mem_shift)
    with torch.enable_grad():
        leaf = mem_shift.detach().requires_grad_(True)
        spikes = spike_grad(leaf)
        if not isinstance(spikes, torch.Tensor) or not spikes.requires_grad:
            raise TypeError(
                f"the spike function {describe(spike_grad)} has no derivative to use as "
                "OPZO's local factor (its output does not depend on the membrane through "
                "autograd; a neuron with surrogate_disable=True?): pass local_grad= to OPZO, "
                "e.g. snntorch.surrogate.atan() or snntorch_localzo.make()"
            )
        (grad,) = torch.autograd.grad(spikes, leaf, torch.ones_like(spikes))
    return grad.detach()


def describe(spike_grad) -> str:
    """A short name for messages: ``LocalZO(...)``, ``atan`` and so on."""
    if isinstance(spike_grad, LocalZO):
        return repr(spike_grad)
    name = getattr(spike_grad, "__qualname__", None) or type(spike_grad).__name__
    return name.split(".<locals>")[0]
