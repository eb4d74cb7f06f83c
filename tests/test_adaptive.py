"""The adaptive step of ``make()`` (snntorch_localzo/adaptive.py): the rule
does what its docstring says, the estimate averages to the law's surrogate of
width delta_t, every path computes the same gradient, and a fixed ``delta``
is today's estimator."""

import math
import pickle

import pytest
import snntorch as snn
import torch
import torch.nn as nn

import snntorch_localzo as localzo
from snntorch_localzo._backend import Path
from snntorch_localzo._ops import planner, sampling
from snntorch_localzo._ops.leaky import autograd as leaky_glue
from snntorch_localzo._ops.leaky.reference import LeakyParams
from snntorch_localzo._ops.spec import spec_of
from snntorch_localzo._ops.spike import spike
from snntorch_localzo.adaptive import AdaptiveDelta
from snntorch_localzo.distributions import Normal, get_distribution
from conftest import DEVICE, needs_kernels, over_simd_settings


def abs_quantile(law, q):
    """``F^{-1}(q)`` of ``|z|`` for the unit-variance law named ``law``."""
    return get_distribution(law, delta=1.0).abs_quantile(q)


def active_prob(law, x, samples):
    """``1 - F(x)^m`` in ``x``'s dtype."""
    return get_distribution(law, delta=1.0).active_prob(x, samples).to(x.dtype)

#: The rule without its floors: steps 1, 2 and 5 only.
PLAIN = AdaptiveDelta(channel=0.0, entry=0.0)
#: The rule with its channel floor only.
CHANNEL = AdaptiveDelta(entry=0.0)


def kth(u, fraction):
    """The round(fraction * n)-th smallest |u| of each row, by sorting."""
    a = u.reshape(u.shape[0], -1).abs().sort(1).values
    return a[:, max(round(fraction * a.shape[1]), 1) - 1]


@pytest.mark.parametrize("law,samples", [("normal", 1), ("uniform", 1), ("laplace", 1), ("normal", 3)])
def test_band_holds_each_samples_nearest_entries(law, samples):
    """Steps 1-2: a firing sample's step puts its ``active`` share (1%) of
    nearest entries in the band, the 3rd of 300 active with probability one
    half; a silent sample's its 30%; one that fires at half the rate halfway
    between, in log; inputs with channels take ``conv_active`` (5%)."""
    torch.manual_seed(0)
    rho = PLAIN.active
    u = -0.5 + 0.3 * torch.randn(12, 300)
    u[:4, :30] = 0.1 + torch.rand(4, 30)  # fires at 10%
    u[4:8] = -1.0 + 0.1 * torch.randn(4, 300)  # silent
    u[8:] = -1.0 + 0.1 * torch.randn(4, 300)
    u[8:, 0] = 0.5  # fires at 1/300 = a third of the rate 1%
    d = PLAIN.delta(u, law, samples)
    assert d.shape == (12, 1)
    x_med = abs_quantile(law, 0.5 ** (1 / samples))
    assert torch.allclose(d[:4, 0], kth(u[:4], rho) / x_med, rtol=1e-6)
    assert torch.allclose(d[4:8, 0], kth(u[4:8], 0.3) / x_med, rtol=1e-6)
    w = 1 - (1 / 300) / 0.01
    mid = torch.exp((1 - w) * kth(u[8:], rho).log() + w * kth(u[8:], 0.3).log()) / x_med
    assert torch.allclose(d[8:, 0], mid, rtol=1e-5)
    # the band's entry at the median of max |z|: active with probability one half
    third = kth(u[:4], rho).view(4, 1)
    assert torch.allclose(active_prob(law, third / d[:4], samples), torch.full((4, 1), 0.5), atol=1e-5)
    # the same entries as 3 channels of 10 x 10: the convolutional share
    dc = PLAIN.delta(u[:4].reshape(4, 3, 10, 10), law, samples)
    assert dc.shape == (4, 1, 1, 1) and PLAIN.conv_active == 0.045
    assert torch.allclose(dc.view(4), kth(u[:4], PLAIN.conv_active) / x_med, rtol=1e-6)


