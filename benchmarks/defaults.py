"""Does ``spike_grad=localzo.make()`` train any snnTorch model? (issue 10)

Four snnTorch-style networks on scikit-learn's digits, each trained with each
spike gradient of a small registry, several seeds, on the CPU:

    fc_tut5    snnTorch tutorial 5's stack: Linear(784, 1000)-Leaky-Linear(1000, 10)-Leaky,
               beta 0.95, the image fed at every step, cross-entropy of the output
               membrane summed over steps, Adam 5e-4, read out by spike count;
               T=25, batch 32, 6 epochs
    conv_tut6  snnTorch tutorial 6's stack: Conv2d(1, 12, 5)-MaxPool2d(2)-Leaky-
               Conv2d(12, 64, 5)-MaxPool2d(2)-Leaky-Flatten-Linear(64*4*4, 10)-Leaky,
               init_hidden=True, beta 0.5, the image at every step,
               snntorch.functional.ce_rate_loss, Adam 1e-2, read out by spike count;
               T=10, batch 64, 10 epochs
    demo       the package demo's DigitsNet (64-128-10, beta 0.9) on rate-coded 8x8
               digits, cross-entropy of the mean output membrane, Adam 2e-3;
               T=25, batch 64, 15 epochs (the demo's settings)
    deep_conv  a deeper conv stack in tutorial 6's style (5 Leaky layers): Conv2d(1, 8, 5)-
               MaxPool2d(2)-Leaky-Conv2d(8, 16, 3, padding 1)-Leaky-Conv2d(16, 32, 3)-
               MaxPool2d(2)-Leaky-Conv2d(32, 64, 3)-Leaky-Flatten-Linear(576, 10)-Leaky,
               otherwise as conv_tut6 but Adam 5e-3

Deviations from the tutorials, for one CPU thread and 1437 training images:
batch 32/64 instead of 128 (more optimizer steps per epoch), T=10 instead of
50 for the conv nets, a few epochs instead of one MNIST epoch. Every spike
gradient gets the same settings. The 8x8 digits (pixels / 16) are upsampled
to 28x28 (bilinear) for the tutorial nets; the train/test split is the
package's (stratified, random_state=0: 1437 / 360 images). The same seed gives
the same initial weights and the same batch order for every spike gradient.

Spike gradients (``--list``; the default set is the first four):

    fast_sigmoid  snntorch.surrogate.fast_sigmoid()   (tutorial 6's choice, slope 25)
    atan          snntorch.surrogate.atan()           (snnTorch's default, alpha 2)
    old_default   localzo.make('normal', delta=0.05)  (make() before issue 10)
    new_default   localzo.make(): the adaptive step (snntorch_localzo/adaptive.py),
                  the rule the study below picked
    ...           the other candidate rules studied for issue 10

One spike-gradient object is shared by all layers of a network (as users
write it); each layer's calls go through its own probe, which counts the
non-zero entries of the gradient that reaches that layer's membrane
(``mem - threshold``) in backward. "Active %" is that count over all
entries in epochs 2 and later (the first epoch is reported separately).

    python benchmarks/defaults.py                  # 4 nets x 4 spike gradients x 3 seeds
    python benchmarks/defaults.py --nets conv_tut6 --grads old_default,new_default --seeds 1
    python benchmarks/defaults.py --table          # table again from the JSON
    python benchmarks/defaults.py --replot         # table and plot again from the JSON

Writes benchmarks/results/defaults_cpu.json (one row per net, spike gradient
and seed) and docs/img/defaults_cpu.png (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import snntorch
import snntorch as snn
import snntorch.functional as SF
import snntorch.surrogate as surrogate
import torch
import torch.nn as nn
import torch.nn.functional as F
from snntorch import utils as snn_utils

import snntorch_localzo as localzo
from snntorch_localzo.demo.data import rate_encode
from snntorch_localzo.demo.models import DigitsNet
from snntorch_localzo.demo.train import SpikeGradProbe

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from _common import machine, write_results  # noqa: E402


# --------------------------------------------------------------------------- spike gradients
@dataclass(frozen=True)
class SpikeGrad:
    """A named spike gradient: ``factory()`` gives a fresh object, shared by
    all layers of a network unless ``per_layer`` (then one per layer), in
    ``leaky`` neurons (``snn.Leaky``, or the drop-in ``localzo.Leaky``)."""

    key: str
    label: str
    factory: Callable
    per_layer: bool = False
    leaky: Callable = snn.Leaky


def new_default():
    """The spike gradient the benchmark calls "make() new default": the library's."""
    return localzo.make()


