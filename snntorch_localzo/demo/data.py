"""Small datasets that ship with packages or are generated, spike-encoded.

Nothing here downloads anything: the default demo uses scikit-learn's
handwritten digits (1797 images of 8x8 pixels, embedded in scikit-learn),
and :func:`moving_digit_events` turns them into event-camera recordings in
tonic's N-MNIST format.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .._checks import check_bool, check_choice, check_fraction

__all__ = [
    "SpikeDataset",
    "digits_split",
    "spiking_digits",
    "rate_encode",
    "rate_patterns",
    "moving_digit_events",
    "EVENT_DTYPE",
    "NMNIST_SENSOR_SIZE",
]


def digits_split(test_size: float, purpose: str):
    """scikit-learn's digits (pixels 0..16) with the package's fixed stratified
    split (``random_state=0``): ``X_train, X_test, y_train, y_test``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{purpose} needs scikit-learn: pip install 'snntorch-localzo[demo]'"
        ) from exc
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=test_size, random_state=0, stratify=y)


class SpikeDataset(NamedTuple):
    """Spike trains ``[T, N, features]`` and labels ``[N]`` for train and test,
    and optionally a validation split and the training firing probabilities.

    ``x_train`` holds one draw of the training spikes. When ``train_rates``
    (``[N, features]``, probabilities) is set, :meth:`train_batch` draws fresh
    spikes at every call (snnTorch's convention: ``spikegen.rate`` inside the
    training loop, so every epoch sees new spikes); otherwise it returns the
    fixed ``x_train``. Validation and test spikes are drawn once (evaluation
    is reproducible).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None
    train_rates: Optional[torch.Tensor] = None

    @property
    def num_steps(self) -> int:
        return self.x_train.shape[0]

    def train_batch(self, idx: torch.Tensor, generator: Optional[torch.Generator] = None
                    ) -> torch.Tensor:
        """Training spikes ``[T, len(idx), ...]`` of samples ``idx``: a fresh
        Bernoulli draw from ``train_rates`` (torch's default generator unless
        ``generator`` is given, so ``torch.manual_seed`` makes it reproducible),
        or the fixed ``x_train[:, idx]`` when the dataset has no rates."""
        if self.train_rates is None:
            return self.x_train[:, idx]
        return rate_encode(self.train_rates[idx], self.num_steps, generator)


def rate_encode(
    p: torch.Tensor, num_steps: int, generator: torch.Generator = None
) -> torch.Tensor:
    """Bernoulli rate code: spike with probability ``p`` at each of
    ``num_steps`` steps (snnTorch's ``spikegen.rate`` with a generator)."""
    p = p.clamp(0.0, 1.0)
    return torch.bernoulli(p.unsqueeze(0).expand(num_steps, *p.shape), generator=generator)


def spiking_digits(
    num_steps: int = 25,
    seed: int = 0,
    test_size: float = 0.2,
    device=None,
    *,
    redraw: bool = True,
    val_size: float = 0.0,
) -> SpikeDataset:
    """scikit-learn's digits, rate-encoded into ``num_steps`` steps.

    The train/test split is fixed (stratified, ``random_state=0``). With
    ``val_size > 0`` a stratified validation split (``random_state=0``) is
    carved from the training part, for choosing settings without the test
    split. ``seed`` only changes the spike trains drawn from the pixel
    intensities.

    :param num_steps: number of time steps. Defaults to 25
    :param seed: seed of the Bernoulli encoding of ``x_train``, ``x_val`` and
        ``x_test``. Defaults to 0
    :param test_size: fraction held out for testing. Defaults to 0.2
    :param device: where the tensors are put. Defaults to CPU
    :param redraw: keep the training intensities (``train_rates``) so that
        :meth:`SpikeDataset.train_batch` draws fresh spikes at every
        presentation (snnTorch's convention); False: the spike trains of
        ``x_train`` are drawn once and every epoch sees the same ones (for
        studies that need a fixed encoding). Defaults to True
    :param val_size: fraction of the training part held out for validation,
        in [0, 1). Defaults to 0 (no validation split)
    """
    check_bool("redraw", redraw)
    check_fraction("val_size", val_size, low_open=False)
    X_tr, X_te, y_tr, y_te = digits_split(test_size, "the digits demo")
    X_val = y_val = None
    if val_size > 0:
        from sklearn.model_selection import train_test_split

        X_tr, X_val, y_tr, y_val = train_test_split(
            X_tr, y_tr, test_size=val_size, random_state=0, stratify=y_tr)
    gen = torch.Generator().manual_seed(seed)

    def rates(X):
        return torch.tensor(X, dtype=torch.float32) / 16.0

    def encode(X):
        return None if X is None else rate_encode(rates(X), num_steps, gen).to(device)

    def labels(y):
        return None if y is None else torch.tensor(y).to(device)

    return SpikeDataset(
        encode(X_tr), labels(y_tr), encode(X_te), labels(y_te),
        x_val=encode(X_val), y_val=labels(y_val),
        train_rates=rates(X_tr).to(device) if redraw else None,
    )


def rate_patterns(num_classes: int = 20, features: int = 700, *, num_steps: int = 100,
                  train: int = 2048, test: int = 512, rate: float = 0.05, contrast: float = 0.3,
                  seed: int = 0, device=None) -> SpikeDataset:
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


# --------------------------------------------------------------------------- events
#: Event format of tonic's N-MNIST (``tonic.datasets.NMNIST.dtype``): one
#: record per event, pixel ``x``, ``y``, time ``t`` in microseconds,
#: polarity ``p`` (1 = brighter, 0 = darker).
EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
#: N-MNIST's sensor, as tonic writes it: (width, height, polarities).
NMNIST_SENSOR_SIZE = (34, 34, 2)


def _saccade_offsets(times: np.ndarray, amplitude: float) -> np.ndarray:
    """Sensor motion as in N-MNIST's recordings: three straight saccades of
    equal length along a triangle, back to the start. ``times`` in [0, 1];
    returns ``[len(times), 2]`` offsets (x, y) in pixels."""
    corners = amplitude * np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.0], [0.0, 0.0]])
    leg = np.minimum((times * 3).astype(int), 2)
    frac = (times * 3 - leg)[:, None]
    return corners[leg] * (1 - frac) + corners[leg + 1] * frac


