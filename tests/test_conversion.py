"""ANN-to-SNN conversion into snnTorch neurons and FTBC calibration
(``snntorch_localzo.conversion``), its data loaders, the ``ftbc`` subcommand
and ``benchmarks/ftbc.py``.

The maths checked: QCFS against its closed form; with T = L steps a spiking
layer fires exactly the QCFS activation; plain conversion tends to the
clipped ANN about as 1/T; after calibration the per-channel error is far
below plain conversion's; in a one-neuron layer the calibrated bias is the
empirical quantile solution (exactly the right number of membranes above
threshold, at every step); calibrating for T and truncating to T' equals
calibrating for T'. Tiny sizes throughout; no timing is asserted."""

import copy
import functools
import importlib.util
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn as nn

import snntorch_localzo as localzo
from snntorch_localzo import conversion
from snntorch_localzo.conversion import QCFS, ConvertedSNN, IFNeuron
from snntorch_localzo.conversion.data import ImageFolder, load_arrays, load_cifar

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_thread():
    """The end-to-end runs use many tiny tensor operations: one thread keeps
    them from waiting on each other's threads on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(sizes=(8, 24, 24, 24, 4), levels=4, lam=1.0, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), QCFS(levels, lam)]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def inputs(n=64, features=8, seed=1):
    return torch.rand(n, features, generator=torch.Generator().manual_seed(seed))


def clip_ann(ann, x):
    """The ANN with every QCFS replaced by clip(z, 0, lam)."""
    for m in ann:
        x = m.clip(x) if isinstance(m, QCFS) else m(x)
    return x


# --------------------------------------------------------------------------- QCFS
def test_qcfs_is_the_closed_form_with_straight_through_floor():
    q = QCFS(levels=4, lam=2.0)
    z = torch.linspace(-1.0, 3.0, 398).requires_grad_(True)  # no point on 0 or lam
    a = q(z)
    expected = 2.0 * torch.clamp(torch.floor(z.detach() * 4 / 2.0 + 0.5) / 4, 0, 1)
    assert torch.equal(a.detach(), expected)
    a.sum().backward()
    inside = (z.detach() > 0) & (z.detach() < 2.0)
    assert torch.equal(z.grad, inside.float())  # floor passes the gradient straight through
    u = z.detach() / 2.0
    lam_grad = torch.where(inside, torch.floor(u * 4 + 0.5) / 4 - u, (u >= 1).float()).sum()
    assert q.lam.grad.item() == pytest.approx(lam_grad.item(), rel=1e-5, abs=1e-5)
    assert torch.equal(q.clip(z.detach()), torch.clamp(z.detach(), 0, 2.0))


@pytest.mark.parametrize("levels, error", [(0, ValueError), (2.5, TypeError), (True, TypeError),
                                           ("4", TypeError)])
def test_qcfs_rejects_bad_levels(levels, error):
    with pytest.raises(error, match="`levels`"):
        QCFS(levels=levels)


@pytest.mark.parametrize("lam, error", [(0.0, ValueError), (-1.0, ValueError),
                                        (math.inf, ValueError), (math.nan, ValueError),
                                        (True, TypeError)])
def test_qcfs_rejects_bad_lam(lam, error):
    with pytest.raises(error, match="`lam`"):
        QCFS(lam=lam)


def test_swap_relu_returns_a_copy_with_qcfs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 5), nn.ReLU()),
                          nn.Linear(5, 2))
    before = copy.deepcopy(model.state_dict())
    out = conversion.swap_relu(model, levels=8, lam=3.0)
    assert [type(m) for m in model.modules()].count(nn.ReLU) == 2  # the original is untouched
    qs = [m for m in out.modules() if isinstance(m, QCFS)]
    assert len(qs) == 2 and not any(isinstance(m, nn.ReLU) for m in out.modules())
    assert all(q.levels == 8 and q.lam.item() == 3.0 for q in qs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        out[0].weight.add_(1.0)  # no shared storage
    assert torch.equal(model[0].weight, before["0.weight"])
    with pytest.raises(TypeError, match="`model`"):
        conversion.swap_relu("not a model")
    with pytest.raises(ValueError, match="`levels`"):
        conversion.swap_relu(model, levels=0)


# --------------------------------------------------------------------------- conversion
def test_t_equal_l_fires_exactly_the_qcfs_activation():
    lam, levels = 2.0, 4
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 40), QCFS(levels, lam))
    x = torch.randn(200, 6) * 2
    z = ann[0](x).detach()
    ties = (z * levels / lam + 0.5)
    keep = ((ties - ties.round()).abs() > 1e-3).all(1)  # inputs away from ties
    assert keep.float().mean() > 0.9
    x = x[keep]
    snn_net = conversion.convert(ann)
    rate = snn_net(x, num_steps=levels)  # mean of lam-sized spikes = lam * count / T
    a = ann(x).detach()
    assert torch.equal(rate, a)
    assert 0 < (a > 0).float().mean() < 1 and (a == lam).any()  # quantization and clipping met
    assert not torch.equal(snn_net(x, num_steps=levels + 1), a)  # T != L: another quantization


def test_plain_conversion_is_a_snntorch_leaky_loop_and_zero_bias_changes_nothing():
    ann = mlp()
    x = inputs()
    snn_net = conversion.convert(ann)
    assert isinstance(snn_net, ConvertedSNN) and len(snn_net.neurons) == 3
    assert all(isinstance(n.neuron, snn.Leaky) and n.threshold == 1.0 for n in snn_net.neurons)
    out = snn_net(x, 6, return_steps=True)
    # the same network written by hand with snn.Leaky neurons
    linears = [m for m in ann if isinstance(m, nn.Linear)]
    lams = [m.lam.item() for m in ann if isinstance(m, QCFS)]
    lifs = [snn.Leaky(beta=1.0, threshold=lam, graded_spikes_factor=lam, reset_mechanism="subtract")
            for lam in lams]
    mems = [None] * len(lifs)
    expected = []
    with torch.no_grad():
        for _ in range(6):
            h = x
            for i, lif in enumerate(lifs):
                cur = linears[i](h)
                mem = torch.full_like(cur, lams[i] / 2) if mems[i] is None else mems[i]
                h, mems[i] = lif(cur, mem)
            expected.append(linears[-1](h))
    assert torch.equal(out, torch.stack(expected).detach())
    assert torch.equal(snn_net(x, 6), out.mean(0))
    zero = copy.deepcopy(snn_net)
    for n in zero.neurons:
        n.bias = torch.zeros(6, 24)
    assert zero.calibrated_steps == 6
    assert torch.equal(zero(x, 6, return_steps=True), out)


def test_plain_conversion_tends_to_the_clipped_ann_as_one_over_t():
    ann = mlp(sizes=(8, 32, 32, 4), levels=4, lam=1.0)
    x = inputs(128)
    snn_net = conversion.convert(ann)
    with torch.no_grad():
        target = clip_ann(ann, x)
        steps = [8, 16, 32, 64, 128]
        errs = [(snn_net(x, T) - target).abs().mean().item() for T in steps]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert -1.3 < slope < -0.7, (slope, errs)


def test_convert_keeps_batchnorm_folded_or_as_affine_and_copies_weights():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.0),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 6),
                        nn.BatchNorm1d(6), QCFS(4, 1.0), nn.Linear(6, 3))
    x = torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        for _ in range(3):
            ann(x * 2)  # train mode: running statistics move away from 0 / 1
    folded = conversion.convert(ann)
    kept = conversion.convert(ann, fold_batchnorm=False)
    assert [type(m).__name__ for m in folded.layers] == [
        "Conv2d", "IFNeuron", "AvgPool2d", "Flatten", "Linear", "IFNeuron", "Linear"]
    assert [type(m).__name__ for m in kept.layers].count("ChannelAffine") == 2
    ann.eval()
    with torch.no_grad():
        reference = ann[1](ann[0](x))
        assert torch.allclose(folded.layers[0](x), reference, atol=1e-5)
        assert torch.allclose(kept.layers[1](kept.layers[0](x)), reference, atol=1e-5)
    ann.train()
    assert folded.layers[0].weight.data_ptr() != ann[0].weight.data_ptr()


def test_ann_is_untouched_by_convert_and_calibrate():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.0),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3))
    x = torch.rand(48, 1, 4, 4)
    with torch.no_grad():
        ann(x)
    ann.train()  # BatchNorm would update its statistics, Dropout would drop, if run as is
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    flags = [m.training for m in ann.modules()]
    snn_net = conversion.convert(ann)
    conversion.calibrate(snn_net, ann, [x[:24], (x[24:], None)], 4, num_batches=None)
    conversion.conversion_error(snn_net, ann, x, 4)
    with torch.no_grad():
        for p in snn_net.parameters():
            p.add_(1.0)
    after = ann.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in ann.modules()] == flags
    assert snn_net.neurons[0].bias.shape == (4, 4)  # per step and channel


def test_convert_errors_name_the_module():
    with pytest.raises(TypeError, match=r"'1' \(MaxPool2d\).*firing rates"):
        conversion.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), QCFS()))
    with pytest.raises(TypeError, match=r"'1' \(ReLU\).*swap_relu"):
        conversion.convert(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(TypeError, match=r"'0\.1' \(Tanh\)"):
        conversion.convert(nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh())))

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="nn.Sequential"):
        conversion.convert(Custom())
    with pytest.raises(ValueError, match="no QCFS"):
        conversion.convert(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="`neuron`"):
        conversion.convert(mlp(), neuron=3)
    with pytest.raises(ValueError, match="running statistics"):
        conversion.convert(nn.Sequential(nn.Linear(2, 2),
                                         nn.BatchNorm1d(2, track_running_stats=False), QCFS()))
    with pytest.raises(TypeError, match="`neuron`"):
        IFNeuron(nn.Linear(2, 2))


def test_forward_checks_steps_and_input():
    ann = mlp()
    snn_net = conversion.convert(ann)
    x = inputs()
    for bad, error in ((0, ValueError), (2.5, TypeError), (True, TypeError), ("4", TypeError)):
        with pytest.raises(error, match="`num_steps`"):
            snn_net(x, bad)
    with pytest.raises(TypeError, match="`x`"):
        snn_net(x.long(), 2)
    conversion.calibrate(snn_net, ann, x, 4)
    assert snn_net(x, 3).shape == (64, 4)  # T' <= T: the first T' biases
    with pytest.raises(ValueError, match="calibrated for 4"):
        snn_net(x, 5)
    with pytest.raises(ValueError, match="calibrated for 4"):
        conversion.conversion_error(snn_net, ann, x, 5)
    with pytest.raises(ValueError, match="channels"):
        snn_net.neurons[0](torch.zeros(2, 5), 0)
    snn_net.reset_bias()
    assert snn_net.calibrated_steps == 0 and snn_net(x, 5).shape == (64, 4)


# --------------------------------------------------------------------------- FTBC
def test_calibration_drives_the_error_far_below_plain_conversion():
    ann = mlp(sizes=(8, 32, 32, 32, 4))
    x = inputs(256)
    snn_net = conversion.convert(ann)
    plain = conversion.conversion_error(snn_net, ann, x, 8)
    residual = conversion.calibrate(snn_net, ann, x, 8, iters=20)
    assert residual.shape == plain.shape == (3, 8) and residual.dtype == torch.float64
    assert plain.min() > 0.005
    assert (residual < 0.25 * plain).all(), (residual, plain)
    assert residual.mean() < 0.1 * plain.mean()
    assert torch.equal(residual, conversion.conversion_error(snn_net, ann, x, 8))


def test_one_neuron_bias_is_the_quantile_solution_at_every_step():
    lam = 2.0
    ann = nn.Sequential(nn.Linear(1, 1), QCFS(4, lam))
    with torch.no_grad():
        ann[0].weight.fill_(1.0)
        ann[0].bias.zero_()
    z = torch.tensor([-0.6, -0.1, 0.1, 0.35, 0.55, 0.9, 1.1, 1.4, 1.6, 1.85, 2.2, 2.9]).view(-1, 1)
    a = ann(z).detach()
    k = a.sum().item() / lam  # number of membranes that must fire at each step
    assert k == round(k) and 0 < k < len(z)
    k = int(round(k))
    snn_net = conversion.convert(ann)
    residual = conversion.calibrate(snn_net, ann, z, 3, iters=200)
    bias = snn_net.neurons[0].bias[:, 0]
    mem = torch.full_like(z[:, 0], lam / 2)  # membrane without this step's bias
    for t in range(3):
        m = torch.sort(mem + z[:, 0]).values
        # exactly the k largest cross lam: lam - m[N-k] < b <= lam - m[N-k-1]
        assert lam - m[-k] < bias[t] <= lam - m[-k - 1], (t, bias[t], m)
        fired = (mem + z[:, 0] + bias[t] > lam).float()
        assert fired.sum() == k
        mem = mem + z[:, 0] + bias[t] - lam * fired
    assert residual.abs().max() < 1e-6


@pytest.mark.parametrize("form", ["root_finding", "released"])
def test_calibrating_for_t_and_truncating_equals_calibrating_for_fewer(form):
    ann = mlp()
    x, x_test = inputs(96), inputs(40, seed=7)
    data = [x[:48], x[48:]]
    long, short = conversion.convert(ann), conversion.convert(ann)
    res_long = conversion.calibrate(long, ann, data, 12, form=form)
    res_short = conversion.calibrate(short, ann, data, 4, form=form)
    for a, b in zip(long.neurons, short.neurons):
        assert torch.equal(a.bias[:4], b.bias)
    assert torch.equal(res_long[:, :4], res_short)
    assert torch.equal(long(x_test, 4), short(x_test, 4))


def released_script(ann, batches, num_steps, alpha):
    """The authors' released calibration (``main_cali.py``: ``bias_corr_model``
    over ``batches``, ``bias_corr_step_by_step`` per layer), written out for an
    MLP of Linear + QCFS layers: at step t the error of the spikes fired
    *without* the layer's own bias, the bias (subtracted from the membrane)
    grown by alpha times its batch mean, the membrane corrected by the error
    and fired again. Returns that bias per layer, ``[T, features]``."""
    linears = [m for m in ann if isinstance(m, nn.Linear)][:-1]
    lams = [float(m.lam) for m in ann if isinstance(m, QCFS)]
    biases = [torch.zeros(num_steps, lin.out_features) for lin in linears]

    def snn_inputs(x, k):  # what layer k receives from the SNN, with every bias in place
        h = [x] * num_steps
        for j in range(k):
            mem, out = torch.full((len(x), linears[j].out_features), lams[j] / 2), []
            for t in range(num_steps):
                mem = mem - biases[j][t] + linears[j](h[t])
                spike = (mem > lams[j]).float() * lams[j]
                mem = mem - spike
                out.append(spike)
            h = out
        return [linears[k](ht) for ht in h]

    for x in batches:
        acts, a = [], x
        for m in ann:
            a = m(a)
            if isinstance(m, QCFS):
                acts.append(a)
        for k, lam in enumerate(lams):
            currents = snn_inputs(x, k)
            v = torch.full_like(currents[0], lam / 2)
            for t in range(num_steps):
                mem = v + currents[t]
                err = (mem > lam).float() * lam - acts[k]
                mem = mem - err
                v = mem - (mem > lam).float() * lam
                biases[k][t] += alpha * err.mean(0)
    return biases


@pytest.mark.parametrize("num_batches", [1, 3])
def test_released_form_is_the_authors_script(num_batches):
    """The authors' script, three batches at alpha 0.4 (its call), and the
    one-batch form a later fork's edit reduces it to; the bias accumulates
    over batches (not fed back) and is the script's, sign aside."""
    ann = mlp(levels=4, lam=1.0)
    x = inputs(96)
    batches = [x[:32], x[32:64], x[64:]]
    snn_net = conversion.convert(ann)
    conversion.calibrate(snn_net, ann, batches, 4, alpha=0.4, num_batches=num_batches,
                         form="released")
    with torch.no_grad():
        expected = released_script(ann, batches[:num_batches], 4, 0.4)
    for neuron, b in zip(snn_net.neurons, expected):
        assert b.abs().sum() > 0
        assert torch.allclose(neuron.bias, -b, atol=1e-5)


