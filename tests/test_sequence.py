"""Sequence mode: ``Leaky.forward_sequence`` and ``LinearLeaky`` against the
step loop and snnTorch, on every path (reference; auto: the native path on
CPU tensors; triton: the kernels through the interpreter), and the sparse
backward of ``LinearLeaky`` against the dense reference."""

import math

import pytest
import torch
import torch.nn as nn
import snntorch as snn

import snntorch_localzo as localzo
from conftest import DEVICE, MODES, made_by, needs_kernels
from snntorch_localzo import use_backend
from snntorch_localzo._ops import active, clib, planner
from snntorch_localzo._ops.planner import Path
from snntorch_localzo._ops.leaky import LeakyParams, leaky_seq, leaky_step
from snntorch_localzo._ops.leaky.autograd import NativeLeaky, TritonLeaky
from snntorch_localzo._ops.linear_leaky import linear_leaky
from snntorch_localzo._ops.linear_leaky import native as native_linear
from snntorch_localzo._ops.linear_leaky import reference as linear_reference
from snntorch_localzo._ops.linear_leaky import triton as sparse_kernels
from snntorch_localzo._ops.linear_leaky.autograd import NativeLinearLeaky, TritonLinearLeaky
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH

BACKENDS = MODES
FUSED_MODES = [m for m in MODES if m != "reference"]
SEQ_FUNCTION = {"auto": NativeLeaky if DEVICE == "cpu" else TritonLeaky, "triton": TritonLeaky}
LINEAR_FUNCTION = {"auto": NativeLinearLeaky if DEVICE == "cpu" else TritonLinearLeaky,
                   "triton": TritonLinearLeaky}


def scalar(v, device=DEVICE):
    return torch.tensor(v, dtype=torch.float32, device=device)


def params(reset=0, beta=0.9, threshold=1.0, graded=1.0, device=DEVICE):
    return LeakyParams(scalar(beta, device), scalar(threshold, device), scalar(graded, device), reset)


@pytest.fixture
def sparse_everywhere(monkeypatch):
    """The size heuristics would keep these tiny layers dense: force the sparse sums."""
    monkeypatch.setattr(planner, "SPARSE_MIN_OUT", 1)
    monkeypatch.setattr(planner, "SPARSE_MAX_DENSITY", 1.0)
    monkeypatch.setattr(planner, "SPARSE_MIN_IN", 1)
    monkeypatch.setattr(planner, "SPARSE_MAX_ROWS", 2**62)
    monkeypatch.setattr(planner, "SAMPLED_INPUT_MAX_DENSITY", 1.0)


# ------------------------------------------------------------ Leaky sequence mode
def step_loop(lif, x, mem=None):
    spikes, mems = [], []
    if mem is None and not lif.init_hidden:
        mem = lif.init_leaky()
    for t in range(x.shape[0]):
        out = lif(x[t]) if lif.init_hidden else lif(x[t], mem)
        spk, m = out if isinstance(out, tuple) else (out, lif.mem)
        mem = None if lif.init_hidden else m
        spikes.append(spk)
        mems.append(m)
    return torch.stack(spikes), torch.stack(mems)


SEQ_CASES = {
    "default": {},
    "zero": {"reset_mechanism": "zero"},
    "none": {"reset_mechanism": "none"},
    "graded_threshold": {"graded_spikes_factor": 0.5, "threshold": 0.75},
    "init_hidden_output": {"init_hidden": True, "output": True},
    "learn_beta": {"learn_beta": True},  # reference path
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(SEQ_CASES))
def test_forward_sequence_equals_step_mode(case, backend):
    torch.manual_seed(0)
    x = torch.rand(9, 4, 33, device=DEVICE) * 1.3
    kwargs = {"beta": 0.875, **SEQ_CASES[case]}
    a = localzo.Leaky(**kwargs).to(DEVICE)
    b = localzo.Leaky(**kwargs).to(DEVICE)
    with use_backend(backend):
        spk, mem = a.forward_sequence(x)
        ref_spk, ref_mem = step_loop(b, x)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
    if MODERN_SNNTORCH or a.init_hidden:  # snnTorch 0.7 keeps no state without init_hidden
        assert torch.equal(a.mem, b.mem)  # the state continues from the last step
    assert 0 < spk.count_nonzero() < spk.numel()


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_sequence_with_initial_membrane_and_snntorch(backend):
    torch.manual_seed(1)
    x = torch.rand(7, 3, 20, device=DEVICE) * 1.3
    mem0 = torch.rand(3, 20, device=DEVICE)
    ours = localzo.Leaky(beta=0.9).to(DEVICE)
    theirs = snn.Leaky(beta=0.9, spike_grad=localzo.make()).to(DEVICE)
    with use_backend(backend):
        spk, mem = ours.forward_sequence(x, mem0)
    ref_spk, ref_mem = step_loop(theirs, x, mem0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)


@pytest.mark.skipif(not MODERN_SNNTORCH, reason="the fused paths need snnTorch >= 0.8")
@pytest.mark.parametrize("mode", FUSED_MODES)
def test_forward_sequence_runs_fused(mode):
    lif = localzo.Leaky(beta=0.9).to(DEVICE)
    x = torch.rand(5, 2, 72, device=DEVICE, requires_grad=True)  # > make()'s exact: a draw
    with use_backend(mode):
        spk, _ = lif.forward_sequence(x)
    assert made_by(spk, SEQ_FUNCTION[mode])
    # the native path marks the spikes with the active entries for a sparse layer above
    assert (active.active_of(spk) is not None) == (SEQ_FUNCTION[mode] is NativeLeaky)