def test_step_is_clamped_to_floor_and_ceil():
    assert torch.allclose(PLAIN.delta(torch.zeros(4, 10), "normal", 1), torch.full((4, 1), 1e-3))
    assert torch.allclose(PLAIN.delta(torch.full((4, 10), -1e6), "normal", 1), torch.full((4, 1), 10.0))
    # a NaN membrane counts as far away: it does not poison its sample's step
    u = -0.3 + 0.1 * torch.randn(16, 6, 5, 5)
    clean = AdaptiveDelta().delta(u, "normal", 1)
    u[0, 0, 0, 0] = float("nan")
    d = AdaptiveDelta().delta(u, "normal", 1)
    assert torch.isfinite(d).all() and torch.equal(d[1:], clean[1:])
    assert (d[0] >= clean[0].amin() * 0.9).all()


def test_channel_floor_keeps_every_channel_of_every_sample_reachable():
    torch.manual_seed(0)
    u = -0.2 + 0.05 * torch.randn(8, 6, 5, 5)
    u[:, :2] -= 2.0  # channels far from threshold in every sample
    d = CHANNEL.delta(u, "normal", 1)
    assert d.shape == (8, 6, 1, 1)
    near = u.abs().flatten(2).amin(2).view(8, 6, 1, 1)
    assert (active_prob("normal", near / d, 1) >= 0.1 - 1e-5).all()
    plain = PLAIN.delta(u, "normal", 1)  # [8, 1, 1, 1]: the floor only widens where needed
    assert torch.equal(d[:, 2:], plain.expand(8, 4, 1, 1)) and (d[:, :2] > plain).all()
    # with m directions the floor holds for the largest of them
    d3 = CHANNEL.delta(u, "normal", 3)
    assert (active_prob("normal", near / d3, 3) >= 0.1 - 1e-5).all()
    # no channels, no channel floor: a fully connected layer's step is one per sample
    assert CHANNEL.delta(u.flatten(1), "normal", 1).shape == (8, 1)


@pytest.mark.parametrize("n", [10, 300])
def test_entry_floor_keeps_every_neuron_reachable(n):
    """Every entry of a sample is active with probability min(0.1, 1/n) or
    more: every output neuron at 10%, about one extra entry per sample in a
    large layer; the floor only widens the step."""
    torch.manual_seed(0)
    u = -0.3 + 0.1 * torch.randn(16, n)
    u[:, :3] = -4.0 - torch.rand(16, 3)  # neurons far from threshold in every sample
    d = AdaptiveDelta().delta(u, "normal", 1)
    assert d.shape == (16, n)
    p = active_prob("normal", u.abs() / d, 1)
    assert (p >= min(0.1, 1 / n) - 1e-5).all()
    plain = PLAIN.delta(u, "normal", 1)
    assert (d >= plain).all() and torch.equal(d, torch.maximum(plain, d))
    far = AdaptiveDelta().expected_active_fraction(u[:, :3], d[:, :3], "normal", 1).item()
    assert far == pytest.approx(min(0.1, 1 / n), rel=1e-3)


def test_steps_mode_equals_separate_calls():
    torch.manual_seed(0)
    U = torch.randn(4, 16, 3, 5, 5) * 0.3 - 0.4
    D = AdaptiveDelta().delta(U, "normal", 1, steps=4)
    assert D.shape == (4, 16, 3, 5, 5)
    assert CHANNEL.delta(U, "normal", 1, steps=4).shape == (4, 16, 3, 1, 1)
    for t in range(4):
        assert torch.equal(D[t], AdaptiveDelta().delta(U[t], "normal", 1))
    V = torch.randn(4, 30)  # steps of one sample
    DV = AdaptiveDelta().delta(V, "normal", 1, steps=4)
    assert DV.shape == (4, 30)
    for t in range(4):
        assert torch.equal(DV[t], AdaptiveDelta().delta(V[t], "normal", 1))


