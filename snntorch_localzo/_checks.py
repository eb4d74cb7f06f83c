"""Argument checks shared by the modules: clear errors naming the argument."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch


def check_float_tensor(name: str, x) -> torch.Tensor:
    """Raises unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating-point tensor (float64, float32, "
            f"float16 or bfloat16), got {x.dtype}"
        )
    return x


def check_beta(beta) -> None:
    """``beta`` must lie in [0, 1]: snnTorch would clamp it silently in every
    forward pass, hiding a mistake such as a time constant passed as beta."""
    values = torch.as_tensor(beta).detach()
    if values.numel() and (not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise ValueError(
            "`beta` must lie in [0, 1] (the decay per step), got "
            f"{values.tolist() if values.numel() <= 8 else 'values outside it'}; a learnable "
            "beta that leaves [0, 1] during training is clamped, as in snnTorch"
        )


def check_state(name: str, state, input_name: str, x: torch.Tensor, shape) -> Optional[torch.Tensor]:
    """The state a caller passes in, checked against the input: returns it, or
    None where it means "start from zero".

    A state of another shape that holds only zeros (snnTorch's ``init_leaky()``
    placeholders, or zeros shaped like an earlier batch) carries no
    information and means zero, as in snnTorch. A non-zero state must match
    ``shape``, the input's device and dtype: snnTorch would silently restart
    from zero, or compute in a promoted dtype."""
    if not isinstance(state, torch.Tensor):
        return None
    if tuple(state.shape) != tuple(shape):
        if state.numel() <= 1 or not bool(state.detach().any()):
            return None
        raise ValueError(
            f"`{name}` has shape {tuple(state.shape)} but must be {tuple(shape)} to match "
            f"`{input_name}` of shape {tuple(x.shape)} (snnTorch would silently restart "
            "from a zero membrane)"
        )
    if state.device != x.device:
        raise ValueError(
            f"`{name}` is on {state.device} but `{input_name}` is on {x.device}; move "
            "them to the same device"
        )
    if state.dtype != x.dtype:
        if not bool(state.detach().any()):
            return None
        raise TypeError(
            f"`{name}` has dtype {state.dtype} but `{input_name}` is {x.dtype}; pass a state "
            f"of the input's dtype (snnTorch would silently compute in "
            f"{torch.promote_types(state.dtype, x.dtype)})"
        )
    return state


def check_positive(name: str, value) -> float:
    """A finite real number > 0 (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    return v


def check_fraction(name: str, value, *, low_open: bool = True, high_open: bool = True) -> float:
    """A real number in (0, 1) (``low_open=False``: from 0; ``high_open=False``:
    up to 1), not a bool, as a float."""
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number in {interval}, got {type(value).__name__}")
    v = float(value)
    above = 0.0 < v if low_open else 0.0 <= v
    below = v < 1.0 if high_open else v <= 1.0
    if not (above and below):
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}")
    return v


def check_count(name: str, value, *, allow_none: bool = False, minimum: int = 1) -> Optional[int]:
    """An integer >= ``minimum`` (not a bool); None passes when ``allow_none``."""
    if value is None and allow_none:
        return None
    expected = f"an integer >= {minimum}{' or None' if allow_none else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """A bool (not a number that looks like one)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_nonnegative(name: str, value) -> float:
    """A finite real number >= 0 (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return v


def check_choice(name: str, value, choices) -> str:
    """One of ``choices`` (names)."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {tuple(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")
    return value
