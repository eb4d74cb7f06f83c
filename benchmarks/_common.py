"""What the benchmark scripts share: the name of the machine a result comes
from, and the digits' encoding and validation options."""

from __future__ import annotations

import argparse
import platform
from typing import Optional

import torch


def machine(device: Optional[torch.device] = None) -> str:
    """The GPU's name for a CUDA ``device``, else the CPU's model (from
    ``/proc/cpuinfo`` where there is one) and torch's thread count."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model}, {torch.get_num_threads()} thread(s)"


def add_digits_args(p: argparse.ArgumentParser) -> None:
    """``--val-size`` and ``--fixed-encoding`` for :func:`digits`."""
    p.add_argument("--val-size", type=float, default=0.2,
                   help="fraction of the training part held out for validation (default 0.2)")
    p.add_argument("--fixed-encoding", action="store_true",
                   help="draw the training spikes once instead of at every presentation")


def digits(args: argparse.Namespace, num_steps: int, seed: int, device):
    """``spiking_digits`` with the options of :func:`add_digits_args`."""
    from snntorch_localzo.demo.data import spiking_digits

    return spiking_digits(num_steps=num_steps, seed=seed, device=device,
                          redraw=not args.fixed_encoding, val_size=args.val_size)


def digits_settings(args: argparse.Namespace) -> dict:
    """The JSON settings that :func:`digits` adds."""
    return {"encoding": "fixed" if args.fixed_encoding else "re-drawn per presentation",
            "val_size": args.val_size}
