"""The LocalZO object: forward, backward, dtypes, errors, copies, sparsity meter."""

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
import snntorch as snn

import snntorch_localzo as localzo
from snntorch_localzo._ops import clib, sampling

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4, 5)])
def test_forward_is_heaviside_in_input_dtype(dtype, shape):
    torch.manual_seed(0)
    u = torch.randn(shape).to(dtype)
    if u.numel():
        u.view(-1)[0] = 0.0  # H(0) = 0, as in snnTorch
    spk = localzo.make()(u)
    assert spk.dtype == dtype and spk.shape == u.shape
    assert torch.equal(spk, (u > 0).to(dtype))


def test_forward_equals_snntorch_surrogates():
    from snntorch import surrogate

    u = torch.randn(1000)
    for sg in (surrogate.atan(), surrogate.fast_sigmoid(), surrogate.sigmoid()):
        assert torch.equal(localzo.make()(u), sg(u))


def _reference_grad(est, u, grad_out, seed):
    """What the reference backward must return: grad_out * G with |z| drawn by
    the reference sampler from the same seed ([samples, *u.shape] on u's device)."""
    torch.manual_seed(seed)
    spec = est.spec
    absz = sampling.draw_abs_z(
        spec, spec.table(u.device), u.shape, device=u.device, dtype=sampling.compute_dtype(u.dtype)
    )
    g = sampling.estimate(u, absz, spec)
    return (grad_out.to(g.dtype) * g).to(grad_out.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("dist", ["normal", "uniform", "laplace", "atan", "sigmoid", "fast_sigmoid"])
def test_backward_multiplies_incoming_gradient_by_estimate(dist, samples, dtype):
    torch.manual_seed(0)
    # a fixed step (the adaptive one: tests/test_adaptive.py)
    est = localzo.make(dist, 0.05 if dist in ("normal", "uniform", "laplace") else None, samples=samples)
    u = (torch.randn(64, 33) * 3 * est.delta).to(dtype).requires_grad_(True)
    grad_out = torch.randn(64, 33).to(dtype)
    expected = _reference_grad(est, u.detach(), grad_out, seed=11)
    torch.manual_seed(11)
    with localzo.use_backend("reference"):
        est(u).backward(grad_out)
    assert u.grad.dtype == dtype
    assert torch.equal(u.grad, expected)
    assert 0 < torch.count_nonzero(u.grad) < u.numel() or dist in ("atan", "fast_sigmoid")


def test_estimate_formula_by_hand():
    """G_m = c/(2 delta m) * sum_i |z_i|^p 1[|u| < delta |z_i|], checked on chosen values."""
    normal = localzo.make("normal", delta=0.5, samples=2).spec
    u = torch.tensor([0.0, 0.2, -0.2, 0.9])
    absz = torch.tensor([[1.0, 0.3, 0.5, 1.0], [0.1, 1.0, 0.2, 2.0]])
    # sample 0 active at u=0 (0<0.5), not 0.2 (0.2<0.15 no), -0.2 (0.2<0.25 yes), 0.9 (no)
    # sample 1 active at u=0 (0<0.05), 0.2 (0.2<0.5), not -0.2 (0.2<0.1 no), 0.9 (0.9<1.0)
    expected = torch.tensor([1.0 + 0.1, 1.0, 0.5, 2.0]) / (2 * 0.5 * 2)
    torch.testing.assert_close(sampling.estimate(u, absz, normal), expected)
    fast = localzo.make("fast_sigmoid", slope=2.0, samples=2).spec  # p = -1, c = 1, delta = 0.5
    expected = torch.tensor([1 / 1.0 + 1 / 0.1, 1 / 1.0, 1 / 0.5, 1 / 2.0]) / (2 * 0.5 * 2)
    torch.testing.assert_close(sampling.estimate(u, absz, fast), expected)


def test_same_seed_same_gradients_different_seed_different():
    est = localzo.make("normal", delta=0.5)
    u0 = torch.randn(200, 50)

    def grad(seed):
        torch.manual_seed(seed)
        u = u0.clone().requires_grad_(True)
        est(u).sum().backward()
        return u.grad

    assert torch.equal(grad(1), grad(1))
    assert not torch.equal(grad(1), grad(2))


def test_does_not_modify_input():
    u = torch.randn(10, requires_grad=True)
    before = u.detach().clone()
    localzo.make()(u).sum().backward()
    assert torch.equal(u.detach(), before)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"dist": "gauss"}, ValueError, "unknown `dist` 'gauss'"),
        ({"dist": 3}, TypeError, "`dist` must be"),
        ({"delta": 0.0}, ValueError, "`delta` must be a finite number > 0"),
        ({"delta": -1.0}, ValueError, "`delta`"),
        ({"delta": float("nan")}, ValueError, "`delta`"),
        ({"delta": "0.1"}, TypeError, "`delta` must be a positive number"),
        ({"samples": 0}, ValueError, "`samples` must be an integer >= 1"),
        ({"samples": 1.5}, TypeError, "`samples`"),
        ({"samples": True}, TypeError, "`samples`"),
        ({"dist": "atan", "alpha": 0.0}, ValueError, "`alpha`"),
        ({"dist": "sigmoid", "slope": -2}, ValueError, "`slope`"),
        ({"dist": "normal", "alpha": 2.0}, TypeError, "takes \\['delta'\\], not \\['alpha'\\]"),
        ({"dist": "atan", "delta": 0.1}, TypeError, "fixed by its surrogate parameter"),
        ({"dist": "fast_sigmoid", "alpha": 1.0}, TypeError, "takes \\['slope'\\]"),
        ({"track": "yes"}, TypeError, "`track` must be a bool"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        localzo.make(**kwargs)


@pytest.mark.parametrize("bad", [torch.arange(4), torch.tensor([True, False]), [0.1, 0.2], 0.3])
def test_invalid_inputs_name_the_argument(bad):
    with pytest.raises(TypeError, match="`mem_shift` must be a"):
        localzo.make()(bad)


def test_repr_equality_pickle_deepcopy():
    est = localzo.make("sigmoid", slope=10, samples=2, track=True)
    assert repr(est) == "LocalZO(dist='sigmoid', slope=10, samples=2, track=True)"
    assert repr(localzo.make(delta=0.05)) == "LocalZO(dist='normal', delta=0.05, samples=1)"
    assert repr(localzo.make()) == "LocalZO(dist='uniform', delta=AdaptiveDelta(), samples=1)"
    assert repr(localzo.make("normal")) == "LocalZO(dist='normal', delta=AdaptiveDelta(), samples=1)"
    for clone in (pickle.loads(pickle.dumps(est)), copy.deepcopy(est)):
        assert clone == est and clone is not est
        assert clone.track and clone.meter is not est.meter
    assert localzo.make("normal", delta=0.1) != localzo.make("normal", delta=0.2)


def _net(spike_grad):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), snn.Leaky(beta=0.9, spike_grad=spike_grad, init_hidden=True)
    )


