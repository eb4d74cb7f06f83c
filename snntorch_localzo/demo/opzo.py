"""``snntorch-localzo opzo``: OPZO against its baselines on spike-encoded digits.

Trains the same snnTorch network with :class:`snntorch_localzo.opzo.OPZO` and
each spatial credit assignment asked for (``--feedback momentum,backprop,
random,zo``: OPZO, OTTT's exact online gradient, direct feedback alignment,
zeroth order by node perturbation), from the same seed, and prints test accuracy and
time per epoch. The networks and the training loop here are also those of
``benchmarks/opzo.py`` and tutorial 5.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import snntorch as snn
import snntorch.surrogate as surrogate
import torch
import torch.nn as nn

from .._progress import progress_counter
from ..estimator import LocalZO, make
from ..opzo import FEEDBACKS, NOISES, OPZO
from .args import Parser, json_path, plural, positive_ints
from .data import SpikeDataset, spiking_digits

__all__ = ["main", "build_parser", "fc_net", "conv_net", "as_images", "train_opzo", "METHODS",
           "DEFAULT_HIDDEN"]

#: hidden layers of the deep fully connected net (64-256-256-256-128-10)
DEFAULT_HIDDEN = (256, 256, 256, 128)

#: benchmark method name -> OPZO options
METHODS: Dict[str, dict] = {
    "opzo": dict(feedback="momentum"),
    "ottt_backprop": dict(feedback="backprop"),
    "dfa": dict(feedback="random"),
    "zo": dict(feedback="zo"),
    "opzo_localzo": dict(feedback="momentum", local_grad="localzo"),
}


def fc_net(hidden: Sequence[int] = DEFAULT_HIDDEN, beta: float = 0.9, n_in: int = 64,
           n_out: int = 10, leaky=snn.Leaky, gain: float = 1.0) -> nn.Sequential:
    """``n_in - hidden... - n_out``: Linear + Leaky (``init_hidden=True``, snnTorch's
    default ATan surrogate) per hidden layer, a Linear readout. ``gain`` scales
    PyTorch's initial weights of the hidden layers (1: PyTorch's default)."""
    layers: List[nn.Module] = []
    for a, b in zip((n_in,) + tuple(hidden), hidden):
        layers += [_scaled(nn.Linear(a, b), gain), leaky(beta=beta, init_hidden=True)]
    layers.append(nn.Linear(([n_in] + list(hidden))[-1], n_out))
    return nn.Sequential(*layers)


def _scaled(layer: nn.Module, gain: float) -> nn.Module:
    if gain != 1.0:
        with torch.no_grad():
            layer.weight.mul_(gain)
    return layer


def conv_net(beta: float = 0.9, channels: Sequence[int] = (16, 32), n_out: int = 10,
             leaky=snn.Leaky) -> nn.Sequential:
    """A small conv net for 8x8 digits: (Conv 3x3 - Leaky - AvgPool 2) x 2, Flatten,
    Linear readout (1x8x8 -> 16x8x8 -> 16x4x4 -> 32x4x4 -> 32x2x2 -> 10)."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), leaky(beta=beta, init_hidden=True), nn.AvgPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), leaky(beta=beta, init_hidden=True), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 2 * 2, n_out),
    )


