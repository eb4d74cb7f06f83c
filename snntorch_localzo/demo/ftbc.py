"""``snntorch-localzo ftbc``: ANN-to-SNN conversion with FTBC, end to end.

Trains a QCFS network (an MLP with three hidden layers, or a small conv net)
on scikit-learn's digits, or on image data on disk (CIFAR's python files,
class folders, ``.npz`` arrays), converts it into an snnTorch spiking network
(:func:`snntorch_localzo.conversion.convert`), calibrates it with FTBC on
training data (:func:`~snntorch_localzo.conversion.calibrate`) and prints
the test accuracy for several numbers of time steps: the ANN, plain
conversion and FTBC (mean ± std over seeds), with the residual error of the
spiking layers. Optionally also the calibration of the authors' released script
and a short LocalZO fine-tuning at small T. ``benchmarks/ftbc.py`` runs it
for the README's table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .. import conversion
from .._checks import check_fraction
from .._progress import progress_counter
from ..conversion.data import ImageFolder, load_arrays, load_cifar
from .args import Parser, json_path, plural, positive_ints
from .data import digits_split

__all__ = ["main", "build_parser", "build_ann", "load_data", "split_validation", "run",
           "format_table"]

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32)
RELEASED_ALPHA = 0.4  # the step size the authors' released script passes
METHOD_NAMES = {
    "plain": "plain conversion",
    "ftbc": "FTBC",
    "ftbc_released": "FTBC, released script",
    "ftbc+localzo": "FTBC + LocalZO fine-tuning",
}


# --------------------------------------------------------------------------- data
@dataclass
class TaskData:
    """A classification task: datasets of ``(x, label)`` and their shapes."""

    name: str
    train: Dataset
    test: Dataset
    input_shape: tuple
    num_classes: int


def _task(name: str, train: Dataset, test: Dataset, num_classes: Optional[int] = None) -> TaskData:
    if num_classes is None:
        labels = [t.tensors[1] for t in (train, test) if isinstance(t, TensorDataset)]
        num_classes = int(max(int(y.max()) for y in labels)) + 1
    return TaskData(name, train, test, tuple(train[0][0].shape), num_classes)


def digits_task() -> TaskData:
    """scikit-learn's digits as images ``[1, 8, 8]`` in [0, 1] (pixels / 16),
    with the package's fixed stratified split (1437 train, 360 test)."""
    x_tr, x_te, y_tr, y_te = digits_split(0.2, "the ftbc demo")

    def dataset(x, y):
        return TensorDataset(torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0,
                             torch.tensor(y, dtype=torch.int64))

    return _task("scikit-learn digits", dataset(x_tr, y_tr), dataset(x_te, y_te))


def _first_existing(root: Path, names: Sequence[str]) -> Optional[Path]:
    return next((root / n for n in names if (root / n).exists()), None)


def load_data(spec: str, image_size: Optional[int] = None) -> TaskData:
    """The task named by ``spec``:

    * ``digits``: scikit-learn's digits (nothing on disk needed);
    * ``cifar:DIR``: CIFAR-10 or CIFAR-100, python version, in ``DIR``;
    * ``folder:DIR``: class folders ``DIR/train/<class>/*`` and
      ``DIR/val/<class>/*`` (or ``DIR/test``), resized to ``image_size``;
    * ``npz:DIR``: ``DIR/train.npz`` and ``DIR/test.npz`` with arrays ``x``, ``y``.
    """
    kind, _, where = spec.partition(":")
    if kind == "digits" and not where:
        return digits_task()
    if kind not in ("cifar", "folder", "npz") or not where:
        raise ValueError(f"unknown data set {spec!r}: use digits, cifar:DIR, folder:DIR or npz:DIR")
    root = Path(where).expanduser()
    if not root.is_dir():
        raise ValueError(f"no folder {root}")
    if kind == "cifar":
        return _task(f"CIFAR ({root})", load_cifar(root, train=True), load_cifar(root, train=False))
    if kind == "npz":
        missing = [n for n in ("train.npz", "test.npz") if not (root / n).is_file()]
        if missing:
            raise ValueError(f"{root} must hold train.npz and test.npz (missing {missing})")
        return _task(f"arrays ({root})", load_arrays(root / "train.npz"),
                     load_arrays(root / "test.npz"))
    train_dir, test_dir = root / "train", _first_existing(root, ("val", "test"))
    if not train_dir.is_dir() or test_dir is None:
        raise ValueError(f"{root} must hold train/ and val/ (or test/) class folders")
    train = ImageFolder(train_dir, size=image_size)
    test = ImageFolder(test_dir, size=image_size)
    if test.classes != train.classes:
        raise ValueError(f"the class folders of {train_dir} and {test_dir} differ")
    return _task(f"image folders ({root})", train, test, len(train.classes))


