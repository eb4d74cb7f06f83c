"""The Triton path never waits for the host: no ``nonzero``, ``bincount``,
``unique``, ``masked_select`` or ``.item()`` in the forward or backward pass of
any fused layer (those read device memory back, which stalls a GPU and rules
out CUDA graphs), and no Python number written into a device tensor
(``acc[i] = 3``: ``lift_fresh`` then a host-to-device ``copy_``, which blocks),
with the sparsity meter on, for a fixed step and ``make()``'s default.
Checked on the CPU through the interpreter by recording every aten operation
under a ``TorchDispatchMode`` (``benchmarks/_common.py``, which gpu_check's
profile uses too); on a GPU,
``test_gpu.py`` also runs with ``torch.cuda.set_sync_debug_mode("error")``.
The native CPU path may use them: on the CPU they cost no synchronisation."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import snntorch_localzo as localzo
from conftest import DEVICE, KERNELS, needs_kernels
from snntorch_localzo._ops import planner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _common import HOST_SYNC_OPS, OpRecorder  # noqa: E402  (shared with gpu_check's profile)

pytestmark = pytest.mark.version_free

class Net(nn.Module):
    def __init__(self, sg):
        super().__init__()
        self.l1 = localzo.LinearLeaky(0.9, 32, 128, spike_grad=sg)
        self.l2 = localzo.LinearLeaky(0.9, 128, 16, spike_grad=sg)
        self.fc = nn.Linear(16, 8)
        self.lif = localzo.Leaky(beta=0.9, spike_grad=sg)
        self.seq = localzo.Leaky(beta=0.8, spike_grad=localzo.make("atan", samples=3))
        self.sg = sg

    def forward(self, x):
        s1, _ = self.l1(x)
        s2, _ = self.l2(s1)
        mem = torch.zeros(x.shape[1], 8, device=x.device)
        outs = []
        for t in range(x.shape[0]):  # the fused step, with snnTorch's state handling
            spk, mem = self.lif(self.fc(s2[t]), mem)
            outs.append(spk)
        out, _ = self.seq.forward_sequence(torch.stack(outs), torch.zeros_like(mem))
        return out.sum() + self.sg(s2 - 0.5).sum()


@needs_kernels
@pytest.mark.interpreter
@pytest.mark.parametrize("delta", [0.3, None], ids=["fixed", "adaptive"])
def test_triton_forward_and_backward_do_not_synchronise(monkeypatch, delta):
    monkeypatch.setattr(planner, "SPARSE_MIN_OUT", 1)  # the sparse weight gradient too
    torch.manual_seed(0)
    net = Net(localzo.make("normal", delta=delta, track=True)).to(DEVICE)
    x = (torch.rand(6, 4, 32, device=DEVICE) < 0.3).float()
    with localzo.use_backend("triton"):
        net(x)  # warm-up: tables, caches
        rec = OpRecorder()
        with rec:
            loss = net(x)
            loss.backward()
    assert "linear" in rec.ops or "addmm" in rec.ops or "mm" in rec.ops  # the recorder saw the pass
    assert not HOST_SYNC_OPS & set(rec.ops), sorted(HOST_SYNC_OPS & set(rec.ops))
    assert net.l1.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("delta", [0.3, None], ids=["fixed", "default"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_the_meter_writes_no_host_numbers(backend, delta):
    """The meter's updates on every path a GPU runs (the reference path too),
    for a fixed step and make()'s default: in-place adds and fills, no number
    assigned into the accumulator."""
    if backend == "triton" and not KERNELS:
        pytest.skip("needs Triton (a GPU or the interpreter)")
    sg = localzo.make(delta=delta, track=True)
    u = torch.randn(4, 16, device=DEVICE, requires_grad=True)
    with localzo.use_backend(backend):
        sg(u).sum().backward()  # warm-up: the accumulator exists
        rec = OpRecorder()
        with rec:
            sg(u).sum().backward()
    assert "add_" in rec.ops  # the recorder saw the meter count
    assert not HOST_SYNC_OPS & set(rec.ops), sorted(HOST_SYNC_OPS & set(rec.ops))
    assert sg.meter.calls == 2 and sg.meter.total == 2 * u.numel()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_gradient_sampling_does_not_synchronise(backend):
    """``make(sampling="gradient")`` on the paths a GPU runs: the kernel (one
    program per sample), and the reference, whose capping is a sort and
    suffix sums, no loop that reads back from the device."""
    if backend == "triton" and not KERNELS:
        pytest.skip("needs Triton (a GPU or the interpreter)")
    sg = localzo.make(sampling="gradient", track=True)
    u = torch.randn(6, 4, 5, 5, device=DEVICE, requires_grad=True)
    go = torch.randn(6, 4, 5, 5, device=DEVICE)
    with localzo.use_backend(backend):
        assert planner.spike_path(u, sg.spec) is (planner.Path.TRITON if backend == "triton" else planner.Path.REFERENCE)
        (sg(u) * go).sum().backward()  # warm-up
        rec = OpRecorder()
        with rec:
            (sg(u) * go).sum().backward()
    assert "sort" in rec.ops or backend == "triton"  # the recorder saw the capping (the kernel: nothing)
    assert not HOST_SYNC_OPS & set(rec.ops), sorted(HOST_SYNC_OPS & set(rec.ops))
    assert 0 < sg.meter.active < u.numel()


def test_the_recorder_catches_a_synchronising_op():
    """Guards the tests above: nonzero, .item() and a number assigned into a
    tensor are seen."""
    rec = OpRecorder()
    with rec:
        t = torch.tensor([0.0, 1.0])
        torch.nonzero(t)
        t.sum().item()
        t[0] = 3.0
    assert {"nonzero", "_local_scalar_dense", "lift_fresh", "copy_from_host"} <= set(rec.ops)


@needs_kernels
@pytest.mark.interpreter
def test_the_adaptive_rule_adds_at_most_two_launches_per_spike_call():
    """On the Triton path make()'s default step costs at most two kernel
    launches per spike call over a fixed step (issue 19): the rule's one
    kernel (``_ops/rule_triton.py``) and the division by the step. Every aten
    operation that launches a kernel and every Triton launch is counted, on
    the CPU through the interpreter."""
    import triton  # noqa: F401  (needs_kernels: it imports)
    from _common import TritonLaunches

    def launches(sg, u):
        with localzo.use_backend("triton"):
            x = u.clone().requires_grad_()
            y = sg(x)
            g = torch.ones_like(y)
            y.backward(g)  # warm-up: tables, constants, caches
            x.grad = None
            y = sg(x)
            rec, tri = OpRecorder(), TritonLaunches()
            with rec, tri:
                y.backward(g)
        return rec.kernels + tri.count

    torch.manual_seed(0)
    for shape in [(4, 200), (2, 3, 5, 6)]:  # more than AdaptiveDelta.exact entries a sample: drawn
        u = 0.5 * torch.randn(shape, device=DEVICE) - 0.3
        fixed = launches(localzo.make("normal", delta=0.3), u)
        adaptive = launches(localzo.make(), u)
        assert adaptive - fixed <= 2, (shape, adaptive, fixed)
        # sampling by the incoming gradient: its kernel instead of the law's, nothing more
        assert launches(localzo.make(sampling="gradient"), u) == adaptive, shape
