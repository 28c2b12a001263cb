"""CIFAR-10 from the python-pickle batches (``cifar-10-batches-py``), as torchvision lays them out.

Defaults follow the paper authors' setup: pixels/255, then per-channel normalisation with
mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010); training batches are augmented with a
random 32x32 crop from the image zero-padded by 4 pixels, then a random horizontal flip (p = 0.5).

The augmentation is a batched tensor op driven by a ``torch.Generator``. Torchvision pads *before*
normalising, so its pad value 0 becomes ``-mean/std`` after normalisation; we pad the normalised
tensor with exactly that value so both give the same result.

Note: the batches are Python pickles; only load files you trust.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DatasetSplits, locate_files, standardize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CROP_PADDING = 4  # pixels of padding on each side before the random 32x32 crop

_HOW_TO_GET = (
    "Get the CIFAR-10 python version (cifar-10-python.tar.gz) and extract it into data_dir, e.g. on a machine "
    "with internet run load_dataset('cifar10', data_dir, download=True) or "
    "torchvision.datasets.CIFAR10(root=data_dir, download=True)."
)


def _candidate_dirs(root: Path) -> list[Path]:
    return [root / FOLDER, root]


def _find_folder(root: Path) -> Path | None:
    for folder in _candidate_dirs(root):
        if all((folder / name).is_file() for name in TRAIN_BATCHES + (TEST_BATCH,)):
            return folder
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    data = entry.get(b"data", entry.get("data"))
    labels = entry.get(b"labels", entry.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels', found {sorted(entry)!r}")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: expected data of shape (N, 3072) and N labels, got data {data.shape} and labels {labels.shape}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def crop_flip(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int, fill: torch.Tensor
) -> torch.Tensor:
    """Pad each image of x (B, C, H, W) by ``padding`` px with per-channel ``fill`` (C,), cut the HxW
    window whose corner in the padded image is (``top[b]``, ``left[b]``), then mirror it left-right
    where ``flip[b]`` is True. Pure function of its arguments (the random draw happens in the caller).
    """
    b, c, h, w = x.shape
    padded = fill.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1).expand(b, c, h + 2 * padding, w + 2 * padding)
    padded = padded.clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    rows = top.to(x.device).view(b, 1) + torch.arange(h, device=x.device).view(1, h)  # (B, H)
    cols = left.to(x.device).view(b, 1) + torch.arange(w, device=x.device).view(1, w)  # (B, W)
    cols = torch.where(flip.to(x.device).view(b, 1), cols.flip(1), cols)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


class RandomCropFlip:
    """Batched ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` on (possibly normalised) tensors.

    Draw order per call (documented so results are reproducible): ``top = randint(0, 2p+1, (B,))``,
    ``left = randint(0, 2p+1, (B,))``, ``flip = rand(B) < 0.5``, all from the given generator on the
    generator's device. ``fill`` is the per-channel value of a black pixel in the tensor's units.
    """

    def __init__(self, padding: int, fill: tuple[float, ...]) -> None:
        self.padding = padding
        self.fill = torch.tensor(fill, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        dev = generator.device
        n = 2 * self.padding + 1
        top = torch.randint(0, n, (b,), generator=generator, device=dev)
        left = torch.randint(0, n, (b,), generator=generator, device=dev)
        flip = torch.rand(b, generator=generator, device=dev) < 0.5
        return crop_flip(x, top, left, flip, self.padding, self.fill)

    def describe(self) -> dict:
        return {
            "random_crop": {"size": 32, "padding": self.padding, "fill": [float(v) for v in self.fill]},
            "random_horizontal_flip": {"p": 0.5},
        }


def _searched(root: Path) -> list[Path]:
    return [d / name for d in _candidate_dirs(root) for name in TRAIN_BATCHES + (TEST_BATCH,)]


def _fetch(root: Path) -> None:
    import torchvision  # lazy: only needed for fetching

    torchvision.datasets.CIFAR10(root=str(root), download=True)


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Load CIFAR-10 as float32 (N, 3, 32, 32); defaults: normalize=True, augment=True."""
    normalize = True if normalize is None else bool(normalize)
    augment = True if augment is None else bool(augment)
    folder = locate_files("cifar10", data_dir, _find_folder, _searched, _HOW_TO_GET, download, _fetch)

    parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    train_u8 = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_u8, test_y = read_batch(folder / TEST_BATCH)

    train_x = torch.from_numpy(train_u8.astype(np.float32) / 255.0)
    test_x = torch.from_numpy(test_u8.astype(np.float32) / 255.0)
    if normalize:
        train_x, test_x = standardize(train_x, CIFAR10_MEAN, CIFAR10_STD), standardize(test_x, CIFAR10_MEAN, CIFAR10_STD)
        # value of a black pixel after normalisation, computed the same float32 way as the data itself
        fill = tuple(standardize(torch.zeros(1, 3, 1, 1), CIFAR10_MEAN, CIFAR10_STD).flatten().tolist())
    else:
        fill = (0.0, 0.0, 0.0)
    aug = RandomCropFlip(CROP_PADDING, fill) if augment else None
    preprocessing = {
        "source": f"CIFAR-10 python batches in {folder}",
        "scale": "pixel/255 -> [0,1]",
        "normalize": normalize,
        "mean": list(CIFAR10_MEAN) if normalize else None,
        "std": list(CIFAR10_STD) if normalize else None,
        "augment": aug.describe() if aug is not None else None,
        "split": "official data_batch_1..5 (50000) / official test_batch (10000)",
        "classes": list(CIFAR10_CLASSES),
    }
    return DatasetSplits(
        name="cifar10",
        train_x=train_x,
        train_y=torch.from_numpy(train_y),
        test_x=test_x,
        test_y=torch.from_numpy(test_y),
        num_classes=10,
        input_shape=(3, 32, 32),
        class_weights=None,
        preprocessing=preprocessing,
        augment=aug,
    )
