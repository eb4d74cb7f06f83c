"""``make(sampling="gradient")``: the active entries drawn by the incoming
gradient (``_ops/weighted.py``, docs/method.md section 8). Same expected
gradient and expected count per sample as the law's draw, per sample, and on
the reference path everywhere."""

import math
import pickle
import warnings

import pytest
import snntorch as snn
import torch
from snntorch import utils as snn_utils

import snntorch_localzo as localzo
from conftest import MODES, made_by, needs_kernels, over_simd_settings
from snntorch_localzo._ops import weighted
from snntorch_localzo._ops import layout
from snntorch_localzo._ops.clib import c_module
from snntorch_localzo._ops.planner import Path, leaky_path, leaky_step_is_reference, spike_path, spike_plan
from snntorch_localzo._ops.spike import native, reference
from snntorch_localzo._ops.sampling import expected_estimate
from snntorch_localzo._ops.leaky.reference import LeakyParams, RESET_SUBTRACT
from snntorch_localzo._ops.weighted import inclusion_probability, weighted_probability


def _membranes(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = -0.4 + 0.4 * torch.randn(shape, generator=g)
    u[: shape[0] // 2] -= 0.6  # batch-mates that differ
    return u


def _grad(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(shape, generator=g)
    go[..., ::3] = 0.0  # entries no gradient reaches
    return go


@pytest.mark.parametrize("budget", [0.0, 3.0, 17.5, 40.0, 200.0])
def test_inclusion_probability_sums_to_the_budget_proportional_to_w_below_one(budget):
    g = torch.Generator().manual_seed(0)
    w = torch.rand(4, 60, generator=g, dtype=torch.float64) ** 6  # heavy spread: some capped
    w[:, ::4] = 0.0
    K = torch.full((4,), budget, dtype=torch.float64)
    q = inclusion_probability(w, K)
    positive = (w > 0).sum(1).to(torch.float64)
    assert torch.allclose(q.sum(1), torch.minimum(K, positive), rtol=1e-12, atol=1e-12)
    assert bool(((q >= 0) & (q <= 1)).all()) and bool((q[w == 0] == 0).all())
    for r in range(4):
        free = (q[r] < 1) & (w[r] > 0)
        if free.any():
            ratio = q[r][free] / w[r][free]
            assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-12)
            capped = q[r] == 1
            if capped.any():  # the capped entries are the largest w
                assert w[r][capped].min() >= w[r][free].max()


def _capping_by_rounds(w, budget):
    """The definition, by rounds (as the C pass computes it): cap every entry
    with ``c w >= 1``, recompute ``c`` from the others, until none is new."""
    capped = torch.zeros_like(w, dtype=torch.bool)
    while True:
        free = torch.where(capped, 0.0, w).sum(1)
        left = (budget - capped.sum(1)).clamp(min=0)
        c = torch.where(free > 0, left / free.clamp(min=1e-300), 0.0)
        now = capped | ((w > 0) & (c[:, None] * w >= 1))
        if torch.equal(now, capped):
            return torch.where(capped, 1.0, (c[:, None] * w).clamp(max=1.0))
        capped = now


def test_inclusion_probability_equals_capping_by_rounds():
    """The sort-and-prefix-sum form against the rounds, on 1500 random rows:
    heavy tails, ties, zeros, tiny scales, budgets below and above the
    number of non-zero weights."""
    g = torch.Generator().manual_seed(0)
    for trial in range(1500):
        rows, n = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 120, (1,), generator=g))
        w = torch.rand(rows, n, generator=g, dtype=torch.float64) ** float(torch.randint(1, 12, (1,), generator=g))
        if trial % 4 == 1:
            w = torch.round(w * 4) / 4
        elif trial % 4 == 2:
            w[:, ::2] = 0.0
        elif trial % 4 == 3:
            w = w * 1e-30
        budget = torch.rand(rows, generator=g, dtype=torch.float64) * n * 1.2
        assert torch.allclose(inclusion_probability(w, budget), _capping_by_rounds(w, budget),
                              rtol=1e-12, atol=1e-12), trial