NEW_DEFAULT_LABEL = "localzo.make()"


SPIKE_GRADS: Dict[str, SpikeGrad] = {
    s.key: s
    for s in (
        SpikeGrad("fast_sigmoid", "snntorch.surrogate.fast_sigmoid()", lambda: surrogate.fast_sigmoid()),
        SpikeGrad("atan", "snntorch.surrogate.atan()", lambda: surrogate.atan()),
        SpikeGrad("old_default", "localzo.make('normal', delta=0.05)",
                  lambda: localzo.make("normal", delta=0.05)),
        SpikeGrad("new_default", NEW_DEFAULT_LABEL, new_default),
        # the same spike gradient in the drop-in neuron (one object per layer, which counts itself)
        SpikeGrad("drop_in", "localzo.Leaky with localzo.make()", lambda: localzo.make(track=True),
                  per_layer=True, leaky=localzo.Leaky),
        # the active entries drawn by the incoming gradient everywhere (docs/method.md section 8)
        SpikeGrad("gradient", "localzo.make(sampling='gradient')", lambda: localzo.make(sampling="gradient")),
        # make() until 2026-12-07 (the law's draw, a 5% conv band), and the gradient's draw with that band
        SpikeGrad("law_05", "make() before: sampling='law', 5% conv band",
                  lambda: localzo.make(delta=localzo.AdaptiveDelta(conv_active=0.05), sampling="law")),
        SpikeGrad("gradient_05", "make(sampling='gradient'), 5% conv band",
                  lambda: localzo.make(delta=localzo.AdaptiveDelta(conv_active=0.05), sampling="gradient")),
        # candidates studied for issue 10 (not in the default set)
        SpikeGrad("paper_conv", "localzo.make('normal', delta=0.5, samples=5)",
                  lambda: localzo.make("normal", delta=0.5, samples=5)),
        SpikeGrad("fs_twin", "localzo.make('fast_sigmoid')", lambda: localzo.make("fast_sigmoid")),
        SpikeGrad("atan_twin", "localzo.make('atan')", lambda: localzo.make("atan")),
    )
}
DEFAULT_GRADS = ("fast_sigmoid", "atan", "old_default", "new_default")


class LayerProbe(SpikeGradProbe):
    """One layer's view of a (possibly shared) spike gradient: counts the
    non-zero entries of the gradient reaching the layer's ``mem - threshold``."""

    def reset(self) -> None:
        self.meter.reset()


def spiking_layers(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, snn.SpikingNeuron)]


def attach_probes(model: nn.Module, grad: SpikeGrad, shared) -> List[LayerProbe]:
    """Gives each spiking layer its probe (around ``shared``, or a fresh
    object per layer when ``grad.per_layer``)."""
    probes = []
    for layer in spiking_layers(model):
        sg = grad.factory() if grad.per_layer else shared
        if grad.leaky is not snn.Leaky:  # the drop-in keeps its LocalZO, whose meter counts
            layer.spike_grad = sg
            probes.append(MeterProbe(sg))
            continue
        probe = LayerProbe(sg)
        layer.spike_grad = probe
        probes.append(probe)
    return probes


class MeterProbe:
    """A drop-in layer's own LocalZO meter, read as its probe."""

    def __init__(self, spike_grad):
        self.meter = spike_grad.meter

    def reset(self) -> None:
        self.meter.reset()


