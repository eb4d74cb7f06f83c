"""A linear layer followed by a Leaky neuron over a whole sequence, with the
sparse LocalZO backward of LOCALZO.md section 4."""

from .autograd import linear_leaky

__all__ = ["linear_leaky"]
