"""OPZO: online pseudo-zeroth-order training of snnTorch networks.

Xiao, Meng, Zhang, He, Lin, *Online Pseudo-Zeroth-Order Training of
Neuromorphic Spiking Neural Networks*, arXiv:2407.12516 (ICLR 2026).

One forward pass per time step with noise injected at every hidden layer, the
exact loss gradient at the output carried down by momentum feedback matrices
estimated from that noise, and the online three-factor update of OTTT: no
backward pass through the layers, no autograd graph, memory constant in the
sequence length. Baselines in the same trainer: ``feedback="random"`` (direct
feedback alignment), ``"zo"`` (zeroth order by node perturbation), ``"backprop"``
(OTTT's exact online spatial gradient).

Example::

    from snntorch_localzo import opzo

    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 1e-3))
    loss, acc = trainer.train_step(x_seq, y)
    logits = trainer.predict(x_seq)
"""

from ._feedback import NOISES, NoiseStream, draw_noise, momentum_update
from ._layers import Block, walk
from ._local import local_derivative
from .trainer import FEEDBACKS, LOSSES, OPZO, StepResult

__all__ = [
    "OPZO",
    "StepResult",
    "FEEDBACKS",
    "LOSSES",
    "NOISES",
    "draw_noise",
    "NoiseStream",
    "momentum_update",
    "local_derivative",
    "walk",
    "Block",
]