# --------------------------------------------------------------------------- data
class Digits:
    """scikit-learn digits with the package's split: 8x8 pixels in [0, 1].

    The package's training images (1437) are split once more, stratified with
    ``random_state=1``, into the images a run trains on (80%) and a
    validation set (20%) on which every choice of the study is made; the
    test images are evaluated once, at the end of each run."""

    def __init__(self, train_limit: Optional[int] = None, test_limit: Optional[int] = None):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        X, y = load_digits(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=0.2, random_state=1, stratify=y_tr)
        img = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 8, 8) / 16  # noqa: E731
        self.x8 = {"train": img(X_tr[:train_limit]), "val": img(X_va[:test_limit]),
                   "test": img(X_te[:test_limit])}
        self.y = {"train": torch.tensor(y_tr[:train_limit]), "val": torch.tensor(y_va[:test_limit]),
                  "test": torch.tensor(y_te[:test_limit])}

    def static28(self, part: str) -> torch.Tensor:
        """The ``part`` images upsampled to 28x28 (bilinear), ``[N, 1, 28, 28]``."""
        x = F.interpolate(self.x8[part], size=(28, 28), mode="bilinear", align_corners=False)
        return x.clamp(0, 1)


# --------------------------------------------------------------------------- networks
class TutorialFC(nn.Module):
    """snnTorch tutorial 5's network: returns output spikes and membranes ``[T, B, 10]``."""

    def __init__(self, spike_grad, num_steps: int, beta: float = 0.95, threshold: float = 1.0,
                 leaky=snn.Leaky):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(28 * 28, 1000)
        self.lif1 = leaky(beta=beta, spike_grad=spike_grad, threshold=threshold)
        self.fc2 = nn.Linear(1000, 10)
        self.lif2 = leaky(beta=beta, spike_grad=spike_grad, threshold=threshold)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial_conv(spike_grad, beta: float = 0.5, threshold: float = 1.0, leaky=snn.Leaky) -> nn.Sequential:
    """snnTorch tutorial 6's ``nn.Sequential`` (one time step per call)."""
    kw = dict(beta=beta, spike_grad=spike_grad, threshold=threshold, init_hidden=True)
    return nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), leaky(**kw),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), leaky(**kw),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10), leaky(output=True, **kw),
    )


def deep_conv(spike_grad, beta: float = 0.5, threshold: float = 1.0, leaky=snn.Leaky) -> nn.Sequential:
    """Five Leaky layers in tutorial 6's style (28x28 -> 12 -> 12 -> 5 -> 3 -> 10)."""
    kw = dict(beta=beta, spike_grad=spike_grad, threshold=threshold, init_hidden=True)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), leaky(**kw),
        nn.Conv2d(8, 16, 3, padding=1), leaky(**kw),
        nn.Conv2d(16, 32, 3), nn.MaxPool2d(2), leaky(**kw),
        nn.Conv2d(32, 64, 3), leaky(**kw),
        nn.Flatten(), nn.Linear(64 * 3 * 3, 10), leaky(output=True, **kw),
    )


def run_sequential(model: nn.Sequential, x: torch.Tensor, num_steps: int):
    """Tutorial 6's ``forward_pass``: reset the hidden states, the same input at
    every step; output spikes and membranes ``[T, B, 10]``."""
    snn_utils.reset(model)
    spk_rec, mem_rec = [], []
    for _ in range(num_steps):
        spk, mem = model(x)
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


