"""Plain CNN baselines: torchvision's ResNet-18 and a narrow, shallow "ResNet-tiny".

Both are randomly initialised (no downloads), end in one linear layer with one logit per AU, and
use the default weighted BCE of :class:`audet.models.AUModel` (AC2D Eq. 14). They serve as
reference points, as the fast model of the engine tests and for calibrating the synthetic
dataset's difficulty.

- ``resnet18``: ``torchvision.models.resnet18(weights=None)`` with its fc replaced (11.2M params).
- ``resnet_tiny``: torchvision's ``BasicBlock`` in 4 stages of ``layers`` blocks with widths
  ``width * (1, 2, 4, 8)`` (default 16 -> 16/32/64/128 channels, one block each, ~0.7M params);
  ``width=4`` is the tests' size (the registry's ``small_config``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.resnet import BasicBlock

from audet.models.base import AUModel, DataInfo, ModelOutput
from audet.models.registry import register_model

__all__ = ["ResNetAU", "TinyResNet", "resnet18", "resnet_tiny"]

#: The smallest sensible configuration of each registered name (used by tests).


class TinyResNet(nn.Module):
    """A ResNet of torchvision ``BasicBlock``s with configurable widths; ``forward`` -> pooled features."""

    def __init__(self, width: int = 16, layers: tuple[int, ...] = (1, 1, 1, 1)):
        super().__init__()
        w = int(width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, cin = [], w
        for i, n in enumerate(layers):
            cout = w * 2**i
            blocks = []
            for j in range(int(n)):
                stride = 2 if (j == 0 and i > 0) else 1
                down = None
                if stride != 1 or cin != cout:
                    down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                blocks.append(BasicBlock(cin, cout, stride=stride, downsample=down))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class ResNetAU(AUModel):
    """A CNN trunk + one linear layer -> per-AU logits. Clips (B, T, 3, H, W) are run frame-wise."""

    #: the classifier's rows are per AU (used when initialising from a checkpoint by AU identity)
    au_state_keys = {"fc.weight": 0, "fc.bias": 0}

    def __init__(self, trunk: nn.Module, features: int, aus: Sequence[int], preprocess=None, dropout: float = 0.0,
                 data: DataInfo | None = None):
        super().__init__(aus, preprocess, data)
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(features, self.num_aus)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features ``(..., F)`` (frames of a clip run one by one)."""
        lead = images.shape[:-3]
        feat = self.trunk(images.reshape(-1, *images.shape[-3:]))
        return feat.reshape(*lead, feat.shape[-1])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))

    def forward(self, images: torch.Tensor) -> ModelOutput:
        feat = self.forward_features(images)
        return ModelOutput(self.forward_head(feat), {"features": feat})


class _TorchvisionTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        net = tv_resnet18(weights=None)
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x):
        return self.net(x)


@register_model(paper="baseline", description="torchvision ResNet-18, random init, linear AU head", small_config={})
def resnet18(aus: Sequence[int], preprocess: dict | None = None, dropout: float = 0.0,
             data: DataInfo | None = None) -> ResNetAU:
    return ResNetAU(_TorchvisionTrunk(), 512, aus, preprocess, dropout, data)


@register_model(
    paper="baseline",
    description="narrow 4-stage ResNet of BasicBlocks (fast; tests and synthetic-data calibration)",
    small_config={"width": 4},
)
def resnet_tiny(
    aus: Sequence[int],
    preprocess: dict | None = None,
    width: int = 16,
    layers: tuple[int, ...] | list[int] = (1, 1, 1, 1),
    dropout: float = 0.0,
    data: DataInfo | None = None,
) -> ResNetAU:
    trunk = TinyResNet(width, tuple(layers))
    return ResNetAU(trunk, trunk.out_features, aus, preprocess, dropout, data)
