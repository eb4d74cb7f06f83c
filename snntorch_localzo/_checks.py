"""Argument checks shared by the modules: clear errors naming the argument."""

from __future__ import annotations

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


def check_state(name: str, state, input_name: str, x: torch.Tensor, shape) -> None:
    """A state the caller passes in must be on the input's device and of
    ``shape``. snnTorch's ``init_leaky()`` placeholders (at most one element)
    are accepted: they mean "start from zero"."""
    if not isinstance(state, torch.Tensor):
        return
    if state.numel() <= 1 and tuple(state.shape) != tuple(shape):
        return  # a placeholder from init_leaky()
    if state.device != x.device:
        raise ValueError(
            f"`{name}` is on {state.device} but `{input_name}` is on {x.device}; move "
            "them to the same device"
        )
    if tuple(state.shape) != tuple(shape):
        raise ValueError(
            f"`{name}` has shape {tuple(state.shape)} but must be {tuple(shape)} to match "
            f"`{input_name}` of shape {tuple(x.shape)} (snnTorch would silently restart "
            "from a zero membrane)"
        )