@pytest.mark.parametrize("make_kwargs,shape", [
    ({}, (4, 96)),                                   # adaptive step, uniform law
    ({"dist": "normal"}, (3, 4, 5, 5)),              # adaptive step, normal law, channels
    ({"delta": 0.4}, (4, 80)),                       # a fixed step (normal law)
    ({"delta": 0.3, "samples": 2}, (3, 70)),
])
def test_monte_carlo_mean_is_the_expected_gradient_and_count_the_budget(make_kwargs, shape):
    """Through the spike function's backward: the mean of ``go * G`` over
    N draws against ``go * expected_grad`` (each entry with ``N q >= 10``
    within 5.5 standard errors of its own closed-form spread,
    ``|go g| sqrt((1/q - 1) / N)``; the rarer entries' hits, pooled, within
    5.5 Poisson standard errors of ``N sum q``), and each sample's mean
    count of active entries against the law's expected count
    ``sum_j p_j`` (5.5 standard errors, less the entries no gradient
    reaches)."""
    torch.manual_seed(0)
    sg = localzo.make(sampling="gradient", **make_kwargs)
    law = localzo.make(**make_kwargs)
    u = _membranes(shape)
    go = _grad(shape)
    N = 3000
    total = torch.zeros(shape, dtype=torch.float64)
    hits = torch.zeros(shape, dtype=torch.float64)
    x = u.clone().requires_grad_()
    for _ in range(N):
        x.grad = None
        (sg(x) * go).sum().backward()
        total += x.grad.double()
        hits += (x.grad != 0).double()
    count = hits.flatten(1).sum(1)
    target = go.double() * sg.expected_grad(u).double()
    q = sg.active_prob(u, go)
    common = N * q >= 10
    se = target.abs() * torch.sqrt((1.0 / q.clamp(min=1e-300) - 1.0).clamp(min=0) / N)
    err = (total / N - target).abs()
    assert int(common.sum()) > 20
    assert bool((err <= 5.5 * se + 1e-5)[common].all()), float((err / (se + 1e-12))[common].max())
    rare = (q > 0) & ~common
    expected_rare = N * float(q[rare].sum())
    assert abs(float(hits[rare].sum()) - expected_rare) <= 5.5 * math.sqrt(expected_rare) + 3
    assert float(hits[q == 0].sum()) == 0
    budget = law.active_prob(u).flatten(1).sum(1)
    assert torch.allclose(q.flatten(1).sum(1), torch.minimum(budget, (q > 0).flatten(1).sum(1).double()))
    spread = (q * (1 - q)).flatten(1).sum(1).sqrt()
    assert bool(((count / N - q.flatten(1).sum(1)).abs() <= 5.5 * spread / math.sqrt(N) + 1e-9).all())


def test_inclusion_is_per_sample_and_does_not_change_with_the_gradient_scale():
    sg = localzo.make(sampling="gradient")
    u, go = _membranes((16, 6, 4, 4)), _grad((16, 6, 4, 4))
    q = sg.active_prob(u, go)
    for rows in (slice(0, 1), slice(3, 9), slice(15, 16)):
        assert torch.equal(sg.active_prob(u[rows], go[rows]), q[rows])
    assert torch.equal(sg.active_prob(u, go * 0.25), q)  # (a power of two: the same bits)
    assert not torch.equal(q, localzo.make().active_prob(u))  # it is not the law's


def test_chunks_with_the_same_draws_give_the_full_batch_gradient(monkeypatch):
    """Gradient accumulation over batch chunks (loss: the sum over the chunk
    divided by the full batch size) equals the full batch's gradient when
    every sample gets the same uniforms (the reference's, replayed; the C
    pass gives the reference's values given the same uniforms, tested
    below)."""
    calls, state = [], {"rows": None, "i": 0}
    real = weighted.uniforms

    def replay(shape, device, dtype, generator):
        if state["rows"] is None:
            calls.append(real(shape, device, dtype, generator))
            return calls[-1]
        r = calls[state["i"]][state["rows"]]
        state["i"] += 1
        return r

    monkeypatch.setattr(weighted, "uniforms", replay)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 96), snn.Leaky(beta=0.8, init_hidden=True,
                              spike_grad=localzo.make(sampling="gradient")))
    x = torch.rand(5, 8, 20) * 1.5

    def loss_of(xb):
        snn_utils.reset(net)
        return sum(net(xb[t]).sum() for t in range(xb.shape[0])) / x.shape[1]

    with localzo.use_backend("reference"):
        loss_of(x).backward()
        full = [p.grad.clone() for p in net.parameters()]
        assert full[0].abs().sum() > 0
        net.zero_grad()
        for chunk in (slice(0, 2), slice(2, 3), slice(3, 8)):
            state["rows"], state["i"] = chunk, 0
            # the chunk's calls in backward come in the full batch's order, step by step
            loss_of(x[:, chunk]).backward()
    for a, b in zip(full, (p.grad for p in net.parameters())):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _train_grads(leaky, seed):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(12, 80)
    neuron = leaky(beta=0.9, spike_grad=localzo.make(sampling="gradient"), init_hidden=False)
    x = torch.rand(6, 16, 12) * 2
    mem = neuron.init_leaky()
    out = 0
    for t in range(6):
        spk, mem = neuron(lin(x[t]), mem)
        out = out + spk.sum() + 0.1 * (spk * torch.arange(80.0)).sum()
    out.backward()
    return [p.grad.clone() for p in lin.parameters()]


