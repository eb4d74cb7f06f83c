"""The spike function and the Leaky step on each fused path against the
PyTorch reference: the native CPU path and the Triton kernels (through the
interpreter on CPU, ``TRITON_INTERPRET=1`` set in conftest.py).

Forward results must be identical; backward results must be identical when
the directions ``|z|`` are supplied from outside (the ``absz`` test hook); with
the paths' own draws, Monte-Carlo means must match the closed forms within
5 standard errors plus 0.1% of the peak (the tolerance of test_theory.py).
"""

import math

import pytest
import torch

import snntorch_localzo as localzo
from conftest import DEVICE, FUSED, assert_identical, made_by, run_with_grads
from snntorch_localzo._backend import Path
from snntorch_localzo._ops import clib, planner
from snntorch_localzo._ops.leaky import LeakyParams, leaky_step
from snntorch_localzo._ops.leaky.autograd import NativeLeaky, TritonLeaky
from snntorch_localzo._ops.spike import native as spike_native
from snntorch_localzo._ops.spike import spike

pytestmark = pytest.mark.version_free

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DISTS = {
    "normal": {"delta": 0.3},
    "uniform": {"delta": 0.3},
    "laplace": {"delta": 0.3},
    "atan": {},
    "sigmoid": {"slope": 4.0},
    "fast_sigmoid": {"slope": 4.0},
}
STEP_FUNCTION = {Path.NATIVE: NativeLeaky, Path.TRITON: TritonLeaky}


def scalar(v):
    return torch.tensor(v, dtype=torch.float32, device=DEVICE)


def both(fn, inputs, grads, path):
    """``run_with_grads`` of ``fn(path, ...)`` on the reference and on ``path``."""
    return (run_with_grads(lambda *xs: fn(Path.REFERENCE, *xs), inputs, grads),
            run_with_grads(lambda *xs: fn(path, *xs), inputs, grads))