@pytest.mark.parametrize("dist", ["normal", "uniform", "laplace"])
def test_estimate_averages_to_the_height_one_surrogate_of_width_delta_t(dist):
    """Monte Carlo mean of make(dist).estimate at fixed u against the closed
    form g_1(u / delta_t) / g_1(0), exp(-u^2 / 2 delta_t^2) for the normal law
    (5 standard errors + 1e-3 for entries rarely active)."""
    torch.manual_seed(0)
    sg = localzo.make(dist)
    u = torch.tensor([[-0.3, -0.05, 0.0, 0.1, -1.0, 0.6], [-0.2, 0.02, -0.6, 0.3, -0.9, 0.05]])
    n = 4000
    draws = torch.stack([sg.estimate(u) for _ in range(n)]).double()
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    d = sg.step(u).double()
    g1 = sg.dist.expected_grad
    expected = g1(u.double() / d) / g1(torch.zeros((), dtype=torch.float64))
    if dist == "normal":
        assert torch.allclose(expected, torch.exp(-0.5 * (u.double() / d) ** 2))
    assert torch.allclose(sg.expected_grad(u), expected)
    assert ((mean - expected).abs() < 5 * se + 1e-3).all()
    # and the non-zero frequency is active_prob at delta_t
    freq = (draws != 0).double().mean(0)
    assert ((freq - sg.active_prob(u)).abs() < 0.03).all()


@pytest.mark.parametrize("law,coef,draw", [
    ("normal", math.sqrt(2 * math.pi) / 2, lambda shape: torch.randn(shape).abs()),
    ("uniform", 2 / math.sqrt(3), lambda shape: math.sqrt(3) * torch.rand(shape)),
])
def test_estimate_by_hand_at_delta_t(law, coef, draw):
    """Given |z|, the adaptive estimate is coef |z| 1[|u| < delta_t |z|] with
    the law's height-one coefficient 1 / (2 g_1(0)): sqrt(2 pi) / 2 for the
    normal law, 2 / sqrt(3) for the uniform law (g_1(0) = sqrt(3) / 4)."""
    torch.manual_seed(0)
    sg = localzo.make(law, samples=1, sampling="law")
    u = (0.3 * torch.randn(32, 40) - 0.4).requires_grad_()
    absz = draw((1, 32, 40))
    spike(u, sg.spec, None, absz, Path.REFERENCE).sum().backward()
    d = sg.step(u.detach())
    expected = torch.where(u.detach().abs() < d * absz[0], absz[0] * coef, torch.zeros(()))
    # the scaled comparison |u / d| < |z| may differ from |u| < d |z| by one rounding
    near_edge = ((u.detach().abs() / d) - absz[0]).abs() < 1e-5
    assert torch.allclose(u.grad[~near_edge], expected[~near_edge], rtol=1e-6, atol=0)
    assert 0 < (u.grad != 0).float().mean() < 0.5


