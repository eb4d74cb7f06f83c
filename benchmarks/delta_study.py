"""Where do membranes sit relative to threshold? (issue 10)

For snnTorch tutorial 5's fully connected net and tutorial 6's conv net (as
in ``benchmarks/defaults.py``, on digits upsampled to 28x28), records every
spiking layer's ``u = mem - threshold`` at every time step of a fixed batch
of training images, and summarises its distribution per layer:

* quantiles of ``|u|`` and the largest ``u`` (how close the layer comes);
* the fraction of entries within the band ``|u| < delta`` and LocalZO's
  expected active fraction ``mean(1 - F(|u|/delta))`` (normal law, one
  sample) for delta in 0.008, 0.05 (``make()`` before issue 10), 0.5;
* the step ``delta_rho`` at which the expected active fraction of a call is
  ``rho`` (bisection in log delta), median over the time steps;
* the spike rate;

at initialisation for several weight scales (PyTorch's default init times
``--scales``) and thresholds (``--thresholds``), and during training (after
each epoch) for a few (scale, threshold) pairs, trained with snnTorch's
fast sigmoid (the surrogate of tutorial 6, which trains both nets), or
``--train-grad``.

    python benchmarks/delta_study.py            # 5 to 15 min on one CPU thread
    python benchmarks/delta_study.py --replot   # figure again from the JSON

Writes benchmarks/results/delta_study_cpu.json and docs/img/delta_study_cpu.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import snntorch
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import defaults  # noqa: E402
from _common import write_results  # noqa: E402

from snntorch_localzo.distributions import Normal  # noqa: E402

DELTAS = (0.008, 0.05, 0.5)
QUANTILES = (0.001, 0.01, 0.05, 0.1, 0.5, 0.9)
RHOS = (0.01, 0.05)
HIST_EDGES = [x / 10 for x in range(-80, 21)]  # u from -8 to 2, step 0.1


class URecorder:
    """Forward hooks on every spiking layer that keep ``mem - threshold``
    after each step (the value the layer's spike function is called on)."""

    def __init__(self, model: nn.Module):
        self.layers = defaults.spiking_layers(model)
        self.values: List[List[torch.Tensor]] = [[] for _ in self.layers]
        self.spikes: List[List[torch.Tensor]] = [[] for _ in self.layers]
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        self.active = False

    def _hook(self, i):
        def hook(module, inputs, output):
            if not self.active:
                return
            spk = output[0] if isinstance(output, tuple) else output
            mem = output[1] if isinstance(output, tuple) else module.mem
            self.values[i].append((mem - module.threshold).detach().float().clone())
            self.spikes[i].append(spk.detach().float().mean())
        return hook

    def clear(self):
        self.values = [[] for _ in self.layers]
        self.spikes = [[] for _ in self.layers]

    def remove(self):
        for h in self.handles:
            h.remove()


def expected_active(uabs: torch.Tensor, delta: float) -> torch.Tensor:
    """LocalZO's expected active fraction ``mean(1 - F(|u|/delta))`` (normal
    law, one direction), in float64."""
    return Normal(delta).active_prob(uabs, 1).mean()


def delta_for(uabs: torch.Tensor, rho: float, low: float = 1e-3, high: float = 10.0) -> float:
    """The step in ``[low, high]`` at which :func:`expected_active` is ``rho``
    (it grows with the step): 50 bisections in log delta."""
    uabs = torch.nan_to_num(uabs.to(torch.float64), nan=math.inf)
    lo, hi = math.log(low), math.log(high)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if float(expected_active(uabs, math.exp(mid))) < rho:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def layer_stats(steps: List[torch.Tensor], spikes: List[torch.Tensor]) -> Dict:
    u = torch.cat([s.reshape(-1) for s in steps])
    a = u.abs().double()
    qs = torch.quantile(a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[:2**24]],
                        torch.tensor(QUANTILES, dtype=torch.float64))
    out = {
        "entries": int(u.numel()),
        "abs_u_quantiles": {str(q): float(v) for q, v in zip(QUANTILES, qs)},
        "max_u": float(u.max()), "mean_u": float(u.mean()), "std_u": float(u.std()),
        "within_band": {str(d): float((a < d).double().mean()) for d in DELTAS},
        "expected_active": {str(d): float(expected_active(a, d)) for d in DELTAS},
        "spike_rate": float(torch.stack(spikes).mean()) if spikes else float("nan"),
    }
    for rho in RHOS:
        ds = [delta_for(s.abs().reshape(-1), rho) for s in steps]
        out[f"delta_rho_{rho}"] = statistics.median(ds)
    hist = torch.histogram(u.clamp(HIST_EDGES[0], HIST_EDGES[-1]).double(),
                           bins=torch.tensor(HIST_EDGES, dtype=torch.float64))
    out["hist_counts"] = [int(c) for c in hist.hist]
    return out


