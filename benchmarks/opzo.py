"""OPZO against its baselines: accuracy, time per epoch and peak memory.

Trains on scikit-learn's digits, rate-encoded (``spiking_digits``, T steps),
with :class:`snntorch_localzo.opzo.OPZO`, every method from the same seed and
in the same trainer (only the spatial credit assignment differs):

    opzo            feedback="momentum"  (OPZO: noise, momentum feedback matrices)
    ottt_backprop   feedback="backprop"  (OTTT: exact online spatial gradient)
    dfa             feedback="random"    (direct feedback alignment)
    zo              feedback="zo"        (zeroth order by node perturbation: the scalar
                                          loss change under the noise)
    opzo_localzo    OPZO with local_grad=localzo.make(delta, track=True):
                    sparse three-factor updates (fc net only)

on two networks: a deep fully connected net (64-256-256-256-128-10: depth is
where DFA falls behind) and a small conv net (1x8x8 -> 16x8x8 -> 32x4x4 -> 10, average pooling),
snn.Leaky with a Linear readout applied at every step. The fc net: beta 0.5,
a sigmoid surrogate of slope 4 as every method's local factor, PyTorch's
initial hidden weights times 3 (``--gain``: at gain 1 the three upper hidden
layers are silent at the start); the conv net: beta 0.9, ATan, gain 1.
Adam, cross-entropy at every step, one update per sequence. Training spikes
are re-drawn at every presentation (``--fixed-encoding``: drawn once). A
stratified validation split (``--val-size`` of the training part) is measured
after every epoch and is what settings are chosen on; the test split is
evaluated once per run, after the last epoch.

Peak memory: bytes allocated during one training step (torch's profiler on
the CPU, CUDA's allocator on a GPU) above what was allocated before it, at
the end of each run. ``--memory-T`` also measures one step of OPZO and of
backpropagation through time (snnTorch autograd) for several sequence lengths.

    python benchmarks/opzo.py                     # full run (see --help for the defaults)
    python benchmarks/opzo.py --seeds 1 --epochs 2  # quicker look
    python benchmarks/opzo.py --replot            # table and plot again from the JSON

Writes benchmarks/results/opzo_<device>.json ({"settings", "rows", "summary",
"memory_vs_T"}; each row {method, net, seed, val_acc, test_acc, s_per_epoch,
peak_mib, active_frac, val_acc_per_epoch}) and docs/img/opzo_<device>.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import snntorch
import snntorch.surrogate as surrogate
import torch
import torch.nn as nn

import snntorch_localzo as localzo
from snntorch_localzo.demo.opzo import METHODS, as_images, conv_net, fc_net, train_opzo
from snntorch_localzo.opzo import OPZO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import add_digits_args, digits, digits_settings, machine, write_results  # noqa: E402
FC_METHODS = ["opzo", "ottt_backprop", "dfa", "zo", "opzo_localzo"]
CONV_METHODS = ["opzo", "ottt_backprop", "dfa", "zo"]


def peak_mib(fn, device: torch.device) -> float:
    """MiB allocated at the peak of ``fn()`` above what was allocated before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    sizes = [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns()) if e.name() == "[memory]"]
    return max(itertools.accumulate(sizes), default=0) / 2**20


def reset_states(net: nn.Module) -> None:
    """Neurons of ``net`` back to rest. (``snntorch.utils.reset`` resets every
    Leaky ever created in the process, which would allocate inside the measured step.)"""
    for m in net.modules():
        if isinstance(m, snntorch.Leaky):
            if hasattr(m, "reset_mem"):
                m.reset_mem()
            else:  # snnTorch 0.7
                m.mem = m.init_leaky()


