"""Where LocalZO's random directions come from.

Everything is drawn from torch's generator of the tensor's device, so
``torch.manual_seed`` fixes it. Under ``torch.distributed`` with several
processes, the process rank is mixed into the draws: replicas seeded alike
(as they usually are, to start from the same weights) still draw independent
directions. Nothing else is consulted.
"""

from __future__ import annotations

from typing import Optional

import torch

#: Seeds of the kernels' Philox streams have 62 bits (two calls collide with
#: probability about ``calls**2 / 2**63``).
SEED_BITS = 62
_PHILOX_SALT = 0x5BD1E9955BD1E995 & (2**SEED_BITS - 1)
_GENERATOR_SALT = 0x9E3779B97F4A7C15 & (2**SEED_BITS - 1)


def rank_salt() -> int:
    """The process rank under an initialised multi-process group, else 0."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank()
    return 0


def philox_seed(device: torch.device) -> torch.Tensor:
    """A kernel seed as a one-element int64 tensor on ``device`` (no host
    sync); the native CPU draws take it as a Python int."""
    seed = torch.randint(0, 2**SEED_BITS, (1,), dtype=torch.int64, device=device)
    salt = rank_salt()
    if salt:
        seed = seed ^ (salt * _PHILOX_SALT % 2**SEED_BITS)
    return seed


_HOST_SEED = []


def host_seed() -> int:
    """:func:`philox_seed` of the CPU as a Python int (the same draw of the CPU
    generator, into a reused buffer: the native CPU draws' seed)."""
    if not _HOST_SEED:
        _HOST_SEED.append(torch.empty(1, dtype=torch.int64))
    seed = _HOST_SEED[0].random_(0, 2**SEED_BITS).item()
    salt = rank_salt()
    return seed ^ (salt * _PHILOX_SALT % 2**SEED_BITS) if salt else seed


def generator(device: torch.device) -> Optional[torch.Generator]:
    """None (use torch's generator of ``device``) unless the rank must be mixed
    in; then a generator seeded from a draw of that generator and the rank."""
    salt = rank_salt()
    if not salt:
        return None
    base = int(torch.randint(0, 2**SEED_BITS, (1,), device=device).item())
    gen = torch.Generator(device=device)
    gen.manual_seed(base ^ (salt * _GENERATOR_SALT % 2**SEED_BITS))
    return gen
