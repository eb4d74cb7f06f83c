"""The LocalZO spike function ``S = H(u)`` with its zeroth-order backward."""

from .autograd import spike

__all__ = ["spike"]