def scale_init(model: nn.Module, scale: float) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.mul_(scale)


def measure(spec, model, rec: URecorder, x: torch.Tensor) -> List[Dict]:
    rec.clear()
    rec.active = True
    model.eval()
    with torch.no_grad():
        spec.forward(model, x)
    rec.active = False
    return [layer_stats(v, s) for v, s in zip(rec.values, rec.spikes)]


def study_one(spec, grad: defaults.SpikeGrad, *, scale: float, threshold: float,
              train_epochs: int, seed: int, x_train, y_train, probe_x) -> Dict:
    torch.manual_seed(seed)
    model = spec.build(grad.factory(), threshold=threshold)
    scale_init(model, scale)
    rec = URecorder(model)
    stages = [{"epoch": 0, "layers": measure(spec, model, rec, probe_x)}]
    if train_epochs:
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=(0.9, 0.999))
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(1, train_epochs + 1):
            model.train()
            order = torch.randperm(x_train.shape[0], generator=gen)
            for first in range(0, x_train.shape[0], spec.batch):
                idx = order[first:first + spec.batch]
                spk, mem = spec.forward(model, x_train[idx])
                loss = spec.loss_value(spk, mem, y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            stages.append({"epoch": epoch, "layers": measure(spec, model, rec, probe_x)})
    rec.remove()
    return {"net": spec.key, "scale": scale, "threshold": threshold, "train_grad": grad.key,
            "stages": stages}


# --------------------------------------------------------------------------- report
def format_table(results: List[Dict]) -> str:
    header = (f"{'net':<10}{'scale':>6}{'thr':>5}{'ep':>4} {'layer':>5}{'max u':>8}"
              f"{'|u| q1%':>9}{'q50%':>7}  {'in |u|<0.05':>11}{'E act .05':>10}{'E act .5':>9}"
              f"{'d_rho1%':>9}{'d_rho5%':>9}{'spk rate':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        for st in r["stages"]:
            for i, L in enumerate(st["layers"]):
                q = L["abs_u_quantiles"]
                lines.append(
                    f"{r['net']:<10}{r['scale']:>6g}{r['threshold']:>5g}{st['epoch']:>4} {i + 1:>5}"
                    f"{L['max_u']:>8.3f}{q['0.01']:>9.3f}{q['0.5']:>7.3f}  "
                    f"{100 * L['within_band']['0.05']:>10.2f}%{100 * L['expected_active']['0.05']:>9.2f}%"
                    f"{100 * L['expected_active']['0.5']:>8.2f}%{L['delta_rho_0.01']:>9.3f}"
                    f"{L['delta_rho_0.05']:>9.3f}{100 * L['spike_rate']:>8.2f}%")
    lines.append("")
    lines.append("u = mem - threshold over all steps of the probe batch; in |u|<0.05: fraction in the "
                 "band; E act d: expected LocalZO active fraction at delta d (normal, 1 sample); "
                 "d_rho: delta giving expected active fraction rho per call (median over steps).")
    return "\n".join(lines)


def plot(data: Dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    base = [r for r in results if r["scale"] == 1.0 and r["threshold"] == 1.0 and len(r["stages"]) > 1]
    init = [r for r in results]
    nets = list(dict.fromkeys(r["net"] for r in results))
    ncols = max(len(r["stages"][0]["layers"]) for r in results)
    fig, axes = plt.subplots(len(nets) + 1, ncols, figsize=(4.0 * ncols, 2.9 * (len(nets) + 1)),
                             squeeze=False)
    edges = data["hist_edges"]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    for row, net in enumerate(nets):
        runs = [r for r in base if r["net"] == net]
        for col in range(ncols):
            ax = axes[row][col]
            if not runs or col >= len(runs[0]["stages"][0]["layers"]):
                ax.axis("off")
                continue
            for st in (runs[0]["stages"][0], runs[0]["stages"][1], runs[0]["stages"][-1]):
                c = st["layers"][col]["hist_counts"]
                tot = sum(c) or 1
                ax.step(centers, [max(v / tot, 1e-7) for v in c], where="mid",
                        label=f"epoch {st['epoch']}" if st["epoch"] else "init")
            ax.axvspan(-0.05, 0.05, color="C3", alpha=0.25, lw=0, label="|u| < 0.05")
            ax.axvspan(-0.5, 0.5, color="C3", alpha=0.08, lw=0, label="|u| < 0.5")
            ax.set_yscale("log")
            ax.set_ylim(1e-6, 1)
            ax.set_title(f"{net} layer {col + 1}: u = mem - thr", fontsize=9)
            if col == 0:
                ax.set_ylabel("fraction per 0.1 bin")
            ax.legend(fontsize=6)
    # last row: expected active fraction at delta = 0.05 at init, per scale and threshold
    for col, net in enumerate(nets[:ncols]):
        ax = axes[-1][col]
        runs = [r for r in init if r["net"] == net]
        labels = [f"s{r['scale']:g} t{r['threshold']:g}" for r in runs]
        nl = len(runs[0]["stages"][0]["layers"])
        width = 0.8 / nl
        for layer in range(nl):
            raw = [100 * r["stages"][0]["layers"][layer]["expected_active"]["0.05"] for r in runs]
            xs = [k + layer * width for k in range(len(runs))]
            ax.bar(xs, [max(v, 1e-4) for v in raw], width, label=f"layer {layer + 1}",
                   color=f"C{layer}")
            zero = [x for x, v in zip(xs, raw) if v < 1e-4]
            ax.plot(zero, [2e-4] * len(zero), "x", color=f"C{layer}", ms=4)
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 100)
        ax.axhline(1.0, color="gray", lw=0.6, ls="--")
        ax.set_xticks([k + width * (nl - 1) / 2 for k in range(len(runs))])
        ax.set_xticklabels(labels, rotation=60, fontsize=6)
        ax.set_xlabel("init scale s, threshold t", fontsize=7)
        ax.set_title(f"{net} at init: expected active % at delta 0.05 (x: below 1e-4 %)", fontsize=8)
        ax.legend(fontsize=6)
    for col in range(len(nets), ncols):
        axes[-1][col].axis("off")
    fig.suptitle(f"membrane distance to threshold, probe batch of {data['settings']['probe']} "
                 f"images x T steps; trained with {data['settings']['train_grad']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _floats(name):
    def parse(text):
        try:
            vals = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"`{name}` must be comma-separated numbers, got {text!r}")
        if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
            raise argparse.ArgumentTypeError(f"`{name}` must be positive numbers, got {text!r}")
        return vals
    return parse


def _pairs(text):
    try:
        pairs = [tuple(float(x) for x in t.split(":")) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--train` must look like 1:1,0.5:1 (scale:threshold), got {text!r}")
    if any(len(p) != 2 or min(p) <= 0 for p in pairs):
        raise argparse.ArgumentTypeError(f"`--train` must look like 1:1,0.5:1 (scale:threshold), got {text!r}")
    return pairs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="fc_tut5,conv_tut6", help="comma-separated (default fc_tut5,conv_tut6)")
    p.add_argument("--scales", type=_floats("--scales"), default=[0.5, 1.0, 2.0],
                   help="init scales (default 0.5,1,2)")
    p.add_argument("--thresholds", type=_floats("--thresholds"), default=[0.5, 1.0, 2.0],
                   help="thresholds (default 0.5,1,2)")
    p.add_argument("--train", type=_pairs, default=[(1.0, 1.0), (0.5, 2.0), (2.0, 0.5)],
                   help="scale:threshold pairs trained (default 1:1,0.5:2,2:0.5)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--train-grad", default="fast_sigmoid", help="spike gradient used for training")
    p.add_argument("--T", type=int, default=25, help="time steps (default 25)")
    p.add_argument("--probe", type=int, default=128, help="training images measured (default 128)")
    p.add_argument("--train-limit", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON (default benchmarks/results/delta_study_cpu.json)")
    p.add_argument("--plot", help="PNG (default docs/img/delta_study_cpu.png); 'none': no plot")
    p.add_argument("--replot", action="store_true", help="table and figure again from the JSON")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else HERE / "results" / "delta_study_cpu.json"
    png = Path(args.plot) if args.plot else ROOT / "docs" / "img" / "delta_study_cpu.png"
    if args.replot:
        if not out.is_file():
            raise SystemExit(f"no results at {out}: run the study first (or pass --out)")
        data = json.loads(out.read_text())
        print(format_table(data["results"]))
        if args.plot != "none":
            print(f"wrote {plot(data, png)}")
        return 0
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in nets if n not in defaults.NETS or n == "demo"]
    if bad:
        raise SystemExit(f"unknown --nets {bad}; expected some of fc_tut5, conv_tut6, deep_conv")
    if args.train_grad not in defaults.SPIKE_GRADS:
        raise SystemExit(f"unknown --train-grad {args.train_grad!r}; expected one of "
                         f"{sorted(defaults.SPIKE_GRADS)}")
    for name in ("T", "probe", "threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"`--{name}` must be >= 1, got {getattr(args, name)}")
    if args.epochs < 0:
        raise SystemExit(f"`--epochs` must be >= 0, got {args.epochs}")
    torch.set_num_threads(args.threads)
    digits = defaults.Digits(args.train_limit)
    x_train = digits.static28("train")
    y_train = digits.y["train"]
    probe_x = x_train[: args.probe]
    grad = defaults.SPIKE_GRADS[args.train_grad]
    start = time.perf_counter()
    results = []
    for net in nets:
        s = defaults.NETS[net]
        spec = dataclasses.replace(s, num_steps=args.T)
        for scale in args.scales:
            for thr in args.thresholds:
                trained = (scale, thr) in [tuple(p) for p in args.train]
                r = study_one(spec, grad, scale=scale, threshold=thr,
                              train_epochs=args.epochs if trained else 0, seed=args.seed,
                              x_train=x_train, y_train=y_train, probe_x=probe_x)
                results.append(r)
                init = r["stages"][0]["layers"]
                print(f"  {net} scale {scale:g} thr {thr:g}: max u per layer "
                      f"{[round(L['max_u'], 3) for L in init]}, in |u|<0.05 "
                      f"{[round(100 * L['within_band']['0.05'], 3) for L in init]}%"
                      + (f" (trained {args.epochs} epochs)" if trained else ""), flush=True)
    data = {
        "settings": {"nets": nets, "scales": args.scales, "thresholds": args.thresholds,
                     "train": [list(p) for p in args.train], "epochs": args.epochs,
                     "train_grad": defaults.SPIKE_GRADS[args.train_grad].label, "T": args.T,
                     "optimizer": {n: f"Adam lr {defaults.NETS[n].lr:g}, batch {defaults.NETS[n].batch}"
                                   for n in nets},
                     "probe": int(probe_x.shape[0]), "seed": args.seed, "deltas": list(DELTAS),
                     "rhos": list(RHOS), "quantiles": list(QUANTILES), "machine": defaults.machine(),
                     "torch": torch.__version__, "snntorch": snntorch.__version__,
                     "total_s": time.perf_counter() - start},
        "hist_edges": HIST_EDGES,
        "results": results,
    }
    print()
    print(format_table(results))
    print(f"\n(total {data['settings']['total_s']:.0f} s)")
    return write_results(out, data, figure=None if args.plot == "none" else lambda: plot(data, png))


if __name__ == "__main__":
    sys.exit(main())