@dataclass
class NetSpec:
    key: str
    description: str
    num_steps: int
    epochs: int
    batch: int
    lr: float
    data: str = "static28"  # or "rate8"
    loss: str = "ce_rate"  # or "ce_mem_sum", "ce_mem_mean"
    readout: str = "spike_count"  # or "mem_mean"

    def build(self, spike_grad, threshold: float = 1.0, leaky=snn.Leaky) -> nn.Module:
        """The network with ``spike_grad`` in its ``leaky`` neurons (``snn.Leaky``,
        or the drop-in ``localzo.Leaky``)."""
        if self.key == "fc_tut5":
            return TutorialFC(spike_grad, self.num_steps, threshold=threshold, leaky=leaky)
        if self.key == "conv_tut6":
            return tutorial_conv(spike_grad, threshold=threshold, leaky=leaky)
        if self.key == "deep_conv":
            return deep_conv(spike_grad, threshold=threshold, leaky=leaky)
        if self.key == "demo":
            if threshold != 1.0:
                raise ValueError("the demo net has threshold 1 only")
            return DigitsNet(spike_grad, leaky=leaky)
        raise ValueError(f"unknown net {self.key!r}")

    def forward(self, model, x):
        """Spikes (or None) and membranes ``[T, B, 10]`` for inputs ``x``."""
        if self.key == "fc_tut5":
            return model(x.flatten(1))
        if self.key == "demo":
            return None, model(x)
        return run_sequential(model, x, self.num_steps)

    def loss_value(self, spk, mem, y):
        if self.loss == "ce_mem_sum":
            return sum(F.cross_entropy(mem[t], y) for t in range(mem.shape[0]))
        if self.loss == "ce_rate":
            return SF.ce_rate_loss()(spk, y)
        return F.cross_entropy(mem.mean(0), y)

    def predict(self, spk, mem):
        return (spk.sum(0) if self.readout == "spike_count" else mem.mean(0)).argmax(1)


NETS: Dict[str, NetSpec] = {
    n.key: n
    for n in (
        NetSpec("fc_tut5", "tutorial 5: 784-1000-10 Leaky (beta 0.95), CE on membrane summed over steps",
                num_steps=25, epochs=6, batch=32, lr=5e-4, loss="ce_mem_sum"),
        NetSpec("conv_tut6", "tutorial 6: 12C5-MP2-64C5-MP2-FC10 Leaky (beta 0.5), ce_rate_loss",
                num_steps=10, epochs=10, batch=64, lr=1e-2),
        NetSpec("demo", "demo DigitsNet: 64-128-10 Leaky (beta 0.9), rate-coded 8x8, CE on mean membrane",
                num_steps=25, epochs=15, batch=64, lr=2e-3, data="rate8", loss="ce_mem_mean",
                readout="mem_mean"),
        NetSpec("deep_conv", "deeper conv: 8C5-MP2-16C3-32C3-MP2-64C3-FC10, 5 Leaky (beta 0.5), ce_rate_loss",
                num_steps=10, epochs=10, batch=64, lr=5e-3),
    )
}


# --------------------------------------------------------------------------- training
def layer_fraction(active: List[float], total: List[float]) -> float:
    s = sum(total)
    return sum(active) / s if s else float("nan")


