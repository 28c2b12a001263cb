"""A small residual CNN for 28x28 digits: the example model of "How sensitive is my trained model?" (README).

Two stages of a 3x3 convolution, BatchNorm and ReLU, each followed by a residual block (two 3x3 convolutions with
BatchNorm, the block's input added back before the last ReLU) and a 2x2 max pool; then global average pooling and
one linear classifier. As in torchvision's ResNets the residual addition is functional code inside ``forward``, so
noise "after the addition" is the point of the ReLU that follows it, and the first ReLU of a block works in place.
With the default widths (8, 16) it has about 7,000 parameters and reaches about 98 % on MNIST after two CPU epochs.

    walking-noise layers --model walking_noise.examples.residual_cnn:residual_cnn --dataset mnist
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``: two 3x3 convolutions that keep the shape, and the skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + x)  # the residual addition


def _stage(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(), ResidualBlock(channels), nn.MaxPool2d(2))


class ResidualCNN(nn.Module):
    """Stage 1 (``in_channels`` -> ``widths[0]``, 28x28 -> 14x14), stage 2 (-> ``widths[1]``, -> 7x7), global average
    pool, linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (8, 16)):
        super().__init__()
        self.stage1 = _stage(in_channels, widths[0])
        self.stage2 = _stage(widths[0], widths[1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stage2(self.stage1(x))), 1))


def residual_cnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (8, 16)) -> ResidualCNN:
    """The example residual CNN (``walking_noise.examples.residual_cnn:residual_cnn``)."""
    return ResidualCNN(num_classes, in_channels, tuple(widths))
