"""snnTorch-facing neuron modules backed by the LocalZO kernels."""

from .leaky import Leaky

__all__ = ["Leaky"]