def test_whole_model_torch_save_roundtrip():
    net = _net(localzo.make("laplace", delta=0.2, track=True))
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    sg = loaded[1].spike_grad
    assert isinstance(sg, localzo.LocalZO) and sg == net[1].spike_grad
    x = torch.rand(6) * 3
    assert torch.equal(loaded(x), _net(localzo.make("laplace", delta=0.2))(x))


@pytest.mark.parametrize("no_c", ["0", "1"])
def test_activity_meter_counts_nonzero_estimates(no_c, monkeypatch):
    """The counts, with the C loops (one C call records a backward call on
    the CPU) and without (tensor operations)."""
    monkeypatch.setattr(clib, "ENABLED", no_c == "0")
    torch.manual_seed(0)
    est = localzo.make("normal", delta=0.1, track=True)
    u = torch.randn(1000, requires_grad=True)
    est(u).backward(torch.ones(1000))
    frac = est.active_fraction
    assert frac == pytest.approx(torch.count_nonzero(u.grad).item() / 1000)
    assert 0.0 < frac < 0.2
    u2 = torch.randn(500, requires_grad=True)
    est(u2).backward(torch.ones(500))
    total = torch.count_nonzero(u.grad) + torch.count_nonzero(u2.grad)
    assert est.active_fraction == pytest.approx(total.item() / 1500)
    assert est.meter.calls == 2
    assert est.meter.last_fraction == pytest.approx(torch.count_nonzero(u2.grad).item() / 500)
    est.reset_stats()
    assert est.meter.total == 0
    with pytest.raises(RuntimeError, match="track=True"):
        localzo.make().active_fraction


def test_meter_ignores_forward_only_calls():
    """snnTorch calls spike_grad twice per step (reset and fire); only backward counts."""
    est = localzo.make(track=True)
    with torch.no_grad():
        est(torch.randn(100))
    est(torch.randn(100, requires_grad=True))  # no backward
    assert est.meter.total == 0


def test_registered_in_snntorch_surrogate_without_other_changes():
    code = (
        "import snntorch.surrogate as s; before = set(vars(s)); "
        "import snntorch_localzo as l; after = set(vars(s)); "
        "assert after - before == {'localzo'}, after - before; "
        "assert s.localzo is l.make; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_expected_grad_and_sample_api():
    est = localzo.make("uniform", delta=0.1)
    g = est.expected_grad(torch.tensor([0.0, 0.5]))
    assert g[0].item() == pytest.approx(3 / (4 * 3**0.5 * 0.1)) and g[1].item() == 0.0
    z = est.sample((1000,))
    assert z.shape == (1000,) and z.abs().max() <= 3**0.5
