"""Small datasets that ship with packages or are generated, spike-encoded.

Nothing here downloads anything: the default demo uses scikit-learn's
handwritten digits (1797 images of 8x8 pixels, embedded in scikit-learn).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["SpikeDataset", "spiking_digits", "rate_encode", "rate_patterns"]


class SpikeDataset(NamedTuple):
    """Spike trains ``[T, N, features]`` and labels ``[N]`` for train and test."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def rate_encode(
    p: torch.Tensor, num_steps: int, generator: torch.Generator = None
) -> torch.Tensor:
    """Bernoulli rate code: spike with probability ``p`` at each of
    ``num_steps`` steps (snnTorch's ``spikegen.rate`` with a generator)."""
    p = p.clamp(0.0, 1.0)
    return torch.bernoulli(p.unsqueeze(0).expand(num_steps, *p.shape), generator=generator)


def spiking_digits(
    num_steps: int = 25, seed: int = 0, test_size: float = 0.2, device=None
) -> SpikeDataset:
    """scikit-learn's digits, rate-encoded into ``num_steps`` steps.

    The train/test split is fixed (stratified, ``random_state=0``); ``seed``
    only changes the spike trains drawn from the pixel intensities.

    :param num_steps: number of time steps. Defaults to 25
    :param seed: seed of the Bernoulli encoding. Defaults to 0
    :param test_size: fraction held out for testing. Defaults to 0.2
    :param device: where the tensors are put. Defaults to CPU
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the digits demo needs scikit-learn: pip install 'snntorch-localzo[demo]'"
        ) from exc
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=0, stratify=y
    )
    gen = torch.Generator().manual_seed(seed)

    def encode(X):
        return rate_encode(torch.tensor(X, dtype=torch.float32) / 16.0, num_steps, gen)

    return SpikeDataset(
        encode(X_tr).to(device),
        torch.tensor(y_tr).to(device),
        encode(X_te).to(device),
        torch.tensor(y_te).to(device),
    )


def rate_patterns(
    num_classes: int = 20,
    features: int = 700,
    num_steps: int = 100,
    train: int = 2048,
    test: int = 512,
    rate: float = 0.05,
    contrast: float = 0.3,
    seed: int = 0,
    device=None,
) -> SpikeDataset:
    """A generated spike-train classification task shaped like SHD (700
    input channels, 20 classes): each class has a fixed random firing-rate
    profile over the channels (mean ``rate``; ``contrast`` sets how far
    profiles are from uniform), each sample is Bernoulli spike trains drawn
    from its class profile with per-sample jitter of the rates.

    :return: spikes ``[T, N, features]`` (float32, 0/1) and labels ``[N]``
    """
    gen = torch.Generator().manual_seed(seed)
    shape = torch.empty(num_classes, features).exponential_(1.0, generator=gen)
    profile = rate * (1.0 + contrast * (shape - 1.0)).clamp_min(0.0)

    def draw(n):
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        jitter = torch.empty(n, features).uniform_(0.2, 1.8, generator=gen)
        p = (profile[labels] * jitter).clamp(0.0, 1.0)
        return rate_encode(p, num_steps, gen), labels

    x_tr, y_tr = draw(train)
    x_te, y_te = draw(test)
    return SpikeDataset(x_tr.to(device), y_tr.to(device), x_te.to(device), y_te.to(device))