def train_one(spec: NetSpec, grad: SpikeGrad, seed: int, digits: Digits) -> Dict:
    """One training run: ``spec.epochs`` epochs on the training part,
    validation accuracy after each epoch, test accuracy once at the end;
    returns its row. The demo net's rate code is drawn afresh at every
    presentation of a training batch (snnTorch's convention) and once per run
    for the validation and test images."""
    if spec.data == "rate8":
        gen = torch.Generator().manual_seed(seed)
        encode = lambda x: rate_encode(x.reshape(-1, 64), spec.num_steps, gen)  # noqa: E731
        x_train = digits.x8["train"]
        x_val, x_test = (encode(digits.x8[part]) for part in ("val", "test"))
        eval_dim = 1
    else:
        encode = None
        x_train, x_val, x_test = (digits.static28(part) for part in ("train", "val", "test"))
        eval_dim = 0
    y_train = digits.y["train"]
    n_train = y_train.shape[0]
    torch.manual_seed(seed)
    shared = grad.factory()
    model = spec.build(shared, leaky=grad.leaky)
    probes = attach_probes(model, grad, shared)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=(0.9, 0.999))
    order_gen = torch.Generator().manual_seed(seed)
    val_per_epoch, epoch_s, loss_per_epoch = [], [], []
    active_counts = []  # per epoch: per layer [active, total]
    for _ in range(spec.epochs):
        for p in probes:
            p.reset()
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=order_gen)
        losses = []
        for first in range(0, n_train, spec.batch):
            idx = order[first:first + spec.batch]
            xb = x_train.index_select(0, idx)
            if encode is not None:
                xb = encode(xb)
            spk, mem = spec.forward(model, xb)
            loss = spec.loss_value(spk, mem, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        epoch_s.append(time.perf_counter() - start)
        loss_per_epoch.append(statistics.mean(losses))
        active_counts.append([[p.meter.active, p.meter.total] for p in probes])
        val_per_epoch.append(evaluate(spec, model, x_val, digits.y["val"], eval_dim))
    test_acc = evaluate(spec, model, x_test, digits.y["test"], eval_dim)
    later = active_counts[1:] or active_counts
    n_layers = len(probes)
    per_layer = [layer_fraction([e[i][0] for e in later], [e[i][1] for e in later])
                 for i in range(n_layers)]
    first = [layer_fraction([active_counts[0][i][0]], [active_counts[0][i][1]])
             for i in range(n_layers)]
    overall = layer_fraction([a for e in later for a, _ in e], [t for e in later for _, t in e])
    return {
        "net": spec.key, "spike_grad": grad.key, "label": grad.label, "seed": seed,
        "val_acc": val_per_epoch[-1], "val_acc_per_epoch": val_per_epoch, "test_acc": test_acc,
        "train_loss_per_epoch": loss_per_epoch,
        "active_per_layer": per_layer, "active_overall": overall,
        "active_per_layer_epoch1": first,
        "active_counts_per_epoch": active_counts,
        "epoch_s": epoch_s,
    }


def evaluate(spec: NetSpec, model, x, y, batch_dim: int, chunk: int = 128) -> float:
    """Accuracy on inputs ``x`` (batch along ``batch_dim``) and labels ``y``."""
    model.eval()
    correct = 0
    n = y.shape[0]
    with torch.no_grad():
        for first in range(0, n, chunk):
            xb = x.narrow(batch_dim, first, min(chunk, n - first))
            spk, mem = spec.forward(model, xb)
            correct += int((spec.predict(spk, mem) == y[first:first + chunk]).sum())
    return correct / n


# --------------------------------------------------------------------------- report
def mean_std(values: List[float]):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: List[Dict]) -> List[Dict]:
    """One entry per (net, spike gradient), in the order first seen."""
    groups: Dict = {}
    for r in rows:
        groups.setdefault((r["net"], r["spike_grad"]), []).append(r)
    out = []
    for (net, key), rs in groups.items():
        acc = mean_std([r["test_acc"] for r in rs])
        val = mean_std([r["val_acc"] for r in rs])
        n_layers = len(rs[0]["active_per_layer"])
        layers = [mean_std([r["active_per_layer"][i] for r in rs])[0] for i in range(n_layers)]
        layers1 = [mean_std([r["active_per_layer_epoch1"][i] for r in rs])[0] for i in range(n_layers)]
        out.append({
            "net": net, "spike_grad": key, "label": rs[0]["label"], "seeds": [r["seed"] for r in rs],
            "val_acc_mean": val[0], "val_acc_std": val[1],
            "val_acc_per_seed": [r["val_acc"] for r in rs],
            "test_acc_mean": acc[0], "test_acc_std": acc[1],
            "test_acc_per_seed": [r["test_acc"] for r in rs],
            "active_per_layer": layers, "active_per_layer_epoch1": layers1,
            "active_overall": mean_std([r["active_overall"] for r in rs])[0],
            "epoch_s": statistics.mean(statistics.median(r["epoch_s"]) for r in rs),
        })
    return out