def batches(dataset: Dataset, batch_size: int, shuffle: bool = False,
            generator: Optional[torch.Generator] = None):
    """``(x, y)`` batches of ``dataset``; tensors in memory are sliced directly."""
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def split_validation(dataset: Dataset, fraction: float = 0.2, seed: int = 0):
    """``(rest, val)``: a random ``fraction`` of ``dataset`` held out as a
    validation split (a fixed permutation drawn from ``seed``), for choosing
    settings without the test split."""
    check_fraction("fraction", fraction)
    n = len(dataset)
    n_val = int(round(fraction * n))
    if not 0 < n_val < n:
        raise ValueError(f"a validation fraction of {fraction} of {n} samples leaves a split empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest, val = order[n_val:], order[:n_val]
    if isinstance(dataset, TensorDataset):
        return (TensorDataset(*(t[rest] for t in dataset.tensors)),
                TensorDataset(*(t[val] for t in dataset.tensors)))
    return Subset(dataset, rest.tolist()), Subset(dataset, val.tolist())


# --------------------------------------------------------------------------- networks
def build_ann(net: str, input_shape: tuple, num_classes: int, levels: int = 8, lam: float = 8.0,
              hidden: int = 256) -> nn.Sequential:
    """The demo's QCFS networks.

    * ``mlp``: Flatten, three hidden layers of ``hidden`` units with QCFS,
      a linear read-out (64-256-256-256-10 on digits);
    * ``conv``: two blocks Conv3x3-BatchNorm-QCFS-AvgPool2, then a hidden
      linear layer of 128 units with QCFS and a linear read-out.
    """
    def qcfs():
        return conversion.QCFS(levels, lam)

    if net == "mlp":
        features = math.prod(input_shape)
        layers: List[nn.Module] = [nn.Flatten()]
        for n_in in (features, hidden, hidden):
            layers += [nn.Linear(n_in, hidden), qcfs()]
        return nn.Sequential(*layers, nn.Linear(hidden, num_classes))
    if net == "conv":
        if len(input_shape) != 3:
            raise ValueError(f"the conv net needs images [C, H, W], got samples of shape {input_shape}")
        c, h, w = input_shape
        return nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), qcfs(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), qcfs(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), qcfs(),
            nn.Linear(128, num_classes),
        )
    raise ValueError(f"unknown net {net!r}: 'mlp' or 'conv'")


def train_ann(ann: nn.Module, train: Dataset, *, epochs: int, lr: float, batch_size: int,
              seed: int, device: torch.device, progress=None, weight_decay: float = 0.0) -> None:
    """Adam (L2 ``weight_decay``) with a cosine learning-rate schedule, cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ann.parameters(), lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    ann.train()
    for _ in range(epochs):
        for x, y in batches(train, batch_size, shuffle=True, generator=gen):
            loss = F.cross_entropy(ann(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress(1)
        sched.step()
    ann.eval()


@torch.no_grad()
def accuracy(model, dataset: Dataset, device: torch.device, batch_size: int = 512, **kwargs) -> float:
    """Fraction of ``dataset`` classified right by ``model(x, **kwargs)``."""
    correct = total = 0
    for x, y in batches(dataset, batch_size):
        pred = model(x.to(device), **kwargs).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / total


def localzo_neuron(delta_scale: float):
    """Builds ``localzo.Leaky`` neurons for :func:`conversion.convert` with a
    LocalZO ``delta`` of ``delta_scale`` times each layer's threshold."""
    from .. import Leaky, make

    def build(**kwargs):
        return Leaky(spike_grad=make(delta=delta_scale * kwargs["threshold"], track=True), **kwargs)

    return build


