"""Every Triton kernel against its PyTorch reference, through Triton's
interpreter on CPU (``TRITON_INTERPRET=1``, set in conftest.py).

Forward results must be identical; backward results must be identical when
the directions ``|z|`` are supplied from outside (the ``absz`` test hook); with
in-kernel Philox draws, Monte-Carlo means must match the closed forms within
5 standard errors plus 0.1% of the peak (the tolerance of test_theory.py).
"""

import math

import pytest
import torch

import snntorch_localzo as localzo
from conftest import made_by
from snntorch_localzo import _backend, use_backend
from snntorch_localzo._ops.leaky import leaky_step
from snntorch_localzo._ops.leaky.autograd import FusedLeaky
from snntorch_localzo._ops.spike import spike
from snntorch_localzo._ops.spike import triton as spike_kernels

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(
        not (_backend.triton_available() and (_backend.interpreting() or torch.cuda.is_available())),
        reason="needs Triton (interpreter or GPU)",
    ),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DISTS = {
    "normal": {"delta": 0.3},
    "uniform": {"delta": 0.3},
    "laplace": {"delta": 0.3},
    "atan": {},
    "sigmoid": {"slope": 4.0},
    "fast_sigmoid": {"slope": 4.0},
}


def scalar(v):
    return torch.tensor(v, dtype=torch.float32, device=DEVICE)


def run_both(fn, inputs, grads):
    """Runs ``fn`` on clones of ``inputs`` with the reference and the Triton
    backend; returns ``[(outputs, input grads)]`` for each."""
    results = []
    for mode in ("reference", "triton"):
        with use_backend(mode):
            xs = [None if x is None else x.clone().requires_grad_(True) for x in inputs]
            outs = fn(*xs)
            outs = outs if isinstance(outs, tuple) else (outs,)
            pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            results.append((outs, [None if x is None else x.grad for x in xs]))
    return results


def assert_identical(results):
    (out_ref, grad_ref), (out_tri, grad_tri) = results
    for a, b in zip(out_ref + tuple(grad_ref), out_tri + tuple(grad_tri)):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b), (a.float() - b.float()).abs().max()


# ---------------------------------------------------------------- spike kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("samples", [1, 3, 7])
@pytest.mark.parametrize("name", sorted(DISTS))
def test_spike_kernel_equals_reference_given_z(name, samples, dtype):
    torch.manual_seed(0)
    est = localzo.make(name, samples=samples, **DISTS[name])
    shape = (13, 97)  # 1261 entries: two blocks, the second partial
    u = (torch.randn(shape) * 2 * est.delta).to(dtype).to(DEVICE)
    absz = est.dist.abs_sample((samples,) + shape).to(DEVICE)
    grad = torch.randn(shape).to(dtype).to(DEVICE)
    results = run_both(lambda x: spike(x, est.dist, samples, None, absz), [u], [grad])
    assert_identical(results)
    assert 0 < torch.count_nonzero(results[1][1][0]) < u.numel() or name in ("atan", "fast_sigmoid")


def test_spike_kernel_runs_on_the_triton_path(monkeypatch):
    """Guards the test above: the Triton backend really runs the kernel."""
    launches = []
    kernel = spike_kernels.spike_bwd_kernel
    monkeypatch.setattr(spike_kernels, "spike_bwd_kernel", _Counting(kernel, launches))
    for backend, expected in (("triton", 1), ("reference", 0)):
        launches.clear()
        u = torch.randn(10, device=DEVICE, requires_grad=True)
        with use_backend(backend):
            spike(u, localzo.make().dist).sum().backward()
        assert len(launches) == expected, backend


