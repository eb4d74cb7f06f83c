"""Issue 10's benchmark scripts run at toy sizes, and the adaptive-delta
prototypes do what they claim (seconds, CPU; no timing is asserted)."""

import importlib.util
import json
import math
import pickle
import sys
from pathlib import Path

import pytest
import torch

import snntorch_localzo as localzo

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the scripts import each other by name
    spec.loader.exec_module(module)
    return module


TOY = ["--seeds", "1", "--epochs", "2", "--T", "2", "--batch", "16", "--train-limit", "32",
       "--test-limit", "16", "--threads", "1"]


def test_defaults_smoke(tmp_path, capsys):
    defaults = load("defaults")
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    assert defaults.main(TOY + ["--out", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    nets = list(defaults.NETS)
    assert [(r["net"], r["spike_grad"]) for r in rows] == [
        (n, g) for n in nets for g in defaults.DEFAULT_GRADS]
    layers = {"fc_tut5": 2, "conv_tut6": 3, "demo": 2, "deep_conv": 5}
    for r in rows:
        assert len(r["active_per_layer"]) == layers[r["net"]]
        assert 0.0 <= r["test_acc"] <= 1.0
        assert len(r["test_acc_per_epoch"]) == 2
        for x in r["active_per_layer"] + [r["active_overall"]]:
            assert math.isnan(x) or 0.0 <= x <= 1.0
    # the output spikes of fc_tut5 and demo are not in their losses: no gradient reaches them
    assert all(math.isnan(r["active_per_layer"][-1]) for r in rows if r["net"] in ("fc_tut5", "demo"))
    # an snnTorch surrogate is dense wherever a gradient arrives; LocalZO is sparse
    out_layer = {(r["net"], r["spike_grad"]): r["active_per_layer"][-1] for r in rows}
    assert out_layer[("conv_tut6", "fast_sigmoid")] == 1.0
    assert out_layer[("conv_tut6", "new_default")] < 0.5
    # the old default never reaches the tutorial conv net's output (the failure of issue 10)
    assert out_layer[("conv_tut6", "old_default")] == 0.0
    # --table prints the same table from the JSON
    assert defaults.main(["--table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.strip() in printed


def test_defaults_rejects_unknown_names(tmp_path):
    defaults = load("defaults")
    with pytest.raises(SystemExit, match="nope"):
        defaults.main(["--nets", "nope", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="bogus"):
        defaults.main(["--grads", "atan,bogus", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="no results"):
        defaults.main(["--table", "--out", str(tmp_path / "missing.json")])


def test_delta_study_smoke(tmp_path, capsys):
    study = load("delta_study")
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    args = ["--T", "3", "--probe", "8", "--train-limit", "32", "--epochs", "1", "--scales", "0.5,1",
            "--thresholds", "1", "--train", "1:1", "--out", str(out), "--plot", str(png)]
    assert study.main(args) == 0
    assert png.is_file()
    data = json.loads(out.read_text())
    res = data["results"]
    assert [(r["net"], r["scale"], len(r["stages"])) for r in res] == [
        ("fc_tut5", 0.5, 1), ("fc_tut5", 1.0, 2), ("conv_tut6", 0.5, 1), ("conv_tut6", 1.0, 2)]
    for r in res:
        for st in r["stages"]:
            for L in st["layers"]:
                q = [L["abs_u_quantiles"][str(x)] for x in study.QUANTILES]
                assert q == sorted(q) and q[0] >= 0
                bands = [L["within_band"][str(d)] for d in study.DELTAS]
                assert bands == sorted(bands) and 0 <= bands[0] and bands[-1] <= 1
                assert sum(L["hist_counts"]) == L["entries"]
    # tutorial 6's output layer at init: membranes far below threshold, nothing in the band
    out_layer = res[3]["stages"][0]["layers"][-1]
    assert out_layer["max_u"] < -0.5 and out_layer["within_band"]["0.05"] == 0.0
    png.unlink()
    capsys.readouterr()
    assert study.main(["--replot", "--out", str(out), "--plot", str(png)]) == 0
    assert png.is_file()


# --------------------------------------------------------------------------- prototypes
def test_fixed_rule_is_todays_estimator():
    proto = load("_adaptive_prototype")
    u = torch.randn(16, 50) * 0.3
    torch.manual_seed(3)
    ours = proto.AdaptiveLocalZO(proto.Fixed(0.05), samples=2).estimate(u)
    torch.manual_seed(3)
    lib = localzo.make("normal", delta=0.05, samples=2).estimate(u)
    assert torch.equal(ours, lib)


@pytest.mark.parametrize("rho", [0.002, 0.01, 0.1])
def test_active_fraction_rule_hits_its_target(rho):
    proto = load("_adaptive_prototype")
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(64, 200, generator=gen) * 0.5 - 1.0
    rule = proto.ActiveFraction(rho, subsample=10**9)  # the whole call
    delta = rule.delta(u.abs(), "normal", 1)
    assert delta.shape == () and delta.dtype == torch.float32
    assert proto.expected_active_fraction(u.abs(), delta).item() == pytest.approx(rho, rel=0.03)
    assert torch.equal(delta, rule.delta(u.abs(), "normal", 1))  # deterministic
    # a silent, far-away layer (tutorial 6's output at init) still gets estimates
    far = -1.0 + 0.05 * torch.rand(128, 10, generator=gen)
    d_far = proto.ActiveFraction(rho).delta(far.abs(), "normal", 1)
    assert proto.expected_active_fraction(far.abs(), d_far).item() == pytest.approx(rho, rel=0.05)
    # clamped at its floor and ceiling
    assert proto.ActiveFraction(rho, floor=0.2).delta(torch.zeros(100), "normal", 1).item() == \
        pytest.approx(0.2)
    assert proto.ActiveFraction(rho, ceil=0.3).delta(torch.full((100,), 50.0), "normal", 1).item() == \
        pytest.approx(0.3)


def test_per_row_floor_raises_the_target_of_small_layers():
    proto = load("_adaptive_prototype")
    rule = proto.ActiveFraction(0.01, per_row=1)
    assert rule.target(torch.ones(32, 10)) == pytest.approx(0.1)
    assert rule.target(torch.ones(32, 1000)) == pytest.approx(0.01)


def test_bootstrap_target_and_column_floor():
    proto = load("_adaptive_prototype")
    rule = proto.Bootstrap(0.02, 0.3, 0.01, per_row=1, column_p=0.1, subsample=10**9)
    silent = torch.full((64, 500), -1.0) + 0.1 * torch.randn(64, 500)
    firing = torch.randn(64, 500) * 0.5
    d_silent = rule.delta(silent, "normal", 1)
    d_firing = rule.delta(firing, "normal", 1)
    # a silent call is estimated densely (30%), a firing one sparsely (2%), up to
    # the column floor, which only ever widens delta
    assert d_silent.shape == (1, 500) and d_firing.shape == (1, 500)
    f_silent = proto.expected_active_fraction(silent.abs(), d_silent).item()
    f_firing = proto.expected_active_fraction(firing.abs(), d_firing).item()
    assert f_silent > 0.25 and 0.015 < f_firing < 0.06
    # column floor: each neuron's nearest entry (over dim 0) is active w.p. >= 10%
    near = firing.abs().amin(0, keepdim=True)
    p_near = torch.erfc(near / d_firing / math.sqrt(2.0))
    assert (p_near >= 0.1 - 1e-4).all()
    # the output layer of a rate-coded net: at least one expected estimate per sample
    out = -3.0 + 0.1 * torch.randn(64, 10)
    rule_no_col = proto.Bootstrap(0.02, 0.3, 0.01, per_row=1, subsample=10**9)
    f_out = proto.expected_active_fraction(out.abs(), rule_no_col.delta(out, "normal", 1)).item()
    assert f_out == pytest.approx(0.3, rel=0.05)  # silent: rho_silent > per_row / n = 0.1


def test_new_default_is_make_and_unbiased_for_its_per_neuron_gaussian():
    defaults = load("defaults")
    torch.manual_seed(0)
    sg = defaults.new_default()
    assert sg == localzo.make() and sg.adaptive
    u = torch.tensor([[-0.3, -0.05, 0.0, 0.1, -1.0], [-0.2, 0.02, -0.6, 0.3, -0.9]])
    assert sg.step(u).shape == (1, 5)
    n = 4000
    draws = torch.stack([sg.estimate(u) for _ in range(n)])
    mean, se = draws.mean(0).double(), draws.std(0).double() / math.sqrt(n)
    expected = sg.expected_grad(u)
    # (far entries whose estimate is rarely non-zero: an absolute margin)
    assert ((mean - expected).abs() < 5 * se + 1e-3).all()


def test_adaptive_estimate_averages_to_a_gaussian_of_width_delta_t():
    proto = load("_adaptive_prototype")
    torch.manual_seed(0)
    sg = proto.AdaptiveLocalZO(proto.ActiveFraction(0.3))
    u = torch.linspace(-0.4, 0.4, 9)
    draws = torch.stack([sg.estimate(u) for _ in range(4000)])
    mean, se = draws.mean(0).double(), draws.std(0).double() / math.sqrt(4000)
    expected = sg.expected_grad(u)
    assert ((mean - expected).abs() < 5 * se + 1e-6).all()


def test_prototype_backward_and_pickle():
    proto = load("_adaptive_prototype")
    sg = proto.AdaptiveLocalZO(proto.ActiveFraction(0.05), track=True)
    x = (torch.randn(8, 100) - 1).requires_grad_(True)
    spk = sg(x)
    assert torch.equal(spk, (x > 0).float())
    spk.sum().backward()
    frac = (x.grad != 0).float().mean().item()
    assert 0 < frac < 0.25 and sg.active_fraction == pytest.approx(frac)
    copy = pickle.loads(pickle.dumps(sg))
    assert repr(copy) == repr(sg)
    with pytest.raises(ValueError, match="rho"):
        proto.ActiveFraction(1.5)
    with pytest.raises(ValueError, match="law"):
        proto.AdaptiveLocalZO(proto.Fixed(0.1), law="cauchy")
