"""Trains a small LocalZO network for many steps in a fresh process and prints
one JSON line: the live tensors (count, bytes) after ``first`` and ``last``
steps. Run by test_memory.py, in its own process so that no other test's
tensors (caches, garbage freed late) enter the count.

    python tests/scripts/memory_check.py BACKEND FIRST LAST
"""

import gc
import json
import sys

import torch
import torch.nn as nn

import snntorch_localzo as localzo


def live_tensors():
    gc.collect()
    total, count = 0, 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
                total += obj.untyped_storage().nbytes()
                count += 1
        except Exception:
            continue
    return count, total


def main(backend: str, first: int, last: int) -> dict:
    torch.manual_seed(0)
    sg = localzo.make("normal", delta=0.3, track=True)
    fc = nn.Linear(8, 16)
    lif = localzo.Leaky(beta=0.9, spike_grad=sg)
    seq = localzo.LinearLeaky(0.9, 16, 4, spike_grad=sg)
    params = list(fc.parameters()) + list(seq.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.rand(6, 3, 8) * 2
    marks = {}
    with localzo.use_backend(backend):
        for step in range(1, last + 1):
            lif.init_leaky()
            spk, _ = lif.forward_sequence(fc(x))
            out, mem = seq(spk)
            loss = out.sum() + mem.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            del spk, out, mem, loss
            # the neuron's state (a view of the last membranes) keeps the last graph
            # alive, whose saved tensors on the native path hold this step's active
            # entries, a number that varies; start every step from rest, as the loop does
            lif.init_leaky()
            if step in (first, last):
                marks[step] = live_tensors()
    return {"first": marks[first], "last": marks[last], "active": sg.active_fraction}


if __name__ == "__main__":
    backend, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(main(backend, first, last)))
