"""The spike function's fused native backward (``_scan.c`` spike_backward):
the law of its draws against closed forms, its per-row streams and its
reproducibility. (Its bits given the magnitudes are tested with every other
path in test_op_spike_and_step.py and test_adaptive.py.)"""

from __future__ import annotations

import math

import pytest
import torch

import snntorch_localzo as localzo
from conftest import over_simd_settings
from snntorch_localzo._backend import Path
from snntorch_localzo._ops import clib
from snntorch_localzo._ops.spike import spike
from snntorch_localzo._ops.spike import native as spike_native

pytestmark = pytest.mark.skipif(clib.c_module() is None, reason="the C loops are not built here")


def fused_grad(est, u: torch.Tensor, grad=None) -> torch.Tensor:
    """One backward of the spike function on the native path (asserted fused)."""
    assert spike_native.fused(u, est.spec)
    x = u.clone().requires_grad_()
    spike(x, est.spec, None, None, Path.NATIVE).backward(torch.ones_like(u) if grad is None else grad)
    return x.grad


def ks_statistic(sorted_x: torch.Tensor, cdf: torch.Tensor) -> float:
    n = sorted_x.numel()
    hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    return torch.maximum(hi - cdf, cdf - (hi - 1.0 / n)).max().item()


@pytest.mark.parametrize("name", ["normal", "uniform", "laplace", "fast_sigmoid"])
def test_magnitudes_follow_the_law(name):
    """At u = 0 every direction is active and (one direction) the estimate is
    coef |z|**p: the drawn |z| pass a Kolmogorov-Smirnov test at the 0.1%
    level against the law's CDF (the ziggurat for the normal law, the
    closed-form quantiles for the others)."""
    torch.manual_seed(0)
    est = localzo.make(name) if name == "fast_sigmoid" else localzo.make(name, delta=0.3)
    n = 200_000
    g = fused_grad(est, torch.zeros(400, n // 400)).reshape(-1).double() / est.spec.coef
    z = g if est.spec.p == 1 else 1.0 / g
    z, _ = z.sort()
    assert ks_statistic(z, est.dist.abs_cdf(z)) < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("a", [3.0, 3.6])
def test_far_entries_are_active_through_tail_events_at_the_right_rate(a):
    """Entries beyond the near level (|u| = a delta, a above Q(1 - 2**-8) =
    2.886) are active only through tail events: with probability
    erfc(a / sqrt 2), and then with the mean of |z| beyond a,
    phi(a) / (1 - Phi(a)) (5 standard errors)."""
    torch.manual_seed(1)
    delta = 0.2
    est = localzo.make("normal", delta=delta)
    rows, cols = 1000, 2000
    u = torch.full((rows, cols), -a * delta)
    g = fused_grad(est, u).double() / est.spec.coef
    active = g != 0
    p = math.erfc(a / math.sqrt(2))
    n = u.numel()
    assert abs(active.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    z = g[active]
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mean = phi / (0.5 * math.erfc(a / math.sqrt(2)))
    assert abs(z.mean().item() - mean) < 5 * z.std().item() / math.sqrt(z.numel())


@pytest.mark.parametrize("law", ["uniform", "normal"])
@pytest.mark.parametrize("samples", [1, 3])
def test_adaptive_estimate_averages_to_its_expected_value(samples, law):
    """The adaptive step on the fused path (the default make(), uniform, and
    the normal law's): each entry's mean over many samples that share a
    membrane row (so share the step) is expected_grad, its non-zero
    frequency active_prob (5 standard errors + 1e-3)."""
    torch.manual_seed(2)
    est = localzo.make(law, samples=samples)
    row = torch.cat([0.4 * torch.randn(290) - 0.6, torch.tensor([0.0, 0.01, -0.02, 0.3, -3.0] * 2)])
    u = row.repeat(20_000, 1)
    g = fused_grad(est, u).double()
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    expected = est.expected_grad(u[:1])[0]
    assert ((mean - expected).abs() <= 5 * se + 1e-3).all()
    freq = (g != 0).double().mean(0)
    p = est.active_prob(u[:1])[0]
    assert ((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / g.shape[0]) + 1e-3).all()


def test_same_seed_same_gradient_and_rows_draw_apart():
    """The same torch seed gives the same gradient, another seed another; a
    row's draw does not depend on the other rows' membranes; the incoming
    gradient multiplies (NaN stays NaN where the estimate is zero)."""
    est = localzo.make()
    u = 0.4 * torch.randn(16, 300) - 0.5
    torch.manual_seed(3)
    a = fused_grad(est, u)
    torch.manual_seed(3)
    assert torch.equal(fused_grad(est, u), a)
    torch.manual_seed(4)
    assert not torch.equal(fused_grad(est, u), a)
    v = u.clone()
    v[5:] = 0.4 * torch.randn(11, 300) - 0.2
    torch.manual_seed(3)
    b = fused_grad(est, v)
    assert torch.equal(b[:5], a[:5])
    grad = torch.full_like(u, 2.0)
    grad[0, :] = float("nan")
    torch.manual_seed(3)
    c = fused_grad(est, u, grad)
    assert torch.equal(c[1:], 2.0 * a[1:])
    assert torch.isnan(c[0]).all()


def test_input_and_incoming_gradient_are_not_modified():
    est = localzo.make()
    u = 0.4 * torch.randn(8, 100) - 0.5
    grad = torch.randn(8, 100)
    u0, g0 = u.clone(), grad.clone()
    fused_grad(est, u, grad)
    assert torch.equal(u, u0) and torch.equal(grad, g0)


@pytest.mark.parametrize("shape", [(16, 1000), (9, 203)])
@pytest.mark.parametrize("law", ["normal", "uniform"])
def test_vector_lanes_draw_the_same_bits(law, shape):
    """The vector lanes (where the CPU has them: AVX-512, AVX2 alone) and the
    portable loop draw the same magnitudes and list and spread the same near
    entries: the same gradient for the same seed (rows of 203 entries end in
    a block of eight and a shorter tail)."""
    est = localzo.make(law, samples=3)
    u = 0.4 * torch.randn(shape) - 0.5
    grads = []
    for _ in over_simd_settings():
        torch.manual_seed(5)
        grads.append(fused_grad(est, u))
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert (grads[0] != 0).any()


@pytest.mark.parametrize("shape", [(37, 500), (3, 4000)])
@pytest.mark.parametrize("kwargs", [{"samples": 2}, {"sampling": "gradient"}])
def test_threads_split_rows_without_changing_the_draw(shape, kwargs):
    """Where the build splits a call's rows over torch's threads, the gradient
    and the meter's count are those of one thread (each row has its own
    stream), for any number of threads: the law's fused pass and the
    gradient's weighted pass."""
    est = localzo.make(track=True, **kwargs)
    u = 0.4 * torch.randn(*shape) - 0.5
    u[0, :7] = float("nan")
    before = torch.get_num_threads()
    grads, counts = [], []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            # one OpenMP pool: torch's setting reaches the C loops where they have OpenMP
            assert clib.c_module().max_threads() in (1, threads)
            est.reset_stats()
            torch.manual_seed(11)
            x = u.clone().requires_grad_()
            spike(x, est.spec, est.meter, None, Path.NATIVE).backward(torch.ones_like(u))
            grads.append(x.grad)
            counts.append(est.meter.active)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])
    assert counts[0] == counts[1] == counts[2] == int((grads[0] != 0).sum())
    assert 0 < counts[0] < u.numel()