REST_CASES = {"fused": {}, "reference": {"learn_beta": True},
              "init_hidden": {"init_hidden": True, "output": True}}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(REST_CASES))
def test_forward_sequence_starts_from_rest_at_every_call(case, backend):
    """As snnTorch 1.0's LinearLeaky: the same input twice gives the same
    output, and a training loop needs no reset or detach between steps."""
    torch.manual_seed(4)
    x = torch.rand(6, 3, 10, device=DEVICE) * 1.3
    lif = localzo.Leaky(beta=0.9, **REST_CASES[case]).to(DEVICE)
    fc = nn.Linear(10, 10).to(DEVICE)
    opt = torch.optim.SGD(list(fc.parameters()) + list(lif.parameters()), lr=0.1)
    with use_backend(backend):
        with torch.no_grad():
            first = lif.forward_sequence(x)
            second = lif.forward_sequence(x)
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
        if not lif.init_hidden:  # the default is the zero membrane
            zero = lif.forward_sequence(x, torch.zeros_like(x[0]))
            assert torch.equal(zero[1], first[1])
            # a passed membrane still continues a sequence
            cont = lif.forward_sequence(x[3:], first[1][2])
            assert torch.equal(cont[1], first[1][3:])
        for _ in range(2):  # used to fail: "backward through the graph a second time"
            spk, mem = lif.forward_sequence(fc(x))
            opt.zero_grad()
            (spk.sum() + mem.pow(2).mean()).backward()
            opt.step()
    assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0


def test_forward_sequence_rejects_bad_input():
    lif = localzo.Leaky(beta=0.9)
    with pytest.raises(ValueError, match=r"`input_` must be a sequence tensor of shape \[T, batch"):
        lif.forward_sequence(torch.rand(5))
    hidden = localzo.Leaky(beta=0.9, init_hidden=True)
    with pytest.raises(TypeError, match="init_hidden"):
        hidden.forward_sequence(torch.rand(3, 2), torch.rand(2))


@pytest.mark.version_free
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sequence_gradients_equal_chained_steps_given_z(reset, dtype, backend):
    torch.manual_seed(2)
    T, shape = 6, (3, 40)
    est = localzo.make("normal", delta=0.3, samples=2)
    absz = est.dist.abs_sample((2, T) + shape).to(DEVICE)
    x0 = (torch.rand((T,) + shape, device=DEVICE) * 1.3).to(dtype)
    m0 = torch.rand(shape, device=DEVICE).to(dtype)
    g_spk = torch.randn((T,) + shape, device=DEVICE).to(dtype)
    g_mem = torch.randn((T,) + shape, device=DEVICE).to(dtype)
    p = params(reset)
    with use_backend(backend):
        x, mem0 = x0.clone().requires_grad_(True), m0.clone().requires_grad_(True)
        spk, mem = leaky_seq(x, mem0, p, est.spec, absz=absz)
        torch.autograd.backward([spk, mem], [g_spk, g_mem])
        seq = (spk, mem, x.grad, mem0.grad)
    x, mem0 = x0.clone().requires_grad_(True), m0.clone().requires_grad_(True)
    spikes, mems, m = [], [], mem0
    with use_backend(backend):
        for t in range(T):
            s, m = leaky_step(x[t], m, p, est.spec, absz=absz[:, t])
            spikes.append(s)
            mems.append(m)
    torch.autograd.backward([torch.stack(spikes), torch.stack(mems)], [g_spk, g_mem])
    steps = (torch.stack(spikes), torch.stack(mems), x.grad, mem0.grad)
    for a, b in zip(seq, steps):
        assert torch.equal(a, b)


@pytest.mark.version_free
@pytest.mark.parametrize("mode", FUSED_MODES)
@pytest.mark.parametrize("name", ["normal", "atan"])
def test_sequence_monte_carlo_mean(name, mode):
    """beta = 0 and no reset make mem[t] = x[t]: the gradient of the input is
    the estimate at u = x - threshold, whose mean is the closed form."""
    torch.manual_seed(3)
    est = localzo.make(name, **({"delta": 0.2} if name == "normal" else {}))
    u = torch.linspace(-2 * est.delta, 2 * est.delta, 10, dtype=torch.float64)
    T, n = 40, 100
    x = (u.float() + 1.0).repeat(T, n, 1).to(DEVICE).requires_grad_(True)
    with use_backend(mode):
        spk, _ = leaky_seq(x, None, params(2, beta=0.0), est.spec)
        spk.backward(torch.ones_like(spk))
    grads = x.grad.double().reshape(-1, len(u)).cpu()
    closed = est.expected_grad(u)
    tol = 5 * grads.std(0) / math.sqrt(grads.shape[0]) + 1e-3 * closed.max()
    assert torch.all((grads.mean(0) - closed).abs() <= tol)


