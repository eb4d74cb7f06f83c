"""Bad input gets an error that names the argument and says what was
expected. The README's table of bad inputs lists exactly the cases of
BAD_INPUTS."""

import math
import warnings
from pathlib import Path

import pytest
import torch
import snntorch as snn

import snntorch_localzo as localzo
from snntorch_localzo import _backend

HERE = Path(__file__).resolve().parent


def _leaky_step(**call):
    def run():
        lif = localzo.Leaky(beta=0.9)
        lif(call.get("input_", torch.rand(2, 3)), call.get("mem"))
    return run


BAD_INPUTS = {
    # name: (callable, exception, message fragment)
    "make: unknown dist": (lambda: localzo.make("gauss"), ValueError, "unknown `dist`"),
    "make: delta <= 0": (lambda: localzo.make(delta=0.0), ValueError, "`delta` must be"),
    "make: delta not finite": (lambda: localzo.make(delta=float("inf")), ValueError, "`delta`"),
    "make: samples < 1": (lambda: localzo.make(samples=0), ValueError, "`samples`"),
    "make: samples not an integer": (lambda: localzo.make(samples=2.5), TypeError, "`samples`"),
    "make: parameter of another dist": (lambda: localzo.make("normal", slope=3), TypeError, "takes"),
    "make: delta for a twin": (lambda: localzo.make("atan", delta=0.1), TypeError, "fixed by"),
    "make: AdaptiveDelta for a twin": (
        lambda: localzo.make("atan", delta=localzo.AdaptiveDelta()), TypeError, "AdaptiveDelta"),
    "AdaptiveDelta: active not in (0, 1)": (
        lambda: localzo.AdaptiveDelta(active=1.5), ValueError, "`active` must be in (0, 1)"),
    "AdaptiveDelta: ceil <= floor": (
        lambda: localzo.AdaptiveDelta(floor=1.0, ceil=0.5), ValueError, "`ceil`"),
    "spike_grad: integer tensor": (lambda: localzo.make()(torch.arange(3)), TypeError, "`mem_shift`"),
    "spike_grad: boolean tensor": (
        lambda: localzo.make()(torch.ones(3, dtype=torch.bool)), TypeError, "`mem_shift`"),
    "Leaky: beta > 1": (lambda: localzo.Leaky(beta=1.5), ValueError, "`beta` must lie in [0, 1]"),
    "Leaky: beta < 0": (lambda: localzo.Leaky(beta=torch.tensor([0.5, -0.1])), ValueError, "`beta`"),
    "Leaky: integer input": (_leaky_step(input_=torch.ones(2, 3, dtype=torch.int64)), TypeError,
                             "`input_` must be a floating-point tensor"),
    "Leaky: boolean input": (_leaky_step(input_=torch.ones(2, 3, dtype=torch.bool)), TypeError,
                             "`input_`"),
    "Leaky: mem shape differs from input": (_leaky_step(mem=torch.ones(2, 4)), ValueError,
                                            "`mem` has shape (2, 4) but must be (2, 3)"),
    "Leaky: mem on another device": (_leaky_step(mem=torch.zeros(2, 3, device="meta")),
                                     ValueError, "`mem` is on meta"),
    "Leaky: mem dtype differs from input": (
        _leaky_step(mem=torch.ones(2, 3, dtype=torch.float64)), TypeError,
        "`mem` has dtype torch.float64 but `input_` is torch.float32"),
    "spike_grad: localzo.make without parentheses": (
        lambda: snn.Leaky(beta=0.9, spike_grad=localzo.make)(torch.rand(2, 3), torch.zeros(2, 3)),
        TypeError, "write `spike_grad=localzo.make()`"),
    "forward_sequence: rank < 2": (
        lambda: localzo.Leaky(beta=0.9).forward_sequence(torch.rand(5)), ValueError,
        "sequence tensor of shape [T, batch"),
    "forward_sequence: mem shape": (
        lambda: localzo.Leaky(beta=0.9).forward_sequence(torch.rand(5, 2, 3), torch.ones(2, 4)),
        ValueError, "`mem` has shape (2, 4) but must be (2, 3)"),
    "LinearLeaky: beta > 1": (lambda: localzo.LinearLeaky(1.2, 3, 4), ValueError, "`beta`"),
    "LinearLeaky: rank != 3": (lambda: localzo.LinearLeaky(0.9, 3, 4)(torch.rand(5, 3)),
                               ValueError, "[T, batch, in_features]"),
    "LinearLeaky: features": (lambda: localzo.LinearLeaky(0.9, 3, 4)(torch.rand(5, 2, 6)),
                              ValueError, "expected in_features=3"),
    "LinearLeaky: integer input": (
        lambda: localzo.LinearLeaky(0.9, 3, 4)(torch.ones(5, 2, 3, dtype=torch.int32)), TypeError,
        "`input_` must be a floating-point tensor"),
    "LinearLeaky: mem shape": (
        lambda: localzo.LinearLeaky(0.9, 3, 4)(torch.rand(5, 2, 3), torch.ones(2, 3)),
        ValueError, "`mem` has shape (2, 3) but must be (2, 4)"),
    "backend: unknown mode": (lambda: localzo.set_backend("cuda"), ValueError, "`mode` must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(case):
    fn, exc, fragment = BAD_INPUTS[case]
    with pytest.raises(exc) as info:
        fn()
    assert fragment in str(info.value)


def test_readme_lists_every_bad_input():
    readme = (HERE.parent / "README.md").read_text()
    for case in BAD_INPUTS:
        assert f"| {case} |" in readme, case


def test_learnable_beta_leaving_the_range_is_clamped_as_in_snntorch():
    lif = localzo.Leaky(beta=0.5, learn_beta=True)
    ref = snn.Leaky(beta=0.5, learn_beta=True, spike_grad=localzo.make())
    with torch.no_grad():
        lif.beta.fill_(1.3)
        ref.beta.fill_(1.3)
    x = torch.rand(4, 5)
    assert torch.equal(lif(x, lif.init_leaky())[1], ref(x, ref.init_leaky())[1])




def test_zero_state_of_another_shape_means_zero_as_in_snntorch():
    """init_leaky() returns zeros shaped like the previous batch: a smaller last
    batch starts from zero, as with snn.Leaky (snnTorch tutorial 6's loop)."""
    ours = localzo.Leaky(beta=0.9)
    theirs = snn.Leaky(beta=0.9, spike_grad=localzo.make())
    for lif in (ours, theirs):
        lif(torch.rand(4, 3), lif.init_leaky())
    x = torch.rand(2, 3)
    a = ours(x, ours.init_leaky())
    b = theirs(x, theirs.init_leaky())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    seq, _ = localzo.Leaky(beta=0.9).forward_sequence(torch.rand(3, 2, 3), torch.zeros(5, 3))
    assert seq.shape == (3, 2, 3)


def test_make_takes_a_distribution_instance():
    dist = localzo.distributions.Laplace(delta=0.2)
    est = localzo.make(dist)
    assert est.dist is dist and est.delta == 0.2
    u = torch.randn(50, requires_grad=True)
    est(u).sum().backward()
    assert torch.isfinite(u.grad).all()
    with pytest.raises(TypeError, match="given with a Distribution instance"):
        localzo.make(dist, delta=0.1)


def test_set_backend_triton_says_what_it_can_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if _backend.triton_available():
        with pytest.warns(UserWarning, match="interpreter is off"):
            with localzo.use_backend("triton"):
                pass
    monkeypatch.setattr(_backend, "_triton_ok", False)
    with pytest.raises(RuntimeError, match="Triton does not import here"):
        localzo.set_backend("triton")
    assert localzo.get_backend() == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        localzo.set_backend("reference")
        localzo.set_backend("auto")


def test_shared_argument_checks_name_the_argument():
    """TypeError for a wrong type, ValueError for a wrong value, the argument named."""
    from snntorch_localzo._checks import check_choice, check_nonnegative

    assert check_nonnegative("x", 0) == 0.0 and check_choice("form", "a", ("a", "b")) == "a"
    for value, error in ((-1.0, ValueError), (math.inf, ValueError), (math.nan, ValueError),
                         (True, TypeError), ("1", TypeError)):
        with pytest.raises(error, match="`x`"):
            check_nonnegative("x", value)
    for value, error in (("c", ValueError), (None, TypeError), (1, TypeError)):
        with pytest.raises(error, match="`form` must be one of \\('a', 'b'\\)"):
            check_choice("form", value, ("a", "b"))
