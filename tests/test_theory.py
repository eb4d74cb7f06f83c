"""The theory of docs/method.md as tests: Monte-Carlo means against closed forms,
twins against snnTorch's own surrogates, integrals, active fractions.

Tolerances: a Monte-Carlo mean must lie within 5 standard errors (estimated
from the same samples) plus 0.1% of the peak of the closed form, which
covers float32 arithmetic and table interpolation. Seeds are fixed, so the
tests are deterministic; 5 standard errors would be exceeded by chance with
probability below 1e-6 per point.
"""

import math

import pytest
import torch
from snntorch import surrogate

import snntorch_localzo as localzo
from snntorch_localzo import distributions as D

ALL = [
    ("normal", {"delta": 0.05}),
    ("normal", {"delta": 0.3}),
    ("uniform", {"delta": 0.05}),
    ("laplace", {"delta": 0.1}),
    ("atan", {"alpha": 2.0}),
    ("atan", {"alpha": 0.5}),
    ("sigmoid", {"slope": 25.0}),
    ("sigmoid", {"slope": 4.0}),
    ("fast_sigmoid", {"slope": 25.0}),
    ("fast_sigmoid", {"slope": 3.0}),
]
IDS = [f"{n}-{list(p.values())[0]:g}" for n, p in ALL]

SNNTORCH_SURROGATE = {
    "atan": lambda p: surrogate.atan(alpha=p["alpha"]),
    "sigmoid": lambda p: surrogate.sigmoid(slope=p["slope"]),
    "fast_sigmoid": lambda p: surrogate.fast_sigmoid(slope=p["slope"]),
}


def u_grid(dist, points=40):
    """Even number of points on [-4 delta, 4 delta]: u = 0 is not on it."""
    return torch.linspace(-4 * dist.delta, 4 * dist.delta, points, dtype=torch.float64)


def mc_backward(est, u, n):
    """``n`` independent LocalZO estimates at each ``u``: shape [n, len(u)]."""
    x = u.to(torch.float32).repeat(n, 1).requires_grad_(True)
    est(x).backward(torch.ones_like(x))
    return x.grad.to(torch.float64)


def snntorch_backward(name, params, u):
    x = u.clone().requires_grad_(True)
    SNNTORCH_SURROGATE[name](params)(x).backward(torch.ones_like(x))
    return x.grad


@pytest.mark.parametrize("name,params", ALL, ids=IDS)
def test_monte_carlo_mean_matches_closed_form(name, params):
    torch.manual_seed(0)
    est = localzo.make(name, **params)
    u = u_grid(est.dist)
    grads = mc_backward(est, u, 20_000)
    mean = grads.mean(0)
    se = grads.std(0) / math.sqrt(grads.shape[0])
    closed = est.expected_grad(u)
    tol = 5 * se + 1e-3 * closed.abs().max()
    assert torch.all((mean - closed).abs() <= tol), (mean - closed).abs() / tol


@pytest.mark.parametrize("name,params", [a for a in ALL if a[0] in SNNTORCH_SURROGATE])
def test_twin_expected_grad_is_snntorch_surrogate(name, params):
    est = localzo.make(name, **params)
    # 20 widths each side: snnTorch's own sigmoid formula is still finite there
    # (it overflows to nan for |slope * u| > 88)
    u = torch.linspace(-20 * est.delta, 20 * est.delta, 1001, dtype=torch.float64)
    ref = snntorch_backward(name, params, u)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(
        est.expected_grad(u), ref, rtol=1e-12, atol=1e-12 * ref.abs().max().item()
    )


@pytest.mark.parametrize("name,params", [a for a in ALL if a[0] in SNNTORCH_SURROGATE])
def test_twin_monte_carlo_mean_matches_snntorch_backward(name, params):
    torch.manual_seed(1)
    est = localzo.make(name, **params)
    u = u_grid(est.dist)
    grads = mc_backward(est, u, 20_000)
    ref = snntorch_backward(name, params, u)
    tol = 5 * grads.std(0) / math.sqrt(grads.shape[0]) + 1e-3 * ref.max()
    assert torch.all((grads.mean(0) - ref).abs() <= tol)


def test_twin_parameters_as_in_localzo_md():
    assert localzo.make("atan", alpha=2.0).delta == pytest.approx(0.318, abs=5e-4)
    assert localzo.make("atan").delta == pytest.approx(2 / (math.pi * 2.0))
    sig = localzo.make("sigmoid", slope=25.0)
    assert sig.delta == pytest.approx(1 / (25.0 * math.sqrt(0.4262)), rel=1e-4)
    assert D.SIGMOID_TWIN_CONST == pytest.approx(0.4262, abs=1e-4)
    fs = localzo.make("fast_sigmoid", slope=25.0).dist
    assert (fs.p, fs.c) == (-1, pytest.approx(2 / 25.0))