@pytest.mark.version_free
@pytest.mark.parametrize("mode", FUSED_MODES)
def test_sequence_monte_carlo_mean_adaptive(mode):
    """The default adaptive step on a sequence: every step of every sample is
    one call of the rule, so with beta = 0 and no reset each row ``x[t, b]``
    gets the step of that row alone and the mean of its input gradient is
    :meth:`LocalZO.expected_grad` of that row (closed form given the step).
    The rows hold one firing sample (a 1% band) and one silent one (the
    silent band), drawn ``T`` times each (fewer through the interpreter,
    whose rule kernel takes about a tenth of a second a row; the tolerance
    follows the number of draws)."""
    torch.manual_seed(5)
    est = localzo.make()
    n, T = 400, (100 if mode == "triton" else 300)
    firing = torch.linspace(-0.6, 0.3, n, dtype=torch.float64)
    silent = torch.linspace(-1.5, -0.2, n, dtype=torch.float64)
    u = torch.stack([firing, silent])
    x = (u.float() + 1.0).repeat(T, 1, 1).to(DEVICE).requires_grad_(True)
    with use_backend(mode):
        spk, _ = leaky_seq(x, None, params(2, beta=0.0), est.spec)
        spk.backward(torch.ones_like(spk))
    closed = est.expected_grad(u.float().double())
    assert ((closed > 0.5).sum(1) >= 2).all()  # both rows have entries in their band
    # groups of 20 neighbouring entries: far entries are active rarely (the
    # entry floor), a group's T * 20 draws hold enough of their events
    grads = x.grad.double().cpu().reshape(T, 2, n // 20, 20).transpose(1, 2).reshape(T, n // 20, 2, 20)
    pooled = grads.permute(1, 2, 0, 3).reshape(n // 20, 2, -1)
    mean, se = pooled.mean(-1), pooled.std(-1) / math.sqrt(pooled.shape[-1])
    expected = closed.reshape(2, n // 20, 20).mean(-1).t()
    assert torch.all((mean - expected).abs() <= 5 * se + 1e-3)
    active = (pooled != 0).double().mean(-1)
    prob = est.active_prob(u.float().double()).reshape(2, n // 20, 20).mean(-1).t()
    se_active = (prob * (1 - prob) / pooled.shape[-1]).sqrt()
    assert torch.all((active - prob).abs() <= 5 * se_active + 1e-3)


@pytest.mark.version_free
def test_native_sequence_draw_takes_the_rule_of_inputs_with_channels():
    """A convolutional sequence ``[T, B, C, H, W]``: every step of every sample
    is one call of the rule with its channels (the 4.5% band and the channel
    floor of ``[B, C, H, W]`` inputs, not the 1% band of fully connected
    ones): the active frequency of each entry over ``T`` draws of the native
    sequence (make()'s: the law's draw in a sequence) is the law's
    ``active_prob`` of that sample, within 5 standard errors, and so is
    their mean over all entries."""
    torch.manual_seed(6)
    est = localzo.make()
    law = localzo.make(sampling="law")
    u = 0.3 * torch.randn(1, 4, 6, 6) - 0.3
    T = 400
    x = (u + 1.0).repeat(T, 1, 1, 1, 1).requires_grad_(True)
    with use_backend("auto"):
        spk, _ = leaky_seq(x, None, params(2, beta=0.0, device="cpu"), est.spec)
        spk.backward(torch.ones_like(spk))
    freq = (x.grad != 0).double().mean(0)
    prob = law.active_prob(u).double()
    se = (prob * (1 - prob) / T).sqrt()
    assert torch.all((freq - prob).abs() <= 5 * se + 1e-3)
    se_mean = ((prob * (1 - prob)).sum() / T).sqrt() / prob.numel()
    assert abs(float(freq.mean() - prob.mean())) <= 5 * float(se_mean)
    fc = law.active_prob(u.reshape(1, -1)).double().mean()  # the other rule's
    assert abs(float(fc - prob.mean())) > 10 * float(se_mean)


@pytest.mark.version_free
@pytest.mark.parametrize("mode", FUSED_MODES)
def test_sequence_meter(mode):
    est = localzo.make("normal", delta=0.3, track=True)
    x = torch.rand(8, 50, device=DEVICE, requires_grad=True) * 1.5
    x.retain_grad()
    with use_backend(mode):
        spk, _ = leaky_seq(x, None, params(2, beta=0.0), est.spec, est.meter)
        spk.backward(torch.ones_like(spk))
    assert est.meter.total == 400
    assert est.meter.active == torch.count_nonzero(x.grad).item() > 0


# ------------------------------------------------------------ LinearLeaky
def snntorch_linear_leaky(layer, x, mem=None):
    """The same layer written with nn.Linear and snn.Leaky stepped T times."""
    lif = snn.Leaky(
        beta=layer.beta.clone(), threshold=layer.threshold.clone(),
        reset_mechanism=layer.reset_mechanism, spike_grad=localzo.make(),
        graded_spikes_factor=layer.graded_spikes_factor.clone(),
    ).to(x.device)
    cur = layer.linear(x)
    spikes, mems = [], []
    mem = lif.init_leaky() if mem is None else mem
    for t in range(x.shape[0]):
        spk, mem = lif(cur[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


@pytest.mark.skipif(
    not MODERN_SNNTORCH,
    reason="snnTorch 0.7's Leaky subtracts before decaying; LinearLeaky follows >= 0.8",
)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_linear_leaky_forward_equals_linear_and_snn_leaky(reset, backend):
    torch.manual_seed(4)
    layer = localzo.LinearLeaky(0.875, 30, 20, reset_mechanism=reset, threshold=0.5).to(DEVICE)
    x = (torch.rand(8, 4, 30, device=DEVICE) < 0.4).float()
    mem0 = torch.rand(4, 20, device=DEVICE)
    with use_backend(backend):
        spk, mem = layer(x, mem0)
    ref_spk, ref_mem = snntorch_linear_leaky(layer, x, mem0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
    assert 0 < spk.count_nonzero() < spk.numel()


def test_linear_leaky_matches_snntorch_names():
    layer = localzo.LinearLeaky(0.9, 7, 5, bias=False)
    assert layer.linear.in_features == 7 and layer.linear.bias is None
    assert set(dict(layer.named_parameters())) == {"linear.weight"}
    assert isinstance(layer.spike_grad, localzo.LocalZO)
    assert localzo.LinearLeaky(0.9, 7, 5, output=False)(torch.rand(3, 2, 7)).shape == (3, 2, 5)
    if hasattr(snn, "LinearLeaky"):  # snnTorch 1.0: same leading arguments and return convention
        import inspect

        ours = list(inspect.signature(localzo.LinearLeaky.__init__).parameters)[:9]
        theirs = list(inspect.signature(snn.LinearLeaky.__init__).parameters)[:9]
        assert ours == theirs


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.rand(4, 7),), r"`input_` must be a tensor of shape \[T, batch, in_features\]"),
        ((torch.rand(3, 2, 6),), "`input_` has 6 features, expected in_features=7"),
        ((torch.rand(3, 2, 7), torch.rand(3, 5)), r"`mem` has shape \(3, 5\) but must be \(2, 5\)"),
    ],
)
def test_linear_leaky_rejects_bad_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        localzo.LinearLeaky(0.9, 7, 5)(*args)


def two_layers(backend, sparse, loss_on_mem=False, reset=0, seed=5, device=DEVICE, dyadic=False):
    """Two stacked layers with fixed directions on ``device``; returns outputs
    and gradients. ``dyadic``: weights and bias on a grid of 1/64, so that
    every input current is exact, whatever the order of its sum."""
    torch.manual_seed(seed)
    T, B, IN, H, OUT = 9, 4, 30, 24, 6
    est = localzo.make("normal", delta=0.3, samples=2)
    x = (torch.rand(T, B, IN) < 0.3).float().to(device)
    grid = (lambda t: t.mul(64).round().div(64)) if dyadic else (lambda t: t)
    w1 = grid(torch.randn(H, IN) * 0.4).to(device).requires_grad_(True)
    b1 = grid(torch.randn(H) * 0.1).to(device).requires_grad_(True)
    w2 = grid(torch.randn(OUT, H) * 0.4).to(device).requires_grad_(True)
    a1 = est.dist.abs_sample((2, T, B, H)).to(device)
    a2 = est.dist.abs_sample((2, T, B, OUT)).to(device)
    g = torch.randn(T, B, OUT, device=device)
    p = params(reset, device=device)
    with use_backend(backend):
        s1, _ = linear_leaky(x, w1, b1, None, p, est.spec, absz=a1, sparse=sparse)
        s2, m2 = linear_leaky(s1, w2, None, None, p, est.spec, absz=a2, sparse=sparse)
        loss = (s2 * g).sum() + ((m2 * g).sum() if loss_on_mem else 0.0)
        loss.backward()
    return s1, s2, m2, w1.grad, b1.grad, w2.grad


@pytest.mark.version_free
@pytest.mark.parametrize("mode", FUSED_MODES)
@pytest.mark.parametrize("case", ["spikes", "mem_in_loss", "zero_reset", "no_reset"])
def test_linear_leaky_gradients_equal_dense_reference(case, mode, sparse_everywhere, monkeypatch):
    """Sparse and dense fused backward against the reference with the same
    directions: dense identical, sparse equal to float32 rounding (the sums
    run in another order). The input current is the dense product here (the
    event-driven one also sums in another order: tested below)."""
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.0)
    kwargs = {
        "spikes": {},
        "mem_in_loss": {"loss_on_mem": True},
        "zero_reset": {"reset": 1},
        "no_reset": {"reset": 2},
    }[case]
    ref = two_layers("reference", True, **kwargs)
    dense = two_layers(mode, False, **kwargs)
    sparse = two_layers(mode, True, **kwargs)
    for r, d, s in zip(ref, dense, sparse):
        assert torch.equal(r, d)
        torch.testing.assert_close(s, r, rtol=1e-5, atol=1e-5)
    assert ref[3].abs().sum() > 0 and ref[5].abs().sum() > 0


def _count_calls(monkeypatch, module, names, calls):
    for name in names:
        fn = getattr(module, name)

        def wrapped(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(module, name, wrapped)


@pytest.mark.version_free
def test_native_sparse_paths_are_taken(monkeypatch, sparse_everywhere):
    """The native path is the CPU's: CPU tensors, whatever device the suite runs on."""
    calls = {"sparse_grads": 0, "sparse_input_grad": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    two_layers("auto", True, device="cpu")
    assert calls == {"sparse_grads": 2, "sparse_input_grad": 1}  # the input of layer 2 only
    calls.update(sparse_grads=0, sparse_input_grad=0)
    two_layers("auto", True, loss_on_mem=True, device="cpu")  # layer 2's membrane in the loss
    assert calls == {"sparse_grads": 1, "sparse_input_grad": 1}
    calls.update(sparse_grads=0, sparse_input_grad=0)
    two_layers("auto", False, device="cpu")
    assert calls == {"sparse_grads": 0, "sparse_input_grad": 0}
    monkeypatch.setattr(planner, "SAMPLED_INPUT_MAX_DENSITY", 0.1)
    assert planner.use_sampled_input_grad(10, 100) and not planner.use_sampled_input_grad(11, 100)
    # a lower layer with more active entries than the sampled product pays for: dense,
    # the same gradients to float32 rounding
    monkeypatch.setattr(planner, "SAMPLED_INPUT_MAX_DENSITY", 1.0)
    sampled = two_layers("auto", True, device="cpu")
    monkeypatch.setattr(planner, "SAMPLED_INPUT_MAX_DENSITY", 0.0)
    calls.update(sparse_grads=0, sparse_input_grad=0)
    dense = two_layers("auto", True, device="cpu")
    assert calls == {"sparse_grads": 2, "sparse_input_grad": 0}
    for a, b in zip(sampled, dense):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.version_free
def test_native_event_weight_grad_is_taken_for_few_ones_and_equals_the_product(monkeypatch):
    """The narrow layers' dense weight gradients from the ones of their binary
    inputs (30% and the hidden spikes: the threshold forced to take them)
    against the product: the same gradients to float32 rounding; never with
    ``sparse=False`` (the reference's bits) or past the threshold."""
    calls = {"event_weight_grad": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    monkeypatch.setattr(planner, "EVENT_WEIGHT_GRAD_MAX_DENSITY", 1.0)
    events = two_layers("auto", True, device="cpu")
    assert calls == {"event_weight_grad": 2}
    two_layers("auto", False, device="cpu")
    assert calls == {"event_weight_grad": 2}
    monkeypatch.setattr(planner, "EVENT_WEIGHT_GRAD_MAX_DENSITY", 0.0)
    products = two_layers("auto", True, device="cpu")
    assert calls == {"event_weight_grad": 2}
    for a, b in zip(events, products):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert events[3].abs().sum() > 0 and events[5].abs().sum() > 0
    assert planner.use_event_weight_grad(planner.Path.NATIVE, 0, 100)
    assert not planner.use_event_weight_grad(planner.Path.NATIVE, -1, 100)  # not binary
    assert not planner.use_event_weight_grad(planner.Path.TRITON, 0, 100)


@pytest.mark.version_free
@pytest.mark.parametrize("where", ["spikes", "membrane"])
def test_native_sparse_backward_spreads_a_non_finite_gradient_as_the_reference(where, sparse_everywhere):
    """An infinite incoming gradient (on the output spikes or membranes) gives
    the reference's NaN and infinity pattern in every gradient: the sums over
    the active entries only (weight, bias and input gradients) would skip the
    ``inf * 0 = NaN`` of the others, so the native backward takes the
    products then."""

    def run(backend):
        torch.manual_seed(5)
        T, B, IN, H, OUT = 9, 4, 30, 24, 6
        est = localzo.make("normal", delta=0.3, samples=2)
        x = (torch.rand(T, B, IN) < 0.3).float()
        w1 = (torch.randn(H, IN) * 0.4).requires_grad_(True)
        b1 = (torch.randn(H) * 0.1).requires_grad_(True)
        w2 = (torch.randn(OUT, H) * 0.4).requires_grad_(True)
        a1, a2 = est.dist.abs_sample((2, T, B, H)), est.dist.abs_sample((2, T, B, OUT))
        g = torch.randn(T, B, OUT)
        g[-1, 0, 0] = float("inf")
        with use_backend(backend):
            s1, _ = linear_leaky(x, w1, b1, None, params(device="cpu"), est.spec, absz=a1, sparse=True)
            s2, m2 = linear_leaky(s1, w2, None, None, params(device="cpu"), est.spec, absz=a2, sparse=True)
            ((s2 if where == "spikes" else m2) * g).sum().backward()
        return w1.grad, b1.grad, w2.grad

    ref, native = run("reference"), run("auto")
    assert ref[0].isnan().any()  # the infinity reached the first layer
    for r, n in zip(ref, native):
        assert torch.equal(r.isnan(), n.isnan()) and torch.equal(r.isinf(), n.isinf())
        torch.testing.assert_close(n, r, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.version_free
def test_native_event_weight_grad_leaves_a_non_finite_gradient_to_the_product(monkeypatch):
    """An infinite incoming gradient reaches dL/dI: the product spreads
    ``inf * 0 = NaN`` over the weight gradient as the reference does, which the
    sum over the ones would not, so the planner's choice is not taken then."""
    calls = {"event_weight_grad": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    grads = []
    for threshold in (1.0, -1.0):
        monkeypatch.setattr(planner, "EVENT_WEIGHT_GRAD_MAX_DENSITY", threshold)
        torch.manual_seed(5)
        T, B, IN, OUT = 6, 3, 16, 5
        x = (torch.rand(T, B, IN) < 0.3).float()
        w = (torch.randn(OUT, IN) * 0.8).requires_grad_(True)
        est = localzo.make("normal", delta=0.5)
        spk, mem = linear_leaky(x, w, None, None, params(device="cpu"), est.spec, sparse=True)
        g = torch.zeros(T, B, OUT)
        g[-1, 0, 0] = float("inf")
        (mem * g).sum().backward()  # the membrane in the loss: dL/dI is inf where it reaches
        grads.append(w.grad)
    assert calls == {"event_weight_grad": 0}
    torch.testing.assert_close(grads[0], grads[1], equal_nan=True)
    assert grads[0].isnan().any()


@pytest.mark.version_free
def test_native_size_heuristic_keeps_narrow_layers_dense(monkeypatch):
    calls = {"sparse_grads": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    two_layers("auto", True, device="cpu")  # 24 and 6 neurons: below SPARSE_MIN_OUT
    assert calls == {"sparse_grads": 0}
    def rule(out, active, entries):  # the CPU's size rule: rows * out = entries
        return planner.sparse_weight_grad_fits(Path.NATIVE, out, 10, entries // out, active)
    assert not rule(64, 10, 1024)
    assert rule(256, 10, 1024)
    assert not rule(256, 500, 1024)  # too dense


@pytest.mark.version_free
@needs_kernels
def test_triton_sparse_weight_grad_is_taken(monkeypatch, sparse_everywhere):
    calls = {"sparse_weight_grad": 0}
    _count_calls(monkeypatch, sparse_kernels, list(calls), calls)
    two_layers("triton", True)
    assert calls == {"sparse_weight_grad": 2}
    calls.update(sparse_weight_grad=0)
    two_layers("triton", True, loss_on_mem=True)
    assert calls == {"sparse_weight_grad": 1}
    calls.update(sparse_weight_grad=0)
    two_layers("triton", False)
    assert calls == {"sparse_weight_grad": 0}


@pytest.mark.version_free
@needs_kernels
def test_triton_size_rule_takes_the_dense_product_for_long_walks(monkeypatch):
    """The kernels' rule: narrow layers and many rows (each program walks all
    ``T * B`` rows) take the dense product; the benchmark's T=100, B=128 does."""
    def rule(out, inp, rows):
        return planner.sparse_weight_grad_fits(Path.TRITON, out, inp, rows)
    assert rule(256, 700, 25 * 128) and rule(1024, 256, 25 * 128)
    assert not rule(256, 700, 100 * 128) and not rule(20, 256, 25 * 128) and not rule(256, 16, 128)
    calls = {"sparse_weight_grad": 0}
    _count_calls(monkeypatch, sparse_kernels, list(calls), calls)
    monkeypatch.setattr(planner, "SPARSE_MIN_OUT", 1)
    monkeypatch.setattr(planner, "SPARSE_MIN_IN", 1)
    monkeypatch.setattr(planner, "SPARSE_MAX_ROWS", 9 * 4 - 1)  # two_layers: T * B = 36 rows
    two_layers("triton", True)
    assert calls == {"sparse_weight_grad": 0}


@pytest.mark.version_free
@pytest.mark.parametrize("no_c", ["0", "1"])
@pytest.mark.parametrize("mode", FUSED_MODES)
def test_sparse_weight_grad_over_several_time_chunks(mode, no_c, monkeypatch, sparse_everywhere):
    """The trace in chunks of time (the PyTorch loops; with the C loops one pass
    advances it step by step and never holds it whole): the reference's
    gradients to float32 rounding either way."""
    monkeypatch.setattr(clib, "ENABLED", no_c == "0")
    monkeypatch.setattr(linear_reference, "TRACE_BUDGET_BYTES", 4 * 4 * 30 * 2)  # 2 steps a chunk
    ref = two_layers("reference", True, seed=6)
    sparse = two_layers(mode, True, seed=6)
    for r, s in zip(ref, sparse):
        torch.testing.assert_close(s, r, rtol=1e-5, atol=1e-5)


@pytest.mark.version_free
def test_trace_chunk_steps_count_the_bytes_of_the_trace_dtype(monkeypatch):
    monkeypatch.setattr(linear_reference, "TRACE_BUDGET_BYTES", 6 * 4 * 30 * 4)  # 6 float32 steps
    steps = linear_reference.trace_chunk_steps
    assert steps(100, 4, 30, torch.float32) == 6 and steps(100, 4, 30, torch.float64) == 3
    assert steps(5, 4, 30, torch.float32) == 5  # at most T
    assert steps(100, 400, 30, torch.float32) == 1  # at least one


def test_in_place_change_drops_the_sparse_input_mark():
    layer = localzo.LinearLeaky(0.9, 6, 5).to(DEVICE)
    with use_backend("auto"):
        spk, _ = layer(torch.rand(4, 2, 6, device=DEVICE, requires_grad=True))
    if DEVICE == "cpu":
        assert made_by(spk, NativeLinearLeaky) and active.active_of(spk) is not None
    spk.mul_(1.0)
    assert active.active_of(spk) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_leaky_trains_with_reference_fallbacks(backend):
    """Learnable beta and a snnTorch surrogate take the reference path."""
    torch.manual_seed(7)
    for kwargs in ({"learn_beta": True}, {"spike_grad": snn.surrogate.atan()}):
        layer = localzo.LinearLeaky(0.9, 10, 8, **kwargs).to(DEVICE)
        x = torch.rand(6, 3, 10, device=DEVICE) * 2
        with use_backend(backend):
            spk, mem = layer(x)
            (spk.sum() + mem.pow(2).mean()).backward()
        assert torch.isfinite(layer.linear.weight.grad).all()
        assert layer.linear.weight.grad.abs().sum() > 0
    assert layer is not None and isinstance(layer, nn.Module)


@pytest.mark.version_free
@pytest.mark.parametrize("mode", FUSED_MODES)
def test_non_finite_incoming_gradient_propagates_as_in_the_reference(mode):
    """A NaN reaching the spikes where the estimate is zero still poisons the
    gradient, as in the reference (grad * 0 = NaN): the fused paths take their
    dense form for it."""
    torch.manual_seed(9)
    est = localzo.make("normal", delta=0.3)
    x = torch.rand(6, 2, 12, device=DEVICE) * 1.3
    absz = est.dist.abs_sample((1, 6, 2, 12)).to(DEVICE)
    g = torch.randn(6, 2, 12, device=DEVICE)
    g[5, 1, 3] = float("nan")

    def grads(m):
        xx = x.clone().requires_grad_(True)
        with use_backend(m):
            spk, _ = leaky_seq(xx, None, params(0), est.spec, absz=absz)
            spk.backward(g)
        return xx.grad

    ref, fused = grads("reference"), grads(mode)
    assert torch.isnan(ref).any()
    assert torch.equal(torch.isnan(fused), torch.isnan(ref))
    torch.testing.assert_close(fused, ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.version_free
def test_native_layer_keeps_spike_inputs_as_bytes_with_the_same_gradients(monkeypatch):
    """A LinearLeaky on the native path keeps a spike input (0/1) for backward
    as one byte per entry, and its gradients are those of the float input."""
    if clib.c_module() is None:
        pytest.skip("the C loops are not built here")

    def run():
        torch.manual_seed(4)
        layer = localzo.LinearLeaky(0.9, 40, 300, spike_grad=localzo.make("normal", delta=0.3))
        x = (torch.rand(6, 4, 40) < 0.3).float()
        saved = []

        def pack(t):
            saved.append((t.dtype, tuple(t.shape)))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spk, _ = layer(x)
        spk.sum().backward()
        return saved, layer.linear.weight.grad, layer.linear.bias.grad

    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.0)  # the dense current in both runs
    pack_binary = native_linear.pack_binary
    # a non-spike input is kept as it is
    assert pack_binary(torch.tensor([0.0, 1.0, 0.5])) is None
    assert pack_binary(torch.tensor([0.0, 1.0, -0.0])) is None
    assert torch.equal(pack_binary(torch.tensor([0.0, 1.0, 1.0])),
                       torch.tensor([0, 1, 1], dtype=torch.uint8))
    with use_backend("auto"):
        saved, gw, gb = run()
        assert (torch.uint8, (6, 4, 40)) in saved and (torch.float32, (6, 4, 40)) not in saved
        monkeypatch.setattr(native_linear, "binary_events", lambda x, capacity, keep=True: None)
        saved_f, gw_f, gb_f = run()
    assert (torch.float32, (6, 4, 40)) in saved_f
    assert torch.equal(gw, gw_f) and torch.equal(gb, gb_f) and (gw != 0).any()


# ------------------------------------------------ the event-driven input current
needs_c = pytest.mark.skipif(
    clib.c_module() is None, reason="the C loops are not built here"
)


@pytest.mark.version_free
def test_planner_takes_the_event_current_up_to_its_density(monkeypatch):
    """Binary input, native path, float32/float64 throughout, contiguous, at
    most EVENT_MAX_DENSITY ones; the dense product otherwise."""
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.25)
    x, w, b = torch.zeros(2, 3, 8), torch.zeros(5, 8), torch.zeros(5)

    def use(ones, path=Path.NATIVE, x=x, w=w, b=b):
        return planner.use_event_current(path, x, w, b, ones)

    assert use(12) and use(0) and use(12, b=None)  # 48 entries: 12 ones at most
    assert not use(13) and not use(None)  # too dense; not binary
    assert not use(1, Path.TRITON) and not use(1, Path.REFERENCE)
    assert use(1, x=x.double(), w=w.double(), b=b.double())
    assert not use(1, x=x.half(), w=w.half(), b=b.half()) and not use(1, w=w.double())
    assert not use(1, x=torch.zeros(3, 2, 8).transpose(0, 1))  # not contiguous
    assert not use(0, x=torch.zeros(2, 3, 0))  # no entries


@pytest.mark.version_free
@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_layer_takes_the_event_current_up_to_the_cut_over(monkeypatch, dtype):
    """Around the cut-over (4 * 3 * 10 entries, 30 ones at most): the event-
    driven current at and below it, the dense product above it and for any
    other input (not binary, -0, a non-finite weight), the same current to
    rounding either way (NaN where the dense product has it)."""
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.25)
    calls = {"event_current": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    torch.manual_seed(3)
    layer = localzo.LinearLeaky(0.9, 10, 7).to(dtype)
    w, b = layer.linear.weight, layer.linear.bias
    order = torch.randperm(120)

    def spikes(ones):
        x = torch.zeros(120, dtype=dtype)
        x[order[:ones]] = 1.0
        return x.reshape(4, 3, 10)

    def current(x):
        calls["event_current"] = 0
        with torch.no_grad():
            cur, _, _ = native_linear.input_current(x, w, b, keep_packed=False)
            torch.testing.assert_close(cur, torch.nn.functional.linear(x, w, b), equal_nan=True)
        return calls["event_current"] == 1

    for ones in (0, 29, 30):
        assert current(spikes(ones))
    for ones in (31, 120):
        assert not current(spikes(ones))
    x = spikes(20)
    for value in (0.5, -0.0):
        bad = x.clone()
        bad[3, 2, 9] = value
        assert not current(bad)
    with torch.no_grad():
        w[0, 0] = float("inf")  # the dense product: NaN in the rows where x[..., 0] = 0
    assert not current(x)
    # the layer asks the same (the autograd forward and the no-grad branch)
    with use_backend("auto"):
        calls["event_current"] = 0
        layer(spikes(30))
        with torch.no_grad():
            layer(spikes(30))
        layer(spikes(31))
    assert calls["event_current"] == 0  # the weight holds an inf
    with torch.no_grad():
        w.nan_to_num_(posinf=0.0)
    with use_backend("auto"):
        layer(spikes(30))
        with torch.no_grad():
            layer(spikes(30))
        layer(spikes(31))
    assert calls["event_current"] == 2
    monkeypatch.setattr(clib, "ENABLED", False)  # no C loops: the dense product
    assert not current(spikes(30))


@pytest.mark.version_free
@needs_c
@pytest.mark.parametrize("reset", [0, 1, 2])
def test_event_current_gives_the_dense_outputs_and_gradients(monkeypatch, reset):
    """Two stacked native layers with weights on a grid where every current is
    exact in any order: spikes, membranes and gradients with the event-driven
    current (both layers' inputs are spikes) equal those with the dense product,
    bit for bit; the inputs are left as they were."""
    calls = {"event_current": 0}
    _count_calls(monkeypatch, native_linear, list(calls), calls)
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 1.0)
    event = two_layers("auto", True, reset=reset, device="cpu", dyadic=True)
    assert calls["event_current"] == 2
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 0.0)
    dense = two_layers("auto", True, reset=reset, device="cpu", dyadic=True)
    assert calls["event_current"] == 2
    for e, d in zip(event, dense):
        assert torch.equal(e, d)
    assert event[1].count_nonzero() > 0 and event[3].abs().sum() > 0


@pytest.mark.version_free
@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.ones(3, 2, 6),), "`input_` has 6 features, expected in_features=7"),
        ((torch.zeros(3, 2, 7), torch.rand(3, 5)), r"`mem` has shape \(3, 5\) but must be \(2, 5\)"),
    ],
)
def test_event_current_keeps_the_argument_checks(monkeypatch, args, match):
    monkeypatch.setattr(planner, "EVENT_MAX_DENSITY", 1.0)
    with use_backend("auto"), pytest.raises(ValueError, match=match):
        localzo.LinearLeaky(0.9, 7, 5)(*args)


@pytest.mark.version_free
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_weight_grad_in_one_pass_equals_the_trace_product(dtype, monkeypatch):
    """The C pass that advances the input trace step by step (its input
    columns split over torch's threads, here inside a cache line: 1000
    columns) gives the same weight gradient whatever torch's thread count and
    from the input packed to bytes, and the bias gradient riding it
    (``e * c[t]``, ``c`` the trace of ones, in the share that holds column 0)
    :func:`sparse_bias_grad`'s bits,
    and the chunked trace product's to rounding:
    ``sum over active (t, b, j) of e * trace[t, b, :]``."""
    if clib.c_module() is None:
        pytest.skip("the C loops are not built here")
    torch.manual_seed(0)
    T, B, IN, OUT = 9, 128, 1000, 40  # T B IN > 2**20: split where threads are there
    x = (torch.rand(T, B, IN) < 0.1).to(dtype)
    index = torch.randperm(T * B * OUT)[:700].sort().values
    e = torch.randn(700, dtype=dtype)
    beta = torch.tensor(0.875)
    bias = native_linear.sparse_bias_grad(index, e, beta, (T, B, OUT), dtype)
    before = torch.get_num_threads()
    grads = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            grads.append(native_linear.sparse_weight_grad(x, index, e, beta, OUT))
            for inp in (x, native_linear.pack_binary(x)):
                gw, gb = native_linear.sparse_grads(inp, index, e, beta, (T, B, OUT), dtype, True, True)
                assert torch.equal(gw, grads[-1]) and torch.equal(gb, bias)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])
    assert bias.abs().sum() > 0
    assert native_linear.sparse_grads(x, index, e, beta, (T, B, OUT), dtype, False, True)[0] is None
    # the bytes the forward packed the input to: the same bits, read as they are
    packed = native_linear.pack_binary(x)
    assert packed.dtype == torch.uint8
    assert torch.equal(native_linear.sparse_weight_grad(packed, index, e, beta, OUT, dtype), grads[0])
    monkeypatch.setattr(clib, "ENABLED", False)
    chunked = native_linear.sparse_weight_grad(x, index, e, beta, OUT)
    assert torch.equal(native_linear.sparse_weight_grad(packed, index, e, beta, OUT, dtype), chunked)
    trace = linear_reference.input_trace(x, beta)
    direct = torch.zeros(OUT, IN, dtype=dtype)
    direct.index_add_(0, index % OUT, e.unsqueeze(1) * trace.reshape(T * B, IN)[index // OUT])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(grads[0], chunked, rtol=tol, atol=tol)
    torch.testing.assert_close(grads[0], direct, rtol=tol, atol=tol)