def bptt_step(net: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step of backpropagation through time with snnTorch's autograd (the
    usual way to train the same network), for the memory comparison."""
    reset_states(net)
    loss = 0
    for t in range(x.shape[0]):
        o = net(x[t])
        loss = loss + nn.functional.cross_entropy(o, y)
    opt.zero_grad()
    (loss / x.shape[0]).backward()
    opt.step()


def memory_vs_T(lengths: List[int], batch: int, device: torch.device) -> List[Dict]:
    """Peak MiB of one training step of the fc net for each sequence length."""
    rows = []
    for T in lengths:
        torch.manual_seed(0)
        x = (torch.rand(T, batch, 64, device=device) < 0.3).float()
        y = torch.arange(batch, device=device) % 10
        for name in ("opzo", "bptt_autograd"):
            torch.manual_seed(0)
            net = fc_net().to(device)
            opt = torch.optim.Adam(net.parameters(), 1e-3)
            if name == "opzo":
                trainer = OPZO(net, opt).to(device)
                trainer.train_step(x, y)  # warm-up: optimizer state, feedback matrices
                mib = peak_mib(lambda: trainer.train_step(x, y), device)
            else:
                bptt_step(net, opt, x, y)
                mib = peak_mib(lambda: bptt_step(net, opt, x, y), device)
            rows.append({"method": name, "T": T, "batch": batch, "peak_mib": mib})
            print(f"  memory: {name:<14} T={T:<4} {mib:8.2f} MiB", flush=True)
    return rows


def summarize(rows: List[Dict]) -> List[Dict]:
    out = []
    for (net, method) in dict.fromkeys((r["net"], r["method"]) for r in rows):
        runs = [r for r in rows if r["net"] == net and r["method"] == method]
        acc = [r["test_acc"] for r in runs]
        val = [r["val_acc"] for r in runs if r.get("val_acc") is not None]
        active = [r["active_frac"] for r in runs if r.get("active_frac") is not None]
        out.append({
            "net": net, "method": method, "seeds": len(runs),
            "val_acc_mean": statistics.mean(val) if val else None,
            "val_acc_std": statistics.stdev(val) if len(val) > 1 else 0.0,
            "test_acc_mean": statistics.mean(acc),
            "test_acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "s_per_epoch_mean": statistics.mean(r["s_per_epoch"] for r in runs),
            "peak_mib_mean": statistics.mean(r["peak_mib"] for r in runs),
            "active_frac_mean": statistics.mean(active) if active else None,
        })
    return out


def format_table(summary: List[Dict]) -> str:
    header = (f"{'net':<6}{'method':<16}{'val acc %':>16}{'test acc %':>16}{'s / epoch':>11}{'peak MiB':>10}"
              f"{'active %':>10}")
    lines = [header, "-" * len(header)]
    for s in summary:
        active = "-" if s["active_frac_mean"] is None else f"{100 * s['active_frac_mean']:.2f}"
        val = ("-" if s.get("val_acc_mean") is None else
               f"{100 * s['val_acc_mean']:.2f} ± {100 * s['val_acc_std']:<4.2f}")
        lines.append(
            f"{s['net']:<6}{s['method']:<16}{val:>16}"
            f"{100 * s['test_acc_mean']:>9.2f} ± {100 * s['test_acc_std']:<4.2f}"
            f"{s['s_per_epoch_mean']:>11.2f}{s['peak_mib_mean']:>10.2f}{active:>10}"
        )
    return "\n".join(lines)


def targets(summary: List[Dict]) -> List[str]:
    """The issue's targets on the deep fc net, checked."""
    acc = {s["method"]: 100 * s["test_acc_mean"] for s in summary if s["net"] == "fc"}
    if not all(m in acc for m in ("opzo", "ottt_backprop", "dfa", "zo")):
        return []
    o, b, d, z = acc["opzo"], acc["ottt_backprop"], acc["dfa"], acc["zo"]
    return [
        f"OPZO >= OTTT backprop - 1.5: {o:.2f} vs {b - 1.5:.2f}: "
        f"{'met' if o >= b - 1.5 else f'missed by {b - 1.5 - o:.2f} points'}",
        f"OPZO > DFA: {o:.2f} vs {d:.2f}: {'met' if o > d else f'missed by {d - o:.2f} points'}",
        f"OPZO > ZO + 20: {o:.2f} vs {z + 20:.2f}: "
        f"{'met' if o > z + 20 else f'missed by {z + 20 - o:.2f} points'}",
    ]