def test_every_spike_path_gives_the_same_gradient(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    sg = localzo.make()
    u = (0.3 * torch.randn(64, 300) - 0.8).requires_grad_()
    absz = torch.randn(sg.samples, 64, 300).abs()
    paths = [Path.REFERENCE, Path.NATIVE]
    try:
        import triton  # noqa: F401

        paths.append(Path.TRITON)
    except ImportError:
        pass
    grads = []
    for p in paths:
        spike(u, sg.spec, None, absz, p).backward(torch.ones_like(u))
        grads.append(u.grad.clone())
        u.grad = None
    for g in grads[1:]:
        assert torch.equal(g, grads[0])
    assert (grads[0] != 0).any()


def test_fixed_delta_is_todays_estimator():
    sg = localzo.make(delta=0.05)
    assert not sg.adaptive and sg.delta == 0.05 and sg.rule is None
    assert sg.spec == spec_of(Normal(0.05), 1)
    torch.manual_seed(0)
    u = (0.1 * torch.randn(16, 30)).requires_grad_()
    absz = torch.randn(1, 16, 30).abs()
    spike(u, sg.spec, None, absz, Path.REFERENCE).sum().backward()
    expected = torch.where(u.detach().abs() < 0.05 * absz[0], absz[0] * (1.0 / (2 * 0.05)), torch.zeros(()))
    assert torch.equal(u.grad, expected)


def test_default_law_is_uniform_with_the_adaptive_step_and_normal_with_a_fixed_one():
    """``dist`` unset: the uniform law with the adaptive step (``make()``,
    ``LocalZO()``, an explicit rule), the normal law with a number ``delta``
    (``make(delta=x)`` is the fixed-step estimator of earlier releases)."""
    assert localzo.make().dist.name == "uniform" and localzo.make().adaptive
    assert localzo.LocalZO() == localzo.make() == localzo.make("uniform")
    assert localzo.make(delta=AdaptiveDelta(active=0.02)).dist.name == "uniform"
    fixed = localzo.make(delta=0.05)
    assert fixed.dist.name == "normal" and not fixed.adaptive and fixed == localzo.make("normal", delta=0.05)
    assert localzo.make("normal").dist.name == "normal" and localzo.make("normal").adaptive


def test_reproducible_and_picklable():
    sg = localzo.make()

    def grads():
        torch.manual_seed(3)
        u = (0.3 * torch.randn(16, 50) - 0.5).requires_grad_()
        sg(u).sum().backward()
        return u.grad

    assert torch.equal(grads(), grads())
    copy = pickle.loads(pickle.dumps(sg))
    assert copy == sg and hash(copy) == hash(sg) and copy.rule == AdaptiveDelta()
    assert repr(sg) == "LocalZO(dist='uniform', delta=AdaptiveDelta(), samples=1)"
    custom = localzo.make(delta=AdaptiveDelta(active=0.02))
    assert custom != sg and repr(custom.rule) == "AdaptiveDelta(active=0.02)"


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(active=0.0), ValueError, "`active`"),
    (dict(silent=1.0), ValueError, "`silent`"),
    (dict(channel=-0.1), ValueError, "`channel`"),
    (dict(channel="0.1"), TypeError, "`channel`"),
    (dict(entry=1.0), ValueError, "`entry`"),
    (dict(floor=1.0, ceil=0.5), ValueError, "`ceil`"),
    (dict(floor=0.0), ValueError, "`floor`"),
    (dict(conv_active=0.0), ValueError, "`conv_active`"),
    (dict(exact=-1), ValueError, "`exact`"),
    (dict(exact=2.0), TypeError, "`exact`"),
    (dict(exact=True), TypeError, "`exact`"),
])
def test_bad_rule_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdaptiveDelta(**kwargs)


def test_adaptive_step_needs_a_law_it_solves_for():
    with pytest.raises(TypeError, match="AdaptiveDelta"):
        localzo.make("atan", delta=AdaptiveDelta())
    assert not localzo.make("atan").adaptive  # twins keep the surrogate's step