def test_same_seed_same_gradients_and_the_drop_in_equals_snn_leaky():
    a, b = _train_grads(snn.Leaky, 3), _train_grads(snn.Leaky, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = _train_grads(localzo.Leaky, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], _train_grads(snn.Leaky, 4)[0])


@pytest.mark.parametrize("mode", MODES)
def test_the_planner_sends_weighted_draws_to_the_c_pass_the_kernel_or_the_reference(mode):
    spec = localzo.make(sampling="gradient").spec
    c_pass = mode == "auto" and c_module() is not None
    expected = (Path.NATIVE, True) if c_pass else (Path.TRITON, False) if mode == "triton" else (Path.REFERENCE, False)
    with localzo.use_backend(mode):
        assert spike_plan(torch.zeros(64, 128), spec) == expected
        for other in (localzo.make("normal", sampling="gradient").spec,  # (the C pass: uniform law only)
                      localzo.make(delta=0.3, sampling="gradient").spec,
                      localzo.make(samples=2, sampling="gradient").spec):
            assert spike_plan(torch.zeros(64, 128), other) == (Path.REFERENCE, False)
        assert spike_plan(torch.zeros(64, 128, dtype=torch.float64), spec) == (Path.REFERENCE, False)
        assert spike_path(torch.zeros(64, 10), spec) is Path.EXACT  # (no draw: unchanged)
        assert leaky_step_is_reference(torch.zeros(64, 128), spec)
        one = torch.ones(())
        params = LeakyParams(one * 0.9, one, one, RESET_SUBTRACT)
        # a sequence: the native path where the C pass covers it (drawn in backward), else the reference
        seq = torch.zeros(8, 64, 128)
        assert leaky_path(seq, None, params, spec, 8) is (Path.NATIVE if c_pass else Path.REFERENCE)
        assert leaky_path(seq[0], None, params, spec, 0) is Path.REFERENCE  # (a step: its spike function's)
        assert leaky_path(seq.double(), None, params, spec, 8) is Path.REFERENCE
        assert leaky_path(seq, None, params, localzo.make("normal", sampling="gradient").spec, 8) is Path.REFERENCE


def test_a_sequence_layer_trains_with_it():
    torch.manual_seed(0)
    layer = localzo.LinearLeaky(beta=0.9, in_features=10, out_features=100,
                                spike_grad=localzo.make(sampling="gradient", track=True))
    x = torch.rand(7, 5, 10) * 3
    spk, _ = layer(x)
    (spk * torch.randn_like(spk)).sum().backward()
    assert torch.isfinite(layer.linear.weight.grad).all() and layer.linear.weight.grad.abs().sum() > 0
    assert 0 < layer.spike_grad.active_fraction < 0.5


def test_a_non_finite_incoming_gradient_stays_non_finite_only_where_it_is():
    sg = localzo.make(sampling="gradient")
    u = _membranes((4, 64)).requires_grad_()
    go = _grad((4, 64))
    go[1, 5] = float("inf")
    go[2, 7] = float("nan")
    torch.manual_seed(0)
    (sg(u) * go).sum().backward()
    bad = ~torch.isfinite(u.grad)
    assert bad[1, 5] and bad[2, 7] and int(bad.sum()) == 2


def test_estimate_outside_autograd_weights_by_the_surrogate():
    """``estimate()`` (OPZO's local factor) takes an incoming gradient of
    ones: its mean is the expected gradient."""
    torch.manual_seed(0)
    sg = localzo.make(sampling="gradient")
    u = _membranes((3, 50))
    mean = sum(sg.estimate(u).double() for _ in range(2000)) / 2000
    target = sg.expected_grad(u).double()
    q = sg.active_prob(u)
    se = target * torch.sqrt((1 / q.clamp(min=1e-300) - 1).clamp(min=0) / 2000)
    assert bool(((mean - target).abs() <= 5.5 * se + 1e-6).all())