class _Counting:
    """Stands in for a Triton kernel: counts ``kernel[grid](...)`` launches."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        self.launches.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("case", ["transposed", "empty", "scalar", "4d"])
def test_spike_kernel_shapes(case):
    torch.manual_seed(1)
    est = localzo.make("normal", delta=0.5, samples=2)
    base = {
        "transposed": torch.randn(40, 30).t(),
        "empty": torch.randn(0, 5),
        "scalar": torch.randn(()),
        "4d": torch.randn(2, 3, 5, 7),
    }[case].to(DEVICE)
    absz = est.dist.abs_sample((2,) + tuple(base.shape)).to(DEVICE)
    grad = torch.randn(base.shape, device=DEVICE)
    assert_identical(run_both(lambda x: spike(x, est.dist, 2, None, absz), [base], [grad]))


@pytest.mark.parametrize("name", sorted(DISTS))
def test_spike_kernel_monte_carlo_mean(name):
    """In-kernel Philox draws: the mean backward is the closed form."""
    torch.manual_seed(2)
    est = localzo.make(name, **DISTS[name])
    u = torch.linspace(-3 * est.delta, 3 * est.delta, 16, dtype=torch.float64)
    n = 4000
    x = u.to(torch.float32).repeat(n, 1).to(DEVICE).requires_grad_(True)
    with use_backend("triton"):
        est(x).backward(torch.ones_like(x))
    grads = x.grad.double().cpu()
    closed = est.expected_grad(u)
    tol = 5 * grads.std(0) / math.sqrt(n) + 1e-3 * closed.max()
    assert torch.all((grads.mean(0) - closed).abs() <= tol)
    # and the active fraction is P(|u| < delta |z|)
    frac = (grads != 0).double().mean(0)
    p = est.active_prob(u)
    assert torch.all((frac - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)


def test_spike_kernel_five_samples_active_fraction():
    torch.manual_seed(3)
    est = localzo.make("normal", delta=0.2, samples=5)
    u = torch.linspace(-0.6, 0.6, 12, dtype=torch.float64)
    n = 3000
    x = u.float().repeat(n, 1).to(DEVICE).requires_grad_(True)
    with use_backend("triton"):
        est(x).backward(torch.ones_like(x))
    frac = (x.grad != 0).double().mean(0).cpu()
    p = est.active_prob(u)
    assert torch.all((frac - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)


def test_kernel_randomness_is_reproducible():
    est = localzo.make("laplace", delta=0.3, samples=2)
    u0 = torch.randn(50, 40, device=DEVICE)

    def grad(seed):
        torch.manual_seed(seed)
        x = u0.clone().requires_grad_(True)
        with use_backend("triton"):
            est(x).sum().backward()
        return x.grad

    assert torch.equal(grad(5), grad(5))
    assert not torch.equal(grad(5), grad(6))


def test_kernel_meter_counts_nonzero_estimates():
    est = localzo.make("normal", delta=0.2, track=True)
    x = torch.randn(3000, device=DEVICE, requires_grad=True)
    with use_backend("triton"):
        est(x).backward(torch.ones_like(x))
    assert est.meter.total == 3000
    assert est.meter.active == torch.count_nonzero(x.grad).item() > 0


# ---------------------------------------------------------------- Leaky step
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("has_mem", [True, False])
@pytest.mark.parametrize("which_grads", ["both", "spk", "mem"])
def test_leaky_step_kernel_equals_reference_given_z(dtype, reset, has_mem, which_grads):
    torch.manual_seed(4)
    est = localzo.make("normal", delta=0.3, samples=2)
    shape = (11, 101)
    x = (torch.randn(shape) * 0.7 + 0.4).to(dtype).to(DEVICE)
    mem = (torch.randn(shape) * 0.6 + 0.8).to(dtype).to(DEVICE) if has_mem else None
    absz = est.dist.abs_sample((2,) + shape).to(DEVICE)
    g_spk = torch.randn(shape).to(dtype).to(DEVICE) if which_grads != "mem" else None
    g_mem = torch.randn(shape).to(dtype).to(DEVICE) if which_grads != "spk" else None
    beta, thr, graded = scalar(0.9), scalar(1.0), scalar(1.5)

    def step(x, mem):
        return leaky_step(x, mem, beta, thr, graded, reset, est.dist, 2, None, absz)

    results = run_both(step, [x, mem], [g_spk, g_mem])
    assert_identical(results)
    with use_backend("triton"):
        out = step(x.requires_grad_(True), mem)
    assert made_by(out[0], FusedLeaky)


@pytest.mark.parametrize("name", ["uniform", "sigmoid", "fast_sigmoid"])
def test_leaky_step_kernel_other_distributions(name):
    torch.manual_seed(5)
    est = localzo.make(name, samples=3, **DISTS[name])
    shape = (7, 150)
    x, mem = torch.rand(shape, device=DEVICE) * 1.5, torch.rand(shape, device=DEVICE) * 1.5
    absz = est.dist.abs_sample((3,) + shape).to(DEVICE)
    grads = [torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)]
    step = lambda x, mem: leaky_step(  # noqa: E731
        x, mem, scalar(0.8), scalar(0.7), scalar(1.0), 0, est.dist, 3, None, absz
    )
    assert_identical(run_both(step, [x, mem], grads))


def test_leaky_step_kernel_meter():
    est = localzo.make("normal", delta=0.3, track=True)
    x = torch.rand(2000, device=DEVICE, requires_grad=True)
    with use_backend("triton"):
        spk, _ = leaky_step(x, None, scalar(0.9), scalar(0.5), scalar(1.0), 0, est.dist, 1, est.meter)
        spk.backward(torch.ones_like(spk))
    assert est.meter.total == 2000
    assert est.meter.active == torch.count_nonzero(x.grad).item() > 0
