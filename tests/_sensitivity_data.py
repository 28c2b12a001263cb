"""Test sets and models given as ``package.module:callable`` to the sensitivity tests (this folder is on the path)."""

from __future__ import annotations

import torch
from torch import nn

from walking_noise.data import load_dataset

N = 200


def mnist_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The first N test digits of the embedded MNIST subset, as (x, y) tensors."""
    data = load_dataset("mnist_5k", max_test=N)
    return data.test_x, data.test_y


class _Digits(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x, self.y = mnist_tensors()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def mnist_dataset() -> torch.utils.data.Dataset:
    """The same digits as a torch Dataset of (image, label) pairs."""
    return _Digits()


def colour_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of a shape the MNIST models cannot take (3x32x32)."""
    return torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)


class _ScaleByBatch(nn.Module):
    """Scales by the square root of the batch size: a computation that depends on how many samples it sees at once,
    so packing runs in the batch dimension would change what each computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (len(x) ** 0.5 / 8)


def batch_dependent_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), _ScaleByBatch(), nn.ReLU(), nn.Linear(32, 10))
