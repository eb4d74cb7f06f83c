"""Image data on disk, as PyTorch datasets, without torchvision.

* :class:`ImageFolder`: torchvision's layout, one folder per class
  (``root/<class>/<image>``), as ImageNet's ``train`` / ``val`` folders are
  usually arranged; images are read with Pillow (imported when needed).
* :func:`load_arrays`: a ``.npz`` file holding ``x`` (images or feature
  vectors) and ``y`` (integer labels).
* :func:`load_cifar`: CIFAR-10 / CIFAR-100 in their "python version"
  (``cifar-10-batches-py``, ``cifar-100-python``), as distributed by their
  authors.

Images come out as float tensors ``[channels, height, width]`` in [0, 1]
(``uint8`` pixels divided by 255), labels as int64. Nothing is downloaded.

Example::

    from torch.utils.data import DataLoader
    from snntorch_localzo.conversion.data import ImageFolder, load_cifar

    train = load_cifar("~/data/cifar-10-batches-py", train=True)
    val = ImageFolder("~/data/imagenet/val", size=224)
    for x, y in DataLoader(val, batch_size=64):
        ...
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .._checks import check_count

__all__ = ["ImageFolder", "load_arrays", "load_cifar", "images_to_tensor"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def images_to_tensor(x: np.ndarray, channels_last: Optional[bool] = None) -> torch.Tensor:
    """An array of images as float ``[N, C, H, W]`` in [0, 1]: ``uint8``
    pixels are divided by 255; ``[N, H, W, C]`` (channels last) is moved to
    channels first; ``[N, H, W]`` gets one channel. Other arrays (such as
    feature vectors ``[N, F]``) are returned as float tensors of the same
    shape.

    :param x: the array
    :type x: numpy.ndarray
    :param channels_last: whether a 4-d array is ``[N, H, W, C]``; None
        guesses: channels last when the last dimension is 1, 3 or 4 and
        smaller than dimension 1 (``[N, 32, 32, 3]``), else channels first
        (``[N, 3, 32, 32]``). Defaults to None
    :type channels_last: bool, optional
    """
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.array(x, copy=True)).float() / scale
    if t.dim() == 4:
        if channels_last is None:
            channels_last = t.shape[-1] in (1, 3, 4) and t.shape[-1] < t.shape[1]
        if channels_last:
            t = t.permute(0, 3, 1, 2).contiguous()
    elif t.dim() == 3:
        t = t.unsqueeze(1)
    return t


def _labels(y, name: str, n: int) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name}: labels must be {n} integers (one per sample), got an array of shape "
            f"{y.shape} and dtype {y.dtype}"
        )
    return torch.from_numpy(y.astype(np.int64))


def load_arrays(path, channels_last: Optional[bool] = None) -> TensorDataset:
    """A ``.npz`` file with arrays ``x`` and ``y`` as a dataset of
    ``(x[i], y[i])``; images are converted by :func:`images_to_tensor`.

    :param path: the ``.npz`` file
    :type path: str or os.PathLike
    :param channels_last: layout of 4-d images, see :func:`images_to_tensor`.
        Defaults to None (guessed)
    :type channels_last: bool, optional
    :return: the samples and labels
    :rtype: torch.utils.data.TensorDataset
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no file {path}")
    with np.load(path, allow_pickle=False) as arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            raise ValueError(f"{path} must hold arrays 'x' and 'y', it holds {arrays.files}")
        x = images_to_tensor(arrays["x"], channels_last)
        y = _labels(arrays["y"], str(path), len(x))
    return TensorDataset(x, y)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def load_cifar(root, train: bool = True) -> TensorDataset:
    """CIFAR-10 or CIFAR-100 from the authors' python version: ``root`` is
    the extracted folder (``cifar-10-batches-py`` with ``data_batch_1..5``
    and ``test_batch``, or ``cifar-100-python`` with ``train`` and ``test``,
    fine labels) or the folder that contains it. The files are pickles:
    load only copies you trust.

    :param root: where the files are
    :type root: str or os.PathLike
    :param train: the training set (True) or the test set. Defaults to True
    :type train: bool, optional
    :return: images ``[N, 3, 32, 32]`` in [0, 1] and labels
    :rtype: torch.utils.data.TensorDataset
    """
    root = Path(root).expanduser()
    for candidate in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (candidate / "test_batch").is_file():
            names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
            label_key, folder = b"labels", candidate
            break
        if (candidate / "test").is_file() and (candidate / "train").is_file():
            names = ["train"] if train else ["test"]
            label_key, folder = b"fine_labels", candidate
            break
    else:
        raise FileNotFoundError(
            f"`root`: no CIFAR python files in {root} (expected cifar-10-batches-py with "
            "data_batch_1..5 and test_batch, or cifar-100-python with train and test)"
        )
    xs, ys = [], []
    for name in names:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"`root`: {folder / name} is missing")
        batch = _unpickle(folder / name)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
    return TensorDataset(x, _labels(np.concatenate(ys), str(folder), len(x)))


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "ImageFolder reads images with Pillow: pip install pillow (it comes with "
            "'snntorch-localzo[plots]')"
        ) from exc
    return Image


class ImageFolder(Dataset):
    """
    Images in one folder per class (torchvision's ``ImageFolder`` layout):
    ``root/<class name>/<file>``; classes are the sorted folder names, label
    ``i`` for the ``i``-th. Files are read when indexed, with Pillow, as RGB
    (or grayscale with ``grayscale=True``), resized to ``size x size`` when
    ``size`` is given.

    Example::

        from snntorch_localzo.conversion.data import ImageFolder

        train = ImageFolder("~/data/imagenet/train", size=64)
        x, y = train[0]        # x: [3, 64, 64] in [0, 1]; y: int
        print(train.classes[y])

    :param root: the folder holding one subfolder per class
    :type root: str or os.PathLike
    :param size: side of the square the images are resized to; None keeps
        their size (then they must all have the same size to be batched).
        Defaults to None
    :type size: int, optional
    :param grayscale: one channel instead of three. Defaults to False
    :type grayscale: bool, optional
    """

    def __init__(self, root, size: Optional[int] = None, grayscale: bool = False):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"`root`: no folder {self.root}")
        self.size = check_count("size", size, allow_none=True)
        self.grayscale = grayscale
        self.classes: List[str] = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.samples: List[Tuple[Path, int]] = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"`root`: no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under "
                f"{self.root}"
            )
        _pillow()  # fail now, not at the first batch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = _pillow().open(os.fspath(path))
        image = image.convert("L" if self.grayscale else "RGB")
        if self.size is not None:
            image = image.resize((self.size, self.size))
        pixels = np.array(image)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(pixels)).float() / 255.0, label
