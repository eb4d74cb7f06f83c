"""Accuracy study: LocalZO against snnTorch's surrogates on spike-encoded digits.

Trains the CLI's network (64-128-10 Leaky, beta 0.9, T=25, Adam, read out by
the mean output membrane; ``snntorch_localzo.demo.train.train_digits``) with each
spike gradient below, for several seeds, on the CPU by default:

    snnTorch surrogates   atan(), fast_sigmoid(), sigmoid()  (snnTorch's defaults)
    LocalZO               normal, uniform, laplace with --delta (0.008, as the CLI),
                          the sigmoid twin make("sigmoid") (slope 25, same expected
                          gradient as snnTorch's sigmoid())

and reports, per spike gradient, validation and test accuracy after the
last epoch (mean and standard deviation over seeds), the fraction of non-zero spike gradients in
backward (epochs 2 and later; the first epoch is left out because the network
starts from silence), and the median training time per epoch.

Training spikes are re-drawn at every presentation (snnTorch's convention;
``--fixed-encoding``: drawn once). A validation split (``--val-size`` of the
training part, stratified) is measured after every epoch; the test split is
evaluated once per run, after the last epoch. Nothing is selected here: every
spike gradient runs at snnTorch's defaults or the CLI's delta.

    python benchmarks/accuracy.py                        # 5 seeds, 15 epochs, CPU
    python benchmarks/accuracy.py --seeds 2 --epochs 3   # quicker look
    python benchmarks/accuracy.py --replot               # table and plot again from the JSON

Prints a table, writes benchmarks/results/accuracy_<device>.json and a bar
plot (default docs/img/accuracy_study_<device>.png; needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import snntorch
import snntorch.surrogate as surrogate
import torch

import snntorch_localzo as localzo
from snntorch_localzo.demo.cli import call_string, format_table
from snntorch_localzo.demo.data import spiking_digits
from snntorch_localzo.demo.train import RunResult, SpikeGradProbe, train_digits

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import add_digits_args, digits, digits_settings, machine, write_results  # noqa: E402


def spike_grads(delta: float) -> Dict[str, Callable]:
    """Name (as a user would write it) -> factory of a fresh spike gradient."""
    specs: Dict[str, Callable] = {
        "snntorch.surrogate.atan()": lambda: SpikeGradProbe(surrogate.atan()),
        "snntorch.surrogate.fast_sigmoid()": lambda: SpikeGradProbe(surrogate.fast_sigmoid()),
        "snntorch.surrogate.sigmoid()": lambda: SpikeGradProbe(surrogate.sigmoid()),
    }
    for dist in ("normal", "uniform", "laplace"):
        est = localzo.make(dist, delta=delta, track=True)
        specs[call_string(est)] = lambda dist=dist: localzo.make(dist, delta=delta, track=True)
    specs[call_string(localzo.make("sigmoid"))] = lambda: localzo.make("sigmoid", track=True)
    return specs


def non_finite_backward(specs: Dict[str, Callable]) -> List[str]:
    """Notes on spike gradients whose backward is not finite somewhere on
    ``u = mem - threshold`` in [-10, 10] (float32), with the nearest such ``u``."""
    notes = []
    u = torch.linspace(-10, 10, 2001)
    for name, factory in specs.items():
        x = u.clone().requires_grad_(True)
        factory()(x).sum().backward()
        bad = ~torch.isfinite(x.grad)
        if bad.any():
            nearest = u[bad][u[bad].abs().argmin()].item()
            value = x.grad[u == nearest].item()
            notes.append(f"{name}: backward is {value} (float32) at mem - threshold = {nearest:g}, "
                         f"the nearest such point to the threshold in [-10, 10]")
    return notes


def summary(runs: List[RunResult]) -> Dict:
    def mean_std(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    acc = mean_std([r.final_acc for r in runs])
    val = mean_std([r.val_acc[-1] for r in runs]) if all(r.val_acc for r in runs) else (None, None)
    active = mean_std([statistics.mean(r.active_frac[1:] or r.active_frac) for r in runs])
    sec = mean_std([statistics.median(r.epoch_s) for r in runs])
    return {
        "name": runs[0].name,
        "val_acc_mean": val[0], "val_acc_std": val[1],
        "test_acc_mean": acc[0], "test_acc_std": acc[1],
        "active_frac_mean": active[0], "active_frac_std": active[1],
        "active_frac_max": max(max(r.active_frac[1:] or r.active_frac) for r in runs),
        "epoch_s_mean": sec[0], "epoch_s_std": sec[1],
    }


def plot(rows: List[Dict], settings: Dict, path: Path) -> Path:
    from snntorch_localzo.demo import plots

    # zoom on the runs that learned (above 50%); a run that failed is written at the edge
    learned = [r["test_acc_mean"] - r["test_acc_std"] for r in rows if r["test_acc_mean"] > 0.5]
    lowest = min(learned or [0.03])
    fig = plots.bars_figure(
        [r["name"] for r in rows],
        [
            dict(values=[100 * r["test_acc_mean"] for r in rows],
                 errors=[100 * r["test_acc_std"] for r in rows],
                 xlabel="test accuracy % (mean ± std)", xlim=(max(0.0, 100 * lowest - 3), 100)),
            dict(values=[100 * r["active_frac_mean"] for r in rows],
                 xlabel="non-zero gradients in backward %", log=True),
            dict(values=[r["epoch_s_mean"] for r in rows], xlabel="s / epoch"),
        ],
        title=(f"Spike-encoded digits, 64-{settings['hidden']}-10 Leaky, T={settings['num_steps']}, "
               f"{settings['epochs']} epochs, {len(settings['seeds'])} seeds, {settings['machine']}"),
    )
    return plots.save(fig, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=25, help="time steps per sample")
    p.add_argument("--delta", type=float, default=0.008,
                   help="LocalZO delta for normal/uniform/laplace (default 0.008, as the CLI)")
    add_digits_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this spike gradient (a name printed by --list); repeatable")
    p.add_argument("--list", action="store_true", help="list the spike gradients and exit")
    p.add_argument("--out", help="JSON path (default benchmarks/results/accuracy_<device>.json)")
    p.add_argument("--plot", help="PNG path (default docs/img/accuracy_study_<device>.png); 'none': no plot")
    p.add_argument("--replot", action="store_true",
                   help="train nothing: print the table and redraw the plot from the JSON")
    args = p.parse_args(argv)
    tag = "cpu" if args.device == "cpu" else torch.device(args.device).type
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"accuracy_{tag}.json"
    png = Path(args.plot) if args.plot else ROOT / "docs" / "img" / f"accuracy_study_{tag}.png"
    if args.replot:
        saved = json.loads(out.read_text())
        runs = [[RunResult(**r) for r in rs] for rs in saved["runs"].values()]
        print(format_table(runs))
        for note in saved.get("notes", []):
            print(f"note: {note}")
        if args.plot != "none":
            print(f"wrote {plot(saved['summary'], saved['settings'], png)}")
        return 0
    specs = spike_grads(args.delta)
    if args.list:
        print("\n".join(specs))
        return 0
    if args.only:
        wanted = args.only
        unknown = [w for w in wanted if w not in specs]
        if unknown:
            raise SystemExit(f"unknown spike gradient(s) {unknown}; see --list")
        specs = {k: specs[k] for k in wanted}
    device = torch.device(args.device)
    settings = {
        "dataset": "scikit-learn digits, rate-encoded (snntorch_localzo.demo.data.spiking_digits)",
        "network": f"64-{args.hidden}-10 Leaky, beta 0.9, mean output membrane read-out",
        "optimizer": "Adam lr 2e-3, batch 64",
        "hidden": args.hidden, "num_steps": args.steps, "epochs": args.epochs,
        "seeds": list(range(args.seeds)), "delta": args.delta,
        **digits_settings(args),
        "evaluation": "val after every epoch, test once after the last epoch",
        "device": str(device), "machine": machine(device),
        "torch": torch.__version__, "snntorch": snntorch.__version__,
    }
    print(f"Accuracy study: spike-encoded digits, {settings['network']}, T={args.steps}, "
          f"{args.epochs} epochs, {settings['optimizer']}, seeds {settings['seeds']}")
    print(f"LocalZO delta={args.delta:g} for normal/uniform/laplace; twins and snnTorch surrogates "
          f"at snnTorch's default parameters")
    print(f"device {device}: {settings['machine']}; torch {torch.__version__}, "
          f"snnTorch {snntorch.__version__}", flush=True)
    results: Dict[str, List[RunResult]] = {name: [] for name in specs}
    # one short untimed run first, so that no timed epoch pays torch's warm-up
    train_digits(localzo.make(), epochs=1, hidden=args.hidden, num_steps=args.steps,
                 device=device, data=spiking_digits(num_steps=args.steps, device=device))
    start = time.perf_counter()
    for seed in settings["seeds"]:
        data = digits(args, args.steps, seed, device)
        for name, factory in specs.items():
            results[name].append(train_digits(
                factory(), name=name, seed=seed, epochs=args.epochs, hidden=args.hidden,
                num_steps=args.steps, device=device, data=data,
            ))
            r = results[name][-1]
            val = f"val {100 * r.val_acc[-1]:.2f}%, " if r.val_acc else ""
            print(f"  seed {seed} {name}: {val}test {100 * r.final_acc:.2f}%", flush=True)
    print()
    print(format_table(list(results.values())))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    notes = non_finite_backward(specs)
    for note in notes:
        print(f"note: {note}")
    rows = [summary(runs) for runs in results.values()]
    return write_results(out, {
        "settings": settings,
        "summary": rows,
        "notes": notes,
        "runs": {name: [r.__dict__ for r in runs] for name, runs in results.items()},
    }, figure=None if args.plot == "none" else lambda: plot(rows, settings, png))


if __name__ == "__main__":
    sys.exit(main())
