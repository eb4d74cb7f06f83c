"""OPZO (snntorch_localzo.opzo): the feedback estimate, the OTTT baseline against
an independent autograd reference, the forward against snnTorch's own, no
autograd graph, memory constant in T, reproducibility, save/load, errors, the
CLI and the benchmark script."""

import copy
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import warnings

import pytest
import snntorch as snn
import snntorch.surrogate as surrogate
import snntorch.utils
import torch
import torch.nn as nn
import torch.nn.functional as F

import snntorch_localzo as localzo
from snntorch_localzo import opzo
from snntorch_localzo.opzo import trainer as trainer_module

ROOT = Path(__file__).resolve().parent.parent
LEAKIES = {"snn.Leaky": snn.Leaky, "localzo.Leaky": localzo.Leaky}


def fc_net(sizes=(12, 16, 16, 4), betas=(0.8, 0.9), leaky=snn.Leaky, **lif):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        kw = dict(spike_grad=surrogate.atan(), **lif)
        layers += [nn.Linear(a, b), leaky(beta=betas[i % len(betas)], init_hidden=True, **kw)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def conv_net(leaky=snn.Leaky):
    """Conv -> AvgPool -> Leaky (pooling between the weight and its neuron),
    Flatten -> Linear -> Leaky, Linear readout."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), leaky(beta=0.85, init_hidden=True,
                                                           spike_grad=surrogate.atan()),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 8), leaky(beta=0.9, init_hidden=True,
                                                     spike_grad=surrogate.atan()),
        nn.Linear(8, 3),
    )


def boost(net, gain=3.0):
    """Larger weights so that every layer spikes in a short test sequence."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return net


def inputs(T=6, B=5, shape=(12,), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((T, B) + shape, generator=g) < 0.5).to(dtype)
    return x


# ---------------------------------------------------------------- feedback estimate
DRIFT = 0.2  # how far a layer's input moves from one step to the next


def estimate_M(noise, dual, steps, seed, momentum=0.99, alpha=0.1, n=20, n_out=5, B=16):
    """M from ``steps`` noisy evaluations of a non-linear map ``o = A tanh(s + alpha z)``
    whose input ``s`` drifts at every step (as a network's state does), so the
    pairs of dual noise do not cancel exactly. Returns M and the transpose
    Jacobian averaged over the drift, ``E[sech^2(s)] * A^T``."""
    g = torch.Generator().manual_seed(1234)
    A = torch.randn(n_out, n, generator=g, dtype=torch.float64)
    s0 = torch.randn(B, n, generator=g, dtype=torch.float64)
    drift = torch.Generator().manual_seed(seed + 1000)
    stream = opzo.NoiseStream(noise, dual, torch.Generator().manual_seed(seed))
    M = torch.zeros(n, n_out, dtype=torch.float64)
    for _ in range(steps):
        s = s0 + DRIFT * torch.randn(s0.shape, generator=drift, dtype=torch.float64)
        z = stream.next(s)
        opzo.momentum_update(M, z, torch.tanh(s + alpha * z) @ A.t(), alpha, momentum)
    xi = torch.randn((4000,) + s0.shape, generator=g, dtype=torch.float64)
    slope = (1 - torch.tanh(s0 + DRIFT * xi) ** 2).mean((0, 1))
    return M, slope[:, None] * A.t()


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.mark.parametrize("noise", opzo.NOISES)
@pytest.mark.parametrize("dual", [True, False])
def test_momentum_feedback_converges_to_transpose_jacobian(noise, dual):
    # single noise needs more steps (the o z^T / alpha term is not cancelled in pairs)
    steps, momentum = (3000, 0.999) if dual else (20000, 0.9999)
    M, JT = estimate_M(noise, dual, steps=steps, seed=0, momentum=momentum)
    assert cosine(M, JT) >= 0.99


@pytest.mark.parametrize("noise", opzo.NOISES)
def test_dual_noise_has_lower_variance(noise):
    def spread(dual):
        errs = []
        for seed in range(8):
            M, JT = estimate_M(noise, dual, steps=200, seed=seed)
            errs.append(float(((M / (1 - 0.99 ** 200) - JT) ** 2).sum()))
        return sum(errs) / len(errs)

    assert spread(True) < 0.5 * spread(False)


@pytest.mark.parametrize("noise", opzo.NOISES)
def test_noise_has_identity_second_moment(noise):
    z = opzo.draw_noise(noise, (20000, 6), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    second = z.t() @ z / z.shape[0]
    assert torch.allclose(second, torch.eye(6, dtype=torch.float64), atol=0.05)
    if noise == "rademacher":
        assert set(z.unique().tolist()) == {-1.0, 1.0}
    if noise == "sphere":
        assert torch.allclose(z.norm(dim=1), torch.full((20000,), math.sqrt(6), dtype=torch.float64))


def test_dual_stream_alternates_signs():
    stream = opzo.NoiseStream("gaussian", True, torch.Generator().manual_seed(0))
    like = torch.zeros(3, 4)
    a, b, c = stream.next(like).clone(), stream.next(like).clone(), stream.next(like).clone()
    assert torch.equal(b, -a) and not torch.equal(c, a) and not torch.equal(c, -a)


# ---------------------------------------------------------------- OTTT reference
def ottt_reference(net, x, y):
    """Independent OTTT gradients: per-step autograd with detached states; the
    weights act on the presynaptic traces (u = W a_hat + b c + detached rest),
    the spikes through the detached weights (the spatial path)."""
    layers, pre, current = [], [], None
    for m in net:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            current = (pre, m, [], [])
            layers.append(current)
            pre = []
        elif isinstance(m, snn.Leaky):
            current[3].append(m)
            current = None
        else:  # Flatten, AvgPool2d
            (current[2] if current is not None else pre).append(m)
    layers = [(pre, w, post, lif[0] if lif else None) for pre, w, post, lif in layers]
    for p in net.parameters():
        p.grad = None
    T = x.shape[0]
    mems = [None] * len(layers)
    traces = [None] * len(layers)
    bias_tr = [0.0] * len(layers)

    def op(w, inp, weight, bias):
        if isinstance(w, nn.Linear):
            return F.linear(inp, weight, bias)
        return F.conv2d(inp, weight, bias, w.stride, w.padding, w.dilation, w.groups)

    for t in range(T):
        h = x[t]
        for k, (pre, w, post, lif) in enumerate(layers):
            for m in pre:
                h = m(h)
            beta = float(lif.beta) if lif is not None else 0.0
            traces[k] = h.detach().clone() if traces[k] is None else beta * traces[k] + h.detach()
            bias_tr[k] = beta * bias_tr[k] + 1.0
            b = w.bias
            through_trace = op(w, traces[k], w.weight, None if b is None else b * bias_tr[k])
            cur = op(w, h, w.weight.detach(), None if b is None else b.detach())
            cur = cur + through_trace - through_trace.detach()
            for m in post:
                cur = m(cur)
            if lif is None:
                o = cur
                break
            thr = float(lif.threshold)
            prev = torch.zeros_like(cur) if mems[k] is None else mems[k]
            reset = (prev > thr).to(cur.dtype)
            mem = beta * prev - reset * thr + cur
            h = surrogate.atan()(mem - thr) * float(lif.graded_spikes_factor)
            mems[k] = mem.detach()
        (F.cross_entropy(o, y) / T).backward()
    return {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize("kind", ["fc", "fc-graded", "conv"])
def test_backprop_feedback_equals_autograd_ottt_reference(kind):
    torch.manual_seed(0)
    if kind.startswith("fc"):
        graded = dict(graded_spikes_factor=0.5) if kind == "fc-graded" else {}
        net = boost(fc_net(sizes=(12, 16, 16, 10, 4), betas=(0.8, 0.9, 0.7), **graded),
                    3.0 if not graded else 5.0)
        x, y = inputs(T=7, B=5), torch.tensor([0, 1, 2, 3, 1])
    else:
        net = boost(conv_net())
        x, y = inputs(T=5, B=4, shape=(1, 6, 6)), torch.tensor([0, 1, 2, 1])
    trainer = opzo.OPZO(net, None, feedback="backprop")
    trainer.train_step(x, y)
    ours = {name: p.grad.clone() for name, p in net.named_parameters()}
    spiking = []
    for m in net:
        if isinstance(m, snn.Leaky):
            m.register_forward_hook(lambda mod, inp, out: spiking.append(float(out.mean())))
    snntorch.utils.reset(net)
    ref = ottt_reference(net, x, y)
    assert all(0.0 < s for s in spiking)  # every layer spikes: the test exercises the chain
    assert ours.keys() == ref.keys()
    for name in ours:
        assert ref[name].abs().max() > 0, name
        # float32 (snnTorch's surrogates return float32 spikes); sums in another order
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-7, msg=name)


# ---------------------------------------------------------------- forward
def capture(net, types=(snn.Leaky, nn.Linear, nn.Conv2d)):
    seen = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.append(
        (name, (out[0] if isinstance(out, tuple) else out).detach().clone())))
        for name, m in net.named_modules() if isinstance(m, types)]
    return seen, handles


