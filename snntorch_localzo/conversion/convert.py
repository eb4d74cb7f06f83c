"""``convert``: a spiking copy of a QCFS network, built from snnTorch neurons."""

from __future__ import annotations

import copy
from typing import Callable, List, Optional

import snntorch as snn
import torch
import torch.nn as nn

from .network import ChannelAffine, ConvertedSNN, IFNeuron
from .qcfs import QCFS

__all__ = ["convert", "ann_layers"]

#: modules copied as they are (linear in their input, the same at every step)
_KEPT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
         nn.AdaptiveAvgPool2d, nn.Flatten)
#: normalisation at its running statistics (folded into the layer before, or kept as
#: ChannelAffine; FTBC runs the ANN's through them in inference mode)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
#: modules left out (the identity at inference)
DROPPED = (nn.Dropout, nn.Identity)
_HINTS = {
    nn.ReLU: "replace it with QCFS (conversion.swap_relu) and fine-tune before converting",
    nn.MaxPool1d: "max pooling of spikes does not keep firing rates; use average pooling",
    nn.MaxPool2d: "max pooling of spikes does not keep firing rates; use nn.AvgPool2d",
}


def ann_layers(ann: nn.Module, prefix: str = "") -> List[tuple]:
    """The leaf modules of a (nested) ``nn.Sequential``, in the order they run,
    as ``(name, module)`` with the names of ``ann.named_modules()``. Raises
    for anything :func:`convert` cannot handle, naming the module."""
    if not isinstance(ann, nn.Module):
        raise TypeError(f"`ann` must be a torch.nn.Module, got {type(ann).__name__}")
    if isinstance(ann, QCFS) or isinstance(ann, _KEPT + BATCHNORM + DROPPED):
        return [("", ann)]
    if not isinstance(ann, nn.Sequential):
        raise TypeError(
            f"`ann` must be an nn.Sequential (nested ones are fine) of supported layers, got "
            f"{type(ann).__name__}: its forward cannot be followed step by step. Put the "
            "layers in an nn.Sequential"
        )
    out = []
    for name, child in ann.named_children():
        name = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out += ann_layers(child, prefix=f"{name}.")
            continue
        if not isinstance(child, (QCFS,) + _KEPT + BATCHNORM + DROPPED):
            hint = next((h for t, h in _HINTS.items() if isinstance(child, t)), None)
            raise TypeError(
                f"cannot convert module '{name}' ({type(child).__name__}): supported are "
                "QCFS, Linear, Conv1d/2d, BatchNorm1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, "
                "Flatten, Dropout, Identity and nested nn.Sequential"
                + (f"; {hint}" if hint else "")
            )
        out.append((name, child))
    return out


def _batchnorm_affine(bn: nn.Module, name: str):
    """``(scale, shift)`` of a BatchNorm at its running statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"BatchNorm '{name}' has no running statistics (track_running_stats=False): "
            "it cannot be frozen for conversion"
        )
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _fold(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    """A copy of the Linear / Conv ``layer`` followed by ``x * scale + shift``."""
    out = copy.deepcopy(layer)
    with torch.no_grad():
        out.weight.mul_(scale.view((-1,) + (1,) * (out.weight.dim() - 1)))
        bias = layer.bias.detach() * scale + shift if layer.bias is not None else shift
        if out.bias is None:
            out.bias = nn.Parameter(bias.clone())
        else:
            out.bias.copy_(bias)
    return out


def _default_neuron(**kwargs) -> nn.Module:
    return snn.Leaky(**kwargs)


def convert(
    ann: nn.Module,
    neuron: Optional[Callable[..., nn.Module]] = None,
    fold_batchnorm: bool = True,
) -> ConvertedSNN:
    """
    A spiking copy of a QCFS network: every :class:`QCFS` activation becomes
    an :class:`IFNeuron` around
    ``neuron(beta=1.0, threshold=lam, reset_mechanism="subtract", graded_spikes_factor=lam)``
    (``snn.Leaky`` by default), whose membrane starts at ``lam / 2``; Linear,
    Conv1d/2d, average pooling and Flatten layers are copied; BatchNorm is
    folded into the Linear / Conv layer just before it (or kept as a frozen
    per-channel affine map); Dropout and Identity are dropped. The result
    has the ANN's weights and no temporal bias (plain conversion) until
    :func:`~snntorch_localzo.conversion.calibrate` sets one. ``ann`` is not
    changed: the converted network shares no tensor with it.

    Example::

        import snntorch_localzo as localzo
        from snntorch_localzo import conversion

        snn_net = conversion.convert(ann)                          # snn.Leaky neurons
        snn_lzo = conversion.convert(ann, neuron=localzo.Leaky)    # LocalZO spike gradient
        out = snn_net(x, num_steps=8)

    :param ann: an ``nn.Sequential`` (nested ones are fine) of the layers above
        and :class:`QCFS` activations, in eval mode or not (BatchNorm uses its
        running statistics, Dropout is left out)
    :type ann: torch.nn.Sequential

    :param neuron: builds each spiking neuron from the keyword arguments above:
        ``snn.Leaky``, ``localzo.Leaky``, a subclass, or a
        ``functools.partial`` of one fixing more arguments (such as
        ``spike_grad``). Defaults to ``snn.Leaky``
    :type neuron: callable, optional

    :param fold_batchnorm: fold BatchNorm into the layer before it (when that
        is a Linear or Conv layer). Defaults to True
    :type fold_batchnorm: bool, optional

    :return: the spiking network
    :rtype: ConvertedSNN
    """
    make = _default_neuron if neuron is None else neuron
    if not callable(make):
        raise TypeError(f"`neuron` must be a neuron class or callable, got {type(neuron).__name__}")
    layers: List[nn.Module] = []
    for name, module in ann_layers(ann):
        if isinstance(module, QCFS):
            lam = float(module.lam.detach())
            built = make(beta=1.0, threshold=lam, reset_mechanism="subtract",
                         graded_spikes_factor=lam)
            if not isinstance(built, nn.Module):
                raise TypeError(
                    f"`neuron` must build an nn.Module, got {type(built).__name__}"
                )
            layers.append(IFNeuron(built).to(module.lam.device))
        elif isinstance(module, BATCHNORM):
            scale, shift = _batchnorm_affine(module, name)
            prev = layers[-1] if layers else None
            if fold_batchnorm and isinstance(prev, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                layers[-1] = _fold(prev, scale, shift)
            else:
                layers.append(ChannelAffine(scale, shift))
        elif isinstance(module, DROPPED):
            continue
        else:
            layers.append(copy.deepcopy(module))
    if not any(isinstance(m, IFNeuron) for m in layers):
        raise ValueError("`ann` has no QCFS activation: there is nothing to make spiking")
    return ConvertedSNN(layers)
