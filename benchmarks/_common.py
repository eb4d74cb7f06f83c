"""What the benchmark scripts share: the name of the machine a result comes from."""

from __future__ import annotations

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
