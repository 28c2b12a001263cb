"""Full MNIST (60000 train / 10000 test) read straight from the original IDX files.

Layout as torchvision keeps it: ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(optionally ``.gz``). ``data_dir`` may also point at the ``MNIST`` folder or at the ``raw`` folder.
Pixels are scaled to [0, 1] (pixel/255, as torchvision's ``ToTensor``); mean/std normalisation is off
by default, matching the paper's setup.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .base import DatasetSplits, locate_files, reject_augment, standardize

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_HOW_TO_GET = (
    "Get the four original MNIST IDX files (optionally .gz), e.g. on a machine with internet run "
    "load_dataset('mnist', data_dir, download=True) or torchvision.datasets.MNIST(root=data_dir, download=True); "
    "they land in <data_dir>/MNIST/raw/."
)


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) as a uint8 array shaped by its big-endian header.

    Header: 4-byte magic (two zero bytes, dtype code 0x08 = ubyte, number of dims), then one
    big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(
            f"{path}: IDX magic number is {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}); the file is corrupt or mislabelled."
        )
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    n_values = int(np.prod(dims))
    if len(raw) - header_end != n_values:
        raise ValueError(
            f"{path}: header announces shape {dims} ({n_values} bytes of data) but the file holds "
            f"{len(raw) - header_end}; the file is truncated or corrupt - download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(dims)


def candidate_raw_dirs(root: Path) -> list[Path]:
    """Folders that may hold the IDX files: ``root/MNIST/raw``, ``root/raw``, ``root`` itself."""
    return [root / "MNIST" / "raw", root / "raw", root]


def find_mnist_files(root: Path) -> dict[str, Path] | None:
    """Return the four IDX paths from the first candidate folder that has all of them, else None."""
    for folder in candidate_raw_dirs(root):
        found: dict[str, Path] = {}
        for key, name in _FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FILES):
            return found
    return None


def searched_paths(root: Path) -> list[Path]:
    """Every file path the loader tries, for error messages."""
    return [folder / f"{name}{ext}" for folder in candidate_raw_dirs(root) for name in _FILES.values() for ext in ("", ".gz")]


def _fetch(root: Path) -> None:
    import torchvision  # lazy: only needed for fetching

    torchvision.datasets.MNIST(root=str(root), download=True)


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Load full MNIST as float32 (N, 1, 28, 28) in [0, 1] (or standardised if ``normalize=True``)."""
    reject_augment("mnist", augment)
    normalize = bool(normalize) if normalize is not None else False
    files = locate_files("mnist", data_dir, find_mnist_files, searched_paths, _HOW_TO_GET, download, _fetch)

    def images(key: str) -> torch.Tensor:
        arr = read_idx(files[key], IDX_IMAGES_MAGIC)
        if arr.ndim != 3:
            raise ValueError(f"{files[key]}: expected 3-d image array, got shape {arr.shape}")
        return torch.from_numpy(arr.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        arr = read_idx(files[key], IDX_LABELS_MAGIC)
        if arr.ndim != 1:
            raise ValueError(f"{files[key]}: expected 1-d label array, got shape {arr.shape}")
        return torch.from_numpy(arr.astype(np.int64))

    train_x, test_x = images("train_images"), images("test_images")
    if normalize:
        train_x, test_x = standardize(train_x, MNIST_MEAN, MNIST_STD), standardize(test_x, MNIST_MEAN, MNIST_STD)
    preprocessing = {
        "source": "MNIST original IDX files",
        "files": {k: str(v) for k, v in files.items()},
        "scale": "pixel/255 -> [0,1]",
        "normalize": normalize,
        "mean": list(MNIST_MEAN) if normalize else None,
        "std": list(MNIST_STD) if normalize else None,
        "augment": None,
        "split": "official train (60000) / official t10k test (10000)",
    }
    return DatasetSplits(
        name="mnist",
        train_x=train_x,
        train_y=labels("train_labels"),
        test_x=test_x,
        test_y=labels("test_labels"),
        num_classes=10,
        input_shape=(1, 28, 28),
        class_weights=None,
        preprocessing=preprocessing,
        augment=None,
    )
