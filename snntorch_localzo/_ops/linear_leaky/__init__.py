"""A linear layer followed by a Leaky neuron over a whole sequence, with the
sparse LocalZO backward of docs/method.md section 4."""

from .autograd import linear_leaky

__all__ = ["linear_leaky"]