# ---------------------------------------------------------------- spike function
@pytest.mark.parametrize("path", FUSED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("samples", [1, 3, 7])
@pytest.mark.parametrize("name", sorted(DISTS))
def test_spike_equals_reference_given_z(name, samples, dtype, path):
    torch.manual_seed(0)
    est = localzo.make(name, samples=samples, **DISTS[name])
    shape = (13, 97)  # 1261 entries: two blocks, the second partial
    u = (torch.randn(shape) * 2 * est.delta).to(dtype).to(DEVICE)
    absz = est.dist.abs_sample((samples,) + shape).to(DEVICE)
    grad = torch.randn(shape).to(dtype).to(DEVICE)
    results = both(lambda p, x: spike(x, est.spec, None, absz, p), [u], [grad], path)
    assert_identical(*results)
    assert 0 < torch.count_nonzero(results[1][1][0]) < u.numel() or name in ("atan", "fast_sigmoid")


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
def test_spike_path_is_planned_from_device_mode_and_size(device):
    """``auto``: the native path on CPU tensors (at every size where its
    fused C pass runs: float32, a law with a closed-form sampler, the C
    loops built; else the reference below NATIVE_MIN_NUMEL entries, where
    drawing for all costs less than the sparse draw's bookkeeping), the
    kernels on CUDA tensors (the reference where they do not support the
    spec: more than 7 directions); in every mode, the expected value for the
    calls whose samples the adaptive step deems small (``AdaptiveDelta.exact``
    entries or fewer), never for a fixed step."""
    spec = localzo.make().spec
    big = torch.zeros(planner.NATIVE_MIN_NUMEL, device=device)
    small = torch.zeros(2, 100, device=device)
    tiny = torch.zeros(4096, 10, device=device)  # an output layer: 10 entries a sample
    cpu = device == "cpu"
    fused = cpu and clib.c_module() is not None
    with localzo.use_backend("auto"):
        assert planner.spike_path(big, spec) is (Path.NATIVE if cpu else Path.TRITON)
        assert planner.spike_path(small, spec) is (Path.NATIVE if fused else Path.REFERENCE if cpu else Path.TRITON)
        if cpu:  # float64 is not fused: the sparse draw's size limit
            assert planner.spike_path(small.double(), spec) is Path.REFERENCE
        twin = localzo.make("atan").spec  # an inverse-CDF table: not fused
        assert planner.spike_path(small, twin) is (Path.REFERENCE if cpu else Path.TRITON)
        assert planner.spike_path(big, localzo.make(samples=9).spec) is (Path.NATIVE if cpu else Path.REFERENCE)
        assert planner.spike_path(tiny, spec) is Path.EXACT
        assert planner.spike_path(tiny[0], spec) is Path.EXACT  # one sample
        assert planner.spike_path(torch.zeros(4, 65, device=device), spec) is not Path.EXACT
        assert planner.spike_path(tiny, localzo.make(delta=0.05).spec) is not Path.EXACT
        never = localzo.make(delta=localzo.AdaptiveDelta(exact=0)).spec
        assert planner.spike_path(tiny, never) is not Path.EXACT
    with localzo.use_backend("reference"):
        assert planner.spike_path(big, spec) is Path.REFERENCE
        assert planner.spike_path(tiny, spec) is Path.EXACT


def test_spike_plan_follows_the_mode_and_the_c_switch(monkeypatch):
    """A call's plan is memoised per spec, shape, dtype, device and setting:
    asked again after the mode or the C switch changed, it is decided afresh;
    its second element says whether C passes run the backward (the fused
    pass; the expected value's for a small call), which the backward then
    follows."""
    spec = localzo.make().spec
    small = torch.zeros(2, 100, requires_grad=True)
    tiny = torch.zeros(8, 10, requires_grad=True)
    if clib.c_module() is None:
        pytest.skip("the C loops are not built here")
    for _ in range(2):  # the second time from the memo
        with localzo.use_backend("auto"):
            assert planner.spike_plan(small, spec) == (Path.NATIVE, True)
            assert planner.spike_plan(tiny, spec) == (Path.EXACT, True)
            assert planner.spike_plan(small.double(), spec) == (Path.REFERENCE, False)
        with localzo.use_backend("reference"):
            assert planner.spike_plan(small, spec) == (Path.REFERENCE, False)
            assert planner.spike_plan(tiny, spec) == (Path.EXACT, False)
    monkeypatch.setattr(clib, "ENABLED", False)
    with localzo.use_backend("auto"):
        assert planner.spike_plan(small, spec) == (Path.REFERENCE, False)
        assert planner.spike_plan(tiny, spec) == (Path.EXACT, False)
    # the backward follows the plan: without the C loops the reference's expected value
    calls = []
    monkeypatch.setattr(spike_native, "exact_backward",
                        lambda grad, u, spec, acc, shift=0.0: calls.append(1) or torch.full_like(u, 7.0))
    localzo.make()(tiny).sum().backward()
    assert calls == [] and torch.equal(tiny.grad, torch.ones_like(tiny))  # height one at threshold
    monkeypatch.setattr(clib, "ENABLED", True)
    tiny.grad = None
    localzo.make()(tiny).sum().backward()
    assert calls == [1] and torch.equal(tiny.grad, torch.full_like(tiny, 7.0))


@pytest.mark.parametrize("path", FUSED)
@pytest.mark.parametrize("case", ["transposed", "empty", "scalar", "4d"])
def test_spike_shapes(case, path):
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
    assert_identical(*both(lambda p, x: spike(x, est.spec, None, absz, p), [base], [grad], path))


@pytest.mark.parametrize("path", FUSED)
@pytest.mark.parametrize("name", sorted(DISTS))
def test_spike_monte_carlo_mean(name, path):
    """The path's own draws (Philox in the kernels, the tail split on the
    native path): the mean backward is the closed form."""
    torch.manual_seed(2)
    est = localzo.make(name, **DISTS[name])
    u = torch.linspace(-3 * est.delta, 3 * est.delta, 16, dtype=torch.float64)
    n = 4000
    x = u.to(torch.float32).repeat(n, 1).to(DEVICE).requires_grad_(True)
    spike(x, est.spec, path=path).backward(torch.ones_like(x))
    grads = x.grad.double().cpu()
    closed = est.expected_grad(u)
    tol = 5 * grads.std(0) / math.sqrt(n) + 1e-3 * closed.max()
    assert torch.all((grads.mean(0) - closed).abs() <= tol)
    # and the active fraction is P(|u| < delta |z|)
    frac = (grads != 0).double().mean(0)
    p = est.active_prob(u)
    assert torch.all((frac - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)


@pytest.mark.parametrize("path", FUSED)
def test_spike_five_samples_active_fraction(path):
    torch.manual_seed(3)
    est = localzo.make("normal", delta=0.2, samples=5)
    u = torch.linspace(-0.6, 0.6, 12, dtype=torch.float64)
    n = 3000
    x = u.float().repeat(n, 1).to(DEVICE).requires_grad_(True)
    spike(x, est.spec, path=path).backward(torch.ones_like(x))
    frac = (x.grad != 0).double().mean(0).cpu()
    p = est.active_prob(u)
    assert torch.all((frac - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)


@pytest.mark.parametrize("path", FUSED)
def test_randomness_is_reproducible(path):
    est = localzo.make("laplace", delta=0.3, samples=2)
    u0 = torch.randn(50, 40, device=DEVICE)

    def grad(seed):
        torch.manual_seed(seed)
        x = u0.clone().requires_grad_(True)
        spike(x, est.spec, path=path).sum().backward()
        return x.grad

    assert torch.equal(grad(5), grad(5))
    assert not torch.equal(grad(5), grad(6))


@pytest.mark.parametrize("path", FUSED)
def test_meter_counts_nonzero_estimates(path):
    est = localzo.make("normal", delta=0.2, track=True)
    x = torch.randn(3000, device=DEVICE, requires_grad=True)
    spike(x, est.spec, est.meter, path=path).backward(torch.ones_like(x))
    assert est.meter.total == 3000
    assert est.meter.active == torch.count_nonzero(x.grad).item() > 0


# ---------------------------------------------------------------- Leaky step
@pytest.mark.parametrize("path", FUSED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("has_mem", [True, False])
@pytest.mark.parametrize("which_grads", ["both", "spk", "mem"])
def test_leaky_step_equals_reference_given_z(dtype, reset, has_mem, which_grads, path):
    torch.manual_seed(4)
    est = localzo.make("normal", delta=0.3, samples=2)
    shape = (11, 101)
    x = (torch.randn(shape) * 0.7 + 0.4).to(dtype).to(DEVICE)
    mem = (torch.randn(shape) * 0.6 + 0.8).to(dtype).to(DEVICE) if has_mem else None
    absz = est.dist.abs_sample((2,) + shape).to(DEVICE)
    g_spk = torch.randn(shape).to(dtype).to(DEVICE) if which_grads != "mem" else None
    g_mem = torch.randn(shape).to(dtype).to(DEVICE) if which_grads != "spk" else None
    params = LeakyParams(scalar(0.9), scalar(1.0), scalar(1.5), reset)

    def step(p, x, mem):
        return leaky_step(x, mem, params, est.spec, None, p, absz)

    assert_identical(*both(step, [x, mem], [g_spk, g_mem], path))
    out = step(path, x.requires_grad_(True), mem)
    assert made_by(out[0], STEP_FUNCTION[path])


@pytest.mark.parametrize("path", FUSED)
@pytest.mark.parametrize("name", ["uniform", "sigmoid", "fast_sigmoid"])
def test_leaky_step_other_distributions(name, path):
    torch.manual_seed(5)
    est = localzo.make(name, samples=3, **DISTS[name])
    shape = (7, 150)
    x, mem = torch.rand(shape, device=DEVICE) * 1.5, torch.rand(shape, device=DEVICE) * 1.5
    absz = est.dist.abs_sample((3,) + shape).to(DEVICE)
    grads = [torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)]
    params = LeakyParams(scalar(0.8), scalar(0.7), scalar(1.0), 0)
    step = lambda p, x, mem: leaky_step(x, mem, params, est.spec, None, p, absz)  # noqa: E731
    assert_identical(*both(step, [x, mem], grads, path))


@pytest.mark.parametrize("path", FUSED)
def test_leaky_step_meter(path):
    est = localzo.make("normal", delta=0.3, track=True)
    x = torch.rand(2000, device=DEVICE, requires_grad=True)
    params = LeakyParams(scalar(0.9), scalar(0.5), scalar(1.0), 0)
    spk, _ = leaky_step(x, None, params, est.spec, est.meter, path)
    spk.backward(torch.ones_like(spk))
    assert est.meter.total == 2000
    assert est.meter.active == torch.count_nonzero(x.grad).item() > 0
