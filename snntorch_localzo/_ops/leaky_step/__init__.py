"""One time step of a Leaky neuron with the LocalZO spike function."""

from .autograd import leaky_step
from .reference import RESET_NONE, RESET_SUBTRACT, RESET_ZERO

__all__ = ["leaky_step", "RESET_SUBTRACT", "RESET_ZERO", "RESET_NONE"]