def test_released_form_accumulates_over_batches():
    ann = mlp()
    x = inputs(64)
    once, twice = conversion.convert(ann), conversion.convert(ann)
    conversion.calibrate(once, ann, [x], 1, alpha=0.4, form="released")
    conversion.calibrate(twice, ann, [x, x], 1, alpha=0.4, form="released")
    # the first layer sees the same error twice (its own bias is not fed back)
    assert torch.allclose(twice.neurons[0].bias, 2 * once.neurons[0].bias, atol=1e-6)
    assert once.neurons[0].bias.abs().sum() > 0


def test_calibration_is_deterministic_and_needs_no_seed(one_thread):
    def pipeline():
        torch.manual_seed(3)
        ann = mlp(seed=3)
        opt = torch.optim.Adam(ann.parameters(), 1e-2)
        x, y = inputs(64), torch.randint(0, 4, (64,))
        for _ in range(3):
            loss = nn.functional.cross_entropy(ann(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        snn_net = conversion.convert(ann)
        res = conversion.calibrate(snn_net, ann, x, 5)
        return snn_net, res

    (a, res_a), (b, res_b) = pipeline(), pipeline()
    assert torch.equal(res_a, res_b)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(0)
    x = inputs(32, seed=5)
    out = a(x, 5)
    torch.manual_seed(1)
    assert torch.equal(a(x, 5), out)  # inference draws nothing


def test_calibrate_checks_its_arguments_and_restores_biases_on_failure():
    ann = mlp()
    snn_net = conversion.convert(ann)
    x = inputs()
    for alpha, error in ((0, ValueError), (1.5, ValueError), (-0.1, ValueError),
                         (math.nan, ValueError), (True, TypeError)):
        with pytest.raises(error, match="`alpha`"):
            conversion.calibrate(snn_net, ann, x, 2, alpha=alpha)
    with pytest.raises(ValueError, match="`iters`"):
        conversion.calibrate(snn_net, ann, x, 2, iters=0)
    with pytest.raises(ValueError, match="`num_batches`"):
        conversion.calibrate(snn_net, ann, x, 2, num_batches=0)
    for form, error in (("feedback", ValueError), (None, TypeError), (True, TypeError)):
        with pytest.raises(error, match="`form` must be one of"):
            conversion.calibrate(snn_net, ann, x, 2, form=form)
    with pytest.raises(ValueError, match="`num_steps`"):
        conversion.calibrate(snn_net, ann, x, 0)
    with pytest.raises(ValueError, match="QCFS"):
        conversion.calibrate(snn_net, mlp(sizes=(8, 24, 4)), x, 2)
    with pytest.raises(TypeError, match="ConvertedSNN"):
        conversion.calibrate(ann, ann, x, 2)
    with pytest.raises(ValueError, match="no batch"):
        conversion.calibrate(snn_net, ann, [], 2)
    with pytest.raises(TypeError, match="floating-point"):
        conversion.calibrate(snn_net, ann, [x.long()], 2)
    with pytest.raises(TypeError, match="`data`"):
        conversion.calibrate(snn_net, ann, 3, 2)
    conversion.calibrate(snn_net, ann, x, 3)
    before = [n.bias.clone() for n in snn_net.neurons]
    with pytest.raises(RuntimeError):
        conversion.calibrate(snn_net, ann, [x, torch.rand(4, 5)], 3, num_batches=None)
    assert all(torch.equal(b, n.bias) for b, n in zip(before, snn_net.neurons))


def test_biases_are_buffers_in_the_state_dict():
    ann = mlp()
    x = inputs()
    calibrated = conversion.convert(ann)
    conversion.calibrate(calibrated, ann, x, 4)
    state = calibrated.state_dict()
    assert [k for k in state if k.endswith(".bias") and "neuron" not in k and
            state[k].dim() == 2] == [f"layers.{i}.bias" for i in (1, 3, 5)]
    fresh = conversion.convert(ann)
    assert fresh.calibrated_steps == 0
    fresh.load_state_dict(state)
    assert fresh.calibrated_steps == 4
    assert torch.equal(fresh(x, 4), calibrated(x, 4))
    fresh.load_state_dict(conversion.convert(ann).state_dict())  # back to plain
    assert fresh.calibrated_steps == 0


def test_localzo_leaky_runs_the_converted_network_and_trains():
    ann = mlp()
    x = inputs()
    reference = conversion.convert(ann)
    conversion.calibrate(reference, ann, x, 4)
    lzo = conversion.convert(ann, neuron=functools.partial(
        localzo.Leaky, spike_grad=localzo.make(delta=0.3, track=True)))
    assert all(isinstance(n.neuron, localzo.Leaky) for n in lzo.neurons)
    lzo.load_state_dict(reference.state_dict())
    assert torch.equal(lzo(x, 4), reference(x, 4))  # same forward, bit for bit
    torch.manual_seed(0)
    loss = nn.functional.cross_entropy(lzo(x, 4), torch.randint(0, 4, (64,)))
    loss.backward()
    grads = [m.weight.grad for m in lzo.layers if isinstance(m, nn.Linear)]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    est = lzo.neurons[0].neuron.spike_grad
    assert 0 < est.active_fraction < 0.5  # LocalZO: a sparse backward


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_runs_on_cuda():
    ann = mlp().cuda()
    x = inputs(256).cuda()
    snn_net = conversion.convert(ann)
    plain = conversion.conversion_error(snn_net, ann, x, 8)
    residual = conversion.calibrate(snn_net, ann, x, 8, iters=20)
    assert snn_net.neurons[0].bias.is_cuda
    assert residual.mean() < 0.1 * plain.mean()
    cpu = conversion.convert(ann.cpu())
    conversion.calibrate(cpu, ann, x.cpu(), 8, iters=20)
    agree = (cpu(x.cpu(), 8).argmax(1) == snn_net.cpu()(x.cpu(), 8).argmax(1)).float().mean()
    assert agree > 0.9


# --------------------------------------------------------------------------- data on disk
def test_image_folder_reads_class_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "ant"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)  # height 5, width 6
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = arr
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["ant", "cat"] and len(ds) == 4
    x, y = ds[0]
    assert y == 0 and x.shape == (3, 5, 6) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(pixels[("ant", 0)]).permute(2, 0, 1).float() / 255)
    assert ds[3][1] == 1
    assert ImageFolder(tmp_path, size=4)[0][0].shape == (3, 4, 4)
    assert ImageFolder(tmp_path, grayscale=True)[0][0].shape == (1, 5, 6)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="`root`"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="`size`"):
        ImageFolder(tmp_path, size=0)