def finetune_localzo(snn_net, ann, train: Dataset, *, num_steps: int, epochs: int, lr: float,
                     batch_size: int, delta_scale: float, seed: int, device: torch.device):
    """A copy of ``snn_net`` with ``localzo.Leaky`` neurons (same state:
    weights, thresholds, temporal biases), trained by BPTT at ``num_steps``
    steps with LocalZO spike gradients (Adam, cross-entropy of the mean
    output; temporal biases and thresholds stay fixed). Returns the copy and
    the fraction of non-zero spike gradients in backward."""
    model = conversion.convert(ann, neuron=localzo_neuron(delta_scale)).to(device)
    model.load_state_dict(snn_net.state_dict())
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(epochs):
        for x, y in batches(train, batch_size, shuffle=True, generator=gen):
            loss = F.cross_entropy(model(x.to(device), num_steps), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    meters = [n.neuron.spike_grad for n in model.neurons]
    active = statistics.mean(m.active_fraction for m in meters)
    return model, active


# --------------------------------------------------------------------------- experiment
def run(data: TaskData, *, net: str = "mlp", levels: int = 8, lam: float = 2.0, seeds=(0,),
        epochs: int = 60, lr: float = 2e-3, batch_size: int = 64, steps=DEFAULT_STEPS,
        alpha: float = 0.5, iters: int = 5, calib_batches: int = 3, calib_batch_size: int = 480,
        released: bool = False, finetune_steps=(), finetune_epochs: int = 5,
        finetune_lr: float = 1e-3, delta_scale: float = 0.05, device="cpu",
        progress: bool = False, log=None, weight_decay: float = 1e-4, val_fraction: float = 0.2,
        test: bool = True) -> List[Dict]:
    """Trains, converts, calibrates and evaluates for every seed; returns one
    row per (method, T, seed): ``{net, T, method, seed, val_acc, test_acc}``.

    A fixed ``val_fraction`` of the training data is held out (the same
    split for every seed, :func:`split_validation`): the ANN is trained and
    FTBC calibrated on the rest, ``val_acc`` is measured on the held-out
    part, ``test_acc`` on the test split (``test=False``: not evaluated, None,
    for choosing settings). The spiking methods' rows also carry
    ``residual_error`` (mean over layers and steps 1..T of
    :func:`~snntorch_localzo.conversion.conversion_error`) on the held-out
    training data, and ``residual_error_calib`` on the calibration batches
    (where FTBC minimises it); fine-tuning rows carry ``active_frac``. The
    ANN's rows have ``T = None``. FTBC is calibrated once for the largest T;
    smaller T use its first biases (the same as calibrating for them). The
    released script's form (``released=True``) uses its own step size,
    0.4, and the same batches."""
    device = torch.device(device)
    label = f"{net} L={levels}"
    steps = sorted(steps)
    t_max = steps[-1]
    train, val = split_validation(data.train, val_fraction)
    held_out = [x for x, _ in batches(val, calib_batch_size)]

    def accuracies(model, **kwargs):
        return dict(val_acc=accuracy(model, val, device, **kwargs),
                    test_acc=accuracy(model, data.test, device, **kwargs) if test else None)

    rows: List[Dict] = []
    for seed in seeds:
        start = time.perf_counter()
        torch.manual_seed(seed)
        ann = build_ann(net, data.input_shape, data.num_classes, levels, lam).to(device)
        per_epoch = math.ceil(len(train) / batch_size)
        bar, advance = progress_counter(epochs * per_epoch, progress,
                                        desc=f"{label} seed {seed}: ANN", unit="batch")
        train_ann(ann, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  device=device, progress=advance, weight_decay=weight_decay)
        if bar is not None:
            bar.close()
        ann_row = dict(net=label, T=None, method="ann", seed=seed, **accuracies(ann))
        rows.append(ann_row)
        gen = torch.Generator().manual_seed(seed)
        calib = [x for x, _ in batches(train, calib_batch_size, shuffle=True, generator=gen)]
        calib = calib[:calib_batches]
        snns = {"plain": conversion.convert(ann)}
        in_sample = {"plain": conversion.conversion_error(snns["plain"], ann, calib, t_max)}
        snns["ftbc"] = conversion.convert(ann)
        in_sample["ftbc"] = conversion.calibrate(snns["ftbc"], ann, calib, t_max, alpha=alpha,
                                                 iters=iters, num_batches=None,
                                                 progress=progress)
        if released:
            snns["ftbc_released"] = conversion.convert(ann)
            in_sample["ftbc_released"] = conversion.calibrate(
                snns["ftbc_released"], ann, calib, t_max, alpha=RELEASED_ALPHA,
                num_batches=None, form="released", progress=progress)
        for method, snn_net in snns.items():
            out_of_sample = conversion.conversion_error(snn_net, ann, held_out, t_max)
            for T in steps:
                rows.append(dict(net=label, T=T, method=method, seed=seed,
                                 **accuracies(snn_net, num_steps=T),
                                 residual_error=float(out_of_sample[:, :T].mean()),
                                 residual_error_calib=float(in_sample[method][:, :T].mean())))
        for T in finetune_steps:
            tuned, active = finetune_localzo(
                snns["ftbc"], ann, train, num_steps=T, epochs=finetune_epochs, lr=finetune_lr,
                batch_size=batch_size, delta_scale=delta_scale, seed=seed, device=device)
            rows.append(dict(net=label, T=T, method="ftbc+localzo", seed=seed,
                             **accuracies(tuned, num_steps=T), epochs=finetune_epochs,
                             active_frac=active))
        if log is not None:
            ftbc = {r["T"]: r["val_acc"] for r in rows
                    if r["seed"] == seed and r["net"] == label and r["method"] == "ftbc"}
            log(f"  {label} seed {seed}: validation: ANN {100 * ann_row['val_acc']:.2f}%, FTBC "
                + ", ".join(f"T={T} {100 * a:.1f}%" for T, a in ftbc.items())
                + f" ({time.perf_counter() - start:.0f} s)")
    return rows


# --------------------------------------------------------------------------- report
def _mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    values = [scale * v for v in values]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_table(rows: List[Dict], key: str = "test_acc") -> str:
    """One block per network: accuracy % (``key``: ``"test_acc"`` or
    ``"val_acc"``; mean ± std over seeds) per method and T, then the
    residual error of the spiking methods on held-out training data."""
    lines = []
    split = "test" if key == "test_acc" else "validation"
    nets = list(dict.fromkeys(r["net"] for r in rows))
    for net in nets:
        mine = [r for r in rows if r["net"] == net]
        ann = [r[key] for r in mine if r["method"] == "ann"]
        seeds = sorted({r["seed"] for r in mine})
        steps = sorted({r["T"] for r in mine if r["T"] is not None})
        lines.append(f"{net}: ANN {_mean_std(ann)} % ({split}), seeds {seeds}")
        header = f"{split + ' accuracy %':<30}" + "".join(f"{'T=' + str(T):>16}" for T in steps)
        lines += [header, "-" * len(header)]
        methods = [m for m in METHOD_NAMES if any(r["method"] == m for r in mine)]
        for m in methods:
            cells = [_mean_std([r[key] for r in mine if r["method"] == m and r["T"] == T])
                     for T in steps]
            lines.append(f"{METHOD_NAMES[m]:<30}" + "".join(f"{c:>16}" for c in cells))
        for m in ("plain", "ftbc", "ftbc_released"):
            if m not in methods:
                continue
            cells = [_mean_std([r["residual_error"] for r in mine if r["method"] == m and r["T"] == T],
                               scale=1.0, digits=3) for T in steps]
            lines.append(f"{'residual error, ' + m:<30}" + "".join(f"{c:>16}" for c in cells))
        lines.append("(residual error: on held-out training data, not on the calibration batches)")
        tuned = [r for r in mine if r["method"] == "ftbc+localzo"]
        if tuned:
            act = _mean_std([r["active_frac"] for r in tuned])
            lines.append(f"(fine-tuning: {tuned[0]['epochs']} epochs of BPTT with localzo.Leaky at "
                         f"that T; non-zero spike gradients in backward {act} %)")
        lines.append("")
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="snntorch-localzo ftbc",
        description=(
            "Train a QCFS ANN, convert it into an snnTorch spiking network, calibrate it with "
            "FTBC (forward temporal bias correction) on training data, and compare test "
            "accuracy over time steps: ANN, plain conversion, FTBC."
        ),
    )
    p.add_argument("--data", default="digits",
                   help="digits (default, scikit-learn), cifar:DIR (CIFAR-10/100 python files), "
                        "folder:DIR (DIR/train and DIR/val class folders), npz:DIR "
                        "(DIR/train.npz and DIR/test.npz with arrays x, y)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize folder:DIR images to this square size (default: keep; only "
                        "for folder:DIR data)")
    p.add_argument("--net", default="mlp", choices=["mlp", "conv"],
                   help="mlp: 3 hidden layers of 256; conv: 2 conv blocks + 1 hidden layer")
    p.add_argument("--levels", type=int, default=8, help="QCFS levels L (default 8)")
    # the ANN recipe's defaults: what benchmarks/ftbc.py chose on validation data for digits
    p.add_argument("--lam", type=float, default=2.0, help="initial QCFS threshold (default 2.0)")
    p.add_argument("--epochs", type=int, default=60, help="ANN training epochs (default 60)")
    p.add_argument("--lr", type=float, default=2e-3, help="ANN learning rate, Adam (default 2e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="ANN weight decay, Adam's L2 term (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--steps", type=positive_ints, default=list(DEFAULT_STEPS),
                   help="time steps to evaluate, comma-separated (default 1,2,4,8,16,32)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--runs", type=int, default=1, help="number of seeds (default 1)")
    p.add_argument("--alpha", type=float, default=0.5, help="FTBC step size in (0, 1] (default 0.5)")
    p.add_argument("--iters", type=int, default=5,
                   help="FTBC updates per layer, step and batch (default 5)")
    p.add_argument("--calib-batches", type=int, default=3,
                   help="calibration batches of training data (default 3)")
    p.add_argument("--calib-batch-size", type=int, default=480,
                   help="calibration batch size (default 480)")
    p.add_argument("--released", action="store_true",
                   help="also calibrate as the authors' released script does (own bias not fed "
                        "back, alpha 0.4, accumulated over the calibration batches)")
    p.add_argument("--finetune", type=positive_ints, default=[], metavar="T[,T...]",
                   help="also fine-tune the FTBC network with LocalZO (localzo.Leaky, BPTT) at "
                        "these time steps")
    p.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning learning rate")
    p.add_argument("--delta-scale", type=float, default=0.05,
                   help="LocalZO delta as a fraction of each layer's threshold (default 0.05)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', ...")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the small "
                        "digits networks on a busy machine)")
    p.add_argument("--json", metavar="PATH", type=json_path, help="also write the rows as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(p: argparse.ArgumentParser, args) -> torch.device:
    for name in ("epochs", "runs", "iters", "calib_batches", "calib_batch_size", "batch_size",
                 "levels", "finetune_epochs"):
        if getattr(args, name) < 1:
            p.error(f"argument --{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    for name in ("image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"argument --{name.replace('_', '-')}: must be >= 1, got {value}")
    if not (math.isfinite(args.alpha) and 0 < args.alpha <= 1):
        p.error(f"argument --alpha: must lie in (0, 1], got {args.alpha}")
    for name in ("lam", "lr", "finetune_lr", "delta_scale"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            p.error(f"argument --{name.replace('_', '-')}: must be a finite number > 0, "
                    f"got {value}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        p.error(f"argument --weight-decay: must be a finite number >= 0, got {args.weight_decay}")
    if args.image_size is not None and not args.data.startswith("folder:"):
        p.error(f"argument --image-size: resizes folder:DIR images only; --data {args.data} "
                "keeps its size (digits 8x8, CIFAR 32x32, npz as stored)")
    too_long = [T for T in args.finetune if T > max(args.steps)]
    if too_long:
        p.error(f"argument --finetune: {too_long}: at most the largest of --steps "
                f"({max(args.steps)})")
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                              if args.device == "auto" else args.device)
    except RuntimeError as exc:
        p.error(f"argument --device: {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"argument --device: {args.device!r}: CUDA is not available")
    return device


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    device = _check_args(p, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        data = load_data(args.data, args.image_size)
    except (ValueError, FileNotFoundError) as exc:
        p.error(f"argument --data: {args.data!r}: {exc}")
    seeds = list(range(args.seed, args.seed + args.runs))
    print(f"{data.name}: {len(data.train)} train (a fifth of it held out for validation), "
          f"{len(data.test)} test, input {data.input_shape}, "
          f"{data.num_classes} classes; {args.net} with QCFS L={args.levels} (lam init "
          f"{args.lam:g}), {plural(args.epochs, 'epoch')}, weight decay {args.weight_decay:g}; "
          f"FTBC alpha={args.alpha:g}, iters={args.iters}, "
          f"{args.calib_batches} batches of {args.calib_batch_size}; device {device}; seeds {seeds}",
          flush=True)
    rows = run(data, net=args.net, levels=args.levels, lam=args.lam, seeds=seeds,
               epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, steps=args.steps,
               alpha=args.alpha, iters=args.iters, calib_batches=args.calib_batches,
               calib_batch_size=args.calib_batch_size, released=args.released,
               finetune_steps=args.finetune, finetune_epochs=args.finetune_epochs,
               finetune_lr=args.finetune_lr, delta_scale=args.delta_scale, device=device,
               progress=not args.no_progress, log=lambda line: print(line, flush=True),
               weight_decay=args.weight_decay)
    print()
    print(format_table(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