def test_sigmoid_twin_constant_from_its_definition():
    """0.4262 = 2 * integral_0^inf -h'(v)/v dv for the logistic bump h = s(1-s)."""
    v = torch.linspace(0.0, 80.0, 2_000_001, dtype=torch.float64)
    integral = torch.trapezoid(D._sigmoid_bump_slope(v), v)
    assert 2 * integral.item() == pytest.approx(D.SIGMOID_TWIN_CONST, rel=1e-6)


@pytest.mark.parametrize("name,params", ALL, ids=IDS)
def test_integral_of_expected_grad(name, params):
    """The integral over u is c * E|z|^(p+1): E[z^2] = 1 for p = 1, c for p = -1.
    Integrated with u = s * tan(theta), which handles 1/u^2 tails."""
    dist = localzo.make(name, **params).dist
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 400_001, dtype=torch.float64)[1:-1]
    s = dist.delta
    u = s * torch.tan(theta)
    integrand = dist.expected_grad(u) * s / torch.cos(theta) ** 2
    integral = torch.trapezoid(integrand, theta).item()
    expected = 1.0 if dist.p == 1 else dist.c
    assert dist.integral() == pytest.approx(expected)
    assert integral == pytest.approx(expected, rel=2e-4)


@pytest.mark.parametrize("name", ["normal", "uniform", "laplace", "sigmoid"])
def test_unit_second_moment(name):
    torch.manual_seed(2)
    z2 = localzo.make(name).dist.abs_sample((1_000_000,), dtype=torch.float64) ** 2
    se = z2.std() / 1000.0
    assert abs(z2.mean().item() - 1.0) <= 5 * se.item()


def test_normal_width_constants():
    """E|z| = 0.7978 and E[max of 5 |z_i|] = 1.5698 for normal z (docs/method.md section 2)."""
    torch.manual_seed(3)
    z = localzo.make("normal").dist.abs_sample((5, 400_000), dtype=torch.float64)
    assert z[0].mean().item() == pytest.approx(0.7978, abs=5 * z[0].std().item() / 632)
    m = z.max(0).values
    assert m.mean().item() == pytest.approx(1.5698, abs=5 * m.std().item() / 632)


@pytest.mark.parametrize("samples", [1, 5])
@pytest.mark.parametrize("name,params", ALL, ids=IDS)
def test_active_fraction_matches_probability(name, params, samples):
    torch.manual_seed(4)
    est = localzo.make(name, samples=samples, **params)
    u = u_grid(est.dist)
    n = 10_000
    frac = (mc_backward(est, u, n) != 0).double().mean(0)
    p = est.active_prob(u)
    tol = 5 * torch.sqrt(p * (1 - p) / n) + 1e-3
    assert torch.all((frac - p).abs() <= tol)


def test_active_probability_closed_forms():
    """Normal: P(|u| < delta |z|) = erfc(|u| / (delta sqrt 2)) for one sample."""
    est = localzo.make("normal", delta=0.05)
    u = torch.tensor([0.0, 0.01, 0.05, 0.2], dtype=torch.float64)
    expected = torch.special.erfc(u.abs() / (0.05 * math.sqrt(2)))
    torch.testing.assert_close(est.active_prob(u), expected)
    five = localzo.make("normal", delta=0.05, samples=5)
    torch.testing.assert_close(five.active_prob(u), 1 - (1 - expected) ** 5)


@pytest.mark.parametrize("name", sorted(D.DISTRIBUTIONS))
def test_sampler_follows_its_cdf(name):
    """Kolmogorov-Smirnov statistic below its 0.1% critical value."""
    torch.manual_seed(5)
    dist = localzo.make(name).dist
    n = 200_000
    x, _ = dist.abs_sample((n,), dtype=torch.float64).sort()
    F = dist.abs_cdf(x)
    ecdf_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum(ecdf_hi - F, F - (ecdf_hi - 1.0 / n)).max().item()
    assert ks < 1.95 / math.sqrt(n)


def test_signed_sample_is_symmetric():
    torch.manual_seed(6)
    z = localzo.make("laplace").sample((200_000,))
    assert abs(z.mean().item()) < 5 * z.std().item() / math.sqrt(z.numel())
    assert (z > 0).float().mean().item() == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("name", ["atan", "sigmoid"])
def test_quantile_table_inverts_the_cdf(name):
    dist = localzo.make(name).dist
    U = torch.cat([torch.linspace(0, 0.999, 100_000), 1 - torch.logspace(-3, -7, 1000)])
    x = D.table_lookup(dist.table(), U).to(torch.float64)
    err = (dist.abs_cdf(x) - U.to(torch.float64)).abs()
    assert err.max().item() < 2e-5
    # relative accuracy in the upper tail
    tail = 1 - U.to(torch.float64) > 1e-6
    rel = ((1 - dist.abs_cdf(x)) / (1 - U.to(torch.float64)) - 1).abs()[tail]
    assert rel.max().item() < 2e-3
