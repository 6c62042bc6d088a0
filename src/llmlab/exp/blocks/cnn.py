"""A small image CNN whose pooling is a switch: none, max, average, or global.

    from llmlab.exp.blocks.cnn import SmallCNN
    net = SmallCNN(num_classes=4, pooling="max")    # "none" | "max" | "avg" | "global_avg" | "global_max"
    logits = net(images)                            # images [B, 1, H, W]

Two 3×3 convolution blocks, then a linear classifier:
  none        conv → conv → flatten → linear     (every pixel position has its own classifier weight)
  max / avg   conv → 2×2 pool → conv → 2×2 pool → flatten → linear
  global_*    conv → conv → pool over the whole map → linear (position is discarded entirely)
Convolutions are translation-*equivariant* (shift the input, the feature map shifts); pooling is
what turns that into (partial) *invariance*. `llmlab exp run pooling-invariance` measures it.
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("none", "max", "avg", "global_avg", "global_max")


class SmallCNN(nn.Module):
    def __init__(
        self, num_classes: int, image_size: int = 16, channels: int = 16, pooling: str = "max"
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        local = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2)}.get(pooling)
        self.pool1, self.pool2 = (local, local) if local else (nn.Identity(), nn.Identity())
        side = image_size // 4 if local else image_size
        features = channels if pooling.startswith("global") else channels * side * side
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(images)))
        x = self.pool2(torch.relu(self.conv2(x)))
        if self.pooling == "global_avg":
            x = x.mean(dim=(2, 3))
        elif self.pooling == "global_max":
            x = x.amax(dim=(2, 3))
        return self.classifier(x.flatten(1))