def as_images(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, 64]`` digits as ``[T, N, 1, 8, 8]`` images."""
    return x.reshape(x.shape[0], x.shape[1], 1, 8, 8)


def train_opzo(
    *,
    method: str = "opzo",
    net: str = "fc",
    seed: int = 0,
    epochs: int = 10,
    num_steps: int = 8,
    batch_size: int = 32,
    lr: float = 1e-3,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    beta: float = 0.9,
    gain: float = 1.0,
    device=None,
    data: Optional[SpikeDataset] = None,
    progress: Optional[Callable[[int], None]] = None,
    local_grad=None,
    **opzo_options,
) -> dict:
    """Trains one network with one method and measures it.

    ``torch.manual_seed(seed)`` is set first: every method starts from the
    same weights and sees the batches in the same order. ``method`` is a key
    of :data:`METHODS` or a ``feedback`` name; ``beta`` is the neurons' decay and
    ``gain`` scales the fc net's initial hidden weights;
    ``opzo_options`` go to
    :class:`~snntorch_localzo.opzo.OPZO` (``noise_std``, ``momentum``, ...).

    Training spikes come from ``data.train_batch`` (fresh at every
    presentation unless the dataset was made with ``redraw=False``). When
    ``data`` has a validation split, it is measured after every epoch and the
    test split once, after the last epoch; otherwise the test split after
    every epoch.

    :return: ``{"method", "net", "seed", "val_acc", "test_acc", "s_per_epoch",
        "val_acc_per_epoch", "test_acc_per_epoch", "epoch_s", "active_frac"}``
        (``val_acc``: None without a validation split; ``active_frac``: the
        fraction of non-zero local gradients with a LocalZO ``local_grad``)
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = dict(METHODS.get(method, dict(feedback=method)))
    if options.pop("local_grad", None) == "localzo" and local_grad is None:
        local_grad = make(delta=0.05, track=True)  # the fixed step docs/opzo.md measured
    options.update(opzo_options)
    if data is None:
        data = spiking_digits(num_steps=num_steps, seed=seed, device=device)
    shape = as_images if net == "conv" else (lambda x: x)
    has_val = data.x_val is not None
    torch.manual_seed(seed)
    model = (conv_net(beta) if net == "conv" else fc_net(hidden, beta, gain=gain)).to(device)
    trainer = OPZO(model, torch.optim.Adam(model.parameters(), lr=lr), local_grad=local_grad,
                   **options).to(device)
    n_train = data.x_train.shape[1]
    accs, epoch_s = [], []
    if isinstance(local_grad, LocalZO):
        local_grad.reset_stats()
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n_train, device=device)
        for first in range(0, n_train, batch_size):
            idx = order[first:first + batch_size]
            trainer.train_step(shape(data.train_batch(idx)), data.y_train[idx])
            if progress is not None:
                progress(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - start)
        held = (data.x_val, data.y_val) if has_val else (data.x_test, data.y_test)
        accs.append(trainer.evaluate(shape(held[0]), held[1]))
    active = (local_grad.active_fraction
              if isinstance(local_grad, LocalZO) and local_grad.track else None)
    test = trainer.evaluate(shape(data.x_test), data.y_test) if has_val else accs[-1]
    return {
        "method": method, "net": net, "seed": seed,
        "val_acc": accs[-1] if has_val else None, "test_acc": test,
        "s_per_epoch": statistics.median(epoch_s),
        "val_acc_per_epoch": accs if has_val else None,
        "test_acc_per_epoch": None if has_val else accs,
        "epoch_s": epoch_s, "active_frac": active,
    }


