"""The Leaky neuron with the LocalZO spike function: one step or a sequence."""

from .autograd import leaky_seq, leaky_step, run_c_spike_step
from .reference import RESET_NONE, RESET_SUBTRACT, RESET_ZERO, RESETS, LeakyParams

__all__ = [
    "leaky_step", "leaky_seq", "run_c_spike_step", "LeakyParams", "RESETS",
    "RESET_SUBTRACT", "RESET_ZERO", "RESET_NONE",
]
