"""Dense PyTorch reference: ``cur = x @ W.T + b`` for all steps, then the
Leaky reference step by step; autograd does the rest."""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..leaky import reference as leaky_reference


def linear_leaky(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mem: Optional[torch.Tensor],
    beta: torch.Tensor,
    threshold: torch.Tensor,
    graded: torch.Tensor,
    reset_mechanism: int,
    spike_fns: List[Callable[[torch.Tensor], torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    cur = F.linear(x, weight, bias)
    return leaky_reference.leaky_seq(cur, mem, beta, threshold, graded, reset_mechanism, spike_fns)
