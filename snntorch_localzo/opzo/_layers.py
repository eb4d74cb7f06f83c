"""The layer walk: an ``nn.Sequential`` of snnTorch layers read as blocks

    [pre-ops] weight [post-ops] Leaky      (hidden layers, one or more)
    [pre-ops] Linear                       (the readout, last)

where a weight is ``nn.Linear`` or ``nn.Conv2d`` and pre-/post-ops are
``nn.Flatten`` and ``nn.AvgPool2d`` (linear, without parameters). Anything
else gets an error that names the module. Each block also knows the adjoints
it needs for the three-factor update (the weight gradient from a presynaptic
trace and a postsynaptic error, and the adjoint of its post-ops) without
autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import snntorch as snn
import torch
import torch.nn as nn

__all__ = ["Block", "walk", "reset_neuron", "neuron_state"]

WEIGHTS = (nn.Linear, nn.Conv2d)
SHAPE_OPS = (nn.Flatten, nn.AvgPool2d)
_SUPPORTED = (
    "nn.Linear, nn.Conv2d, nn.Flatten, nn.AvgPool2d and snn.Leaky / localzo.Leaky "
    "(init_hidden=True)"
)


@dataclass
class Block:
    """One layer: ``pre`` ops, the ``weight`` module, ``post`` ops, and the
    Leaky ``neuron`` (None for the readout)."""

    name: str  # the weight module's name in the network
    weight: nn.Module
    pre: List[nn.Module] = field(default_factory=list)
    post: List[nn.Module] = field(default_factory=list)
    neuron: Optional[nn.Module] = None
    neuron_name: str = ""
    beta: float = 0.0  # the neuron's decay: the presynaptic trace's decay (0: readout)

    # ---------------------------------------------------------------- forward pieces
    def apply_pre(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.pre:
            x = op(x)
        return x

    def apply_weight_post(self, x: torch.Tensor, post_shapes: list) -> torch.Tensor:
        """``post(weight(x))``, recording the input shape of every post-op (for
        its adjoint)."""
        x = self.weight(x)
        post_shapes.clear()
        for op in self.post:
            post_shapes.append(tuple(x.shape))
            x = op(x)
        return x

    # ---------------------------------------------------------------- adjoints
    def post_adjoint(self, delta: torch.Tensor, post_shapes: list) -> torch.Tensor:
        """Pulls an error at the neuron's input back to the weight's output."""
        for op, shape in zip(reversed(self.post), reversed(post_shapes)):
            if isinstance(op, nn.Flatten):
                delta = delta.reshape(shape)
            else:  # AvgPool2d
                delta = torch.ops.aten.avg_pool2d_backward(
                    delta, delta.new_empty(shape), _pair(op.kernel_size),
                    _pair(op.stride if op.stride is not None else op.kernel_size),
                    _pair(op.padding), op.ceil_mode, op.count_include_pad, op.divisor_override,
                )
        return delta

    def add_weight_grad(self, grads: Tuple[torch.Tensor, Optional[torch.Tensor]],
                        trace: torch.Tensor, delta: torch.Tensor, bias_trace: float) -> None:
        """``grads += (dW, db)`` for error ``delta`` at the weight's output and the
        presynaptic ``trace`` of its input; the bias sees a constant input 1
        whose trace is ``bias_trace``."""
        gw, gb = grads
        w = self.weight
        if isinstance(w, nn.Linear):
            d2 = delta.reshape(-1, delta.shape[-1])
            gw.addmm_(d2.t().to(gw.dtype), trace.reshape(-1, trace.shape[-1]).to(gw.dtype))
            if gb is not None:
                gb.add_(d2.sum(0).to(gb.dtype), alpha=bias_trace)
        else:
            gw.add_(torch.nn.grad.conv2d_weight(
                trace.to(gw.dtype), w.weight.shape, delta.to(gw.dtype), stride=w.stride,
                padding=w.padding, dilation=w.dilation, groups=w.groups,
            ))
            if gb is not None:
                gb.add_(delta.sum((0, 2, 3)).to(gb.dtype), alpha=bias_trace)


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _flatten(net: nn.Module, prefix: str = ""):
    for name, module in net.named_children():
        full = f"{prefix}{name}"
        if type(module) is nn.Sequential:
            yield from _flatten(module, full + ".")
        else:
            yield full, module


def _label(name: str, module: nn.Module) -> str:
    return f"module '{name}' ({type(module).__name__})"


def _check_neuron(name: str, lif: nn.Module) -> float:
    label = _label(name, lif)
    if not getattr(lif, "init_hidden", False):
        raise ValueError(
            f"{label} must be built with init_hidden=True: OPZO steps the network one "
            "time step at a time and reads the neuron's state after each step"
        )
    for attr in ("beta", "threshold", "graded_spikes_factor"):
        value = getattr(lif, attr, None)
        if isinstance(value, nn.Parameter) and value.requires_grad:
            raise ValueError(
                f"{label} has a learnable {attr} (learn_{attr}=True): OPZO trains the "
                "synaptic weights only (build the neuron with fixed parameters)"
            )
    if getattr(lif, "inhibition", False):
        raise ValueError(f"{label} has inhibition=True, which OPZO does not support")
    if not getattr(lif, "reset_delay", True):
        raise ValueError(
            f"{label} has reset_delay=False, which OPZO does not support (its state "
            "after a step is the membrane after the reset, not the one that fired)"
        )
    beta = torch.as_tensor(lif.beta).detach()
    if beta.numel() != 1:
        raise ValueError(
            f"{label} has a per-neuron beta ({beta.numel()} values): OPZO's presynaptic "
            "traces need one decay per layer"
        )
    return float(beta.clamp(0, 1))


def walk(net: nn.Module) -> Tuple[List[Block], Block]:
    """Checks ``net`` and returns its hidden blocks and its readout block."""
    if not isinstance(net, nn.Sequential):
        raise TypeError(
            f"OPZO trains an nn.Sequential of {_SUPPORTED} with an nn.Linear readout "
            f"last; got {type(net).__name__}"
        )
    modules = list(_flatten(net))
    if not modules:
        raise ValueError("the network is empty: it needs an nn.Linear readout at least")
    blocks: List[Block] = []
    pending_pre: List[nn.Module] = []
    current: Optional[Block] = None  # a block whose weight is seen, neuron not yet
    for name, module in modules:
        if isinstance(module, snn.Leaky):
            if current is None:
                raise ValueError(
                    f"{_label(name, module)} has no nn.Linear or nn.Conv2d before it: every "
                    "Leaky must follow a weight layer"
                )
            current.neuron, current.neuron_name = module, name
            current.beta = _check_neuron(name, module)
            blocks.append(current)
            current = None
        elif isinstance(module, WEIGHTS) and type(module) in WEIGHTS:
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise ValueError(
                    f"{_label(name, module)} has padding_mode={module.padding_mode!r}: "
                    "OPZO supports zero padding only"
                )
            if current is not None:
                raise ValueError(
                    f"{_label(name, module)} follows {_label(current.name, current.weight)} "
                    "with no Leaky between them: each hidden weight layer needs a Leaky "
                    "neuron after it, and only the last nn.Linear (the readout) may stand alone"
                )
            current = Block(name=name, weight=module, pre=pending_pre)
            pending_pre = []
        elif type(module) in SHAPE_OPS:
            (current.post if current is not None else pending_pre).append(module)
        else:
            hint = ""
            if isinstance(module, snn.SpikingNeuron if hasattr(snn, "SpikingNeuron") else ()):
                hint = " (only Leaky neurons: recurrent and second-order neurons are not supported)"
            elif isinstance(module, nn.MaxPool2d):
                hint = " (use nn.AvgPool2d: max pooling is not supported)"
            elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                hint = " (normalisation layers are not supported)"
            raise TypeError(
                f"{_label(name, module)} is not supported by OPZO{hint}: the network must be "
                f"an nn.Sequential of {_SUPPORTED}, with an nn.Linear readout last"
            )
    if current is None or pending_pre:
        last_name, last = modules[-1]
        raise ValueError(
            f"the network must end with an nn.Linear readout (no neuron after it), but its "
            f"last module is {_label(last_name, last)}: OPZO applies the loss to the "
            "readout's output at every step"
        )
    if not isinstance(current.weight, nn.Linear) or current.post:
        raise ValueError(
            f"the readout {_label(current.name, current.weight)} must be an nn.Linear and "
            "the last module of the network"
        )
    return blocks, current


def reset_neuron(lif: nn.Module) -> None:
    """Starts a new sequence from rest (snnTorch >= 0.8: ``reset_mem``; 0.7:
    a fresh ``init_leaky()`` placeholder)."""
    if hasattr(lif, "reset_mem"):
        lif.reset_mem()
    else:  # snnTorch 0.7
        lif.mem = lif.init_leaky()


def neuron_state(lif: nn.Module) -> torch.Tensor:
    """The membrane after the neuron's last step (before next step's reset),
    as a plain tensor."""
    mem = lif.mem
    if type(mem) is not torch.Tensor and isinstance(mem, torch.Tensor):
        mem = mem.as_subclass(torch.Tensor)  # snnTorch 0.7's _SpikeTensor
    return mem