def plot(summary: List[Dict], settings: Dict, path: Path) -> Path:
    from snntorch_localzo.demo import plots

    names = [f"{s['net']}: {s['method']}" for s in summary]
    fig = plots.bars_figure(
        names,
        [
            dict(values=[100 * s["test_acc_mean"] for s in summary],
                 errors=[100 * s["test_acc_std"] for s in summary],
                 xlabel="test accuracy % (mean ± std)", xlim=(40, 100)),
            dict(values=[s["s_per_epoch_mean"] for s in summary], xlabel="s / epoch"),
            dict(values=[s["peak_mib_mean"] for s in summary], xlabel="peak MiB of a step"),
        ],
        title=(f"OPZO and baselines, spike-encoded digits, T={settings['num_steps']}, "
               f"{settings['epochs']} epochs (conv {settings['conv_epochs']}), "
               f"{len(settings['seeds'])} seeds, {settings['machine']}"),
    )
    return plots.save(fig, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="run seeds FIRST..FIRST+N-1 instead (to split a run over processes)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="train nothing: join the rows of these JSON files (same settings but "
                        "the seeds) into --out, with the table and plot")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the fc net (default 10)")
    p.add_argument("--conv-epochs", type=int, default=10, help="epochs of the conv net (default 10)")
    p.add_argument("--steps", type=int, default=8, help="time steps T (default 8)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fc-hidden", default="256,256,256,128")
    p.add_argument("--noise-std", type=float, default=0.3,
                   help="OPZO's and ZO's alpha (default 0.3, chosen on the validation split)")
    p.add_argument("--momentum", type=float, default=0.999,
                   help="OPZO's lambda (default 0.999)")
    add_digits_args(p)
    p.add_argument("--delta", type=float, default=0.05, help="delta of opzo_localzo's LocalZO")
    p.add_argument("--beta", type=float, default=0.5, help="fc net's neuron decay (default 0.5)")
    p.add_argument("--slope", type=float, default=4.0,
                   help="slope of the fc net's sigmoid local factor (default 4)")
    p.add_argument("--gain", type=float, default=3.0,
                   help="fc net's initial hidden weights times this (default 3, chosen on the "
                        "validation split)")
    p.add_argument("--methods", default=",".join(FC_METHODS), help="fc net methods")
    p.add_argument("--conv-methods", default=",".join(CONV_METHODS), help="conv net methods ('' for none)")
    p.add_argument("--memory-T", default="8,32,128", help="lengths for the memory comparison ('' for none)")
    p.add_argument("--train-samples", type=int, default=None, help="subset of the training set")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small matrices, shared machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="JSON path (default benchmarks/results/opzo_<device>.json)")
    p.add_argument("--plot", help="PNG path (default docs/img/opzo_<device>.png); 'none': no plot")
    p.add_argument("--replot", action="store_true", help="train nothing: table and plot from the JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tag = "cpu" if device.type == "cpu" else device.type
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"opzo_{tag}.json"
    png = Path(args.plot) if args.plot else ROOT / "docs" / "img" / f"opzo_{tag}.png"
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        settings = dict(parts[0]["settings"])
        settings["seeds"] = sorted(s for part in parts for s in part["settings"]["seeds"])
        settings["total_min"] = sum(part["settings"].get("total_min", 0) for part in parts)
        rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["seed"])
        memory = next((part["memory_vs_T"] for part in parts if part["memory_vs_T"]), [])
        out.write_text(json.dumps({"settings": settings, "rows": rows,
                                   "summary": summarize(rows), "memory_vs_T": memory}, indent=1))
        args.replot = True
    if args.replot:
        saved = json.loads(out.read_text())
        print(format_table(saved["summary"]))
        for line in targets(saved["summary"]):
            print(line)
        if args.plot != "none":
            print(f"wrote {plot(saved['summary'], saved['settings'], png)}")
        return 0
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    hidden = [int(v) for v in args.fc_hidden.split(",")]
    plan = [("fc", m) for m in args.methods.split(",") if m] + \
           [("conv", m) for m in args.conv_methods.split(",") if m]
    unknown = [m for _, m in plan if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; expected names from {list(METHODS)}")
    settings = {
        "dataset": "scikit-learn digits, rate-encoded (snntorch_localzo.demo.data.spiking_digits)",
        "fc_net": "64-" + "-".join(map(str, hidden)) + f"-10, snn.Leaky beta {args.beta:g}, "
                  f"local factor sigmoid slope {args.slope:g}, initial hidden weights x "
                  f"{args.gain:g}, Linear readout",
        "conv_net": "beta 0.9, ATan local factor; Conv3x3(16)-Leaky-AvgPool2, Conv3x3(32)-Leaky-AvgPool2, Flatten, Linear(128, 10)",
        "optimizer": f"Adam lr {args.lr:g}, batch {args.batch}, cross-entropy at every step, "
                     "one update per sequence",
        "opzo": f"noise_std {args.noise_std:g}, momentum {args.momentum:g}, dual Gaussian noise "
                f"on layer outputs; zo: same noise, node perturbation; opzo_localzo: "
                f"localzo.make(delta={args.delta:g})",
        "num_steps": args.steps, "epochs": args.epochs, "conv_epochs": args.conv_epochs,
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)), "train_samples": args.train_samples,
        **digits_settings(args),
        "evaluation": "val after every epoch (settings chosen on it), test once after the last epoch",
        "selection": "on the validation split of seed 0 (10 epochs): the fc net's beta 0.5 and "
                      "sigmoid-4 local factor (the independent implementation's) against beta 0.9 "
                      "and ATan, and gain 3 against 1, by the mean val_acc of opzo, ottt_backprop "
                      "and dfa; OPZO's noise_std 0.3 against 0.1 (momentum 0.999) and 0.5 "
                      "(momentum 0.9995) by OPZO's val_acc; conv net settings not re-chosen",
        "device": str(device), "machine": machine(device),
        "torch": torch.__version__, "snntorch": snntorch.__version__,
    }
    print(f"OPZO benchmark: {settings['dataset']}, T={args.steps}; fc {settings['fc_net']}; "
          f"conv {settings['conv_net']}")
    print(f"{settings['optimizer']}; {settings['opzo']}; seeds {settings['seeds']}; "
          f"{settings['machine']}; torch {torch.__version__}, snnTorch {snntorch.__version__}",
          flush=True)
    start = time.perf_counter()
    rows: List[Dict] = []
    for seed in settings["seeds"]:
        data = digits(args, args.steps, seed, device)
        if args.train_samples:
            n = args.train_samples
            data = data._replace(x_train=data.x_train[:, :n], y_train=data.y_train[:n],
                                 train_rates=None if data.train_rates is None
                                 else data.train_rates[:n])
        for net, method in plan:
            noisy = METHODS[method]["feedback"] in ("momentum", "zo")
            options = dict(noise_std=args.noise_std, momentum=args.momentum) if noisy else {}
            local_grad = (localzo.make(delta=args.delta, track=True) if method == "opzo_localzo"
                          else surrogate.sigmoid(slope=args.slope) if net == "fc" else None)
            shape = dict(beta=args.beta, gain=args.gain) if net == "fc" else {}
            row = train_opzo(method=method, net=net, seed=seed, device=device, data=data,
                             epochs=args.epochs if net == "fc" else args.conv_epochs,
                             num_steps=args.steps, batch_size=args.batch, lr=args.lr,
                             hidden=hidden, local_grad=local_grad, **shape, **options)
            row["peak_mib"] = _peak_of_run(net, method, hidden=hidden, data=data, args=args,
                                           device=device, local_grad=local_grad, options=options)
            rows.append(row)
            active = "" if row["active_frac"] is None else f", {100 * row['active_frac']:.2f}% active"
            val = "" if row["val_acc"] is None else f"val {100 * row['val_acc']:6.2f}%  "
            print(f"  seed {seed} {net:<4} {method:<14} {val}test {100 * row['test_acc']:6.2f}%  "
                  f"{row['s_per_epoch']:.2f} s/epoch  {row['peak_mib']:.2f} MiB{active}", flush=True)
    lengths = [int(v) for v in args.memory_T.split(",") if v]
    memory = memory_vs_T(lengths, args.batch, device) if lengths else []
    total = time.perf_counter() - start
    summary = summarize(rows)
    print()
    print(format_table(summary))
    for line in targets(summary):
        print(line)
    print(f"\n(total {total / 60:.1f} min)")
    settings["total_min"] = total / 60
    return write_results(out, {"settings": settings, "rows": rows, "summary": summary,
                               "memory_vs_T": memory},
                         figure=None if args.plot == "none" else lambda: plot(summary, settings, png))


def _peak_of_run(net, method, *, hidden, data, args, device, local_grad, options) -> float:
    """Peak MiB of one training step of a fresh trainer of this method (after
    one warm-up step), on the run's first batch."""
    torch.manual_seed(0)
    model = (conv_net() if net == "conv" else fc_net(hidden, args.beta, gain=args.gain)).to(device)
    opts = dict(METHODS[method])
    opts.pop("local_grad", None)
    trainer = OPZO(model, torch.optim.Adam(model.parameters(), args.lr),
                   local_grad=local_grad, **opts, **options).to(device)
    x = data.x_train[:, :args.batch]
    x = as_images(x) if net == "conv" else x
    y = data.y_train[:args.batch]
    trainer.train_step(x, y)
    mib = peak_mib(lambda: trainer.train_step(x, y), device)
    if isinstance(local_grad, localzo.LocalZO):
        local_grad.reset_stats()
    return mib


if __name__ == "__main__":
    sys.exit(main())
