"""Test set-up: Triton kernels run through the interpreter when there is no GPU.

``TRITON_INTERPRET`` must be set before any kernel is defined, so it is set
here, before ``snntorch_localzo`` is imported by the tests.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import snntorch_localzo  # noqa: E402,F401  (registers snntorch.surrogate.localzo)


@pytest.fixture(autouse=True)
def _fresh_snntorch_instances():
    """snnTorch keeps a class-level list of neurons for ``init_hidden``; start
    every test with an empty one so tests do not see each other's neurons."""
    from snntorch._neurons.neurons import SpikingNeuron

    SpikingNeuron.instances = []
    yield
    SpikingNeuron.instances = []


def made_by(tensor, function) -> bool:
    """Whether ``tensor`` comes from the autograd ``function`` (through views)."""
    fn = tensor.grad_fn
    for _ in range(4):
        if fn is None:
            return False
        if isinstance(fn, function._backward_cls):
            return True
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return False
