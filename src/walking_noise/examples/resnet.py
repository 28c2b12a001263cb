"""A small residual CNN for 28 x 28 digits, built from torchvision's own ``BasicBlock`` (He et al. 2016).

A 3x3 stem convolution with BatchNorm and ReLU, then one BasicBlock per stage at ``widths`` channels (stride 2 from
the second stage on, with torchvision's 1x1 convolution and BatchNorm on the shortcut), global average pooling and
a linear classifier. Its residual additions (``out += identity`` inside ``BasicBlock.forward``) are not modules: with
``points: operations`` (:mod:`walking_noise.operations`) each is a point, ``layer1.0.add``, between the block's
``bn2`` (and ``downsample``) and its second ReLU, ``relu#2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class SmallResNet(nn.Module):
    """Three stages of one BasicBlock each, at ``widths`` channels, on ``channels``-channel images."""

    def __init__(self, channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths must give the channels of the three stages, got {widths!r}")
        self.conv1 = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(widths[0], widths[0]))
        self.layer2 = nn.Sequential(_downsampling_block(widths[0], widths[1]))
        self.layer3 = nn.Sequential(_downsampling_block(widths[1], widths[2]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _downsampling_block(width: int, out: int) -> BasicBlock:
    """A BasicBlock of stride 2 whose shortcut is torchvision's 1x1 convolution and BatchNorm."""
    shortcut = nn.Sequential(nn.Conv2d(width, out, 1, stride=2, bias=False), nn.BatchNorm2d(out))
    return BasicBlock(width, out, stride=2, downsample=shortcut)


def small_resnet(**kwargs: object) -> SmallResNet:
    """The builder a study names: ``model: walking_noise.examples.resnet:small_resnet`` (any argument of
    :class:`SmallResNet`; the defaults fit MNIST: stages of 16, 32 and 64 channels)."""
    return SmallResNet(**kwargs)  # type: ignore[arg-type]
