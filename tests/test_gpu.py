"""GPU checks (``-m gpu``; skipped without CUDA): the kernels against the
reference at realistic sizes and in every dtype, on an explicit device index,
reproducibly, and without a single host synchronisation in the forward and
backward passes (``torch.cuda.set_sync_debug_mode("error")``).

``python benchmarks/gpu_check.py`` runs these first on a GPU machine."""

import pytest
import torch

import snntorch_localzo as localzo
from conftest import assert_close, assert_identical, run_with_grads
from snntorch_localzo._backend import Path
from snntorch_localzo._ops import planner
from snntorch_localzo._ops.leaky import LeakyParams, leaky_seq, leaky_step
from snntorch_localzo._ops.linear_leaky import linear_leaky
from snntorch_localzo._ops.linear_leaky import triton as sparse_kernels

pytestmark = [
    pytest.mark.version_free,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: the last GPU, named explicitly (a model on ``cuda:1`` without set_device)
DEVICE = torch.device("cuda", max(torch.cuda.device_count() - 1, 0)) if torch.cuda.is_available() else None


def params(reset=0):
    return LeakyParams(*(torch.tensor(v, device=DEVICE) for v in (0.9, 1.0, 1.0)), reset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reset", [0, 1, 2])
def test_sequence_kernels_equal_reference_at_realistic_size(dtype, reset):
    torch.manual_seed(0)
    T, B, N = 100, 128, 256
    est = localzo.make("normal", delta=0.05, samples=2)
    x = (torch.rand(T, B, N, device=DEVICE) * 0.3).to(dtype)
    absz = est.dist.abs_sample((2, T, B, N)).to(DEVICE)
    grads = [torch.randn(T, B, N, device=DEVICE).to(dtype), torch.randn(T, B, N, device=DEVICE).to(dtype)]

    def run(path):
        return run_with_grads(lambda x: leaky_seq(x, None, params(reset), est.spec, None, path, absz), [x], grads)

    assert_identical(run(Path.REFERENCE), run(Path.TRITON))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_kernel_equals_reference(dtype):
    torch.manual_seed(1)
    est = localzo.make("atan", samples=3)
    x = torch.rand(128, 4096, device=DEVICE).to(dtype)
    mem = torch.rand(128, 4096, device=DEVICE).to(dtype)
    absz = est.dist.abs_sample((3, 128, 4096)).to(DEVICE)
    g = [torch.randn(128, 4096, device=DEVICE).to(dtype)] * 2

    def run(path):
        return run_with_grads(lambda x, m: leaky_step(x, m, params(), est.spec, None, path, absz), [x, mem], g)

    assert_identical(run(Path.REFERENCE), run(Path.TRITON))


@pytest.mark.parametrize("sparse", [False, True])
def test_linear_leaky_stack_equals_reference(sparse, monkeypatch):
    monkeypatch.setattr(planner, "SPARSE_MAX_ROWS", 2**62)  # the sparse sums at T * B = 12800
    torch.manual_seed(2)
    T, B, sizes = 100, 128, [700, 256, 256, 20]
    est = localzo.make("normal", delta=0.05)
    x = (torch.rand(T, B, sizes[0], device=DEVICE) < 0.05).float()
    ws = [(torch.randn(b, a, device=DEVICE) / a**0.5 * 3).requires_grad_() for a, b in zip(sizes, sizes[1:])]
    absz = [est.dist.abs_sample((1, T, B, b)).to(DEVICE) for b in sizes[1:]]

    def run(mode):
        for w in ws:
            w.grad = None
        with localzo.use_backend(mode):
            h = x
            for w, a in zip(ws, absz):
                h, _ = linear_leaky(h, w, None, None, params(), est.spec, absz=a, sparse=sparse)
            h.sum().backward()
        return (h,), [w.grad.clone() for w in ws]

    ref, fused = run("reference"), run("triton")
    assert_close(ref, fused, rtol=1e-4, atol=1e-4)


def test_trace_past_2_31_elements():
    """Int64 offsets: the input trace of a layer with T * B * in > 2**31."""
    free, _ = torch.cuda.mem_get_info(DEVICE)
    T, B, IN, OUT = 2, 2**15, 2**15 + 64, 128  # 2.15e9 trace entries in one chunk... split by budget
    need = T * B * IN * 4 * 3
    if free < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB free on the GPU, has {free / 2**30:.0f}")
    x = (torch.rand(T, B, IN, device=DEVICE) < 0.01).float()
    e = torch.zeros(T, B, OUT, device=DEVICE)
    e[-1, -1, 0] = 1.0  # one active entry, at the very end of the tensor
    beta = torch.tensor(0.5, device=DEVICE)
    dw = sparse_kernels.sparse_weight_grad(x, e, beta, torch.float32)
    expected = 0.5 * x[0, -1] + x[1, -1]
    torch.testing.assert_close(dw[0], expected)
    assert dw[1:].abs().sum() == 0


def test_scans_past_2_31_elements():
    """Int64 offsets in the forward and backward scans: ``T * n > 2**31``
    (float16), spikes and gradients at the very end of the tensor."""
    T, n = 2, 2**30 + 2**20
    need = T * n * 12  # x, spk, mem, the gradients (float16) and the code byte
    free, _ = torch.cuda.mem_get_info(DEVICE)
    if free < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB free on the GPU, has {free / 2**30:.0f}")
    x = torch.zeros(T, n, device=DEVICE, dtype=torch.float16)
    x[1, -8:] = 2.0
    x.requires_grad_()
    spk, mem = leaky_seq(x, None, params(), localzo.make("normal", delta=0.5).spec, None, Path.TRITON)
    assert spk[1, -8:].eq(1).all() and spk[1, :-8].eq(0).all() and spk[0].eq(0).all()
    del spk
    g = torch.zeros_like(mem)
    g[1, -1] = 1.0
    (gx,) = torch.autograd.grad(mem, x, g)
    assert gx[1, -1] == 1.0 and gx[0, -1] == torch.tensor(0.9, dtype=torch.float16)
    assert gx[:, :-1].abs().sum() == 0


def test_same_seed_same_gradients_on_the_gpu():
    est = localzo.make("laplace", delta=0.1, samples=2)
    layer = localzo.LinearLeaky(0.9, 64, 256, spike_grad=est).to(DEVICE)
    x = (torch.rand(50, 32, 64, device=DEVICE) < 0.2).float()

    def grads(seed):
        layer.zero_grad()
        torch.manual_seed(seed)
        spk, _ = layer(x)
        spk.sum().backward()
        return layer.linear.weight.grad.clone()

    assert torch.equal(grads(3), grads(3))
    assert not torch.equal(grads(3), grads(4))


def test_no_host_synchronisation_in_forward_and_backward():
    torch.manual_seed(3)
    sg = localzo.make("normal", delta=0.05, track=True)
    l1 = localzo.LinearLeaky(0.9, 700, 256, spike_grad=sg).to(DEVICE)
    l2 = localzo.LinearLeaky(0.9, 256, 20, spike_grad=sg).to(DEVICE)
    lif = localzo.Leaky(beta=0.9, spike_grad=sg).to(DEVICE)
    x = (torch.rand(100, 128, 700, device=DEVICE) < 0.05).float()
    mem = torch.zeros(128, 20, device=DEVICE)

    def step():
        s1, _ = l1(x)
        s2, m2 = l2(s1)
        out, _ = lif(m2[-1], mem)
        (s2.sum() + out.sum() + sg(m2 - 1.0).sum()).backward()

    step()  # warm-up: kernels compiled, tables on the device
    torch.cuda.synchronize(DEVICE)
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0 < sg.active_fraction < 0.5


def test_gradient_sampling_on_cuda_equals_the_cpu_given_the_same_uniforms():
    """``make(sampling="gradient")`` on CUDA: its kernel (one program per
    sample) and the PyTorch path there give, with the same uniforms, the
    CPU reference's gradient; the same seed gives the same gradient; no host
    synchronisation."""
    from snntorch_localzo._ops import layout
    from snntorch_localzo._ops.spike import reference
    from snntorch_localzo._ops.spike.triton import spike_backward

    sg = localzo.make(sampling="gradient")
    spec = sg.spec
    g = torch.Generator().manual_seed(0)
    u = -0.6 + 0.5 * torch.randn(32, 16, 6, 6, generator=g)
    go = torch.randn(u.shape, generator=g)
    unif = torch.rand(u.shape, generator=g)
    assert planner.spike_path(u.to(DEVICE), spec) is Path.TRITON
    on_cpu = reference.backward(go, spec.scale(u), spec, unif, layout.accumulator(None, torch.device("cpu")))
    scaled = spec.scale(u.to(DEVICE))
    acc = layout.accumulator(None, DEVICE)
    for backward in (spike_backward, reference.backward):
        got = backward(go.to(DEVICE), scaled, spec, unif.to(DEVICE), acc).cpu()
        assert torch.equal(got != 0, on_cpu != 0)
        assert torch.allclose(got, on_cpu, rtol=1e-5, atol=1e-6)
    x = u.to(DEVICE).requires_grad_()

    gd = go.to(DEVICE)

    def grad():
        x.grad = None
        (sg(x) * gd).sum().backward()
        return x.grad.clone()

    torch.manual_seed(3)
    first = grad()
    torch.manual_seed(3)
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = grad()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(first, again)
