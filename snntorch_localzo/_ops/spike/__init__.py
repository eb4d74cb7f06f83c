"""The LocalZO spike function ``S = H(u)`` with its zeroth-order backward."""

from .autograd import plan, spike

__all__ = ["spike", "plan"]
