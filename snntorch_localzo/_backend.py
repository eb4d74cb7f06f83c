"""Which implementation runs: the PyTorch reference or the Triton kernels.

``auto`` (the default) uses Triton for CUDA tensors when Triton imports, the
reference otherwise. ``reference`` always uses the reference. ``triton`` also
runs the kernels on CPU tensors when Triton's interpreter is on
(``TRITON_INTERPRET=1``); that is how the kernels are tested without a GPU.
The environment variable ``SNNTORCH_LOCALZO_BACKEND`` sets the initial mode.
"""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["get_backend", "set_backend", "use_backend", "triton_available", "use_triton"]

_MODES = ("auto", "reference", "triton")


def _checked(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}")
    return mode


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
        except Exception:  # pragma: no cover - depends on the platform
            _triton_ok = False
    return _triton_ok


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def get_backend() -> str:
    """The current mode: ``auto``, ``reference`` or ``triton``."""
    return _mode


def set_backend(mode: str) -> None:
    """Sets the mode for the whole process (see the module docstring)."""
    global _mode
    _mode = _checked(mode)


@contextlib.contextmanager
def use_backend(mode: str):
    """Context manager that sets the mode inside a ``with`` block."""
    global _mode
    previous, _mode = _mode, _checked(mode)
    try:
        yield
    finally:
        _mode = previous


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the kernels should handle these tensors under the current mode."""
    if _mode == "reference" or not triton_available():
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return _mode == "triton" and interpreting() and all(t.device.type == "cpu" for t in tensors)
