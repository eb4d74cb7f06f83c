"""Does the backward stay sparse while the network learns? Trains the
700-256-256-20 network of compare.py for a few hundred steps on generated
SHD-shaped spike trains (``snntorch_localzo.demo.data.rate_patterns``) and logs,
every ``--log`` steps, the fraction of non-zero LocalZO estimates in the
backward passes since the last log, the loss and the accuracy.

Hidden layers are ``localzo.LinearLeaky`` (the sparse backward: Triton
kernels on CUDA, the native C path on the CPU); the output layer is read out by its membrane potential
(mean over time), which trains well with narrow surrogates.

    python benchmarks/train_active.py                         # GPU: T=100, B=128, 300 steps
    python benchmarks/train_active.py --device cpu --T 30 --batch 64 --steps 300 --log 50
    python benchmarks/train_active.py --device cpu --T 25 --grad make --init-gain 1 --log 10

``--grad fixed`` (the default): ``make("normal", delta=--delta)``, the fixed
step; ``--grad make``: ``make()``'s default (the adaptive step). ``--init-gain
1`` starts from the default init, whose upper layers hardly fire (the silent
net of ``compare.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import snntorch_localzo as localzo
from snntorch_localzo.demo.data import rate_patterns

RESULTS = Path(__file__).resolve().parent / "results"


class Net(nn.Module):
    def __init__(self, hidden: int, spike_grad, init_gain: float):
        super().__init__()
        self.l1 = localzo.LinearLeaky(0.9, 700, hidden, spike_grad=spike_grad)
        self.l2 = localzo.LinearLeaky(0.9, hidden, hidden, spike_grad=spike_grad)
        self.l3 = localzo.LinearLeaky(0.9, hidden, 20, spike_grad=spike_grad)
        with torch.no_grad():  # sparse input spikes: scale up so hidden neurons fire
            for layer in (self.l1, self.l2):
                layer.linear.weight.mul_(init_gain)

    def forward(self, x):
        s1, _ = self.l1(x)
        s2, _ = self.l2(s1)
        _, mem = self.l3(s2)
        return mem.mean(0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log", type=int, default=25)
    p.add_argument("--grad", choices=("fixed", "make"), default="fixed",
                   help="fixed: make('normal', delta=--delta); make: make()'s default adaptive step")
    p.add_argument("--delta", type=float, default=0.02, help="the fixed step (--grad fixed)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-gain", type=float, default=4.0, help="scale of the default init")
    p.add_argument("--out", help="JSON path (default benchmarks/results/train_active_<device>.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    data = rate_patterns(num_steps=args.T, seed=args.seed, device=device)
    sg = localzo.make(track=True) if args.grad == "make" else localzo.make("normal", delta=args.delta, track=True)
    net = Net(args.hidden, sg, args.init_gain).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    n = data.x_train.shape[1]
    rows = []
    print(f"{'step':>6}{'active % (window)':>20}{'loss':>9}{'train acc':>11}{'s/step':>9}", flush=True)
    start, correct, seen, loss_sum = time.perf_counter(), 0, 0, 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch,), device=device)
        logits = net(data.x_train[:, idx])
        loss = loss_fn(logits, data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct += (logits.argmax(1) == data.y_train[idx]).sum().item()
        seen += args.batch
        loss_sum += loss.item()
        if step % args.log == 0:
            row = {
                "step": step,
                "active_frac": sg.active_fraction,
                "loss": loss_sum / args.log,
                "train_acc": correct / seen,
                "s_per_step": (time.perf_counter() - start) / args.log,
            }
            rows.append(row)
            print(f"{step:>6}{100 * row['active_frac']:>20.3f}{row['loss']:>9.3f}"
                  f"{row['train_acc']:>11.3f}{row['s_per_step']:>9.3f}", flush=True)
            sg.reset_stats()
            start, correct, seen, loss_sum = time.perf_counter(), 0, 0, 0.0
    with torch.no_grad():
        test_acc = (net(data.x_test).argmax(1) == data.y_test).float().mean().item()
    print(f"test accuracy {test_acc:.3f}; device {args.device}")
    out = Path(args.out) if args.out else RESULTS / f"train_active_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "log": rows, "test_acc": test_acc}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
