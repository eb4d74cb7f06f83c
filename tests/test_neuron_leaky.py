"""``localzo.Leaky`` against ``snn.Leaky``: constructor, forward values for
every option, state handling, gradients through time, fused and fallback
paths, in every mode (reference; auto: the native path on CPU tensors;
triton: the kernels through Triton's interpreter on CPU)."""

import inspect

import pytest
import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate, utils

import snntorch_localzo as localzo
from conftest import DEVICE, MODES, made_by
from snntorch_localzo import use_backend
from snntorch_localzo._ops import clib
from snntorch_localzo._ops.leaky import LeakyParams, leaky_step
from snntorch_localzo._ops.leaky.autograd import CSpikeStep, NativeLeaky, TritonLeaky
from snntorch_localzo._ops.spike import spike
from snntorch_localzo._ops.planner import NATIVE_MIN_NUMEL
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH

BACKENDS = MODES
FUSED_MODES = [m for m in MODES if m != "reference"]
HAS_RESET_DELAY = "reset_delay" in inspect.signature(snn.Leaky.__init__).parameters
fused_expected = pytest.mark.skipif(
    not MODERN_SNNTORCH, reason="the fused paths need snnTorch >= 0.8"
)
#: the autograd Function each mode's fused step runs in
FUNCTION = {"auto": NativeLeaky if DEVICE == "cpu" else TritonLeaky, "triton": TritonLeaky}


def test_same_constructor_arguments_as_installed_snntorch():
    ours = inspect.signature(localzo.Leaky.__init__).parameters
    theirs = inspect.signature(snn.Leaky.__init__).parameters
    assert list(ours) == list(theirs)
    assert ours["spike_grad"].default is None
    assert issubclass(localzo.Leaky, snn.Leaky)


def test_spike_grad_defaults_to_localzo_and_can_be_overridden():
    assert localzo.Leaky(beta=0.5).spike_grad == localzo.make()
    assert localzo.Leaky(0.5, 1.0, None).spike_grad == localzo.make()
    sg = localzo.make("atan")
    assert localzo.Leaky(0.5, 1.0, sg).spike_grad is sg  # positional, as snn.Leaky
    atan = surrogate.atan()
    assert localzo.Leaky(beta=0.5, spike_grad=atan).spike_grad is atan


def run(lif, x, mem_arg=True):
    """Steps over x[t]; returns stacked outputs of each position."""
    outs = []
    mem = lif.init_leaky() if mem_arg else None
    for t in range(x.shape[0]):
        out = lif(x[t], mem) if mem_arg else lif(x[t])
        if isinstance(out, tuple):
            if mem_arg:
                mem = out[1]
        else:
            out = (out,)
        outs.append(out)
    return [torch.stack(o) for o in zip(*outs)]


CASES = {
    "default": {},
    "zero": {"reset_mechanism": "zero"},
    "none": {"reset_mechanism": "none"},
    "threshold": {"threshold": 0.5},
    "graded": {"graded_spikes_factor": 2.0},
    "beta_tensor": {"beta": torch.tensor(0.75)},
    "init_hidden": {"init_hidden": True},
    "init_hidden_output": {"init_hidden": True, "output": True},
    "output": {"output": True},
    # reference (fallback) cases
    "learn_beta": {"learn_beta": True},
    "learn_threshold": {"learn_threshold": True},
    "per_neuron_beta": {"beta": torch.linspace(0.1, 0.9, 72)},
    "inhibition": {"inhibition": True},
    "state_quant": {"state_quant": lambda m: torch.round(m * 8) / 8},
    "learn_graded": {"learn_graded_spikes_factor": True},
    "surrogate_disable": {"surrogate_disable": True},
    "atan": {"spike_grad": surrogate.atan()},
}
if HAS_RESET_DELAY:
    CASES["reset_delay_false"] = {"reset_delay": False}
FUSED = {"default", "zero", "none", "threshold", "graded", "beta_tensor", "init_hidden",
         "init_hidden_output", "output"}


