"""Custom operators: how the ops stay whole under ``torch.compile``.

Each kernel launch, each native CPU computation and each random draw of the
reference is registered as a ``torch.library`` custom operator, which
compiled graphs call as one opaque step: it runs as it does in eager mode
and the random draws are the same, so compiled and eager results agree. In
eager mode the implementation is called directly (no dispatcher overhead in
the step loop). Operators take plain ints, floats and tensors: a
:class:`~snntorch_localzo._ops.spec.ZOSpec` is flattened with
``spec.op_kwargs()`` (keyword-only: every operator takes its tensors
by position and its settings by name) and ``spec.table(device)`` at the call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

NAMESPACE = "snntorch_localzo"


def register(name: str, impl: Callable, fake: Callable, mutates=(), seeded: bool = False):
    """Registers ``impl`` as ``torch.ops.snntorch_localzo.<name>`` with the shape
    function ``fake``; returns a callable that uses the operator while
    compiling and ``impl`` directly otherwise.

    ``impl`` takes its tensors by position and its settings keyword-only
    (after ``*``), and so does the returned callable. The operator itself is
    registered with every argument positional (compiled graphs call
    operators that mutate an argument with positional arguments only); the
    callable passes the settings in ``impl``'s order. ``fake`` has ``impl``'s
    signature."""
    sig = inspect.signature(impl, eval_str=True)
    names = list(sig.parameters)
    by_position = sum(p.kind is not p.KEYWORD_ONLY for p in sig.parameters.values())

    def positional(fn: Callable) -> Callable:
        def run(*args):
            return fn(*args[:by_position], **dict(zip(names[by_position:], args[by_position:])))
        return run

    schema_fn = positional(impl)
    schema_fn.__name__ = impl.__name__
    schema_fn.__signature__ = sig.replace(parameters=[
        p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()
    ])
    tags = (torch.Tag.nondeterministic_seeded,) if seeded else ()
    op = torch.library.custom_op(f"{NAMESPACE}::{name}", schema_fn, mutates_args=tuple(mutates), tags=tags)
    op.register_fake(positional(fake))

    @functools.wraps(impl)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():
            return op(*args, *(kwargs[n] for n in names[len(args):]))
        return impl(*args, **kwargs)

    call.op = op
    return call


def dynamic_size() -> int:
    """In a fake (shape) function: the size of an output whose length depends
    on the data, such as a list of active entries."""
    return torch.library.get_ctx().new_dynamic_size()
