"""Seconds per training epoch of the nets of ``defaults.py``, spike gradients side by side.

``defaults.py`` times every epoch of its runs, but one run after the other:
on a shared machine a slow spell falls on one spike gradient and not on
another. Here each net is built once per spike gradient (same seed, same
initial weights) and the epochs are interleaved: round ``r`` trains one
epoch of every spike gradient (in reversed order every other round), each on
the same batches (the order drawn from ``r``). No probe, no meter, no
evaluation: the loop a user runs (the data batching, the forward, the loss,
the backward, Adam's step). The first round is a warm-up and is not kept.

    python benchmarks/epoch_time.py                               # 4 nets, atan / make() / localzo.Leaky
    python benchmarks/epoch_time.py --nets demo --rounds 6 --grads atan,new_default

Writes ``benchmarks/results/epoch_time_interleaved_cpu.json``: per net and
spike gradient the epoch times of every round, their median, the median's
ratio to the first spike gradient's (the baseline) and the median over
rounds of the ratio within a round (``paired_ratio``: the epochs of one round
ran back to back, so a slow spell of the machine cancels out of it).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

import snntorch_localzo as localzo

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import defaults as D  # noqa: E402
from _common import machine, write_results  # noqa: E402

#: defaults.py's spike gradients, and the drop-in as a user writes it (one
#: ``localzo.make()`` shared by the layers, no meter; defaults.py's ``drop_in``
#: counts the active entries of each layer)
SPIKE_GRADS = {**D.SPIKE_GRADS,
               "localzo_leaky": D.SpikeGrad("localzo_leaky", "localzo.Leaky with localzo.make()",
                                            lambda: localzo.make(), leaky=localzo.Leaky)}
DEFAULT_GRADS = ("atan", "new_default", "localzo_leaky")


class Run:
    """One net trained with one spike gradient, an epoch at a time."""

    def __init__(self, spec: "D.NetSpec", grad: "D.SpikeGrad", digits: "D.Digits", seed: int,
                 train_limit: Optional[int]):
        self.spec, self.key = spec, grad.key
        torch.manual_seed(seed)
        self.model = spec.build(grad.factory(), leaky=grad.leaky)
        if grad.per_layer:  # (one spike gradient per layer, as defaults.py gives it)
            for layer in D.spiking_layers(self.model):
                layer.spike_grad = grad.factory()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=spec.lr, betas=(0.9, 0.999))
        if spec.data == "rate8":
            gen = torch.Generator().manual_seed(seed)
            self.encode = lambda x: D.rate_encode(x.reshape(-1, 64), spec.num_steps, gen)  # noqa: E731
            self.x = digits.x8["train"]
        else:
            self.encode = None
            self.x = digits.static28("train")
        self.y = digits.y["train"]
        if train_limit:
            self.x, self.y = self.x[:train_limit], self.y[:train_limit]

    def epoch(self, order: torch.Tensor) -> float:
        """Seconds of one training epoch over the batches of ``order``."""
        spec, model, opt = self.spec, self.model, self.opt
        model.train()
        start = time.perf_counter()
        for first in range(0, order.numel(), spec.batch):
            idx = order[first:first + spec.batch]
            xb = self.x.index_select(0, idx)
            if self.encode is not None:
                xb = self.encode(xb)
            spk, mem = spec.forward(model, xb)
            loss = spec.loss_value(spk, mem, self.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start


def time_net(spec: "D.NetSpec", grads: List[str], rounds: int, digits: "D.Digits", seed: int,
             train_limit: Optional[int]) -> List[Dict]:
    """The rows of one net: every spike gradient's epochs, interleaved."""
    runs = {g: Run(spec, SPIKE_GRADS[g], digits, seed, train_limit) for g in grads}
    n = next(iter(runs.values())).y.shape[0]
    times: Dict[str, List[float]] = {g: [] for g in grads}
    for r in range(rounds + 1):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + r))
        for g in (grads if r % 2 == 0 else grads[::-1]):
            t = runs[g].epoch(order)
            if r:  # round 0 warms up
                times[g].append(t)
    base = times[grads[0]]
    return [{"net": spec.key, "spike_grad": g, "label": SPIKE_GRADS[g].label, "epoch_s": times[g],
             "median_s": statistics.median(times[g]), "ratio": statistics.median(times[g]) / statistics.median(base),
             "paired_ratio": statistics.median(t / b for t, b in zip(times[g], base))}
            for g in grads]


def format_table(rows: List[Dict]) -> str:
    lines = [f"{'net':<10} {'spike gradient':<36} {'median s':>9} {'vs first':>9} {'paired':>8}   epochs (s)"]
    for r in rows:
        lines.append(f"{r['net']:<10} {r['label']:<36} {r['median_s']:>9.3f} {r['ratio']:>8.3f}x "
                     f"{r['paired_ratio']:>7.3f}x   " + " ".join(f"{t:.2f}" for t in r["epoch_s"]))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", help=f"comma-separated, from {list(D.NETS)} (default all)")
    p.add_argument("--grads", help=f"comma-separated spike gradients, the first the baseline "
                   f"(default {','.join(DEFAULT_GRADS)}; defaults.py --list shows the others)")
    p.add_argument("--rounds", type=D._positive("--rounds"), default=6,
                   help="timed rounds, one epoch of each spike gradient per round, after one warm-up "
                   "round (default 6)")
    p.add_argument("--seed", type=int, default=0, help="weights and batch order (default 0)")
    p.add_argument("--threads", type=D._positive("--threads"), help="torch's thread count")
    p.add_argument("--T", type=D._positive("--T"), help="override every net's time steps")
    p.add_argument("--batch", type=D._positive("--batch"), help="override every net's batch size")
    p.add_argument("--train-limit", type=D._positive("--train-limit"),
                   help="use only the first N training images (smoke tests)")
    p.add_argument("--out", default=str(ROOT / "results" / "epoch_time_interleaved_cpu.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = D._names(args.nets, D.NETS, "nets", D.NETS)
    grads = D._names(args.grads, SPIKE_GRADS, "spike gradients", DEFAULT_GRADS)
    digits = D.Digits()
    rows: List[Dict] = []
    settings = {"machine": machine(), "torch": torch.__version__, "rounds": args.rounds, "seed": args.seed,
                "grads": grads, "nets": {}}
    for name in nets:
        spec = D.NETS[name]
        if args.T or args.batch:
            spec = dataclasses.replace(spec, num_steps=args.T or spec.num_steps, batch=args.batch or spec.batch)
        settings["nets"][name] = {"description": spec.description, "T": spec.num_steps, "batch": spec.batch}
        rows += time_net(spec, grads, args.rounds, digits, args.seed, args.train_limit)
        print(format_table([r for r in rows if r["net"] == name]), flush=True)
    return write_results(Path(args.out), {"settings": settings, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
