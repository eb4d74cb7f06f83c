"""Custom operators: how the ops stay whole under ``torch.compile``.

Each kernel launch, each native CPU computation and each random draw of the
reference is registered as a ``torch.library`` custom operator, which
compiled graphs call as one opaque step: it runs as it does in eager mode
and the random draws are the same, so compiled and eager results agree. In
eager mode the implementation is called directly (no dispatcher overhead in
the step loop). Operators take plain ints, floats and tensors: a
:class:`~snntorch_localzo._ops.spec.ZOSpec` is flattened with
``spec.op_args(device)`` at the call.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

NAMESPACE = "snntorch_localzo"


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


def dynamic_size() -> int:
    """In a fake (shape) function: the size of an output whose length depends
    on the data, such as a list of active entries."""
    return torch.library.get_ctx().new_dynamic_size()
