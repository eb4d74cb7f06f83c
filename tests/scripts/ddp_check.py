"""Two CPU processes (gloo) train a small LocalZO network under
DistributedDataParallel. Run by test_distributed.py; prints one JSON line.

Checks: every replica starts from the same seed, the replicas stay identical
after each optimiser step, and the ranks draw their own directions (the same
batch on both ranks gives different local gradients).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import snntorch_localzo as localzo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/
from nets import LinearSequenceNet  # noqa: E402


class Net(LinearSequenceNet):
    def __init__(self):
        super().__init__(12, 16, 4, delta=0.5)

    def forward(self, x):  # x: [T, B, 12]
        out, mem = super().forward(x)
        return out.sum(0) + mem.mean(0)


def worker(rank, world, init_file, backend, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    localzo.set_backend(backend)
    torch.manual_seed(0)  # identical start on every rank, as usual
    net = Net()
    x_same = torch.rand(6, 8, 12) * 2
    net(x_same).pow(2).sum().backward()
    local = torch.cat([p.grad.flatten() for p in net.parameters()])
    grads = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(grads, local)
    own_z = not torch.equal(grads[0], grads[1])
    net.zero_grad()
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    torch.manual_seed(100 + rank)  # each rank its own data
    identical = []
    for _ in range(3):
        x = torch.rand(6, 8, 12) * 2
        opt.zero_grad()
        ddp(x).pow(2).sum().backward()
        opt.step()
        flat = torch.cat([p.detach().flatten() for p in net.parameters()])
        copies = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(copies, flat)
        identical.append(all(torch.equal(copies[0], c) for c in copies[1:]))
    if rank == 0:
        queue.put({"own_z": own_z, "identical": identical})
    dist.barrier()
    dist.destroy_process_group()
    # Everything is checked and the group is gone. Leave without the
    # interpreter's teardown: there, torch's CPU (gloo) runtime now and then
    # aborts the process ("terminate called without an active exception",
    # seen after destroy_process_group had returned on both ranks), which
    # says nothing about the training above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main():
    backend = sys.argv[1] if len(sys.argv) > 1 else "reference"
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(worker, args=(2, init_file, backend, queue), nprocs=2, join=True)
    print(json.dumps(queue.get()))


if __name__ == "__main__":
    main()
