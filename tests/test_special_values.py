"""Special values and layouts: NaN and infinite inputs, non-contiguous and
channels-last tensors, empty batches and sequences, long sequences; the same
on every path."""

import pytest
import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate, utils

import snntorch_localzo as localzo
from conftest import MODES
from snntorch_localzo import use_backend
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH

BACKENDS = MODES


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_inputs(backend):
    """NaN input: NaN membrane, no spike, zero LocalZO gradient there; +inf:
    spike, zero gradient; -inf: no spike, zero gradient (the estimate is
    non-zero only within delta * |z| of the threshold). Same on both paths."""
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1.0]], requires_grad=True)
    lif = localzo.Leaky(beta=0.9, threshold=1.0, spike_grad=localzo.make("normal", delta=0.5))
    with use_backend(backend):
        spk, mem = lif(x, lif.init_leaky())
        spk.backward(torch.ones_like(spk))
    assert spk.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert torch.isnan(mem[0, 0]) and mem[0, 1] == float("inf") and mem[0, 2] == -float("inf")
    assert x.grad[0, :3].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_channels_last_inputs(backend):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 5, 4) * 2
    cl = x.contiguous(memory_format=torch.channels_last)
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    ref = snn.Leaky(beta=0.9, spike_grad=localzo.make())
    expected = ref(x, ref.init_leaky())
    for inp in (cl, transposed):
        lif = localzo.Leaky(beta=0.9)
        with use_backend(backend):
            spk, mem = lif(inp, lif.init_leaky())
        assert torch.equal(spk, expected[0]) and torch.equal(mem, expected[1])
    lif = localzo.Leaky(beta=0.9)
    with use_backend(backend):
        spk, _ = lif(cl.requires_grad_(True), lif.init_leaky())
    if backend == "triton" and MODERN_SNNTORCH:
        assert spk.is_contiguous(memory_format=torch.channels_last)  # layout kept by the kernels
    spk.sum().backward()
    assert cl.grad.shape == cl.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_empty_sequence(backend):
    with use_backend(backend):
        lif = localzo.Leaky(beta=0.9)
        x = torch.rand(0, 4, requires_grad=True)
        spk, mem = lif(x, lif.init_leaky())
        spk.sum().backward()
        assert spk.shape == (0, 4) and x.grad.shape == (0, 4)
        spk, mem = localzo.Leaky(beta=0.9).forward_sequence(torch.rand(0, 2, 4))
        assert spk.shape == (0, 2, 4) and mem.shape == (0, 2, 4)
        spk, mem = localzo.LinearLeaky(0.9, 3, 4)(torch.rand(5, 0, 3))
        assert spk.shape == (5, 0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_sequence_equals_the_step_loop(backend):
    torch.manual_seed(1)
    steps = 300 if backend == "triton" else 2000  # the interpreter is slow
    x = torch.rand(steps, 1, 3) * 0.4
    a = localzo.Leaky(beta=0.95)
    with use_backend(backend):
        spk, mem = a.forward_sequence(x)
    ref = snn.Leaky(beta=0.95, spike_grad=localzo.make())
    m = ref.init_leaky()
    spikes, mems = [], []
    for t in range(steps):
        s, m = ref(x[t], m)
        spikes.append(s)
        mems.append(m)
    if MODERN_SNNTORCH:
        assert torch.equal(spk, torch.stack(spikes)) and torch.equal(mem, torch.stack(mems))
    assert 0 < spk.sum() < spk.numel()


