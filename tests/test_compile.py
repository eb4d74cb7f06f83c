"""torch.compile: models of this package's layers compile (with
fullgraph=True wherever snnTorch's own Leaky does) and give eager mode's
results; and every Triton kernel compiles for the H100 (sm_90) ahead of time
on the CPU (see scripts/aot_compile.py), which catches what the interpreter cannot:
type errors in branches, unsupported operations, register blow-ups, and the
specialisations (aligned pointers, divisible sizes) real launches get."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate, utils

import snntorch_localzo as localzo
from conftest import MODES
from nets import LinearSequenceNet
from snntorch_localzo import use_backend
from snntorch_localzo.demo.models import StepMLP
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH

BACKENDS = MODES
from snntorch_localzo import _backend


def compiled_net():
    """10-16-4, step by step: localzo.Leaky, then snn.Leaky, sharing one
    localzo.make(); returns the net and that spike gradient."""
    sg = localzo.make("normal", delta=0.3, track=True)
    neurons = iter([localzo.Leaky(beta=0.9, spike_grad=sg), snn.Leaky(beta=0.9, spike_grad=sg)])
    return StepMLP([10, 16, 4], lambda: next(neurons)), sg


def _snn_leaky_compiles_fullgraph() -> bool:
    """Whether the installed snnTorch's own Leaky compiles with fullgraph=True
    (1.0, 0.9 and 0.8 do; 0.7's ``_SpikeTorchConv`` breaks the graph): our
    layers are held to the same standard, and compiled with graph breaks
    where snnTorch's own Leaky needs them."""
    torch._dynamo.reset()
    probe = nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.9, init_hidden=True))
    try:
        torch.compile(probe, fullgraph=True)(torch.rand(2, 3))
    except Exception:
        assert not MODERN_SNNTORCH, "snn.Leaky compiles with fullgraph=True on snnTorch >= 0.8"
        return False
    finally:
        torch._dynamo.reset()
    return True


def eager_then_compiled(net, step, backend, between=lambda: None):
    """``step(net)`` (it runs forward and backward, returns what to compare)
    in eager mode and then compiled (fullgraph wherever snn.Leaky compiles
    so), each from seed 1 with fresh gradients; ``between()`` runs in
    between. Returns the eager result, the eager gradients and the compiled
    result (its gradients are in ``net``)."""
    fullgraph = _snn_leaky_compiles_fullgraph()
    with use_backend(backend):
        torch.manual_seed(1)
        eager = step(net)
        eager_grads = [p.grad.clone() for p in net.parameters()]
        between()
        net.zero_grad()
        torch.manual_seed(1)
        compiled = step(torch.compile(net, fullgraph=fullgraph))
    return eager, eager_grads, compiled


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_matches_eager(backend):
    """snn.Leaky with its ATan compiles with fullgraph=True; so does a model of
    localzo.Leaky and snn.Leaky with localzo.make(), with the same spikes, the
    same random directions (so gradients equal to float rounding) and the
    same sparsity counts as in eager mode."""
    torch.manual_seed(0)
    net, sg = compiled_net()
    x = torch.rand(5, 3, 10) * 2
    counts = []

    def step(model):
        out = model(x)
        out.sum().backward()
        return out

    def between():
        counts.append((sg.meter.active, sg.meter.total))
        sg.reset_stats()

    eager, eager_grads, out = eager_then_compiled(net, step, backend, between)
    assert torch.equal(out, eager)
    for p, g in zip(net.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-5)
    assert (sg.meter.active, sg.meter.total) == counts[0]
    assert counts[0][0] > 0


class CompiledSequenceNet(LinearSequenceNet):
    def __init__(self):
        super().__init__(8, 12, 5, delta=0.4, laws=("normal", "uniform"))

    def forward(self, x):
        out, mem = super().forward(x)
        return out.sum() + mem.pow(2).sum(), out


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_sequence_layers_match_eager(backend):
    """forward_sequence and LinearLeaky compile with fullgraph=True (inside a
    compiled graph the sparse input gradient gives way to the dense one)."""
    torch.manual_seed(0)
    net = CompiledSequenceNet()
    x = torch.rand(6, 3, 8) * 2

    def step(model):
        loss, out = model(x)
        loss.backward()
        return out

    eager, eager_grads, out = eager_then_compiled(net, step, backend)
    assert torch.equal(out, eager)
    for p, g in zip(net.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-4)


@pytest.mark.aot
@pytest.mark.skipif(not _backend.triton_available(), reason="needs Triton")
def test_all_kernels_compile_for_sm90(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scripts" / "aot_compile.py")],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "compiled" in out.stdout and "for sm_90" in out.stdout


@pytest.mark.aot
@pytest.mark.skipif(not _backend.triton_available(), reason="needs Triton")
def test_time_loops_index_in_64_bits(tmp_path):
    """The scans and the input trace compute ``t * n`` in int64 (their Triton
    IR has no 32-bit multiply): correct past 2**31 entries, which no CPU test
    can allocate (test_gpu.py runs such a scan on a GPU with the memory)."""
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scripts" / "aot_compile.py"), "--offsets"],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "time-loop kernels with int64 offsets" in out.stdout