def test_sampling_is_checked_compared_and_pickled():
    with pytest.raises(ValueError, match="`sampling`"):
        localzo.make(sampling="dense")
    a = localzo.make(sampling="gradient")
    assert a != localzo.make() and a == localzo.make(sampling="gradient")
    assert hash(a) == hash(localzo.make(sampling="gradient"))
    assert "sampling='gradient'" in repr(a)
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b.spec.weighted and not localzo.make().spec.weighted
    # make()'s default: "auto", resolved call by call (the spike function's float32 calls)
    d = localzo.make()
    assert d.sampling == "auto" and d == localzo.make(sampling="auto") and "sampling" not in repr(d)
    assert d.spec.auto and pickle.loads(pickle.dumps(d)).spec.auto
    assert d.spec.resolved(torch.float32).weighted and not d.spec.resolved(torch.float64).weighted
    assert not d.spec.resolved(torch.float32, call=False).weighted
    # other estimates: "auto" is the law's
    for other in (localzo.make("normal"), localzo.make(delta=0.05), localzo.make("atan"), localzo.make(samples=2)):
        assert not other.spec.auto and not other.spec.resolved(torch.float32).weighted
    state = localzo.make().__getstate__()
    del state["sampling"]  # a pickle from before the option: the law's, as it was
    c = localzo.LocalZO.__new__(localzo.LocalZO)
    c.__setstate__(state)
    assert c == localzo.make(sampling="law") and not c.spec.auto


def test_the_spec_travels_through_the_operators_flat_arguments():
    spec = localzo.make(sampling="gradient").spec
    flat = spec.op_kwargs()
    back = type(spec).unflat(flat["spec_ints"], flat["spec_floats"])
    assert back.weighted and back == spec
    flat = localzo.make().spec.op_kwargs()
    assert not type(spec).unflat(flat["spec_ints"], flat["spec_floats"]).weighted


def test_weighted_probability_is_the_estimators():
    sg = localzo.make(sampling="gradient")
    u, go = _membranes((5, 96)), _grad((5, 96))
    assert torch.equal(sg.active_prob(u, go), weighted_probability(sg.spec.scale(u), go, sg.spec))
    small = _membranes((5, 40))  # (an output layer: the expected value, no draw)
    assert torch.equal(sg.active_prob(small, go[:, :40]), localzo.make().active_prob(small))


def _c_rows(shape, seed):
    g = torch.Generator().manual_seed(seed)
    u = -0.6 + 0.5 * torch.randn(shape, generator=g)
    go = torch.randn(shape, generator=g)
    go[..., ::3] = 0.0
    return u, go, torch.rand(shape, generator=g)