def _pct(x: float) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{100 * x:.2f}" if x < 0.9995 else "100"


def format_table(summary: List[Dict]) -> str:
    w = max([len("spike_grad")] + [len(s["label"]) for s in summary])
    header = (f"{'net':<10} {'spike_grad':<{w}} {'val acc %':>14} {'test acc %':>14}  "
              f"{'active % ep2+ per layer':<34}"
              f"{'all':>7}  {'ep1 per layer':<34}{'s/ep':>6}")
    lines = [header, "-" * len(header)]
    best = {}
    for s in summary:
        if s["spike_grad"] in ("fast_sigmoid", "atan"):
            best[s["net"]] = max(best.get(s["net"], 0.0), s["test_acc_mean"])
    last_net = None
    for s in summary:
        if last_net is not None and s["net"] != last_net:
            lines.append("")
        last_net = s["net"]
        acc = f"{100 * s['test_acc_mean']:.2f} ± {100 * s['test_acc_std']:.2f}"
        val = f"{100 * s['val_acc_mean']:.2f} ± {100 * s['val_acc_std']:.2f}"
        layers = " / ".join(_pct(x) for x in s["active_per_layer"])
        layers1 = " / ".join(_pct(x) for x in s["active_per_layer_epoch1"])
        flag = ""
        if s["net"] in best and s["spike_grad"] not in ("fast_sigmoid", "atan"):
            gap = 100 * (best[s["net"]] - s["test_acc_mean"])
            flag = " *" if gap > 2.0 + 1e-9 else ""  # (float noise: 2.00 points is within)
        lines.append(f"{s['net']:<10} {s['label']:<{w}} {val:>14} {acc:>14}{flag:<2}{layers:<34}"
                     f"{_pct(s['active_overall']):>7}  {layers1:<34}{s['epoch_s']:>6.1f}")
    lines.append("")
    lines.append("active %: non-zero entries of the gradient reaching each spiking layer's "
                 "mem - threshold (input to output; '-': no gradient reaches it), epochs 2+; "
                 "all: over all layers; ep1: first epoch. *: more than 2 points below the best "
                 "snnTorch surrogate on that net.")
    return "\n".join(lines)


def plot(summary: List[Dict], settings: Dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(s["net"] for s in summary))
    keys = list(dict.fromkeys(s["spike_grad"] for s in summary))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, len(nets), figsize=(3.6 * len(nets), 6.2), squeeze=False)
    labelled = set()  # one legend entry per spike gradient, from the first net that has it
    for j, net in enumerate(nets):
        rows = {s["spike_grad"]: s for s in summary if s["net"] == net}
        for i, key in enumerate(keys):
            if key not in rows:
                continue
            s = rows[key]
            c = colors[i % len(colors)]
            axes[0][j].bar(i, 100 * s["test_acc_mean"], yerr=100 * s["test_acc_std"], color=c,
                           label=None if key in labelled else s["label"], capsize=3)
            labelled.add(key)
            act = s["active_overall"]
            if math.isnan(act) or act <= 0.0:  # no gradient at all: marked, not drawn
                axes[1][j].plot(i, 0.13, "x", color=c, ms=8, mew=2)
            else:
                axes[1][j].bar(i, 100 * act, color=c)
        axes[0][j].set_title(net)
        axes[0][j].set_ylim(0, 100)
        axes[0][j].set_xticks([])
        axes[1][j].set_yscale("log")
        axes[1][j].set_ylim(0.1, 150)
        axes[1][j].set_xticks([])
        axes[1][j].axhline(5.0, color="gray", lw=0.8, ls="--")
    axes[0][0].set_ylabel("test accuracy % (mean ± std)")
    axes[1][0].set_ylabel("active % in backward (epochs 2+;\nx: no gradient at all)")
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"snnTorch-style nets on digits, {len(settings['seeds'])} seeds, {settings['machine']}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main
def rule_grad(key: str) -> SpikeGrad:
    """A candidate step rule named on the command line: ``rule:FIELD=VALUE/...``
    is ``localzo.make(delta=AdaptiveDelta(FIELD=VALUE, ...))`` (``rule:`` alone:
    the default rule), e.g. ``rule:active=0.1/channel=0``; ``law=NAME`` picks
    the law of ``z`` (``localzo.make(NAME, delta=...)``; default ``normal``,
    the law the study began with, so that its earlier rows stay reproducible:
    ``rule:law=uniform`` is ``make()``); ``sampling=gradient`` draws by the
    incoming gradient (``make(sampling="gradient")``)."""
    fields = {}
    law, sampling = "normal", "law"
    for item in filter(None, key[len("rule:"):].split("/")):
        name, _, value = item.partition("=")
        if name == "law":
            law = value
            continue
        if name == "sampling":
            sampling = value
            continue
        try:
            fields[name] = float(value)
        except ValueError:
            raise SystemExit(f"bad rule field {item!r} in {key!r}: expected FIELD=NUMBER")
    try:
        rule = localzo.AdaptiveDelta(**fields)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"bad rule {key!r}: {e}")
    try:
        localzo.make(law, delta=rule, sampling=sampling)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"bad rule {key!r}: {e}")
    extra = "" if sampling == "law" else f", sampling={sampling!r}"
    label = f"localzo.make(delta={rule!r}{extra})" if law == "normal" \
        else f"localzo.make({law!r}, delta={rule!r}{extra})"
    return SpikeGrad(key, label, lambda: localzo.make(law, delta=rule, sampling=sampling))


