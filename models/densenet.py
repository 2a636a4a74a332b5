"""DenseNet-BC (Huang et al., 2016), with torchvision's attribute names so its ImageNet checkpoints load.

A variant is data: growth rate, layers per dense block, stem width. torchvision's optional
memory-efficient mode (gradient checkpointing of the bottlenecks) is left out: it changes
training memory only, not the function or the state dict.

The checkpoints at the cards' weights_url predate torchvision's current names
(`denselayer1.norm.1.weight` for `denselayer1.norm1.weight`); pass them through
`remap_checkpoint` before `load_state_dict`.
"""

import re

import torch
from torch import nn

from models.registry import register_model

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def remap_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the 2017 checkpoints' `norm.1` / `conv.2` keys to `norm1` / `conv2`; other keys pass through."""
    return {_LEGACY_KEY.sub(r"\1\2", key): value for key, value in state_dict.items()}


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to bn_size * k channels, BN-ReLU-3x3 conv to k new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.dropout(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers, each seeing the concatenation of the input and all earlier outputs."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))  # input (B, C_in + i * k, H, W)
        return torch.cat(features, 1)  # (B, C_in + num_layers * k, H, W)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv halving the channels, 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """Stem, dense blocks joined by transitions, final BN-ReLU, global average pool, linear classifier."""

    def __init__(
        self,
        growth_rate: int,
        block_config: tuple[int, ...],
        num_init_features: int,
        *,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
    ):
        super().__init__()
        if not block_config or min(block_config) < 1:
            raise ValueError(f"block_config must be positive layer counts, got {block_config}")
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.features(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (B, C)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# growth rate k, layers per dense block, stem width
CONFIGS: dict[str, tuple[int, tuple[int, int, int, int], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


def _build(variant: str, num_classes: int, in_chans: int, drop_rate: float) -> DenseNet:
    growth_rate, block_config, num_init_features = CONFIGS[variant]
    return DenseNet(
        growth_rate, block_config, num_init_features, drop_rate=drop_rate, num_classes=num_classes, in_chans=in_chans
    )


_CARD = {"family": "densenet", "year": 2016, "paper": "Densely Connected Convolutional Networks", "crop_pct": 224 / 256}
_TV = "https://download.pytorch.org/models/"


@register_model(**_CARD, weights_url=_TV + "densenet121-a639ec97.pth")
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-121 from "Densely Connected Convolutional Networks" (Huang et al., 2016); drop_rate after each layer."""
    return _build("densenet121", num_classes, in_chans, drop_rate)


@register_model(**_CARD, weights_url=_TV + "densenet161-8d451a50.pth")
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-161 (k=48) from "Densely Connected Convolutional Networks" (Huang et al., 2016)."""
    return _build("densenet161", num_classes, in_chans, drop_rate)


@register_model(**_CARD, weights_url=_TV + "densenet169-b2777c0a.pth")
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-169 from "Densely Connected Convolutional Networks" (Huang et al., 2016)."""
    return _build("densenet169", num_classes, in_chans, drop_rate)


@register_model(**_CARD, weights_url=_TV + "densenet201-c1103571.pth")
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-201 from "Densely Connected Convolutional Networks" (Huang et al., 2016)."""
    return _build("densenet201", num_classes, in_chans, drop_rate)