@pytest.mark.parametrize("leaky", list(LEAKIES), ids=list(LEAKIES))
@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_forward_without_noise_is_bit_identical_to_snntorch(leaky, kind):
    torch.manual_seed(0)
    net = boost(fc_net(leaky=LEAKIES[leaky]) if kind == "fc" else conv_net(LEAKIES[leaky]))
    x = inputs() if kind == "fc" else inputs(shape=(1, 6, 6))
    y = torch.zeros(x.shape[1], dtype=torch.long)
    # snnTorch itself: reset, then the Sequential one step at a time
    seen, handles = capture(net)
    snntorch.utils.reset(net)
    reference_out = [net(x[t]) for t in range(x.shape[0])]
    reference, seen[:] = list(seen), []
    with pytest.warns(UserWarning, match="freezes"):
        trainer = opzo.OPZO(net, None, noise_std=0.0)
    trainer.train_step(x, y)
    during_training, seen[:] = list(seen), []
    trainer.predict(x)
    during_predict = list(seen)
    for h in handles:
        h.remove()
    assert any(float(v.sum()) > 0 for n, v in reference if isinstance(dict(net.named_modules())[n],
                                                                      snn.Leaky))
    for run in (during_training, during_predict):
        assert [n for n, _ in run] == [n for n, _ in reference]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(run, reference))
    # the noisy forward does differ, and predict is the mean readout
    total = reference_out[0].detach().clone()
    for o in reference_out[1:]:
        total += o.detach()
    assert torch.equal(trainer.predict(x), total / len(reference_out))
    noisy = opzo.OPZO(net, None, noise_std=0.5)
    seen, handles = capture(net, (nn.Linear,))
    noisy.train_step(x, y)
    assert not all(torch.equal(a, b) for (_, a), (_, b) in zip(
        seen, [r for r in reference if isinstance(dict(net.named_modules())[r[0]], nn.Linear)]))


