"""Determinism: the same ``torch.manual_seed`` gives the same spikes and
gradients on every path; only torch's generator is consulted."""

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


def _train_grads(backend, seed):
    torch.manual_seed(0)
    net = nn.ModuleDict({
        "fc": nn.Linear(6, 8),
        "lif": localzo.Leaky(beta=0.9, spike_grad=localzo.make("laplace", delta=0.4, samples=2)),
        "seq": localzo.LinearLeaky(0.9, 8, 3, spike_grad=localzo.make("normal", delta=0.4)),
        "syn": snn.Synaptic(alpha=0.8, beta=0.9, spike_grad=localzo.make("atan")),
    })
    x = torch.rand(7, 4, 6) * 2
    torch.manual_seed(seed)
    with use_backend(backend):
        net["lif"].init_leaky()
        spk, _ = net["lif"].forward_sequence(net["fc"](x))
        out, mem = net["seq"](spk)
        syn, m2 = net["syn"].init_synaptic()
        s3, syn, m2 = net["syn"](mem[-1], syn, m2)
        (out.sum() + mem.pow(2).sum() + s3.sum() + m2.sum()).backward()
    return spk, [p.grad.clone() for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_results_different_seed_different(backend):
    spk1, g1 = _train_grads(backend, seed=3)
    spk2, g2 = _train_grads(backend, seed=3)
    spk3, g3 = _train_grads(backend, seed=4)
    assert torch.equal(spk1, spk2) and torch.equal(spk1, spk3)  # spikes never depend on z
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert not all(torch.equal(a, b) for a, b in zip(g1, g3))


def test_global_state_is_only_torchs_generator():
    """Draws depend on torch's generator alone: saving and restoring its state
    reproduces them, whatever else happened in between."""
    est = localzo.make("uniform", delta=0.3)
    u = torch.randn(100)

    def grad():
        x = u.clone().requires_grad_(True)
        est(x).sum().backward()
        return x.grad

    state = torch.get_rng_state()
    first = grad()
    localzo.make("atan")(torch.randn(10, requires_grad=True)).sum().backward()  # other draws
    torch.set_rng_state(state)
    assert torch.equal(grad(), first)


