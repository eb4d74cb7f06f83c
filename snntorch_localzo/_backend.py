"""Which implementation runs: the PyTorch reference, the native CPU path or
the Triton kernels.

``auto`` (the default) runs the Triton kernels on CUDA tensors when Triton
imports, and the native CPU path (vectorised PyTorch that only touches the
few entries with a non-zero estimate) on CPU tensors. ``reference`` always
runs the reference, the plain PyTorch code every other path is tested
against. ``triton`` also runs the kernels on CPU tensors when Triton's
interpreter is on (``TRITON_INTERPRET=1`` before Triton is imported): that
is how the kernels are tested without a GPU. The environment variable
``SNNTORCH_LOCALZO_BACKEND`` sets the initial mode.

Each operator's autograd module asks :func:`device_path` once and then
applies its own limits (dtypes, sizes, parameters), see ``_ops``.
"""

from __future__ import annotations

import contextlib
import enum
import os
import warnings

import torch

from ._checks import check_choice

__all__ = ["get_backend", "set_backend", "use_backend", "triton_available", "Path", "device_path"]

_MODES = ("auto", "reference", "triton")


class Path(str, enum.Enum):
    """An execution path of the operators."""

    REFERENCE = "reference"
    NATIVE = "native"
    TRITON = "triton"
    #: the estimate's expected value instead of a draw (a step's small calls,
    #: :meth:`Step.is_exact <snntorch_localzo.step.Step.is_exact>`): plain PyTorch
    EXACT = "exact"


def _checked(mode: str) -> str:
    return check_choice("mode", mode, _MODES)


_mode = _checked(os.environ.get("SNNTORCH_LOCALZO_BACKEND", "auto"))
_triton_ok = None


def triton_available() -> bool:
    """True when ``import triton`` works (Linux, with a GPU or the interpreter)."""
    global _triton_ok
    if _triton_ok is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _triton_ok = True
        except Exception:  # ImportError, or a broken install
            _triton_ok = False
    return _triton_ok


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernels_testable() -> bool:
    """Whether the Triton kernels can run here: on a GPU, or on the CPU through
    the interpreter."""
    return triton_available() and (interpreting() or torch.cuda.is_available())


def get_backend() -> str:
    """The current mode: ``auto``, ``reference`` or ``triton``."""
    return _mode


def _announce(mode: str) -> None:
    if mode != "triton":
        return
    if not triton_available():
        raise RuntimeError(
            "set_backend('triton'): Triton does not import here (it is only installed on "
            "Linux); CUDA and CPU tensors run without it"
        )
    if not interpreting():
        warnings.warn(
            "set_backend('triton'): Triton's interpreter is off (set TRITON_INTERPRET=1 before "
            "Triton is imported), so CPU tensors keep the native CPU path; CUDA tensors run "
            "the kernels in every mode but 'reference'",
            stacklevel=3,
        )


def set_backend(mode: str) -> None:
    """Sets the mode for the whole process (see the module docstring)."""
    global _mode
    _announce(_checked(mode))
    _mode = mode


@contextlib.contextmanager
def use_backend(mode: str):
    """Context manager that sets the mode inside a ``with`` block."""
    global _mode
    _announce(_checked(mode))
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def device_path(*tensors: torch.Tensor) -> Path:
    """The path the mode gives to these tensors (all on one device; on
    several, the reference). Every spike call and step asks: no generator."""
    if _mode == "reference":
        return Path.REFERENCE
    kind = tensors[0].device.type
    for t in tensors[1:]:
        if t.device.type != kind:
            return Path.REFERENCE
    if kind == "cuda":
        return Path.TRITON if triton_available() else Path.REFERENCE
    if kind == "cpu":
        return Path.TRITON if _mode == "triton" and triton_available() and interpreting() else Path.NATIVE
    return Path.REFERENCE