def moving_digit_events(num_samples: int = 1000, *, split: str = "train", seed: int = 0,
                        duration_us: int = 300_000, steps: int = 60,
                        contrast_threshold: float = 0.25, noise_events: int = 50):
    """Event-camera recordings generated from scikit-learn's digits, in the
    format of tonic's N-MNIST: the way N-MNIST was made (a sensor that moves
    in three saccades in front of a still digit) simulated on a 34x34 sensor.

    Each digit (8x8, upscaled to 24x24) is shifted along the saccade path at
    ``steps`` instants; a pixel emits an event each time its log intensity
    has moved by ``contrast_threshold`` since its last event (polarity 1 when
    brighter), at a uniformly drawn time within the step. ``noise_events``
    random events per recording play the part of sensor noise. Nothing is
    downloaded; scikit-learn is needed.

    :param num_samples: recordings to generate (digits are reused, with new
        motion jitter and noise, when more are asked than the split holds)
    :param split: ``"train"`` or ``"test"``: the same fixed stratified split
        of the digits as :func:`spiking_digits`
    :param seed: seed of everything random here
    :param duration_us: length of a recording in microseconds (N-MNIST: about 300 ms)
    :param steps: instants at which the moving image is sampled
    :param contrast_threshold: log-intensity change per event
    :param noise_events: random events added per recording
    :return: ``(events, labels)``: a list of ``num_samples`` structured arrays
        of dtype :data:`EVENT_DTYPE` sorted by ``t``, and an int64 array of labels
    """
    check_choice("split", split, ("train", "test"))
    X_tr, X_te, y_tr, y_te = digits_split(0.2, "the generated events")
    X, y = (X_tr, y_tr) if split == "train" else (X_te, y_te)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(np.resize(np.arange(len(y)), num_samples))
    width, height, _ = NMNIST_SENSOR_SIZE

    # the still scene: the digit, upscaled and centred on the sensor
    digits = torch.tensor(X[pick], dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    digits = torch.nn.functional.interpolate(digits, size=(24, 24), mode="bilinear")
    pad = (width - 24) // 2
    scene = torch.nn.functional.pad(digits, (pad, pad, pad, pad))  # [N, 1, 34, 34]

    # where the sensor looks at each instant: saccades plus a random start offset
    times = np.arange(steps) / (steps - 1)
    start = rng.uniform(-1.5, 1.5, size=(num_samples, 1, 2))
    offsets = torch.tensor(_saccade_offsets(times, 3.0)[None] + start, dtype=torch.float32)

    def view(k):  # log intensity seen by the sensor at instant k, [N, 34, 34]
        theta = torch.zeros(num_samples, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = 2 * offsets[:, k, 0] / width
        theta[:, 1, 2] = 2 * offsets[:, k, 1] / height
        grid = torch.nn.functional.affine_grid(theta, scene.shape, align_corners=False)
        img = torch.nn.functional.grid_sample(scene, grid, align_corners=False)[:, 0]
        return torch.log(img + 0.1)

    reference = view(0)
    chunks = []  # (sample, x, y, t, p) per instant
    step_us = duration_us // steps
    for k in range(1, steps):
        change = view(k) - reference
        count = torch.div(change.abs(), contrast_threshold, rounding_mode="floor")
        reference += torch.sign(change) * count * contrast_threshold
        n, yy, xx = count.nonzero(as_tuple=True)
        reps = count[n, yy, xx].long().numpy()
        n, yy, xx = (np.repeat(a.numpy(), reps) for a in (n, yy, xx))
        p = np.repeat((change[count > 0] > 0).long().numpy(), reps)
        t = (k - 1) * step_us + rng.integers(0, step_us, size=len(n))
        chunks.append((n, xx, yy, t, p))
    noise = num_samples * noise_events
    chunks.append(
        (
            np.repeat(np.arange(num_samples), noise_events),
            rng.integers(0, width, noise),
            rng.integers(0, height, noise),
            rng.integers(0, duration_us, noise),
            rng.integers(0, 2, noise),
        )
    )
    sample, xs, ys, ts, ps = (np.concatenate(parts) for parts in zip(*chunks))
    order = np.lexsort((ts, sample))
    records = np.empty(len(order), dtype=EVENT_DTYPE)
    for name, values in zip("xytp", (xs, ys, ts, ps)):
        records[name] = values[order]
    bounds = np.cumsum(np.bincount(sample, minlength=num_samples))[:-1]
    return np.split(records, bounds), y[pick].astype(np.int64)