def _names(text: Optional[str], known: Dict, what: str, default) -> List[str]:
    if not text:
        return list(default)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; expected some of {sorted(known)}")
    return names


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"`{name}` must be an integer >= 1, got {text!r}")
        if value < 1:
            raise argparse.ArgumentTypeError(f"`{name}` must be an integer >= 1, got {value}")
        return value
    return parse


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", help=f"comma-separated, from {list(NETS)} (default all)")
    p.add_argument("--grads", help=f"comma-separated spike gradients (default {','.join(DEFAULT_GRADS)}); "
                   "--list shows all; rule:FIELD=VALUE/... a candidate AdaptiveDelta")
    p.add_argument("--list", action="store_true", help="list nets and spike gradients and exit")
    p.add_argument("--seeds", type=_positive("--seeds"), default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds from this one on (default 0)")
    p.add_argument("--epochs", type=_positive("--epochs"), help="override every net's epochs")
    p.add_argument("--T", type=_positive("--T"), help="override every net's time steps")
    p.add_argument("--batch", type=_positive("--batch"), help="override every net's batch size")
    p.add_argument("--train-limit", type=_positive("--train-limit"),
                   help="use only the first N training images (smoke tests)")
    p.add_argument("--test-limit", type=_positive("--test-limit"), help="use only the first N test images")
    p.add_argument("--threads", type=_positive("--threads"), default=1, help="torch threads (default 1)")
    p.add_argument("--out", help="JSON path (default benchmarks/results/defaults_cpu.json)")
    p.add_argument("--plot", help="PNG path (default docs/img/defaults_cpu.png); 'none': no plot")
    p.add_argument("--append", action="store_true",
                   help="keep the JSON's rows of other nets, spike gradients and seeds (runs in parts)")
    p.add_argument("--table", action="store_true", help="train nothing: print the table from the JSON")
    p.add_argument("--replot", action="store_true", help="train nothing: table and plot from the JSON")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else HERE / "results" / "defaults_cpu.json"
    png = Path(args.plot) if args.plot else ROOT / "docs" / "img" / "defaults_cpu.png"
    if args.list:
        for spec in NETS.values():
            print(f"net  {spec.key:<12} {spec.description}")
        for g in SPIKE_GRADS.values():
            mark = "*" if g.key in DEFAULT_GRADS else " "
            print(f"grad {g.key:<18}{mark} {g.label}")
        return 0
    if args.table or args.replot:
        if not out.is_file():
            raise SystemExit(f"no results at {out}: run the benchmark first (or pass --out)")
        saved = json.loads(out.read_text())
        summary = summarise(saved["rows"])
        print(format_table(summary))
        if args.replot and args.plot != "none":
            print(f"wrote {plot(summary, saved['settings'], png)}")
        return 0
    nets = _names(args.nets, NETS, "net(s)", NETS)
    candidates = {n.strip(): rule_grad(n.strip()) for n in (args.grads or "").split(",")
                  if n.strip().startswith("rule:")}
    SPIKE_GRADS.update(candidates)
    grads = _names(args.grads, SPIKE_GRADS, "spike gradient(s)", DEFAULT_GRADS)
    torch.set_num_threads(args.threads)
    specs = []
    for key in nets:
        s = NETS[key]
        specs.append(dataclasses.replace(s, num_steps=args.T or s.num_steps,
                                         epochs=args.epochs or s.epochs, batch=args.batch or s.batch))
    digits = Digits(args.train_limit, args.test_limit)
    settings = {
        "dataset": "scikit-learn digits, split stratified random_state=0; 8x8 upsampled to 28x28 "
                   "(bilinear) for fc_tut5/conv_tut6/deep_conv, rate-coded 8x8 for demo",
        "nets": {s.key: {"description": s.description, "T": s.num_steps, "epochs": s.epochs,
                         "batch": s.batch, "lr": s.lr, "loss": s.loss, "readout": s.readout}
                 for s in specs},
        "spike_grads": {g: SPIKE_GRADS[g].label for g in grads},
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "n_train": int(digits.y["train"].shape[0]), "n_val": int(digits.y["val"].shape[0]),
        "n_test": int(digits.y["test"].shape[0]),
        "machine": machine(), "torch": torch.__version__, "snntorch": snntorch.__version__,
        "threads": args.threads,
    }
    print(f"defaults benchmark: nets {nets}, spike gradients {grads}, seeds {settings['seeds']}; "
          f"{settings['machine']}; torch {torch.__version__}, snnTorch {snntorch.__version__}")
    for s in specs:
        print(f"  {s.key}: T={s.num_steps}, {s.epochs} epochs, batch {s.batch}, Adam lr {s.lr:g}")
    rows = []
    start = time.perf_counter()
    for spec in specs:
        for seed in settings["seeds"]:
            for key in grads:
                t0 = time.perf_counter()
                row = train_one(spec, SPIKE_GRADS[key], seed, digits)
                row["run_s"] = time.perf_counter() - t0
                rows.append(row)
                print(f"  {spec.key} seed {seed} {key}: val {100 * row['val_acc']:.2f}%  "
                      f"test {100 * row['test_acc']:.2f}%  active "
                      f"{' / '.join(_pct(x) for x in row['active_per_layer'])}  "
                      f"({row['run_s']:.0f} s)", flush=True)
    total = time.perf_counter() - start
    settings["total_s"] = total
    if args.append and out.is_file():
        saved = json.loads(out.read_text())
        done = {(r["net"], r["spike_grad"], r["seed"]) for r in rows}
        rows = [r for r in saved["rows"] if (r["net"], r["spike_grad"], r["seed"]) not in done] + rows
        settings["spike_grads"] = {**saved["settings"]["spike_grads"], **settings["spike_grads"]}
        settings["nets"] = {**saved["settings"]["nets"], **settings["nets"]}
        settings["seeds"] = sorted({r["seed"] for r in rows})
        settings["total_s"] = total + saved["settings"].get("total_s", 0.0)
    summary = summarise(rows)
    print()
    print(format_table(summary))
    print(f"\n(total {total:.0f} s)")
    return write_results(out, {"settings": settings, "summary": summary, "rows": rows},
                         figure=None if args.plot == "none" else lambda: plot(summary, settings, png))


if __name__ == "__main__":
    sys.exit(main())