def batches(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="snntorch-localzo opzo",
        description=(
            "Train a deep spiking network on spike-encoded digits with OPZO (online "
            "pseudo-zeroth-order training: one noisy forward pass per step, momentum "
            "feedback, no backward pass) and its baselines, and compare test accuracy "
            "and time per epoch."
        ),
    )
    p.add_argument("--feedback", default="momentum,backprop,random,zo",
                   help="comma-separated from momentum (OPZO), backprop (OTTT), random (DFA), "
                        "zo (zeroth order by node perturbation); default: all four")
    p.add_argument("--net", default="fc", choices=["fc", "conv"],
                   help="fc: 64-hidden-10 fully connected (default); conv: small conv net")
    p.add_argument("--hidden", type=positive_ints, default=list(DEFAULT_HIDDEN),
                   help="hidden sizes of the fc net (default 256,256,256,128)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--steps", type=int, default=8, help="time steps per sample (default 8)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--noise-std", type=float, default=0.3,
                   help="noise scale alpha for momentum and zo (default 0.3)")
    p.add_argument("--momentum", type=float, default=0.999,
                   help="momentum lambda of the feedback matrices (default 0.999)")
    p.add_argument("--beta", type=float, default=0.5, help="neuron decay (default 0.5)")
    p.add_argument("--gain", type=float, default=3.0,
                   help="fc net: PyTorch's initial hidden weights times this (default 3)")
    p.add_argument("--slope", type=float, default=4.0,
                   help="slope of the sigmoid local factor (default 4)")
    p.add_argument("--noise", default="gaussian", choices=list(NOISES), help="noise law")
    p.add_argument("--no-dual", action="store_true", help="independent noise at every step")
    p.add_argument("--perturb", default="output", choices=["output", "membrane"],
                   help="where the noise goes (default: a layer's output spikes)")
    p.add_argument("--local-grad", default="surrogate", choices=["surrogate", "localzo"],
                   help="local factor psi: snnTorch's sigmoid surrogate of slope --slope "
                        "(default) or localzo.make(delta=--delta), sparse")
    p.add_argument("--delta", type=float, default=0.05, help="LocalZO delta (default 0.05)")
    p.add_argument("--update", default="sequence", choices=["sequence", "step"],
                   help="optimizer step after each sequence (default) or each time step")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--runs", type=int, default=1, help="seeds seed..seed+runs-1 (default 1)")
    p.add_argument("--train-samples", type=int, default=None,
                   help="use only this many training samples (quick look)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--json", metavar="PATH", type=json_path,
                   help="also write every run as JSON rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check(p: argparse.ArgumentParser, args) -> None:
    feedbacks = [f.strip() for f in args.feedback.split(",") if f.strip()]
    bad = [f for f in feedbacks if f not in FEEDBACKS]
    if bad or not feedbacks:
        p.error(f"argument --feedback: expected names from {', '.join(FEEDBACKS)}, got "
                f"{args.feedback!r}")
    args.feedback = feedbacks
    for name in ("epochs", "steps", "batch", "runs"):
        if getattr(args, name) < 1:
            p.error(f"argument --{name}: must be >= 1, got {getattr(args, name)}")
    if args.train_samples is not None and args.train_samples < 1:
        p.error(f"argument --train-samples: must be >= 1, got {args.train_samples}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"argument --lr: must be > 0, got {args.lr}")
    if not (math.isfinite(args.noise_std) and args.noise_std >= 0):
        p.error(f"argument --noise-std: must be >= 0, got {args.noise_std}")
    if args.noise_std == 0 and ("zo" in feedbacks or "momentum" in feedbacks):
        p.error("argument --noise-std: must be > 0 for momentum and zo (they learn from the noise)")
    if not (0 <= args.momentum < 1):
        p.error(f"argument --momentum: must lie in [0, 1), got {args.momentum}")
    if not (0 <= args.beta <= 1):
        p.error(f"argument --beta: must lie in [0, 1], got {args.beta}")
    for name in ("gain", "slope"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            p.error(f"argument --{name}: must be > 0, got {getattr(args, name)}")
    if not (math.isfinite(args.delta) and args.delta > 0):
        p.error(f"argument --delta: must be > 0, got {args.delta}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        p.error(f"argument --device: not a torch device: {args.device!r}")
    if device.type not in ("cpu", "cuda"):
        p.error(f"argument --device: expected cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("argument --device: CUDA is not available here")
    args.device = device


def _mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_table(rows: List[dict]) -> str:
    """One line per method: test accuracy %, seconds per epoch, active % (LocalZO)."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    header = f"{'method':<22}{'test acc %':>18}{'s / epoch':>16}{'active %':>12}"
    lines = [header, "-" * len(header)]
    for name in names:
        runs = [r for r in rows if r["method"] == name]
        active = [r["active_frac"] for r in runs if r.get("active_frac") is not None]
        lines.append(
            f"{name:<22}{_mean_std([r['test_acc'] for r in runs], 100):>18}"
            f"{_mean_std([r['s_per_epoch'] for r in runs]):>16}"
            f"{(_mean_std(active, 100) if active else '-'):>12}"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    _check(p, args)
    seeds = list(range(args.seed, args.seed + args.runs))
    net_name = ("64-" + "-".join(map(str, args.hidden)) + "-10" if args.net == "fc"
                else "conv 1x8x8-16x8x8-32x4x4-10")
    print(f"OPZO on spike-encoded digits: {net_name} Leaky, T={args.steps}, "
          f"{plural(args.epochs, 'epoch')}, "
          f"batch {args.batch}, Adam {args.lr:g}, alpha={args.noise_std:g}, "
          f"lambda={args.momentum:g}, beta={args.beta:g}, gain={args.gain:g}, device {args.device}, seeds {seeds}", flush=True)
    rows = []
    for seed in seeds:
        data = spiking_digits(num_steps=args.steps, seed=seed, device=args.device)
        if args.train_samples is not None:
            n = min(args.train_samples, data.x_train.shape[1])
            data = data._replace(x_train=data.x_train[:, :n], y_train=data.y_train[:n])
        total = args.epochs * batches(data.x_train.shape[1], args.batch)
        for feedback in args.feedback:
            local_grad = (make(delta=args.delta, track=True) if args.local_grad == "localzo"
                          else surrogate.sigmoid(slope=args.slope))
            name = feedback + ("+localzo" if args.local_grad == "localzo" else "")
            bar, progress = progress_counter(total, not args.no_progress, unit="batch")
            if bar is not None:
                bar.set_description(f"seed {seed} {name}")
            noisy = dict(noise_std=args.noise_std, momentum=args.momentum,
                         noise=args.noise, dual_noise=not args.no_dual, perturb=args.perturb)
            row = train_opzo(
                method=feedback, net=args.net, seed=seed, epochs=args.epochs,
                num_steps=args.steps, batch_size=args.batch, lr=args.lr, hidden=args.hidden,
                beta=args.beta, gain=args.gain, device=args.device, data=data, progress=progress, local_grad=local_grad,
                update=args.update, **(noisy if feedback in ("momentum", "zo") else {}),
            )
            row["method"] = name
            if bar is not None:
                bar.close()
            print(f"  seed {seed} {name}: {100 * row['test_acc']:.2f}%", flush=True)
            rows.append(row)
    print()
    print(format_table(rows), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
