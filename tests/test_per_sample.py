"""The default ``make()`` is per sample (issue 19): a sample's step, expected
gradient and, given the same directions, its gradient do not depend on the
other samples of its batch, so micro-batching, gradient accumulation and DDP
sharding train the same model as the full batch."""

import pytest
import snntorch as snn
import torch
import torch.nn as nn

import snntorch_localzo as localzo
from snntorch_localzo._ops.spike import reference as spike_reference


def _membranes(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = -0.5 + 0.3 * torch.randn(shape, generator=g)
    u[: shape[0] // 2] -= 1.0  # half the batch far below threshold: batch-mates that differ
    return u


@pytest.mark.parametrize("shape", [(64, 256), (16, 6, 5, 5), (8, 3, 4, 2, 2), (5, 1)])
def test_step_and_expected_grad_of_a_slice_equal_the_slice_of_the_batch(shape):
    sg = localzo.make()
    u = _membranes(shape)
    for rows in (slice(0, 1), slice(1, 3), slice(shape[0] - 1, shape[0])):
        assert torch.equal(sg.step(u[rows]), sg.step(u)[rows])
        assert torch.equal(sg.expected_grad(u[rows]), sg.expected_grad(u)[rows])
        assert torch.equal(sg.active_prob(u[rows]), sg.active_prob(u)[rows])
    # the example: one sample alone against the same sample in a batch of 64
    u = -0.5 + 0.3 * torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sg.expected_grad(u[:1]), sg.expected_grad(u)[:1])


def test_steps_mode_is_per_sample_too():
    rule = localzo.make().rule
    U = _membranes((4, 6, 3, 5, 5)).view(4, 6, 3, 5, 5)
    D = rule.delta(U, "normal", 1, steps=4)
    for t in range(4):
        assert torch.equal(D[t], rule.delta(U[t], "normal", 1))
        assert torch.equal(D[t, 2:4], rule.delta(U[t, 2:4], "normal", 1))


class _Replay:
    """Records the |z| of every reference backward call of a full batch, then
    hands each chunk its rows of them: the same draws for every sample."""

    def __init__(self, real):
        self.real, self.calls, self.rows, self.i = real, [], None, 0

    def __call__(self, spec, table, shape, **kwargs):
        if self.rows is None:
            z = self.real(spec, table, shape, **kwargs)
            self.calls.append(z)
            return z
        z = self.calls[self.i][:, self.rows]
        self.i += 1
        assert z.shape[1:] == tuple(shape)
        return z


def _net(spike_grad):
    torch.manual_seed(0)
    return nn.ModuleDict({
        "fc1": nn.Linear(12, 80), "lif1": snn.Leaky(beta=0.8, spike_grad=spike_grad),
        "fc2": nn.Linear(80, 5), "lif2": snn.Leaky(beta=0.8, spike_grad=spike_grad),
    })


def _loss(net, x):
    """Sum over samples (so chunk losses add up to the batch loss)."""
    mem1, mem2 = net["lif1"].init_leaky(), net["lif2"].init_leaky()
    out = []
    for t in range(x.shape[0]):
        spk1, mem1 = net["lif1"](net["fc1"](x[t]), mem1)
        spk2, mem2 = net["lif2"](net["fc2"](spk1), mem2)
        out.append(mem2 + spk2)
    return torch.stack(out).sum(0).pow(2).sum()


def test_gradient_accumulated_over_chunks_equals_the_full_batch(monkeypatch):
    """In the spirit of snnTorch 1.0's ``test_chunking_with_gd``: with the
    same directions, accumulating the gradient over batch chunks gives the
    full batch's gradient (with a step computed from the whole batch it did not).
    The law's draw here; make()'s default draw by the incoming gradient:
    ``test_weighted.py``'s chunk test."""
    replay = _Replay(spike_reference.draw_abs_z)
    monkeypatch.setattr(spike_reference, "draw_abs_z", replay)
    torch.manual_seed(0)
    x = torch.rand(6, 16, 12) * 2.0  # [T, B, features]
    with localzo.use_backend("reference"):
        full = _net(localzo.make(sampling="law"))
        _loss(full, x).backward()
        # lif1 draws (80 neurons); lif2 (5 neurons, an output layer) gets the expected value
        assert len(replay.calls) == 6 and any(c.count_nonzero() for c in replay.calls)
        chunked = _net(localzo.make(sampling="law"))
        for rows in (slice(0, 5), slice(5, 11), slice(11, 16)):
            replay.rows, replay.i = rows, 0
            _loss(chunked, x[:, rows]).backward()
    for name, p in full.named_parameters():
        q = dict(chunked.named_parameters())[name]
        assert p.grad.abs().sum() > 0, name
        # equal up to the order of float32 sums (chunks against the whole batch)
        assert (p.grad - q.grad).abs().max() <= 1e-5 * p.grad.abs().max(), name
