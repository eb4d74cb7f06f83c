"""Bytes kept for backward per neuron per time step, measured.

Runs a Leaky layer for T steps and records every tensor autograd saves
(``torch.autograd.graph.saved_tensors_hooks``); at the end of the forward
pass it counts, once per storage, those still held by the graph (snnTorch's
reset computes a spike gradient whose graph is dropped at once: not counted).
Works on CPU: with ``--backend triton`` and ``TRITON_INTERPRET=1`` the fused
kernels run through Triton's interpreter and save exactly what they save on
a GPU.

    TRITON_INTERPRET=1 python benchmarks/saved_bytes.py
"""

from __future__ import annotations

import argparse
import os
import sys
import weakref

import torch
import snntorch as snn
from snntorch import surrogate

import snntorch_localzo as localzo


class _Saved:
    """What the pack hook hands to autograd: alive while the graph holds it."""

    def __init__(self, tensor):
        self.tensor = tensor


def saved_bytes_per_neuron_step(make_lif, dtype, *, backend, T=8, B=16, N=96,
                                device="cpu") -> float:
    boxes = []

    def pack(t):
        box = _Saved(t)
        boxes.append(weakref.ref(box))
        return box

    lif = make_lif().to(device)
    x = (torch.rand(T, B, N, device=device) * 1.5).to(dtype).requires_grad_(True)
    with localzo.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda b: b.tensor):
        mem = lif.init_leaky()
        out = []
        for t in range(T):
            spk, mem = lif(x[t], mem)
            out.append(spk)
        loss = torch.stack(out).sum() + mem.sum()
    storages = {}
    for ref in boxes:
        box = ref()
        if box is not None:
            s = box.tensor.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
    storages.pop(x.untyped_storage().data_ptr(), None)  # the input is the user's
    loss.backward()
    return sum(storages.values()) / (T * B * N)


LAYERS = {
    "snn.Leaky + surrogate.atan()": lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.atan()),
    "snn.Leaky + localzo.make()": lambda: snn.Leaky(beta=0.9, spike_grad=localzo.make()),
    "localzo.Leaky": lambda: localzo.Leaky(beta=0.9),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    fused = "triton" if (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1") else "reference"
    print(f"{'layer':<32}{'float32':>10}{'bfloat16':>10}{'float16':>10}   (bytes / neuron / step)")
    for name, make_lif in LAYERS.items():
        backend = fused if name == "localzo.Leaky" else "reference"
        vals = [
            saved_bytes_per_neuron_step(make_lif, dt, backend=backend, device=args.device)
            for dt in (torch.float32, torch.bfloat16, torch.float16)
        ]
        print(f"{name:<32}" + "".join(f"{v:>10.2f}" for v in vals))
    print(f"(localzo.Leaky on the {fused} path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
