"""The command lines' parser and argument types: a bad value ends in one line
that names the option (``prog: error: argument --x: ...``) and exit code 2,
before any training starts, in every subcommand."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import List

import torch

__all__ = ["Parser", "positive_int", "positive_ints", "positive_float", "step", "device",
           "json_path", "plot_dir", "plural"]


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``prog: error:
    argument --x: ... (see --help)``, with exit code 2 (no usage dump);
    ``error`` is also how a command's own checks report a bad option."""

    def error(self, message):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_ints(text: str) -> List[int]:
    """Integers >= 1 separated by commas (``1,2,4``), at least one."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers >= 1 separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 separated by commas, got {text!r}")
    return values


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {value:g}")
    return value


def step(text: str):
    """LocalZO's ``delta``: ``"adaptive"`` (``make()``'s adaptive step) or a
    finite number > 0 (a fixed step)."""
    if text.strip().lower() == "adaptive":
        return "adaptive"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'adaptive' or a finite number > 0, got {text!r}") from None


def device(text: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``, on this machine."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def json_path(text: str) -> Path:
    """A file that can be written: its folder exists and is writable."""
    path = Path(text)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no writable folder {str(folder)!r}")
    return path


def plot_dir(text: str) -> Path:
    """A folder for figures: it exists and is writable, or can be created; and
    matplotlib imports."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot create figures in {text!r}: {str(probe)!r} is not writable")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise argparse.ArgumentTypeError(
            "needs matplotlib: pip install 'snntorch-localzo[plots]' (in the clone: "
            "pip install -e '.[plots]')") from None
    return path


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count in a command's headline."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
