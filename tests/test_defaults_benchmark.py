"""Issue 10's benchmark scripts run at toy sizes, and the adaptive-delta
prototypes do what they claim (seconds, CPU; no timing is asserted)."""

import importlib.util
import json
import math
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
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        assert len(r["val_acc_per_epoch"]) == 2 and r["val_acc"] == r["val_acc_per_epoch"][-1]
        for x in r["active_per_layer"] + [r["active_overall"]]:
            assert math.isnan(x) or 0.0 <= x <= 1.0
    # the output spikes of fc_tut5 and demo are not in their losses: no gradient reaches them
    assert all(math.isnan(r["active_per_layer"][-1]) for r in rows if r["net"] in ("fc_tut5", "demo"))
    # an snnTorch surrogate is dense wherever a gradient arrives; LocalZO is sparse, except
    # at an output layer of 10 neurons, which make() gives the expected value (AdaptiveDelta.exact)
    out_layer = {(r["net"], r["spike_grad"]): r["active_per_layer"][-1] for r in rows}
    first_layer = {(r["net"], r["spike_grad"]): r["active_per_layer"][0] for r in rows}
    assert out_layer[("conv_tut6", "fast_sigmoid")] == 1.0
    assert first_layer[("conv_tut6", "new_default")] < 0.5
    assert out_layer[("conv_tut6", "new_default")] > 0.99
    # the old default never reaches the tutorial conv net's output (the failure of issue 10)
    assert out_layer[("conv_tut6", "old_default")] == 0.0
    # --table prints the same table from the JSON
    assert defaults.main(["--table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.strip() in printed
    # --append runs a part: the other rows stay, the part's rows are replaced
    assert defaults.main(TOY + ["--nets", "demo", "--grads", "atan", "--append", "--out", str(out),
                                "--plot", "none"]) == 0
    again = json.loads(out.read_text())["rows"]
    assert len(again) == len(rows)
    assert [(r["net"], r["spike_grad"]) for r in again][-1] == ("demo", "atan")


def test_validation_split_is_carved_from_the_training_images():
    defaults = load("defaults")
    d = defaults.Digits()
    n = {k: v.shape[0] for k, v in d.y.items()}
    assert n == {"train": 1149, "val": 288, "test": 360}
    # train + val is the package's training split, test its test split, untouched
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, _, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    assert torch.equal(d.x8["test"].reshape(360, 64) * 16, torch.tensor(X_te, dtype=torch.float32))
    assert torch.equal(d.y["test"], torch.tensor(y_te))
    rows = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    ours = torch.cat([d.x8["train"], d.x8["val"]]).reshape(-1, 64) * 16
    assert rows(ours) == rows(torch.tensor(X_tr, dtype=torch.float32))


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


# --------------------------------------------------------------------------- the default
def test_new_default_is_make_and_unbiased_for_its_per_sample_gaussian():
    defaults = load("defaults")
    torch.manual_seed(0)
    sg = defaults.new_default()
    assert sg == localzo.make() and sg.adaptive
    u = torch.tensor([[-0.3, -0.05, 0.0, 0.1, -1.0], [-0.2, 0.02, -0.6, 0.3, -0.9]])
    assert sg.step(u).shape == (2, 5)  # the entry floor: a step per entry
    n = 4000
    draws = torch.stack([sg.estimate(u) for _ in range(n)])
    mean, se = draws.mean(0).double(), draws.std(0).double() / math.sqrt(n)
    expected = sg.expected_grad(u)
    # (far entries whose estimate is rarely non-zero: an absolute margin)
    assert ((mean - expected).abs() < 5 * se + 1e-3).all()


def test_epoch_time_smoke_interleaves_the_spike_gradients(tmp_path, capsys, monkeypatch):
    epoch_time = load("epoch_time")
    order = []
    epoch = epoch_time.Run.epoch

    def recorded(self, batches):
        order.append(self.key)
        return epoch(self, batches)

    monkeypatch.setattr(epoch_time.Run, "epoch", recorded)
    out = tmp_path / "e.json"
    assert epoch_time.main(["--nets", "demo,conv_tut6", "--rounds", "2", "--T", "2", "--batch", "16",
                            "--train-limit", "32", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    grads = list(epoch_time.DEFAULT_GRADS)
    assert [(r["net"], r["spike_grad"]) for r in rows] == [(n, g) for n in ("demo", "conv_tut6") for g in grads]
    # a warm-up round, then the timed ones, every other round in reversed order
    assert order[:9] == grads + grads[::-1] + grads
    for r in rows:
        assert len(r["epoch_s"]) == 2 and all(t > 0 for t in r["epoch_s"])
        assert r["median_s"] == pytest.approx(sorted(r["epoch_s"])[0] / 2 + sorted(r["epoch_s"])[1] / 2)
    assert [r["ratio"] for r in rows if r["spike_grad"] == "atan"] == [1.0, 1.0]
    assert [r["paired_ratio"] for r in rows if r["spike_grad"] == "atan"] == [1.0, 1.0]
    for r in rows:
        base = next(b["epoch_s"] for b in rows if b["net"] == r["net"] and b["spike_grad"] == "atan")
        ratios = sorted(t / b for t, b in zip(r["epoch_s"], base))
        assert r["paired_ratio"] == pytest.approx((ratios[0] + ratios[1]) / 2)
    # the drop-in row runs localzo.Leaky
    assert epoch_time.SPIKE_GRADS["localzo_leaky"].leaky is localzo.Leaky
    assert "localzo.Leaky with localzo.make()" in capsys.readouterr().out
