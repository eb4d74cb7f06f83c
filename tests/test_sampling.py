"""The native path's draws (``_ops/sampling.py``): the tail split gives the
estimate its law (Monte-Carlo means against the closed forms, active
fractions against ``1 - F(|u|/delta)^m``), the same values as the definition
given the magnitudes, and its helpers are exact."""

import math

import pytest
import torch

import snntorch_localzo as localzo
from snntorch_localzo._ops import planner, sampling

pytestmark = pytest.mark.version_free

LAWS = [("normal", {"delta": 0.1}), ("uniform", {"delta": 0.1}), ("laplace", {"delta": 0.1}),
        ("atan", {}), ("sigmoid", {"slope": 4.0}), ("fast_sigmoid", {"slope": 4.0})]


def dense_draws(est, u, repeats):
    """``repeats`` independent sparse draws at ``u``, as a dense ``[repeats, len(u)]``."""
    spec = est.spec
    uu = u.float().repeat(repeats)
    index, g = sampling.sparse_estimate(uu, spec, spec.table("cpu"))
    dense = torch.zeros(uu.numel(), dtype=torch.float64)
    dense[index] = g.double()
    return dense.view(repeats, -1)


@pytest.fixture(params=["sparse", "dense"])
def draw(request, monkeypatch):
    """The native estimate's two draws, each forced: the tail split
    (``NATIVE_DENSE_NEAR = 1``: never dense) and every entry (``= 0``)."""
    monkeypatch.setattr(planner, "NATIVE_DENSE_NEAR", 1.0 if request.param == "sparse" else 0.0)
    return request.param


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("name,kw", LAWS, ids=[n for n, _ in LAWS])
def test_sparse_draws_have_the_estimates_law(name, kw, samples, draw):
    """Mean within 5 standard errors (+0.1% of the peak) of the closed form,
    where at least 20 of the draws are expected to be non-zero (elsewhere the
    sample standard error says nothing); non-zero fraction within 5 binomial
    standard errors of 1 - F(|u|/delta)^m everywhere; both draws."""
    torch.manual_seed(0)
    est = localzo.make(name, samples=samples, **kw)
    u = torch.linspace(-5 * est.delta, 5 * est.delta, 21, dtype=torch.float64)
    n = 8000
    G = dense_draws(est, u, n)
    closed = est.expected_grad(u).double()
    tol = 5 * G.std(0) / math.sqrt(n) + 1e-3 * closed.max()
    informative = est.active_prob(u) * n >= 20
    assert informative.sum() >= 5
    assert torch.all(((G.mean(0) - closed).abs() <= tol)[informative])
    p = est.active_prob(u)
    frac = (G != 0).double().mean(0)
    assert torch.all((frac - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-3)


def test_far_entries_are_active_through_tail_events_only():
    """Far from threshold (|u| = 6 delta, P(active) = 2e-9 for one normal
    direction) nothing is active; at 3.5 delta (P = 4.7e-4, beyond the
    near band of 2.89 delta) the tail events give the right rate."""
    torch.manual_seed(1)
    est = localzo.make("normal", delta=0.1)
    spec = est.spec
    n = 400_000
    for k, expect in ((6.0, 0.0), (3.5, float(est.active_prob(torch.tensor(0.35)))) ):
        index, _ = sampling.sparse_estimate(torch.full((n,), k * 0.1), spec, spec.table("cpu"))
        if expect == 0.0:
            assert index.numel() == 0
        else:
            sd = math.sqrt(n * expect * (1 - expect))
            assert abs(index.numel() - n * expect) <= 5 * sd


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_given_magnitudes_the_values_are_the_definition(dtype):
    torch.manual_seed(2)
    est = localzo.make("laplace", delta=0.3, samples=3)
    u = (torch.randn(40, 17) * 0.5).to(dtype)
    absz = est.dist.abs_sample((3, 40, 17))
    index, g = sampling.sparse_estimate(u, est.spec, est.spec.table("cpu"), absz=absz)
    dense = sampling.estimate(u, absz, est.spec).reshape(-1)
    assert torch.equal(index, torch.nonzero(dense).reshape(-1))
    assert torch.equal(g, dense[index]) and g.dtype == sampling.compute_dtype(dtype)


def test_same_generator_state_same_draws():
    est = localzo.make("atan", samples=2)
    u = torch.randn(5000) * 0.3
    torch.manual_seed(3)
    a = sampling.sparse_estimate(u, est.spec, est.spec.table("cpu"))
    torch.manual_seed(3)
    b = sampling.sparse_estimate(u, est.spec, est.spec.table("cpu"))
    torch.manual_seed(4)
    c = sampling.sparse_estimate(u, est.spec, est.spec.table("cpu"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("n,density", [(10, 0.5), (2**16 + 8, 0.01), (2**17, 0.3), (2**16 + 3, 0.01)])
def test_flat_nonzero_equals_nonzero(n, density):
    torch.manual_seed(5)
    mask = torch.rand(n) < density
    assert torch.equal(sampling.flat_nonzero(mask), torch.nonzero(mask).reshape(-1))


def test_bernoulli_positions_rate_and_gaps():
    torch.manual_seed(6)
    n, p = 2_000_000, 2.0**-8
    pos = sampling._bernoulli_positions(n, p, None, "cpu")
    assert torch.all(pos[1:] > pos[:-1]) and pos.min() >= 0 and pos.max() < n
    assert abs(pos.numel() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    gaps = torch.diff(pos).double()
    assert abs(gaps.mean().item() - 1 / p) <= 5 * math.sqrt((1 - p) / p**2 / gaps.numel())


@pytest.mark.parametrize("name,kw", LAWS, ids=[n for n, _ in LAWS])
def test_quantile_from_the_tail_is_the_inverse_cdf(name, kw):
    """``abs_z_from_q(1 - U)`` inverts the CDF of |z|: F(Q(U)) = U, down to
    U = 1 - 2**-40 in closed form, to 1 - 2**-30 from a table (tables end at
    2**-32 and interpolate float32 quantiles linearly)."""
    est = localzo.make(name, **kw)
    tabulated = est.spec.kind == 3
    q = torch.tensor([1.0, 0.5, 0.1, 2.0**-8, 2.0**-20, 2.0**(-30 if tabulated else -40)],
                     dtype=torch.float64)
    z = sampling.abs_z_from_q(est.spec, est.spec.table("cpu"), q)
    F = est.dist.abs_cdf(z)
    torch.testing.assert_close(1 - F, q, rtol=2e-3 if tabulated else 1e-9, atol=1e-12)


def test_native_draw_is_dense_only_with_many_entries_near_threshold(monkeypatch):
    """The planner's rule: a dense draw above NATIVE_DENSE_NEAR of the entries
    near threshold (|u| < delta z_hi), the tail split below."""
    calls = []
    monkeypatch.setattr(sampling, "draw_abs_z", lambda *a, **k: calls.append(1) or torch.ones(1, 1000))
    spec = localzo.make(delta=0.1).spec
    far = torch.full((1000,), 5.0)
    sampling.sparse_estimate_abs(far, spec, spec.table("cpu"))
    assert not calls
    near = far.clone()
    near[:200] = 0.01  # 20% near
    sampling.sparse_estimate_abs(near, spec, spec.table("cpu"))
    assert calls == [1]
    assert planner.native_draws_densely(151, 1000) and not planner.native_draws_densely(150, 1000)