# ---------------------------------------------------------------- no graph, memory
@pytest.mark.parametrize("feedback", ["momentum", "random", "zo"])
@pytest.mark.parametrize("perturb", ["output", "membrane"])
def test_no_autograd_graph_with_localzo_local_grad(feedback, perturb):
    torch.manual_seed(0)
    net = boost(conv_net())
    est = localzo.make(delta=0.3, track=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # membrane noise: local_grad unused
        trainer = opzo.OPZO(net, torch.optim.SGD(net.parameters(), 0.1), feedback=feedback,
                            local_grad=est, perturb=perturb)
    grad_modes, outputs = [], []

    def hook(mod, inp, out):
        grad_modes.append(torch.is_grad_enabled())
        outputs.append(out[0] if isinstance(out, tuple) else out)

    handles = [m.register_forward_hook(hook) for m in net.modules() if m is not net]

    def pack(t):
        raise AssertionError("an autograd graph saved a tensor during train_step")

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.train_step(inputs(shape=(1, 6, 6)), torch.tensor([0, 1, 2, 0, 1]))
    for h in handles:
        h.remove()
    assert grad_modes and not any(grad_modes)
    assert all(o.grad_fn is None and not o.requires_grad for o in outputs)
    for p in net.parameters():
        assert p.grad is not None and p.grad.grad_fn is None and not p.grad.requires_grad
    for M in trainer.feedback_matrices():
        assert M.grad_fn is None and not M.requires_grad
    if perturb == "membrane" and feedback != "random":
        assert est.active_fraction == 0.0  # the estimate already went through the spike
    else:
        assert 0.0 < est.active_fraction < 0.9


def test_no_graph_through_layers_with_snntorch_surrogate(monkeypatch):
    """With an autograd surrogate, the only graphs are one-op derivative calls
    on detached leaves inside ``local_derivative``."""
    inside = []
    original = trainer_module.local_derivative

    def wrapped(spike_grad, mem_shift):
        inside.append(True)
        try:
            return original(spike_grad, mem_shift)
        finally:
            inside.pop()

    monkeypatch.setattr(trainer_module, "local_derivative", wrapped)
    saved = []

    def pack(t):
        assert inside, "a tensor was saved for backward outside the local derivative"
        saved.append(t.shape)
        return t

    torch.manual_seed(0)
    net = boost(fc_net())
    trainer = opzo.OPZO(net, torch.optim.SGD(net.parameters(), 0.1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.train_step(inputs(), torch.tensor([0, 1, 2, 3, 0]))
    assert saved  # the check did run
    for p in net.parameters():
        assert p.grad.grad_fn is None


@pytest.mark.heavy
def test_live_memory_does_not_grow_with_sequence_length():
    script = ROOT / "tests" / "scripts" / "opzo_memory_check.py"
    out = subprocess.run([sys.executable, str(script), "10", "200"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["10"] == result["200"], result
    assert result["10"][0] > 0


# ---------------------------------------------------------------- reproducibility, save/load
def train_a_little(seed, kind="conv", feedback="momentum", steps=3, **kw):
    torch.manual_seed(seed)
    net = boost(conv_net() if kind == "conv" else fc_net())
    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 1e-2), feedback=feedback, **kw)
    shape = (1, 6, 6) if kind == "conv" else (12,)
    results = [trainer.train_step(inputs(seed=s, shape=shape), torch.tensor([0, 1, 2, 0, 1]))
               for s in range(steps)]
    return trainer, results


@pytest.mark.parametrize("feedback", opzo.FEEDBACKS)
def test_same_seed_same_result(feedback):
    a, ra = train_a_little(3, feedback=feedback)
    b, rb = train_a_little(3, feedback=feedback)
    c, _ = train_a_little(4, feedback=feedback)
    assert ra == rb
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_state_dict_round_trip(tmp_path):
    trainer, _ = train_a_little(0, steps=2)
    state = trainer.state_dict()
    assert {"feedback_0", "feedback_1", "feedback_steps"} <= set(state)
    assert state["feedback_0"].shape == (4 * 3 * 3, 3) and state["feedback_0"].abs().sum() > 0
    assert int(state["feedback_steps"]) == 2 * 6
    torch.save(state, tmp_path / "opzo.pt")
    # a fresh trainer (its conv feedback not sized yet) takes the saved state
    torch.manual_seed(99)
    net = conv_net()
    fresh = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 1e-2))
    assert fresh.feedback_matrices()[0].numel() == 0
    fresh.load_state_dict(torch.load(tmp_path / "opzo.pt"))
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    fresh.optimizer.load_state_dict(copy.deepcopy(trainer.optimizer.state_dict()))
    x, y = inputs(seed=7, shape=(1, 6, 6)), torch.tensor([2, 1, 0, 1, 2])
    torch.manual_seed(5)
    r1 = trainer.train_step(x, y)
    torch.manual_seed(5)
    r2 = fresh.train_step(x, y)
    assert r1 == r2
    assert all(torch.equal(a, b) for a, b in zip(trainer.state_dict().values(),
                                                 fresh.state_dict().values()))
    # the network alone loads into plain snnTorch and predicts the same
    assert torch.equal(trainer.predict(x), fresh.predict(x))


# ---------------------------------------------------------------- options
def small_task(options, train=("hidden", "readout")):
    """60 steps on a separable task, training only the named parts of the net;
    returns the first and last StepResult and the accuracy before and after."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(3, 12, generator=g) < 0.4).float()
    y = torch.arange(48) % 3
    x = (torch.rand(8, 48, 12, generator=g) < 0.15 + 0.7 * protos[y]).float()
    net = boost(fc_net(sizes=(12, 32, 32, 3)), 1.5)
    for k, m in enumerate(net):
        m.requires_grad_(("readout" if k == len(net) - 1 else "hidden") in train)
    kw = dict(noise_std=0.1, momentum=0.9)
    kw.update(options)
    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 3e-3), **kw)
    before = trainer.evaluate(x, y)
    first = trainer.train_step(x, y)
    for _ in range(60):
        last = trainer.train_step(x, y)
    return first, last, before, trainer.evaluate(x, y)


@pytest.mark.parametrize("options", [
    dict(loss="mse"), dict(update="step"), dict(noise="rademacher"), dict(noise="sphere"),
    dict(perturb="membrane"), dict(dual_noise=False), dict(local_grad=localzo.make(delta=0.3)),
    dict(feedback="backprop", update="step"),
])
def test_options_learn_a_small_task(options):
    """A separable task learnt by the hidden layers alone: the readout is frozen
    (its random projection alone leaves the task near chance), so the loss and
    accuracy only move if the options' hidden-layer updates work."""
    first, last, before, after = small_task(options, train=("hidden",))
    assert last.loss < 0.8 * first.loss, (first, last)
    assert before < 0.5 and after > 0.8, (before, after)


def test_random_feedback_learns_a_small_task_beyond_the_readout():
    """DFA needs a learning readout (the layers align with the fixed feedback
    through it), so here the check is against the readout trained alone."""
    _, readout_only, _, _ = small_task(dict(feedback="random"), train=("readout",))
    first, last, _, after = small_task(dict(feedback="random"))
    assert last.loss < 0.6 * readout_only.loss, (readout_only, last)
    assert last.loss < 0.8 * first.loss, (first, last)
    assert after > 0.95


def test_update_step_takes_one_optimizer_step_per_time_step():
    torch.manual_seed(0)
    net = boost(fc_net())
    opt = torch.optim.SGD(net.parameters(), 0.1)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    opzo.OPZO(net, opt, update="step").train_step(inputs(T=6), torch.zeros(5, dtype=torch.long))
    assert len(calls) == 6
    opzo.OPZO(net, opt).train_step(inputs(T=6), torch.zeros(5, dtype=torch.long))
    assert len(calls) == 7


def record_noise(trainer, k=-1):
    """The directions layer ``k`` receives, step by step."""
    zs = []
    original = trainer._streams[k].next
    trainer._streams[k].next = lambda like: zs.append(original(like)) or zs[-1]
    return zs


def bias_traces(beta, T):
    return [sum(beta ** (t - s) for s in range(t + 1)) for t in range(T)]


def test_random_feedback_is_fixed_and_momentum_zero_keeps_the_last_step():
    trainer, _ = train_a_little(0, kind="fc", feedback="random")
    M0 = [M.clone() for M in trainer.feedback_matrices()]
    trainer.train_step(inputs(), torch.zeros(5, dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(M0, trainer.feedback_matrices()))
    # momentum 0: M is the last step's estimate alone (the single-step pseudo-ZO)
    torch.manual_seed(0)
    net = boost(fc_net())
    pzo = opzo.OPZO(net, None, momentum=0.0, dual_noise=False)
    zs = record_noise(pzo)
    outs, _ = capture(net, (nn.Linear,))
    pzo.train_step(inputs(T=3), torch.zeros(5, dtype=torch.long))
    o = outs[-1][1]
    expected = zs[-1].t() @ o / (0.1 * 5)
    torch.testing.assert_close(pzo.feedback_matrices()[-1], expected)


def test_membrane_noise_does_not_apply_the_local_factor_again():
    """Noise in the input current: ``M`` estimates d o / d u through the spike,
    so the hidden error is ``M e`` itself (no ``psi``): checked on the bias
    gradient of a one-hidden-layer net with ``momentum=0`` (``M`` of each step)."""
    torch.manual_seed(0)
    net = boost(fc_net(sizes=(12, 16, 4)))
    T, B, alpha, beta = 3, 5, 0.1, 0.8
    trainer = opzo.OPZO(net, None, momentum=0.0, perturb="membrane", dual_noise=False)
    zs = record_noise(trainer)
    outs, _ = capture(net, (nn.Linear,))
    y = torch.tensor([0, 1, 2, 3, 0])
    trainer.train_step(inputs(T=T, B=B), y)
    readout = [o for name, o in outs if name == "2"]
    expected = torch.zeros(16)
    for t, (o, z, c) in enumerate(zip(readout, zs, bias_traces(beta, T))):
        e = torch.softmax(o, 1) - F.one_hot(y, 4)
        M = z.t() @ o / (alpha * B)
        expected += c * (e @ M.t()).sum(0) / (B * T)
    torch.testing.assert_close(net[0].bias.grad, expected)


def test_zo_is_node_perturbation_from_the_scalar_loss_change():
    """``feedback="zo"``: each sample runs noise-free and noisy; a layer's error
    is ``(L(o~) - L(o)) z / alpha`` (membrane noise: no local factor), nothing
    else of the output error."""
    torch.manual_seed(0)
    net = boost(fc_net(sizes=(12, 16, 4)))
    T, B, alpha, beta = 3, 5, 0.1, 0.8
    zo = opzo.OPZO(net, None, feedback="zo", perturb="membrane", dual_noise=False)
    zs = record_noise(zo)
    outs, _ = capture(net, (nn.Linear,))
    y = torch.tensor([0, 1, 2, 3, 0])
    result = zo.train_step(inputs(T=T, B=B), y)
    readout = [o for name, o in outs if name == "2"]
    expected = torch.zeros(16)
    losses = []
    for o, z, c in zip(readout, zs, bias_traces(beta, T)):
        assert o.shape[0] == 2 * B and torch.equal(z[:B], torch.zeros_like(z[:B]))
        loss = F.cross_entropy(o, torch.cat([y, y]), reduction="none")
        losses.append(loss[:B].mean())
        change = (loss[B:] - loss[:B]) / alpha
        expected += c * (change[:, None] * z[B:]).sum(0) / (B * T)
    torch.testing.assert_close(net[0].bias.grad, expected)
    assert result.loss == pytest.approx(float(sum(losses)) / T, rel=1e-5)  # noise-free rows


def test_zo_expected_update_is_the_exact_gradient():
    """Averaged over noise, node perturbation gives OTTT's gradient (one hidden
    layer, whose output noise reaches only the memoryless readout)."""
    torch.manual_seed(0)
    net = boost(fc_net(sizes=(12, 16, 4)), 1.5)
    x, y = inputs(T=2, B=4), torch.tensor([0, 1, 2, 3])
    exact = opzo.OPZO(net, None, feedback="backprop")
    exact.train_step(x, y)
    target = net[0].weight.grad.clone()
    zo = opzo.OPZO(net, None, feedback="zo", noise_std=1e-3)
    total = torch.zeros_like(target)
    for _ in range(400):
        zo.train_step(x, y)
        total += net[0].weight.grad
    assert cosine(total, target) > 0.9


def test_localzo_local_grad_updates_only_active_neurons():
    torch.manual_seed(0)
    net = boost(fc_net(sizes=(12, 64, 4)))
    est = localzo.make(delta=0.05, track=True)
    trainer = opzo.OPZO(net, None, local_grad=est)
    trainer.train_step(inputs(T=3, B=1), torch.zeros(1, dtype=torch.long))
    frac = est.active_fraction
    assert 0.0 < frac < 0.5
    rows = (net[0].weight.grad.abs().sum(1) > 0).float().mean()
    assert 0.0 < float(rows) <= 3 * frac + 1e-6  # only neurons with a non-zero estimate


def test_default_local_grad_is_the_neurons_spike_grad():
    net = nn.Sequential(nn.Linear(3, 4), localzo.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(4, 5), snn.Leaky(beta=0.9, init_hidden=True,
                                                   spike_grad=surrogate.fast_sigmoid()),
                        nn.Linear(5, 2))
    trainer = opzo.OPZO(net)
    assert trainer.local_grads[0] is net[1].spike_grad
    assert trainer.local_grads[1] is net[3].spike_grad
    atan = surrogate.atan()
    assert opzo.OPZO(net, local_grad=atan).local_grads == [atan, atan]


def test_local_derivative_matches_surrogate_backward():
    u = torch.linspace(-2, 2, 41)
    x = u.clone().requires_grad_(True)
    surrogate.atan(alpha=3.0)(x).sum().backward()
    assert torch.equal(opzo.local_derivative(surrogate.atan(alpha=3.0), u), x.grad)
    est = localzo.make(delta=0.1)
    torch.manual_seed(0)
    g = opzo.local_derivative(est, u)
    assert g.grad_fn is None and (g[u.abs() > 1] == 0).all()


# ---------------------------------------------------------------- errors
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


def leaky(**kw):
    return snn.Leaky(beta=0.9, init_hidden=True, **kw)


@pytest.mark.parametrize("make_net, error, match", [
    (lambda: Residual(), TypeError, "nn.Sequential.*got Residual"),
    (lambda: nn.Sequential(nn.Linear(4, 4), snn.RLeaky(beta=0.9, linear_features=4,
                                                       init_hidden=True), nn.Linear(4, 2)),
     TypeError, "module '1' \\(RLeaky\\).*only Leaky"),
    (lambda: nn.Sequential(nn.Linear(4, 4), snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
                           nn.Linear(4, 2)), TypeError, "module '1' \\(Synaptic\\)"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), leaky(), nn.Linear(4, 2)),
     TypeError, "module '1' \\(BatchNorm1d\\).*normalisation"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), leaky(), nn.Flatten(),
                           nn.Linear(2, 2)), TypeError, "module '1' \\(MaxPool2d\\).*AvgPool2d"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(), leaky(), nn.Linear(4, 2)),
     TypeError, "module '1' \\(Dropout\\)"),
    (lambda: nn.Sequential(Residual(), leaky(), nn.Linear(4, 2)), TypeError,
     "module '0' \\(Residual\\)"),
    (lambda: nn.Sequential(leaky(), nn.Linear(4, 2)), ValueError, "module '0' \\(Leaky\\).*weight"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), ValueError,
     "module '1' \\(Linear\\) follows module '0' \\(Linear\\)"),
    (lambda: nn.Sequential(nn.Linear(4, 4), leaky(), nn.Linear(4, 2), leaky(output=True)),
     ValueError, "readout.*module '3' \\(Leaky\\)"),
    (lambda: nn.Sequential(nn.Linear(4, 4), leaky(), nn.Linear(4, 2), nn.Flatten()),
     ValueError, "readout"),
    (lambda: nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9), nn.Linear(4, 2)),
     ValueError, "module '1' \\(Leaky\\).*init_hidden=True"),
    (lambda: nn.Sequential(nn.Linear(4, 4), leaky(learn_beta=True), nn.Linear(4, 2)),
     ValueError, "module '1' \\(Leaky\\).*learn_beta"),
    (lambda: nn.Sequential(nn.Linear(4, 4), leaky(inhibition=True), nn.Linear(4, 2)),
     ValueError, "inhibition"),
    (lambda: nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=torch.full((4,), 0.9), init_hidden=True),
                           nn.Linear(4, 2)), ValueError, "per-neuron beta"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), leaky(),
                           nn.Flatten(), nn.Linear(8, 2)), ValueError, "padding_mode"),
    (lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 4), snn.Alpha(alpha=0.9, beta=0.8,
                                                                     init_hidden=True)),
                           nn.Linear(4, 2)), TypeError, "module '0.1' \\(Alpha\\)"),
], ids=["not-sequential", "rleaky", "synaptic", "batchnorm", "maxpool", "dropout", "residual",
        "leaky-first", "two-linears", "output-leaky", "flatten-last", "no-init-hidden",
        "learn-beta", "inhibition", "per-neuron-beta", "circular-padding", "nested-alpha"])