def test_leaky_with_the_adaptive_step_takes_the_fused_paths(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(5, 8, 80)  # more than AdaptiveDelta.exact entries a sample: drawn
    one = torch.tensor(1.0)
    params = LeakyParams(torch.tensor(0.9), one, one, 0)
    lif = localzo.Leaky(beta=0.9)
    assert lif.spike_grad.adaptive
    assert planner.leaky_path(x, None, params, lif.spike_grad.spec, 5) is Path.NATIVE
    # and localzo.Leaky equals snn.Leaky with the same spike gradient, gradients included
    ref = snn.Leaky(beta=0.9, spike_grad=localzo.make())
    outs = []
    for layer in (lif, ref):
        torch.manual_seed(0)
        xi = x.clone().requires_grad_()
        mem = layer.init_leaky()
        spk_rec = []
        for t in range(5):
            spk, mem = layer(xi[t], mem)
            spk_rec.append(spk)
        torch.stack(spk_rec).sum().backward()
        outs.append((torch.stack(spk_rec), xi.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_tutorial_conv_net_gets_gradient_in_every_layer():
    """Issue 10's failure: snnTorch tutorial 6's net with make() had exactly zero
    gradients (delta = 0.05 never reaches the output membranes)."""
    torch.manual_seed(0)
    kw = dict(beta=0.5, spike_grad=localzo.make(), init_hidden=True)
    net = nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(**kw),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(**kw),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10), snn.Leaky(output=True, **kw),
    )
    x = torch.rand(16, 1, 28, 28)
    from snntorch import utils

    utils.reset(net)
    spk_rec = [net(x)[0] for _ in range(4)]
    nn.functional.cross_entropy(torch.stack(spk_rec).sum(0), torch.arange(16) % 10).backward()
    # (the second layer is silent at first: the linear weights see zero input spikes)
    for grad in (net[0].weight.grad, net[3].weight.grad, net[7].bias.grad):
        assert grad.abs().sum() > 0


def _fused_paths():
    try:
        import triton  # noqa: F401
    except ImportError:
        return [(Path.NATIVE, torch.float32), (Path.NATIVE, torch.float64)]
    return [(Path.NATIVE, torch.float32), (Path.NATIVE, torch.float64), (Path.TRITON, torch.float32),
            (Path.TRITON, torch.float16), (Path.TRITON, torch.bfloat16)]


@pytest.mark.parametrize("shape", [(6, 16, 72), (6, 72), (6, 4, 3, 5, 5)])
@pytest.mark.parametrize("path,dtype", _fused_paths())
def test_fused_sequence_equals_the_step_loop(shape, path, dtype, monkeypatch):
    """The Leaky sequence on the native path and in the Triton kernels (the
    adaptive step of every time step from its membranes) against the step
    loop of the spike function: same spikes, membranes and gradients, bit for
    bit, given the same |z|."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    x = (0.6 * torch.randn(shape, dtype=dtype) + 0.4).requires_grad_()
    lif = localzo.Leaky(beta=0.8)
    absz = torch.randn((lif.spike_grad.samples,) + shape, dtype=dtype).abs()
    one = torch.tensor(1.0)
    params = LeakyParams(torch.tensor(0.8), one, one, 0)
    spk, mem = leaky_glue.leaky_seq(x, None, params, lif.spike_grad.spec, path=path, absz=absz)
    (spk * torch.arange(1.0, shape[0] + 1).view((-1,) + (1,) * (len(shape) - 1))).sum().backward()
    g_native, x.grad = x.grad.clone(), None
    spk_r, mem_r = leaky_glue.leaky_seq(x, None, params, lif.spike_grad.spec, path=Path.REFERENCE,
                                        absz=absz)
    (spk_r * torch.arange(1.0, shape[0] + 1).view((-1,) + (1,) * (len(shape) - 1))).sum().backward()
    assert torch.equal(spk, spk_r) and torch.equal(mem, mem_r)
    assert torch.equal(g_native, x.grad) and (x.grad != 0).any()


def test_fused_step_reads_per_entry_steps_in_memory_order(monkeypatch):
    """One Leaky step of a conv layer on the Triton path keeps channels-last;
    the code kernel reads delta at the physical offset of each entry from the
    step tensor laid out like ``mem`` (``_step_like``): at every offset that is
    the step of the sample and channel stored there."""
    triton_kernels = pytest.importorskip("snntorch_localzo._ops.leaky.triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    x = (0.8 * torch.randn(4, 3, 5, 6) + 0.3).contiguous(memory_format=torch.channels_last)
    one = torch.tensor(1.0)
    params = LeakyParams(torch.tensor(0.9), one, one, 0)
    spec = localzo.make().spec
    spk, mem = leaky_glue.leaky_step(x.requires_grad_(), None, params, spec, path=Path.TRITON)
    assert spk.is_contiguous(memory_format=torch.channels_last)
    spk.sum().backward()
    physical = (0, 2, 3, 1)  # memory order of a channels-last tensor
    step = triton_kernels._step_like(spec, mem.detach(), one, 0)
    assert step.stride() == mem.stride()
    read = step.permute(physical).reshape(-1)
    wanted = spec.divisor(mem.detach() - 1.0).expand_as(mem).permute(physical).reshape(-1)
    assert torch.equal(read, wanted) and wanted.unique().numel() > 4


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_step_equals_the_reference(layout, monkeypatch):
    """One Leaky step of a conv layer on the Triton path against the reference,
    given the same |z| (a given |z| makes the layout contiguous)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    x = 0.8 * torch.randn(4, 3, 5, 6) + 0.3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    one = torch.tensor(1.0)
    params = LeakyParams(torch.tensor(0.9), one, one, 0)
    spec = localzo.make(sampling="law").spec  # (the kernel's draw in forward: the law's)
    absz = torch.randn(spec.samples, 4, 3, 5, 6).abs()
    mem0 = torch.full_like(x, 0.2)
    grads = []
    for path in (Path.TRITON, Path.REFERENCE):
        spk, mem = leaky_glue.leaky_step(x, mem0, params, spec, path=path, absz=absz)
        (spk * torch.arange(1.0, 7.0)).sum().backward()
        grads.append((spk.detach().contiguous(), mem.detach().contiguous(), x.grad.clone()))
        x.grad = None
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    assert (grads[0][2] != 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_draw_sees_the_c_loops_magnitudes(dtype):
    """With drawn |z| the native sequence path gives the draw what its rule
    needs. float32: the fused C pass (the rule and the draw) gets the
    membrane and the threshold, so that the rule counts the entries above
    threshold. float64 (the
    PyTorch draw): the C loop's |u| and, beside it, the signed u for the
    rule; the draw must still see |u| / delta_t (not u / delta_t), so it
    selects as few candidates as the reference path makes active. Either
    way both paths have the same active fraction."""
    from snntorch_localzo._ops.spike import native as spike_native

    one = torch.tensor(1.0, dtype=dtype)
    params = LeakyParams(torch.tensor(0.9, dtype=dtype), one, one, 0)
    sg = localzo.make(track=True)
    torch.manual_seed(0)
    x = (0.5 * torch.randn(20, 64, 300, dtype=dtype) + 0.2).requires_grad_()
    seen = []
    fused = dtype == torch.float32
    name, real = ("draw", spike_native.draw) if fused else ("sparse_estimate_abs", sampling.sparse_estimate_abs)
    target = ("snntorch_localzo._ops.spike.native.draw" if fused
              else "snntorch_localzo._ops.leaky.native.sparse_estimate_abs")

    def spy(u, *args, **kwargs):
        # float32: the membrane itself and the threshold (the pass subtracts it)
        seen.append(bool((u > 1).any() and args[0] == 1.0) if fused else bool((u >= 0).all()))
        return real(u, *args, **kwargs)

    fractions = []
    for path in (Path.NATIVE, Path.REFERENCE):
        sg.reset_stats()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(target, spy)
            spk, _ = leaky_glue.leaky_seq(x, None, params, sg.spec, sg.meter, path=path)
        spk.sum().backward()
        fractions.append(sg.active_fraction)
        x.grad = None
    assert seen == [True], name  # the native path drew once, from what its rule needs
    assert fractions[0] == pytest.approx(fractions[1], rel=0.05)


@pytest.mark.version_free
@pytest.mark.parametrize("n", [1, 2, 7, 64, 70, 256, 3001])
def test_order_statistics_equal_kthvalue(n):
    """The C selection of the adaptive step returns torch.kthvalue's values,
    ties, infinities (NaN membranes) and either order of the two ranks
    included, with its vector lanes and without (the smallest ranks, 1 to
    4, from 64 values on: the lanes' min/max network, a last block of any
    width)."""
    from snntorch_localzo._ops import order
    from snntorch_localzo._ops import clib

    module = clib.c_module()
    if module is None:
        pytest.skip("the C loops are not built here")
    torch.manual_seed(n)
    rows = torch.randn(10, n).abs()
    rows[1] = rows[1].round()  # ties
    rows[2, : n // 2] = math.inf
    rows[3] = 0.0
    rows[4] = (rows[4] * 8).round() / 8 + 1.0  # a few distinct values, close together
    rows[5] += 1.0  # its smallest values in one lane of either unit, taken off it one after another
    rows[5, ::16] = torch.arange(rows[5, ::16].numel(), dtype=torch.float32) / 8
    for _ in over_simd_settings():
        for k1, k2 in ((1, n), (n, 1), (max(n // 20, 1), max(3 * n // 10, 1)), ((n + 1) // 2,) * 2,
                       (min(2, n), min(3, n)), (min(4, n), min(5, n))):
            got = order.kth_smallest2(rows, k1, k2)
            assert torch.equal(got[0], rows.kthvalue(k1, 1).values)
            assert torch.equal(got[1], rows.kthvalue(k2, 1).values)


@pytest.mark.parametrize("shape", [(16, 6, 5, 5), (32, 300), (8, 10), (300,), (5, 4, 3, 7)])
@pytest.mark.parametrize("rule", [AdaptiveDelta(), PLAIN, CHANNEL, AdaptiveDelta(channel=0.0)])
def test_adaptive_step_is_the_same_with_and_without_the_c_passes(shape, rule, monkeypatch):
    """The C passes (order statistics, firing counts, floors) give the bits
    of their PyTorch forms: NaN membranes, silent samples and steps mode included."""
    from snntorch_localzo._ops import clib

    if clib.c_module() is None:
        pytest.skip("the C loops are not built here")
    torch.manual_seed(0)
    u = -0.4 + 0.3 * torch.randn(shape)
    u.view(-1)[::37] = float("nan")
    if len(shape) > 1:
        u[1] = -2.0 + 0.01 * torch.randn(shape[1:])  # silent
        u[2] = -1.0 + 0.2 * torch.randn(shape[1:])
        u[2].view(-1)[-1] = 0.5  # one entry fires: silent in part where 1 / n < rate
    with_c = [rule.delta(u, law, m) for law, m in (("normal", 1), ("laplace", 3))]
    steps_c = rule.delta(u, "normal", 1, steps=shape[0]) if len(shape) > 2 else None
    monkeypatch.setattr(clib, "ENABLED", False)
    without = [rule.delta(u, law, m) for law, m in (("normal", 1), ("laplace", 3))]
    for a, b in zip(with_c, without):
        assert a.shape == b.shape and torch.equal(a, b)
    if steps_c is not None:
        assert torch.equal(rule.delta(u, "normal", 1, steps=shape[0]), steps_c)


@needs_kernels
@pytest.mark.interpreter
@pytest.mark.parametrize("shape", [(6, 300), (4, 3, 5, 5), (3, 2000), (5, 7)])
@pytest.mark.parametrize("rule", [AdaptiveDelta(), AdaptiveDelta(channel=0.0), AdaptiveDelta(silent=0.01)])
def test_the_rule_kernel_gives_the_bits_of_the_other_forms(shape, rule, monkeypatch):
    """On the Triton path the adaptive step is one kernel (``_ops/rule_triton.py``):
    the same steps as the C pass and the PyTorch form, for firing, silent and
    partly silent samples (the log-linear blend), NaN membranes, channels and
    a rank above or below the silent band's."""
    torch.manual_seed(1)
    u = -0.4 + 0.3 * torch.randn(shape, device=DEVICE)
    u.view(-1)[::29] = float("nan")
    u[1] = -2.0 + 0.01 * torch.randn(shape[1:], device=DEVICE)  # silent
    u[2] = -1.0 + 0.2 * torch.randn(shape[1:], device=DEVICE)
    u[2].view(-1)[-1] = 0.5  # one entry fires: silent in part where 1 / n < rate
    with localzo.use_backend("triton"):
        kernel = rule.delta(u, "normal", 1)
    from snntorch_localzo._ops import clib

    monkeypatch.setattr(clib, "ENABLED", False)
    with localzo.use_backend("reference"):
        torch_form = rule.delta(u, "normal", 1)
    assert kernel.shape == torch_form.shape and torch.equal(kernel, torch_form)