def _capping_rounds(w: torch.Tensor, budget: float) -> int:
    """How many rounds repeated capping from none takes on one row's weights
    ``w`` (``inclusion_probability``'s ``c``): each round caps the entries with
    ``c w >= 1``, the last one caps nothing new."""
    if not float(w.sum()) > 0:
        return 0
    capped = torch.zeros_like(w, dtype=torch.bool)
    c, rounds = budget / float(w.sum()), 0
    while True:
        rounds += 1
        now = capped | ((w > 0) & (c * w >= 1))
        if torch.equal(now, capped):
            return rounds
        capped = now
        rest = float(w[~capped].sum())
        c = max(budget - int(capped.sum()), 0.0) / rest if rest > 0 else 0.0


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
@pytest.mark.parametrize("shape", [(64, 128), (8, 6, 5, 5), (3, 1000), (2, 3, 4, 4, 2)])
def test_the_c_pass_gives_the_references_values_given_the_same_uniforms(shape):
    """``native.weighted_backward`` against the reference backward on
    ``spec.scale(u)`` with the same uniforms: the same values (its sums run
    in another order, which moves ``c`` by an ulp at most: the float32
    products agree to 1e-6), the same active entries and the same count,
    with special rows: a NaN membrane, infinite and NaN incoming gradients,
    a row no gradient reaches, a row where the budget covers every
    entry that has one, and a row whose capping reaches far below the
    first ``c``'s reach (one weight holds most of the sum)."""
    spec = localzo.make(sampling="gradient").spec
    u, go, unif = _c_rows(shape, 0)
    flat_u, flat_go = u.view(shape[0], -1), go.view(shape[0], -1)
    flat_u[0, 3] = float("nan")
    flat_go[1, 4], flat_go[1, 5] = float("inf"), float("nan")
    if shape[0] > 2:
        flat_go[2] = 0.0
    if shape[0] > 3:
        flat_go[3] = 0.0
        flat_go[3, :2] = 1.0  # two entries with a gradient, a budget above 2
    if shape[0] > 4:  # a silent sample: its wide band expects many active entries
        flat_u[4] = -1.0 + 0.2 * torch.randn(flat_u.shape[1], generator=torch.Generator().manual_seed(3)).clamp(-4, 4)
        # the C pass draws a row that expects few active entries (its budget at most n / 16) in two
        # passes, a row that expects more in one: both kinds are here
        budget = spec.law.active_prob(spec.scale(u), 1).view(shape[0], -1).sum(1)
        n = flat_u.shape[1]
        assert bool((budget[4] > n / 16) & (budget[5:] <= n / 16).any())
    if shape[0] > 5:  # one weight holds most of the row's sum: capping it multiplies c, so entries
        # far below the first c's reach cap too (the C pass's candidates do not hold them)
        flat_go[5, 0] = 1e4
        flat_go[5, 1:6] = 60.0
    if shape == (3, 1000):  # rows whose capping takes several rounds (the C pass skips the last)
        w = (expected_estimate(spec.scale(u), spec).double() * go.double()).abs().nan_to_num(0.0, posinf=0.0)
        budget = spec.law.active_prob(spec.scale(u), 1).nan_to_num(0.0).view(shape[0], -1).sum(1)
        assert max(_capping_rounds(w.view(shape[0], -1)[r], float(budget[r])) for r in range(3)) >= 3
    acc_c, acc_r = (layout.accumulator(localzo.stats.ActivityMeter(), u.device) for _ in range(2))
    a = native.weighted_backward(go, u, spec, unif, acc_c)
    b = reference.backward(go, spec.scale(u), spec, unif, acc_r)
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    assert torch.equal(a.nan_to_num(0.0) != 0, b.nan_to_num(0.0) != 0)
    assert torch.allclose(a.nan_to_num(0.0), b.nan_to_num(0.0), rtol=1e-6, atol=0)
    assert torch.equal(acc_c, acc_r) and int(acc_c[0]) > 0
    if shape[0] > 3:
        assert int((a.view(shape[0], -1)[3] != 0).sum()) == 2  # (q = 1 for both)


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
@pytest.mark.parametrize("shape", [(16, 1024), (9, 203)])
@pytest.mark.parametrize("product", [True, False])
def test_the_c_pass_draws_the_same_bits_in_every_vector_lane_setting(shape, product):
    """The C pass's hand-written AVX-512 lanes (the capping's candidates, the
    draw) and the portable loops give the same estimate for the same seed
    (hashed uniforms): on rows that expect few active entries (two passes),
    a silent row that expects many (one pass), a row whose capping needs the
    candidates, a NaN membrane; rows of 203 end in blocks shorter than the
    lanes'. ``product``: ``grad * G`` (the spike function) or ``G`` (a
    sequence layer's draw)."""
    spec = localzo.make(sampling="gradient").spec
    u, go, _ = _c_rows(shape, 1)
    u[0] = -1.0 + 0.2 * torch.randn(shape[1], generator=torch.Generator().manual_seed(2))  # silent
    go[1, 0], go[1, 1:6] = 1e4, 60.0  # capping
    u[2, 5] = float("nan")
    runs = []
    for _ in over_simd_settings():
        torch.manual_seed(7)
        out, count = native._weighted(go, u, spec, None, tuple(u.shape), product)
        runs.append((out.clone(), count))
    out, count = runs[0]
    assert all(torch.equal(out, o) and count == c for o, c in runs[1:])
    per_row = (out != 0).sum(1)
    n = shape[1]
    assert int(per_row[0]) > n / 16 and bool((per_row[3:] <= n / 16).all()) and int(per_row[3:].sum()) > 0
    assert int((out != 0).sum()) == count


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
def test_the_c_pass_draws_reproducibly_and_unbiasedly():
    """The C pass's own stream: the same seed gives the same gradient, and the
    mean over 3000 draws is the expected gradient (the Monte-Carlo bound of
    the test above, entries with ``N q >= 10``)."""
    sg = localzo.make(sampling="gradient")
    u, go, _ = _c_rows((4, 200), 1)
    x = u.clone().requires_grad_()
    assert spike_plan(x, sg.spec) == (Path.NATIVE, True)

    def grad():
        x.grad = None
        (sg(x) * go).sum().backward()
        return x.grad.clone()

    torch.manual_seed(5)
    first = grad()
    torch.manual_seed(5)
    assert torch.equal(first, grad())
    N = 3000
    mean = sum(grad().double() for _ in range(N)) / N
    target = go.double() * sg.expected_grad(u).double()
    q = sg.active_prob(u, go)
    se = target.abs() * torch.sqrt((1.0 / q.clamp(min=1e-300) - 1.0).clamp(min=0) / N)
    common = N * q >= 10
    assert int(common.sum()) > 100
    assert bool(((mean - target).abs() <= 5.5 * se + 1e-5)[common].all())