def test_unsupported_networks_get_an_error_naming_the_module(make_net, error, match):
    with pytest.raises(error, match=match):
        opzo.OPZO(make_net())


def test_nested_sequentials_are_walked():
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 4), leaky()), nn.Linear(4, 2))
    trainer = opzo.OPZO(net, None)
    assert [b.neuron_name for b in trainer.blocks] == ["0.1"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(feedback="dfa"), ValueError, "`feedback` must be one of"),
    (dict(noise="uniform"), ValueError, "`noise` must be one of"),
    (dict(perturb="weights"), ValueError, "`perturb` must be one of"),
    (dict(loss="nll"), ValueError, "`loss` must be one of"),
    (dict(update="epoch"), ValueError, "`update` must be one of"),
    (dict(momentum=1.0), ValueError, "`momentum` must be in \\[0, 1\\)"),
    (dict(momentum="high"), TypeError, "`momentum` must be a number"),
    (dict(noise_std=-0.1), ValueError, "`noise_std` must be a finite number >= 0"),
    (dict(noise_std=float("nan")), ValueError, "`noise_std` must be a finite number >= 0"),
    (dict(feedback="zo", noise_std=0.0), ValueError, "`noise_std` must be > 0"),
    (dict(dual_noise=1), TypeError, "`dual_noise` must be a bool"),
    (dict(local_grad=3), TypeError, "`local_grad` must be a spike gradient"),
    (dict(local_grad=[surrogate.atan()] * 5), ValueError, "`local_grad` has 5 entries"),
    (dict(optimizer="adam"), TypeError, "`optimizer` must be"),
    (dict(update="step", optimizer=None), ValueError, "update='step' needs an optimizer"),
])
def test_bad_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        opzo.OPZO(fc_net(), **kwargs)


