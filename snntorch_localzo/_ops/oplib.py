"""Custom operators: how the ops stay whole under ``torch.compile``.

Each kernel launch, and each random draw of the reference, is registered as
a ``torch.library`` custom operator, which compiled graphs call as one opaque
step: the kernels run as they do in eager mode and the random draws are the
same, so compiled and eager results agree. In eager mode the implementation
is called directly (no dispatcher overhead in the step loop).
"""

from __future__ import annotations

import functools
from typing import Callable, List, Tuple

import torch

from ..distributions import DISTRIBUTIONS, Distribution

NAMESPACE = "snntorch_localzo"


def dist_args(dist: Distribution) -> Tuple[str, List[float]]:
    """A distribution as operator arguments: its name and parameter values."""
    return dist.name, [float(v) for v in dist.params().values()]


@functools.lru_cache(maxsize=256)
def _dist(name: str, params: Tuple[float, ...]) -> Distribution:
    return DISTRIBUTIONS[name](*params)


def dist_from(name: str, params: List[float]) -> Distribution:
    """Inverse of :func:`dist_args` (cached)."""
    return _dist(name, tuple(params))


def register(name: str, impl: Callable, fake: Callable, mutates=(), seeded: bool = False):
    """Registers ``impl`` as ``torch.ops.snntorch_localzo.<name>`` with the shape
    function ``fake``; returns a callable that uses the operator while
    compiling and ``impl`` directly otherwise."""
    tags = (torch.Tag.nondeterministic_seeded,) if seeded else ()
    op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=tuple(mutates), tags=tags)
    op.register_fake(fake)

    @functools.wraps(impl)
    def call(*args):
        if torch.compiler.is_compiling():
            return op(*args)
        return impl(*args)

    call.op = op
    return call
