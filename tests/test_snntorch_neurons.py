"""``localzo.make()`` as ``spike_grad`` of every snnTorch neuron the installed
version has: same forward as snnTorch's default, finite non-zero gradients
while training a few steps."""

import pytest
import torch
import torch.nn as nn
import snntorch as snn
from snntorch import utils

import snntorch_localzo as localzo

T, B, IN, HID = 8, 4, 10, 12


def stepwise(factory):
    """A neuron driven one step at a time with ``init_hidden=True``."""

    def build(spike_grad):
        kwargs = {} if spike_grad is None else {"spike_grad": spike_grad}
        return factory(init_hidden=True, **kwargs)

    return build


STEPWISE = {
    "Leaky": stepwise(lambda **kw: snn.Leaky(beta=0.9, **kw)),
    "Synaptic": stepwise(lambda **kw: snn.Synaptic(alpha=0.8, beta=0.9, **kw)),
    "Alpha": stepwise(lambda **kw: snn.Alpha(alpha=0.9, beta=0.8, **kw)),
    "Lapicque": stepwise(lambda **kw: snn.Lapicque(beta=0.9, **kw)),
    "RLeaky": stepwise(lambda **kw: snn.RLeaky(beta=0.9, linear_features=HID, **kw)),
    "RSynaptic": stepwise(
        lambda **kw: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=HID, **kw)
    ),
}


def sequence_neurons():
    """Neurons that take the whole sequence [T, B, features] (newer snnTorch)."""
    out = {}
    if hasattr(snn, "LeakyParallel"):
        out["LeakyParallel"] = lambda sg: snn.LeakyParallel(
            input_size=HID, hidden_size=HID, beta=0.9, **({} if sg is None else {"spike_grad": sg})
        )
    if hasattr(snn, "StateLeaky"):
        out["StateLeaky"] = lambda sg: snn.StateLeaky(
            beta=0.9, channels=HID, **({} if sg is None else {"spike_grad": sg})
        )
    if hasattr(snn, "LinearLeaky"):
        out["LinearLeaky"] = lambda sg: snn.LinearLeaky(
            beta=0.9, in_features=HID, out_features=HID, **({} if sg is None else {"spike_grad": sg})
        )
    return out


SEQUENCE = sequence_neurons()
ALL_NAMES = sorted(STEPWISE) + sorted(SEQUENCE)


class Net(nn.Module):
    def __init__(self, name, spike_grad):
        super().__init__()
        self.name = name
        self.fc = nn.Linear(IN, HID)
        self.neuron = (STEPWISE.get(name) or SEQUENCE.get(name))(spike_grad)

    def forward(self, x):  # x: [T, B, IN] -> spikes [T, B, HID]
        # Lapicque with beta integrates (1 - beta) * input: scale it to spike
        cur = self.fc(x) * (20.0 if self.name == "Lapicque" else 2.0)
        if self.name in SEQUENCE:
            out = self.neuron(cur)
            return out[0] if isinstance(out, tuple) else out
        utils.reset(self)  # as snnTorch users do: reset the neurons of the net
        if isinstance(getattr(self.neuron, "spk", None), torch.Tensor):
            # snnTorch's RSynaptic.reset_hidden leaves its recurrent spikes attached
            # to the previous graph (the same happens with its default surrogate)
            self.neuron.spk = torch.zeros_like(self.neuron.spk)
        spikes = []
        for step in range(x.shape[0]):
            out = self.neuron(cur[step])
            spikes.append(out[0] if isinstance(out, tuple) else out)
        return torch.stack(spikes)


def build(name, spike_grad, seed=0):
    torch.manual_seed(seed)
    return Net(name, spike_grad)


def test_every_expected_neuron_is_covered():
    version = tuple(int(p) for p in snn.__version__.split(".")[:2])
    if version >= (0, 8):
        assert "LeakyParallel" in SEQUENCE
    if version >= (1, 0):
        assert {"StateLeaky", "LinearLeaky"} <= set(SEQUENCE)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_equals_snntorch_default(name):
    x = torch.rand(T, B, IN)
    with torch.no_grad():
        ours = build(name, localzo.make())(x)
        theirs = build(name, None)(x)
    assert torch.equal(ours, theirs)
    assert 0 < ours.sum() < ours.numel()  # the comparison is not vacuous


@pytest.mark.parametrize("name", ALL_NAMES)
def test_trains_with_finite_nonzero_gradients(name):
    sg = localzo.make("normal", delta=0.5, track=True)
    net = build(name, sg)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.rand(T, B, IN, generator=gen)
        spikes = net(x)
        loss = (spikes.mean() - 0.25) ** 2 + spikes.sum() * 1e-3
        opt.zero_grad()
        loss.backward()
        grad = net.fc.weight.grad
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0
        opt.step()
    assert 0 < sg.active_fraction < 1


def test_localzo_reachable_from_snntorch_namespace():
    lif = snn.Leaky(beta=0.5, spike_grad=snn.surrogate.localzo("atan", alpha=3.0))
    assert isinstance(lif.spike_grad, localzo.LocalZO)
    assert lif.spike_grad.dist.alpha == 3.0