def test_bad_inputs_are_rejected():
    trainer = opzo.OPZO(fc_net(), None)
    x, y = inputs(), torch.zeros(5, dtype=torch.long)
    with pytest.raises(TypeError, match="`x_seq` must be a floating-point"):
        trainer.train_step(x.long(), y)
    with pytest.raises(ValueError, match="`x_seq` must have shape \\[T, batch"):
        trainer.train_step(x[0, 0], y)
    with pytest.raises(ValueError, match="`y` must have shape \\(5,\\)"):
        trainer.train_step(x, y[:3])
    with pytest.raises(TypeError, match="`y` must be an integer tensor"):
        trainer.train_step(x, y.float())
    with pytest.raises(ValueError, match="labels outside \\[0, 3\\]"):
        trainer.train_step(x, y + 4)
    with pytest.raises(TypeError, match="no derivative"):
        bad = nn.Sequential(nn.Linear(12, 4), snn.Leaky(beta=0.9, init_hidden=True,
                                                        surrogate_disable=True), nn.Linear(4, 2))
        opzo.OPZO(bad, None).train_step(x, torch.zeros(5, dtype=torch.long))


# ---------------------------------------------------------------- CLI and benchmark
def test_cli_trains_and_prints_a_table(tmp_path, capsys):
    from snntorch_localzo.demo import opzo as demo

    out = tmp_path / "runs.json"
    args = ["--epochs", "1", "--steps", "3", "--hidden", "24,24", "--feedback", "momentum,random",
            "--device", "cpu", "--no-progress", "--json", str(out), "--train-samples", "200"]
    assert demo.main(args) == 0
    text = capsys.readouterr().out
    assert "momentum" in text and "random" in text and "test acc" in text
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["momentum", "random"]
    assert {"method", "net", "seed", "test_acc", "s_per_epoch"} <= set(rows[0])


