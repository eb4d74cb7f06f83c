"""Live memory of OPZO training for two sequence lengths, in a fresh process.

Runs one warm-up train_step, then one train_step per length and samples the
live tensors (count, bytes of their storages; gc-visible, so every tensor the
trainer holds, as no autograd graph is built) at time steps during the
sequence; prints one JSON line: {"T": [max count, max bytes], ...}. Run by
tests/test_opzo.py in its own process so that no other test's tensors enter
the count.

    python tests/scripts/opzo_memory_check.py 10 200
"""

import gc
import json
import sys

import snntorch as snn
import torch
import torch.nn as nn

from snntorch_localzo import opzo


def live_tensors(skip=None):
    """Live tensors and their storages' bytes, leaving out ``skip``'s storage
    (the input sequence, which the caller holds and which grows with T)."""
    gc.collect()
    total, count = 0, 0
    seen = {skip.untyped_storage().data_ptr()} if skip is not None else set()
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
                storage = obj.untyped_storage()
                if skip is not None and storage.data_ptr() == skip.untyped_storage().data_ptr():
                    continue
                count += 1
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        except Exception:
            continue
    return count, total


def main(lengths):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 32), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(32, 10),
    )
    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 1e-3))
    batch = 8
    y = torch.arange(batch) % 10
    samples, step, current = [], [0], [None]

    def sample(module, inputs, output):
        t = step[0]
        step[0] += 1
        if t in (3, 6) or t % 50 == 9:  # a few steps into the sequence, then every 50th
            samples.append(live_tensors(skip=current[0]))

    trainer.train_step((torch.rand(min(lengths), batch, 1, 8, 8) < 0.3).float(), y)  # warm-up
    net[-1].register_forward_hook(sample)
    result = {}
    for T in lengths:
        x = (torch.rand(T, batch, 1, 8, 8) < 0.3).float()
        samples.clear()
        step[0] = 0
        current[0] = x
        trainer.train_step(x, y)
        current[0] = None
        del x
        result[str(T)] = [max(c for c, _ in samples), max(b for _, b in samples)]
    return result


if __name__ == "__main__":
    print(json.dumps(main([int(a) for a in sys.argv[1:]])))