@needs_kernels
@pytest.mark.interpreter
@pytest.mark.version_free
@pytest.mark.parametrize("shape,delta", [((6, 128), None), ((4, 3, 5, 5), None), ((3, 1000), None),
                                         ((4, 100), 0.3)])  # (a fixed step: the law's own delta)
def test_the_kernel_gives_the_references_values_given_the_same_uniforms(shape, delta):
    """``spike.triton``'s weighted kernel (one program per sample) against
    the reference on ``spec.scale(u)`` with the same uniforms: the same
    active entries, values and count (its sums run in another order: 1e-6),
    with a NaN membrane and infinite and NaN incoming gradients; and the
    same seed, the same draw."""
    from snntorch_localzo._ops.spike.triton import spike_backward

    spec = localzo.make("uniform", delta=delta, sampling="gradient").spec
    u, go, unif = _c_rows(shape, 2)
    flat_u, flat_go = u.view(shape[0], -1), go.view(shape[0], -1)
    flat_u[0, 3] = float("nan")
    flat_go[1, 4], flat_go[2, 5] = float("inf"), float("nan")
    scaled = spec.scale(u)
    acc_k, acc_r = (layout.accumulator(localzo.stats.ActivityMeter(), u.device) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (the interpreter's numpy: inf * 0)
        a = spike_backward(go, scaled, spec, unif, acc_k)
        b = reference.backward(go, scaled, spec, unif, acc_r)
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        assert torch.equal(a.nan_to_num(0.0) != 0, b.nan_to_num(0.0) != 0)
        assert torch.allclose(a.nan_to_num(0.0), b.nan_to_num(0.0), rtol=1e-6, atol=0)
        assert torch.equal(acc_k, acc_r) and int(acc_k[0]) > 0
        torch.manual_seed(1)
        first = spike_backward(go, scaled, spec, None, layout.accumulator(None, u.device))
        torch.manual_seed(1)
        assert torch.equal(first.nan_to_num(0.0), spike_backward(go, scaled, spec, None,
                                                                   layout.accumulator(None, u.device)).nan_to_num(0.0))


@needs_kernels
@pytest.mark.interpreter
@pytest.mark.version_free
def test_the_kernels_draw_has_the_expected_count():
    """The kernel's own uniforms (Philox): over 150 draws, each sample's mean
    count of active entries is ``sum q`` (5.5 standard errors)."""
    from snntorch_localzo._ops.spike.triton import spike_backward

    sg = localzo.make(sampling="gradient", track=True)
    u, go, _ = _c_rows((2, 150), 3)
    scaled = sg.spec.scale(u)
    q = sg.active_prob(u, go)
    torch.manual_seed(0)
    N = 150
    counts = sum((spike_backward(go, scaled, sg.spec, None, layout.accumulator(None, u.device)) != 0).double().sum(1)
                 for _ in range(N))
    spread = (q * (1 - q)).sum(1).sqrt()
    assert bool(((counts / N - q.sum(1)).abs() <= 5.5 * spread / math.sqrt(N)).all())


def _sequence_case(shape, reset, graded, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = 5
    x = torch.rand((T,) + shape, generator=g) * 1.4
    m0 = torch.rand(shape, generator=g)
    g_spk = torch.randn((T,) + shape, generator=g)
    g_spk.view(T, shape[0], -1)[..., ::4] = 0.0
    g_mem = torch.randn((T,) + shape, generator=g) * 0.1
    unif = torch.rand((1, T) + shape, generator=g)
    one = torch.ones(())
    return x, m0, g_spk, g_mem, unif, LeakyParams(one * 0.9, one, one * graded, reset)


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("shape,graded,mem_loss", [((3, 100), 1.0, False), ((3, 100), 0.5, True),
                                                   ((2, 3, 5, 5), 1.0, False)])
def test_the_native_sequence_draws_in_backward_as_the_step_loop(reset, shape, graded, mem_loss):
    """A weighted ``Leaky`` sequence on the native path keeps the membranes
    and draws in backward, from its incoming spike gradient, each step's
    samples one row: the spikes, membranes and gradients (input, initial
    membrane) of the step loop of the spike function's C pass bit for bit,
    given the same uniforms, with a graded spike, a loss on the membrane, and
    an entry whose incoming gradient is infinite (NaN through, as there).
    It marks no active entries on its spikes (the layer above cannot know
    them in forward)."""
    from snntorch_localzo._ops import active
    from snntorch_localzo._ops.leaky import leaky_seq, leaky_step
    from snntorch_localzo._ops.leaky.autograd import NativeLeaky

    spec = localzo.make(sampling="gradient").spec
    x0, m0, g_spk, g_mem, unif, params = _sequence_case(shape, reset, graded)
    if mem_loss:
        g_spk.view(-1)[7] = float("inf")
    assert leaky_path(x0, m0, params, spec, x0.shape[0]) is Path.NATIVE
    acc_seq, acc_step = localzo.stats.ActivityMeter(), localzo.stats.ActivityMeter()
    x, mem0 = x0.clone().requires_grad_(), m0.clone().requires_grad_()
    spk, mem = leaky_seq(x, mem0, params, spec, meter=acc_seq, absz=unif)
    assert made_by(spk, NativeLeaky) and active.active_of(spk) is None
    torch.autograd.backward([spk, mem] if mem_loss else [spk], [g_spk, g_mem] if mem_loss else [g_spk])
    seq = (spk, mem, x.grad, mem0.grad)
    x, mem0 = x0.clone().requires_grad_(), m0.clone().requires_grad_()
    spikes, mems, m = [], [], mem0
    for t in range(x.shape[0]):
        s, m = leaky_step(x[t], m, params, spec, meter=acc_step, absz=unif[:, t])
        spikes.append(s)
        mems.append(m)
    spk, mem = torch.stack(spikes), torch.stack(mems)
    torch.autograd.backward([spk, mem] if mem_loss else [spk], [g_spk, g_mem] if mem_loss else [g_spk])
    for a, b in zip(seq, (spk, mem, x.grad, mem0.grad)):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    assert bool(torch.isnan(seq[2]).any()) == mem_loss
    assert acc_seq.active == acc_step.active > 0 and acc_seq.total == acc_step.total


def _two_weighted_layers(mode, sparse, unif1, unif2):
    from snntorch_localzo._ops.linear_leaky import linear_leaky

    torch.manual_seed(3)
    T, B, IN, H, OUT = 6, 4, 30, 140, 20
    x = (torch.rand(T, B, IN) < 0.3).float()
    w1 = (torch.randn(H, IN) * 0.4).requires_grad_()
    b1 = (torch.randn(H) * 0.1).requires_grad_()
    w2 = (torch.randn(OUT, H) * 0.3).requires_grad_()
    g = torch.randn(T, B, OUT)
    one = torch.ones(())
    p = LeakyParams(one * 0.9, one, one, RESET_SUBTRACT)
    spec = localzo.make(sampling="gradient").spec
    with localzo.use_backend(mode):
        s1, _ = linear_leaky(x, w1, b1, None, p, spec, absz=unif1, sparse=sparse)
        s2, _ = linear_leaky(s1, w2, None, None, p, spec, absz=unif2, sparse=sparse)
        (s2 * g).sum().backward()
    return s1, s2, w1.grad, b1.grad, w2.grad


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
def test_the_native_linear_leaky_draws_in_backward_as_the_reference(monkeypatch):
    """Two weighted ``LinearLeaky`` layers on the native path against the
    reference's step loop with the same uniforms: the dense backward bit for
    bit; the sparse one (its sums in another order) to float32 rounding, with
    the upper layer's input gradient dense (the lower layer marks no active
    entries: its draw waits for that gradient)."""
    from snntorch_localzo._ops import planner

    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.0)  # (the dense input current: the same bits)
    g = torch.Generator().manual_seed(9)
    unif1, unif2 = torch.rand(1, 6, 4, 140, generator=g), torch.rand(1, 6, 4, 20, generator=g)
    ref = _two_weighted_layers("reference", True, unif1, unif2)
    dense = _two_weighted_layers("auto", False, unif1, unif2)
    sparse = _two_weighted_layers("auto", True, unif1, unif2)
    for r, d, s in zip(ref, dense, sparse):
        assert torch.equal(r, d)
        torch.testing.assert_close(s, r, rtol=1e-5, atol=1e-5)
    assert ref[2].abs().sum() > 0 and ref[4].abs().sum() > 0


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
def test_the_native_sequence_draws_reproducibly_and_unbiasedly():
    """The native sequence's own stream: the same seed, the same gradient; the
    mean over 2000 draws is the expected gradient (the bound of the C pass's
    test, entries with ``N q >= 10``), step by step."""
    from snntorch_localzo._ops.leaky import leaky_seq

    sg = localzo.make(sampling="gradient")
    x0, _, g_spk, _, _, params = _sequence_case((3, 100), 0, 1.0, seed=4)
    x = x0.clone().requires_grad_()

    def grad():
        x.grad = None
        spk, _ = leaky_seq(x, None, params, sg.spec)
        (spk * g_spk).sum().backward()
        return x.grad.clone()

    torch.manual_seed(5)
    first = grad()
    torch.manual_seed(5)
    assert torch.equal(first, grad())
    # the spike gradient of each step, by the expected gradient: the reverse scan of grad_spk * E[G]
    with torch.no_grad():
        _, mem = leaky_seq(x0, None, params, sg.spec)
    u = mem - 1.0
    N = 2000
    e_mean = 0
    from snntorch_localzo._ops.leaky import native as leaky_native
    for _ in range(N):
        index, G = leaky_native.weighted_draw(g_spk, mem, torch.ones(()), torch.ones(()), sg.spec, 5, None)
        e = torch.zeros(mem.numel(), dtype=torch.float64)
        e[index] = G.double()
        e_mean = e_mean + e
    e_mean = (e_mean / N).view(mem.shape)
    target = sg.expected_grad(u.reshape(15, 100)).double().view(mem.shape)
    q = torch.stack([sg.active_prob(u[t], g_spk[t]) for t in range(5)])
    se = target.abs() * torch.sqrt((1.0 / q.clamp(min=1e-300) - 1.0).clamp(min=0) / N)
    common = N * q >= 10
    assert int(common.sum()) > 100
    assert bool(((e_mean - target).abs() <= 5.5 * se + 1e-6)[common].all())


@pytest.mark.skipif(c_module() is None, reason="needs the C loops")
def test_a_sequence_drawing_in_backward_frees_its_graph_without_the_collector():
    """The membranes a weighted native sequence keeps for its backward are
    saved tensors, not attributes of the autograd context: an output held by
    its own graph would form a cycle that only the garbage collector frees."""
    import gc
    import weakref

    from snntorch_localzo._ops.leaky import leaky_seq

    x0, _, _, _, _, params = _sequence_case((3, 100), 0, 1.0)
    x = x0.clone().requires_grad_()
    enabled = gc.isenabled()
    gc.disable()
    try:
        spk, mem = leaky_seq(x, None, params, localzo.make(sampling="gradient").spec)
        assert leaky_path(x, None, params, localzo.make(sampling="gradient").spec, 5) is Path.NATIVE
        ref = weakref.ref(mem)
        del spk, mem
        assert ref() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("sampling", ["auto", "law", "gradient"])
@pytest.mark.parametrize("shape", [(8, 80), (4, 20)])  # (4, 20): the expected value, no draw
def test_a_strided_incoming_gradient_gives_the_gradient_of_its_copy(sampling, shape):
    """``spike(u).sum().backward()`` hands the backward a broadcast gradient
    (stride 0): the C passes read a contiguous copy of it, which must stay
    alive while they run (it was freed before the weighted pass read it, and
    the gradient was garbage)."""
    est = localzo.make(sampling=sampling)
    u = (0.5 * torch.randn(shape, generator=torch.Generator().manual_seed(8)) - 0.3).requires_grad_()
    grads = []
    for loss in (lambda s: s.sum(), lambda s: (s * torch.ones(shape)).sum()):
        torch.manual_seed(9)
        (g,) = torch.autograd.grad(loss(est(u)), u)
        grads.append(g)
    assert torch.equal(grads[0], grads[1]) and bool(grads[0].abs().max() < 10)
