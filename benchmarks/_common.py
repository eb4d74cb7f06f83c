"""What the benchmark scripts share: the name of the machine a result comes
from, how results are written, and the digits' encoding and validation options."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Callable, Optional

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


def write_results(out: Path, data, figure: Optional[Callable[[], Path]] = None) -> int:
    """Writes ``data`` to ``out`` as JSON (its folder created), then draws
    the figure when ``figure`` is given (a callable returning the PNG's
    path); says where each went. Returns 0, the script's exit code."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"wrote {out}")
    if figure is not None:
        print(f"wrote {figure()}")
    return 0


# ------------------------------------------------------- what a step launches
#: aten operations that read device memory back to the host (a synchronisation
#: on a GPU) or turn a Python number into a tensor (then copied to the device:
#: ``acc[i] = 3`` is ``lift_fresh`` and a blocking ``copy_``).
HOST_SYNC_OPS = frozenset({
    "nonzero", "bincount", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
    "masked_select", "_local_scalar_dense", "is_nonzero", "item", "nonzero_static", "equal",
    "allclose", "lift_fresh", "lift_fresh_copy", "scalar_tensor", "copy_from_host",
})
#: aten operations that launch no kernel (allocation, aliasing).
NO_KERNEL_OPS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "detach", "alias",
                           "lift_fresh", "_local_scalar_dense", "set_"})


def _dispatch_mode():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class OpRecorder(_dispatch_mode()):
    """Records the aten operations run under it (a ``TorchDispatchMode``):
    ``ops`` their names, ``kernels`` how many of them launch a kernel (not a
    view, not an allocation). On the CPU every copy is host to host: a copy
    from a 0-d tensor is named ``copy_from_host``, standing for the copy a
    number assigned into a device tensor makes."""

    def __init__(self):
        super().__init__()
        self.ops = []
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if TritonLaunches.depth:  # the interpreter's own copies of a kernel's arguments
            return func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].dim() == 0:
            name = "copy_from_host"
        self.ops.append(name)
        if not func.is_view and name not in NO_KERNEL_OPS:
            self.kernels += 1
        return func(*args, **(kwargs or {}))

    @property
    def host_syncs(self) -> int:
        return sum(op in HOST_SYNC_OPS for op in self.ops)


class TritonLaunches:
    """Counts Triton kernel launches (compiled or interpreted) while active;
    ``depth`` is non-zero inside a launch (:class:`OpRecorder` then records
    nothing: on the CPU the interpreter copies the arguments with aten ops)."""

    depth = 0

    def __init__(self):
        self.count = 0
        self._saved = []

    def __enter__(self):
        from triton.runtime import interpreter, jit

        for cls in (jit.JITFunction, interpreter.InterpretedFunction):
            run = cls.run

            def counted(kernel, *args, _run=run, **kwargs):
                self.count += 1
                TritonLaunches.depth += 1
                try:
                    return _run(kernel, *args, **kwargs)
                finally:
                    TritonLaunches.depth -= 1

            self._saved.append((cls, run))
            cls.run = counted
        return self

    def __exit__(self, *exc):
        for cls, run in self._saved:
            cls.run = run
        self._saved = []
        return False


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
