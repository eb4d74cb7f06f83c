"""snnTorch-facing neuron modules backed by the LocalZO kernels."""

from .leaky import Leaky
from .linear_leaky import LinearLeaky

__all__ = ["Leaky", "LinearLeaky"]