def build_pair(case):
    kwargs = {"beta": 0.875, **CASES[case]}
    theirs_kwargs = dict(kwargs)
    theirs_kwargs.setdefault("spike_grad", localzo.make())
    torch.manual_seed(0)
    ours = localzo.Leaky(**kwargs)
    theirs = snn.Leaky(**theirs_kwargs)
    return ours, theirs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_equals_snntorch(case, backend):
    torch.manual_seed(1)
    x = torch.rand(6, 3, 72, device=DEVICE) * 1.2
    ours, theirs = build_pair(case)
    ours, theirs = ours.to(DEVICE), theirs.to(DEVICE)
    mem_arg = not CASES[case].get("init_hidden", False)
    with use_backend(backend):
        a = run(ours, x, mem_arg)
    b = run(theirs, x, mem_arg)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert 0 < a[0].count_nonzero() < a[0].numel()  # some spikes, not all


@fused_expected
@pytest.mark.parametrize("mode", FUSED_MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_path_taken_exactly_where_documented(case, mode):
    ours, _ = build_pair(case)
    ours = ours.to(DEVICE)
    # the native CPU step runs from NATIVE_MIN_NUMEL entries where the spike function's
    # fused C backward does not cover the call (below, the reference's dense draw is
    # cheaper: test_small_cpu_steps_take_the_reference; where it covers the call, the
    # reference step with that backward is the faster at every size)
    # (72 neurons: more than make()'s exact, below which every path gives the expected value)
    native_cpu = mode == "auto" and DEVICE == "cpu"
    rows = -(-NATIVE_MIN_NUMEL // 72) if native_cpu else 3
    x = torch.rand(rows, 72, device=DEVICE, requires_grad=True)

    def spikes():
        with use_backend(mode):
            out = ours(x) if CASES[case].get("init_hidden") else ours(x, ours.init_leaky())
        return out[0] if isinstance(out, tuple) else out

    if native_cpu:
        # make()'s default draws a step's estimate by the incoming gradient in its spike
        # function's backward: the reference step; the law's draw (in forward) can be native
        assert not made_by(spikes(), FUNCTION[mode])
        if getattr(ours.spike_grad, "sampling", None) == "auto":
            ours.spike_grad = localzo.make(sampling="law")
    with pytest.MonkeyPatch.context() as mp:
        if native_cpu:
            mp.setattr("snntorch_localzo._ops.planner._fused_spike", lambda u, spec: False)
        spk = spikes()
    assert made_by(spk, FUNCTION[mode]) == (case in FUSED)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_half_precision_forward_equals_snntorch(dtype, reset, backend):
    torch.manual_seed(2)
    x = (torch.rand(6, 3, 24, device=DEVICE) * 1.2).to(dtype)
    ours = localzo.Leaky(beta=0.9, threshold=0.75, reset_mechanism=reset).to(DEVICE)
    theirs = snn.Leaky(beta=0.9, threshold=0.75, reset_mechanism=reset, spike_grad=localzo.make())
    with use_backend(backend):
        a = run(ours, x)
    b = run(theirs.to(DEVICE), x)
    for p, q in zip(a, b):
        assert p.dtype == dtype and torch.equal(p, q)


class InjectedSpike:
    """LocalZO spike function with given |z| for each step: snnTorch calls the
    spike gradient twice per step (reset, then fire)."""

    def __init__(self, spec, absz):
        self.spec, self.absz, self.calls = spec, absz, 0

    def __call__(self, u):
        step = self.calls // 2
        self.calls += 1
        return spike(u, self.spec, None, self.absz[step])


@pytest.mark.skipif(
    not MODERN_SNNTORCH,
    reason="snnTorch 0.7's Leaky subtracts before decaying, beta * (mem - reset * thr); "
    "the fused step implements >= 0.8 and localzo.Leaky does not use it on 0.7",
)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset", [0, 1])
def test_gradients_through_time_equal_snntorch_given_z(reset, backend):
    """The fused step chained over time gives the same input gradients as
    snnTorch's autograd through snn.Leaky with the same directions."""
    torch.manual_seed(3)
    T, shape = 8, (4, 30)
    est = localzo.make("normal", delta=0.3, samples=2)
    absz = est.dist.abs_sample((T, 2) + shape).to(DEVICE)
    params = LeakyParams(*(torch.tensor(c, device=DEVICE) for c in (0.9, 1.0, 1.0)), reset)
    x = (torch.rand((T,) + shape, device=DEVICE) * 1.3).requires_grad_(True)
    w = torch.randn((T,) + shape, device=DEVICE)
    v = torch.randn(shape, device=DEVICE)

    def loss(spikes, mem):
        return (torch.stack(spikes) * w).sum() + (mem * v).sum()

    with use_backend(backend):
        mem, spikes = None, []
        for t in range(T):
            spk, mem = leaky_step(x[t], mem, params, est.spec, absz=absz[t])
            spikes.append(spk)
        (gx_ours,) = torch.autograd.grad(loss(spikes, mem), x)

    lif = snn.Leaky(
        beta=0.9, spike_grad=InjectedSpike(est.spec, absz),
        reset_mechanism=["subtract", "zero"][reset],
    ).to(DEVICE)
    mem, spikes = lif.init_leaky(), []
    for t in range(T):
        spk, mem = lif(x[t], mem)
        spikes.append(spk)
    (gx_theirs,) = torch.autograd.grad(loss(spikes, mem), x)
    assert gx_ours.count_nonzero() > 0
    assert torch.equal(gx_ours, gx_theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trains_in_a_network_with_snntorch_utils(backend):
    torch.manual_seed(4)
    sg = localzo.make("normal", delta=0.3, track=True)
    net = nn.Sequential(
        nn.Linear(10, 32),
        localzo.Leaky(beta=0.9, init_hidden=True, spike_grad=sg),
        nn.Linear(32, 5),
        localzo.Leaky(beta=0.9, init_hidden=True, output=True, spike_grad=sg),
    ).to(DEVICE)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with use_backend(backend):
        for _ in range(3):
            utils.reset(net)
            x = torch.rand(6, 8, 10, device=DEVICE) * 2
            mems = []
            for t in range(6):
                spk, mem = net(x[t])
                mems.append(mem)
            loss = torch.stack(mems).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            g = net[0].weight.grad
            assert torch.isfinite(g).all() and g.abs().sum() > 0
            opt.step()
    assert 0 < sg.active_fraction < 1
    utils.reset(net)
    assert net[1].mem.abs().sum() == 0 and not net[1].mem.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_and_detach_hidden_classmethods_as_snntorch(backend):
    ours = localzo.Leaky(beta=0.5, init_hidden=True)
    theirs = snn.Leaky(beta=0.5, init_hidden=True, spike_grad=localzo.make())
    x = torch.full((3,), 0.7, requires_grad=True)
    with use_backend(backend):
        for lif in (ours, theirs):
            lif(x)
            lif(x)
        assert ours.mem.requires_grad and theirs.mem.requires_grad
        assert torch.equal(ours.mem, theirs.mem)
        snn.Leaky.detach_hidden()
        assert not ours.mem.requires_grad and not theirs.mem.requires_grad
        snn.Leaky.reset_hidden()
        assert torch.equal(ours.mem, theirs.mem) and ours.mem.abs().sum() == 0
        for lif in (ours, theirs):  # and they run on from the reset state alike
            lif(x)
        assert torch.equal(ours.mem, theirs.mem)


def test_init_hidden_rejects_mem_argument():
    lif = localzo.Leaky(beta=0.5, init_hidden=True)
    with pytest.raises(TypeError):
        lif(torch.ones(2), torch.ones(2))


@pytest.mark.skipif(DEVICE != "cpu" or not MODERN_SNNTORCH, reason="the native path is the CPU's")
def test_cpu_steps_with_the_c_spike_backward_take_the_c_step():
    """make()'s CPU steps, small or from NATIVE_MIN_NUMEL neurons, run the C
    step around the spike function's C backward (without the C loops, the
    reference); a sequence takes the native scan."""
    lif = localzo.Leaky(beta=0.9)
    small = torch.rand(4, 72, requires_grad=True)
    spk, _ = lif(small, lif.init_leaky())
    assert not made_by(spk, NativeLeaky)
    assert made_by(spk, CSpikeStep) == (clib.c_module() is not None)
    if clib.c_module() is not None:  # a step the fused spike backward covers: at every size
        big = torch.rand(-(-NATIVE_MIN_NUMEL // 72), 72, requires_grad=True)
        spk, _ = lif(big, lif.init_leaky())
        assert made_by(spk, CSpikeStep) and not made_by(spk, NativeLeaky)
    spk_seq, _ = lif.forward_sequence(small.unsqueeze(0))  # a sequence decides at once: fused
    assert made_by(spk_seq, NativeLeaky)


@pytest.mark.skipif(DEVICE != "cpu" or not MODERN_SNNTORCH or clib.c_module() is None,
                    reason="the spike function's C backward is the CPU's")
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("make_args, shape, c_pass", [
    ((), (16, 96), "weighted_uniform"),  # make(): the weighted draw
    ((), (4, 8), "exact_uniform"),  # make() on a small layer: the expected value
    (("uniform", 0.5), (16, 96), "spike_backward"),  # a fixed step
])
def test_a_step_with_the_c_spike_backward_runs_one_c_step(reset, make_args, shape, c_pass, monkeypatch):
    """Where the spike function's backward is a C pass (``make()`` on the CPU),
    a step is one step of the C scan and that pass in backward
    (``CSpikeStep``: the pass subtracts the threshold from the membrane
    itself, then one C pass adds the membrane's gradient and forms the
    previous membrane's), not snnTorch's forward (which calls the spike
    function for the reset too), with the same spikes, membranes and, from
    the same seed, the same gradients as ``snn.Leaky`` with the same
    ``make()`` (a loss on the spikes and on the last membrane), for each of
    the C passes the spike function's backward takes."""
    forwards = []
    parent = snn.Leaky.forward
    monkeypatch.setattr(snn.Leaky, "forward", lambda self, *a, **k: forwards.append(1) or parent(self, *a, **k))
    module = clib.c_module()
    passes = []
    for name in (c_pass, "step_grad"):
        monkeypatch.setattr(module, name, lambda *a, _f=getattr(module, name), _n=name: passes.append(_n) or _f(*a))
    torch.manual_seed(6)
    x = (torch.rand((5,) + shape) * 1.4 - 0.2).requires_grad_(True)
    w, v = torch.randn((5,) + shape), torch.randn(shape)
    sg = (lambda: localzo.make(make_args[0], delta=make_args[1])) if make_args else localzo.make

    def run_and_grad(cls):
        lif = cls(beta=0.875, threshold=0.75, reset_mechanism=reset, spike_grad=sg())
        mem, spikes, mems = lif.init_leaky(), [], []
        for t in range(x.shape[0]):
            spk, mem = lif(x[t], mem)
            spikes.append(spk)
            mems.append(mem)
        torch.manual_seed(7)
        (grad,) = torch.autograd.grad((torch.stack(spikes) * w).sum() + (mem * v).sum(), x)
        return torch.stack(spikes), torch.stack(mems), grad

    ours = run_and_grad(localzo.Leaky)
    assert not forwards
    assert passes.count(c_pass) == x.shape[0] and passes.count("step_grad") == x.shape[0]
    lif = localzo.Leaky(beta=0.875, reset_mechanism=reset)
    assert made_by(lif(x[0], lif.init_leaky())[0], CSpikeStep)
    theirs = run_and_grad(snn.Leaky)
    assert len(forwards) == x.shape[0]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert 0 < int(ours[0].count_nonzero()) < ours[0].numel() and int(ours[2].count_nonzero()) > 0