def test_arrays_and_cifar_files(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(6, 4, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 3)
    ds = load_arrays(tmp_path / "a.npz")
    assert ds.tensors[0].shape == (6, 3, 4, 5)
    assert torch.equal(ds.tensors[0], torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    assert ds.tensors[1].tolist() == [0, 1, 2, 0, 1, 2]
    np.savez(tmp_path / "g.npz", x=x.transpose(0, 3, 1, 2).copy(), y=np.zeros(6, np.int64))
    assert torch.equal(load_arrays(tmp_path / "g.npz").tensors[0], ds.tensors[0])  # [N, C, H, W]
    np.savez(tmp_path / "h.npz", x=x[:, :3, :3], y=np.zeros(6, np.int64))  # [N, 3, 3, 3]
    assert torch.equal(load_arrays(tmp_path / "h.npz", channels_last=True).tensors[0],
                       torch.from_numpy(x[:, :3, :3]).permute(0, 3, 1, 2).float() / 255)
    np.savez(tmp_path / "f.npz", x=np.ones((3, 7), np.float32), y=np.zeros(3, np.int64))
    assert load_arrays(tmp_path / "f.npz").tensors[0].shape == (3, 7)
    np.savez(tmp_path / "b.npz", data=x)
    with pytest.raises(ValueError, match="'x' and 'y'"):
        load_arrays(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=x, y=np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        load_arrays(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError):
        load_arrays(tmp_path / "none.npz")

    def write(folder, name, n, key, offset):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({key: list(range(offset, offset + n)), b"data": data}, fh)
        return data

    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    first = write(c10, "data_batch_1", 2, b"labels", 0)
    for i in range(2, 6):
        write(c10, f"data_batch_{i}", 2, b"labels", 2 * i - 2)
    write(c10, "test_batch", 3, b"labels", 0)
    train, test = load_cifar(tmp_path), load_cifar(c10, train=False)
    assert train.tensors[0].shape == (10, 3, 32, 32) and len(test) == 3
    assert train.tensors[1].tolist() == list(range(10))
    red = torch.from_numpy(first[0, :1024].reshape(32, 32)).float() / 255
    assert torch.equal(train.tensors[0][0, 0], red)  # rows hold R, then G, then B
    c100 = tmp_path / "c100" / "cifar-100-python"
    c100.mkdir(parents=True)
    write(c100, "train", 4, b"fine_labels", 5)
    write(c100, "test", 2, b"fine_labels", 0)
    assert load_cifar(tmp_path / "c100").tensors[1].tolist() == [5, 6, 7, 8]
    with pytest.raises(FileNotFoundError, match="CIFAR"):
        load_cifar(tmp_path / "c100" / "nothing")


# --------------------------------------------------------------------------- command line
def test_ftbc_command_runs_and_writes_rows(tmp_path, capsys, one_thread):
    from snntorch_localzo.demo import ftbc

    out = tmp_path / "rows.json"
    args = ["--epochs", "1", "--steps", "1,2", "--calib-batches", "2", "--calib-batch-size", "64",
            "--released", "--finetune", "2", "--finetune-epochs", "1", "--runs", "1",
            "--device", "cpu", "--no-progress", "--json", str(out)]
    assert ftbc.main(args) == 0
    text = capsys.readouterr().out
    assert "plain conversion" in text and "FTBC, released script" in text
    assert "residual error, ftbc" in text
    rows = json.loads(out.read_text())
    methods = [r["method"] for r in rows]
    assert methods.count("ann") == 1 and methods.count("ftbc") == 2
    assert methods.count("ftbc_released") == 2 and methods.count("ftbc+localzo") == 1
    assert all({"net", "T", "method", "seed", "val_acc", "test_acc"} <= set(r) for r in rows)
    assert all(0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0 for r in rows)
    spiking = [r for r in rows if r["method"] in ("plain", "ftbc", "ftbc_released")]
    assert all(r["residual_error"] >= 0 and r["residual_error_calib"] >= 0 for r in spiking)


def test_split_validation_holds_out_a_fixed_disjoint_part():
    from torch.utils.data import TensorDataset

    from snntorch_localzo.demo import ftbc

    data = TensorDataset(torch.arange(50.0)[:, None], torch.arange(50) % 5)
    rest, val = ftbc.split_validation(data, 0.2)
    again = ftbc.split_validation(data, 0.2)[1]
    assert len(val) == 10 and len(rest) == 40
    assert torch.equal(val.tensors[0], again.tensors[0])  # the same split every time
    seen = torch.cat([rest.tensors[0], val.tensors[0]]).flatten().sort().values
    assert torch.equal(seen, torch.arange(50.0))  # disjoint, nothing lost
    assert not torch.equal(val.tensors[0].flatten(), torch.arange(10.0))  # drawn, not the head
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="`fraction`"):
            ftbc.split_validation(data, bad)


def test_ftbc_residual_error_is_measured_off_the_calibration_batches(one_thread):
    """FTBC minimises the error on its calibration batches; the reported
    error comes from held-out training data, so it is larger there."""
    from snntorch_localzo.demo import ftbc

    rows = ftbc.run(ftbc.digits_task(), net="mlp", levels=4, lam=2.0, seeds=[0], epochs=2,
                    steps=[4], calib_batches=1, calib_batch_size=128, test=False)
    row = next(r for r in rows if r["method"] == "ftbc")
    assert row["residual_error"] > 1.5 * row["residual_error_calib"]
    assert all(r["test_acc"] is None for r in rows)  # test=False: the test split is not used


def test_ftbc_command_runs_a_conv_net_on_arrays_from_disk(tmp_path, capsys, one_thread):
    from snntorch_localzo.demo import ftbc

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        np.savez(tmp_path / f"{split}.npz", x=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                 y=rng.integers(0, 3, n))
    args = ["--data", f"npz:{tmp_path}", "--net", "conv", "--epochs", "1", "--steps", "1",
            "--calib-batches", "1", "--calib-batch-size", "20", "--no-progress"]
    assert ftbc.main(args) == 0
    text = capsys.readouterr().out
    assert "input (3, 8, 8), 3 classes" in text and "conv L=8" in text


@pytest.mark.parametrize("args, option", [
    (["--alpha", "2"], "--alpha"),
    (["--steps", "0,2"], "--steps"),
    (["--epochs", "0"], "--epochs"),
    (["--lam", "-1"], "--lam"),
    (["--data", "nowhere:x"], "--data"),
    (["--data", "cifar:/no/such/folder"], "--data"),
    (["--finetune", "64"], "--finetune"),
    (["--net", "resnet"], "--net"),
    (["--threads", "0"], "--threads"),
    (["--weight-decay", "-1"], "--weight-decay"),
])
def test_ftbc_command_rejects_bad_options_in_one_line(args, option, capsys):
    from snntorch_localzo.demo import ftbc

    with pytest.raises(SystemExit) as exc:
        ftbc.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("snntorch-localzo ftbc: error:") and option in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_ftbc_is_a_subcommand_of_the_cli(capsys):
    from snntorch_localzo.demo import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["ftbc", "--help"])
    assert exc.value.code == 0
    assert "snntorch-localzo ftbc" in capsys.readouterr().out


def test_benchmark_smoke(tmp_path, capsys, one_thread, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_ftbc", BENCH / "ftbc.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RECIPES", [(2.0, 2e-3), (8.0, 1e-3)])  # two candidates suffice
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["--seeds", "1", "--nets", "mlp-8", "--epochs", "1", "--steps", "2",
            "--finetune", "2", "--finetune-epochs", "1", "--out", str(out), "--plot", str(png)]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    assert "mlp L=8" in table and "target" in table
    saved = json.loads(out.read_text())
    assert saved["settings"]["seeds"] == [0]
    assert {r["method"] for r in saved["rows"]} == {"ann", "plain", "ftbc", "ftbc_released",
                                                    "ftbc+localzo"}
    assert all(r["val_acc"] is not None and r["test_acc"] is not None for r in saved["rows"])
    # the recipe is the candidate with the best validation score, over every candidate
    selection = saved["settings"]["selection"]["mlp-8"]
    assert len(selection["candidates"]) == len(bench.RECIPES)
    best = max(selection["candidates"], key=lambda c: c["val_ftbc_mean"])
    assert selection["chosen"] == {"lam": best["lam"], "lr": best["lr"]}
    other = tmp_path / "other.json"
    renamed = dict(saved, rows=[dict(r, net="conv L=8") for r in saved["rows"]])
    renamed["settings"] = dict(saved["settings"], selection={"conv-8": selection},
                               nets={"conv-8": saved["settings"]["nets"]["mlp-8"]})
    other.write_text(json.dumps(renamed))
    merged = tmp_path / "merged.json"
    assert bench.main(["--merge", str(out), str(other), "--out", str(merged),
                       "--plot", "none"]) == 0
    both = json.loads(merged.read_text())
    assert set(both["settings"]["selection"]) == {"mlp-8", "conv-8"}
    assert len(both["rows"]) == 2 * len(saved["rows"])
    assert png.read_bytes().startswith(PNG_MAGIC)
    png.unlink()
    assert bench.main(["--replot", "--out", str(out), "--plot", str(png)]) == 0
    assert png.is_file() and "plain conversion" in capsys.readouterr().out
