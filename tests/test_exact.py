"""make()'s small layers: a call whose samples have at most
``AdaptiveDelta.exact`` entries (an output layer) gets the estimate's expected
value instead of a draw, on every path, bit for bit alike."""

import pickle

import pytest
import snntorch as snn
import torch

import snntorch_localzo as localzo
from snntorch_localzo import AdaptiveDelta
from snntorch_localzo._ops import planner
from snntorch_localzo._ops.planner import Path
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH
from snntorch_localzo.step import sample_entries, sample_rows

from conftest import MODES as BACKENDS


def _u(*shape, seed=0):
    torch.manual_seed(seed)
    return (0.8 * torch.randn(*shape) - 0.4).requires_grad_()


@pytest.mark.parametrize("shape", [(16, 10), (10,), (8, 2, 3, 3)])
def test_small_call_gets_the_expected_value(shape):
    est = localzo.make()
    u = _u(*shape)
    est(u).backward(torch.full(shape, 0.5))
    expected = est.expected_grad(u.detach()).to(torch.float32)
    assert torch.allclose(u.grad, 0.5 * expected, rtol=1e-6, atol=0)
    assert (u.grad != 0).all()  # dense: every neuron of an output layer gets gradient
    # and the same values twice (no draw), whatever the generator
    u.grad = None
    torch.manual_seed(123)
    est(u).backward(torch.full(shape, 0.5))
    assert torch.allclose(u.grad, 0.5 * expected, rtol=1e-6, atol=0)
    # the theory says so too
    assert torch.equal(est.active_prob(u.detach()), torch.ones(shape, dtype=torch.float64))
    assert torch.allclose(est.estimate(u.detach()), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("law", ["uniform", "normal"])
@pytest.mark.parametrize("shape", [(128, 20), (16, 10), (10,), (8, 2, 3, 3), (5, 64)])
def test_the_c_passes_give_the_bits_of_the_pytorch_expected_value(shape, law):
    """The native expected value (uniform: the rule and the value in C; normal:
    the rule and the exponent in C, PyTorch's exp, the scale and the product
    in C) equals the reference's operations bit for bit: NaN membranes,
    silent and firing samples, entries beyond the uniform law's support, a
    meter counting."""
    from snntorch_localzo._ops.spike import native, reference

    est = localzo.make(law, track=True)
    spec = est.spec
    u = _u(*shape).detach()
    flat = u.view(-1)
    flat[::7] += 1.0  # some samples fire
    flat[5::11] -= 40.0  # far below threshold: beyond the largest step's reach
    flat[3] = float("nan")
    if not native.exact_fused(u, spec):
        pytest.skip("the C loops are not built here")
    grad = torch.randn(shape)
    acc = torch.zeros(5, dtype=torch.int64)
    ours = native.exact_backward(grad, u, spec, acc)
    ref_acc = torch.zeros(5, dtype=torch.int64)
    ref = reference.exact_backward(grad, spec.scale(u), spec, None, ref_acc)
    # exp(NaN) is NaN; the uniform law's support test is false for NaN: zero
    assert torch.equal(ours.isnan(), ref.isnan()) and ours.isnan().sum() == (law == "normal")
    assert torch.equal(ours.nan_to_num(), ref.nan_to_num())
    assert torch.equal(acc, ref_acc)
    # and through the spike function, as the glue runs it
    w = u.clone().requires_grad_()
    est(w).backward(grad)
    assert torch.equal(w.grad.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize("law", ["uniform", "normal"])
@pytest.mark.parametrize("shape", [(6, 32, 10), (4, 3, 2, 3, 3)])
def test_a_sequence_keeps_the_c_expected_value_with_the_bits_of_pytorch(shape, law, monkeypatch):
    """A sequence layer's small calls (each time step's samples one row): the
    C passes' non-zero entries and values equal PyTorch's expected value and
    nonzero bit for bit (NaN, entries beyond the uniform law's support), and
    localzo.Leaky's native sequence takes them."""
    from snntorch_localzo._ops.sampling import expected_estimate, nonzero_entries
    from snntorch_localzo._ops.spike import native

    spec = localzo.make(law).spec
    u = _u(*shape).detach()
    flat = u.view(-1)
    flat[::7] += 1.0
    flat[5::11] -= 40.0
    flat[3] = float("nan")
    rows = sample_rows(shape, shape[0])
    if not native.exact_fused(u.reshape(rows), spec):
        pytest.skip("the C loops are not built here")
    index, g = native.exact_entries(u, spec, rows)
    ref_index, ref_g = nonzero_entries(expected_estimate(spec.scale(u.reshape(rows)), spec))
    assert torch.equal(index, ref_index) and torch.equal(g.isnan(), ref_g.isnan())
    assert torch.equal(g.nan_to_num(), ref_g.nan_to_num()) and g.dtype == ref_g.dtype
    assert (law == "uniform") == (index.numel() < u.numel())  # the far entries: zero beyond sqrt(3) delta
    calls, original = [], native.exact_entries
    monkeypatch.setattr(native, "exact_entries", lambda *a: calls.append(1) or original(*a))
    layer = localzo.Leaky(beta=0.9, spike_grad=localzo.make(law))
    x = torch.rand(5, 8, 10).requires_grad_()
    with localzo.use_backend("auto"):
        layer.forward_sequence(x)[0].sum().backward()
    assert bool(calls) == MODERN_SNNTORCH  # (older snnTorch: the step loop, the spike function's C)


def test_only_small_samples_and_only_the_adaptive_step():
    spec = localzo.make().spec
    assert spec.step.is_exact(64) and not spec.step.is_exact(65)
    assert not localzo.make(delta=0.05).spec.step.is_exact(1)
    assert not localzo.make("atan").spec.step.is_exact(1)
    assert not AdaptiveDelta(exact=0).is_exact(1)
    # a drawn layer of 65 neurons is sparse
    est = localzo.make()
    u = _u(256, 65)
    est(u).sum().backward()
    assert 0 < (u.grad != 0).float().mean() < 0.5


def test_entries_per_sample_of_a_call():
    assert sample_entries((4, 8)) == 8 and sample_entries((8,)) == 8 and sample_entries(()) == 1
    assert sample_entries((4, 3, 5, 5)) == 75 and sample_entries((0, 8)) == 8
    assert sample_entries((10, 4, 8), 10) == 8 and sample_entries((10, 8), 10) == 8
    assert sample_entries((10,), 10) == 1 and sample_entries((10, 4, 3, 5), 10) == 15
    # the same calls with each sample as one row (the rule's and the native draw's unit)
    assert sample_rows((4, 8)) == (4, 8) and sample_rows((8,)) == (1, 8) and sample_rows(()) == (1, 1)
    assert sample_rows((4, 3, 5, 5)) == (4, 3, 5, 5) and sample_rows((10, 4, 8), 10) == (40, 8)
    assert sample_rows((10, 8), 10) == (10, 8) and sample_rows((10,), 10) == (10, 1)
    assert sample_rows((10, 4, 3, 5), 10) == (40, 3, 5)


def test_exact_travels_with_the_rule():
    rule = AdaptiveDelta(exact=7)
    assert type(rule).from_floats(rule.op_floats()) == rule
    assert isinstance(type(rule).from_floats(rule.op_floats()).exact, int)
    assert pickle.loads(pickle.dumps(rule)) == rule
    assert repr(rule) == "AdaptiveDelta(exact=7)"
    est = localzo.make(delta=rule)
    u = _u(16, 8)
    est(u).sum().backward()  # 8 entries > 7: drawn, sparse
    assert (u.grad == 0).any()


@pytest.mark.parametrize("law", ["uniform", "normal"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_leaky_layers_give_the_expected_value_on_every_path(backend, law):
    """localzo.Leaky (step and sequence) and LinearLeaky with 10 neurons:
    the same gradients as snn.Leaky with make() (or its normal law), on the
    backend's paths (natively the sequence's expected value in C)."""
    torch.manual_seed(3)
    x = torch.rand(6, 4, 10) * 1.4
    w = torch.linspace(0.5, 1.5, 10)

    def grads(run):
        xi = x.clone().requires_grad_()
        (run(xi) * w).sum().backward()
        return xi.grad

    theirs = snn.Leaky(beta=0.85, spike_grad=localzo.make(law))

    def step_loop(layer, xi):
        mem = layer.init_leaky()
        out = []
        for t in range(xi.shape[0]):
            spk, mem = layer(xi[t], mem)
            out.append(spk)
        return torch.stack(out)

    ref = grads(lambda xi: step_loop(theirs, xi))
    assert (ref != 0).float().mean() > 0.5  # the expected value reaches most entries
    ours = localzo.Leaky(beta=0.85, spike_grad=localzo.make(law))
    with localzo.use_backend(backend):
        assert torch.equal(grads(lambda xi: step_loop(ours, xi)), ref)
        assert torch.equal(grads(lambda xi: ours.forward_sequence(xi)[0]), ref)
    if MODERN_SNNTORCH:  # (LinearLeaky's sequence semantics: snnTorch >= 0.8)
        # Linear + Leaky: the identity weight turns it into the same layer
        lin = localzo.LinearLeaky(0.85, 10, 10, bias=False, spike_grad=localzo.make(law))
        with torch.no_grad():
            lin.linear.weight.copy_(torch.eye(10))
        with localzo.use_backend(backend):
            assert torch.allclose(grads(lambda xi: lin(xi)[0]), ref, rtol=1e-6, atol=1e-7)


def test_triton_mode_runs_small_layers_on_the_reference():
    """Not the kernels (they draw); the CPU in the interpreter as CUDA."""
    pytest.importorskip("triton")
    from snntorch_localzo._ops.leaky.reference import LeakyParams

    one = torch.tensor(1.0)
    p = LeakyParams(torch.tensor(0.9), one, one, 0)
    spec = localzo.make().spec
    x = torch.rand(5, 8, 10)
    with localzo.use_backend("triton"):
        assert planner.leaky_path(x, None, p, spec, 5) is Path.REFERENCE
    with localzo.use_backend("auto"):
        assert planner.leaky_path(x, None, p, spec, 5) is Path.NATIVE