@pytest.mark.parametrize("argv, option", [
    (["--epochs", "0"], "--epochs"), (["--feedback", "dfa"], "--feedback"),
    (["--noise-std", "-1"], "--noise-std"), (["--momentum", "1"], "--momentum"),
    (["--hidden", "12,x"], "--hidden"), (["--device", "tpu"], "--device"),
    (["--net", "resnet"], "--net"), (["--steps", "0"], "--steps"), (["--lr", "0"], "--lr"),
    (["--batch", "-2"], "--batch"), (["--noise", "uniform"], "--noise"),
    (["--beta", "2"], "--beta"), (["--gain", "0"], "--gain"), (["--slope", "-1"], "--slope"),
    (["--unknown"], "--unknown"),
])
def test_cli_bad_options_end_in_one_line_and_exit_2(argv, option, capsys):
    from snntorch_localzo.demo import opzo as demo

    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "snntorch-localzo opzo" in lines[0], lines


@pytest.mark.heavy
def test_cli_subcommand_bad_option_in_a_process():
    out = subprocess.run([sys.executable, "-m", "snntorch_localzo", "opzo", "--epochs", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--epochs" in lines[0] and "Traceback" not in out.stderr
    help_out = subprocess.run([sys.executable, "-m", "snntorch_localzo", "opzo", "--help"],
                              capture_output=True, text=True, timeout=120)
    assert help_out.returncode == 0 and "--feedback" in help_out.stdout


@pytest.mark.heavy
def test_benchmark_smoke(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("opzo_bench", ROOT / "benchmarks" / "opzo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["--seeds", "1", "--epochs", "1", "--steps", "2", "--fc-hidden", "16,16",
            "--conv-epochs", "1", "--train-samples", "128", "--out", str(out), "--plot", str(png)]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["method"], r["net"]) for r in rows} >= {("opzo", "fc"), ("ottt_backprop", "fc"),
                                                         ("dfa", "fc"), ("zo", "fc"),
                                                         ("opzo_localzo", "fc"), ("opzo", "conv")}
    for r in rows:
        assert {"method", "net", "seed", "test_acc", "s_per_epoch"} <= set(r)
        assert 0.0 <= r["test_acc"] <= 1.0 and r["s_per_epoch"] > 0
    assert png.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert bench.main(["--replot", "--out", str(out), "--plot", str(png)]) == 0
    assert "opzo" in capsys.readouterr().out
