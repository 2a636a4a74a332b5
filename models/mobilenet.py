"""MobileNet v1 (Howard et al., 2017) and v2 (Sandler et al., 2018), width multiplier 1.0.

Both are a `features` stack of conv-BN-activation units and blocks, then global average
pooling and a `classifier` (dropout, linear). v2 has torchvision's names, so its ImageNet
checkpoint loads with strict=True; v1, which torchvision lacks, is named the same way:
`features.0` is the stem, `features.N.0` / `features.N.1` the depthwise / pointwise units.
"""

from collections.abc import Callable

import torch
from torch import nn

from models.registry import register_model

# v1, the paper's Table 1 after the stem: (output channels, depthwise stride) per separable block.
# The table's second-to-last "Conv dw / s2" is a typo for s1: the input is already 7x7.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
# v2, the paper's Table 2: expansion t, output channels c, repeats n, first stride s.
V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: Callable[..., nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Conv (same padding, no bias), BN, activation: keys `.0` and `.1`, as torchvision's Conv2dNormActivation."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), act(inplace=True))


def depthwise_separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """The v1 block: 3x3 depthwise conv-BN-ReLU (carrying the stride), 1x1 pointwise conv-BN-ReLU."""
    return nn.Sequential(conv_bn_act(in_ch, in_ch, 3, stride, groups=in_ch), conv_bn_act(in_ch, out_ch, 1))


class InvertedResidual(nn.Module):
    """The v2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 project; identity skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_ch * expand_ratio
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers = [conv_bn_act(in_ch, hidden, 1, act=nn.ReLU6)] if expand_ratio != 1 else []
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNet(nn.Module):
    """A `features` stack ending in `num_features` channels, global average pool, dropout, linear."""

    def __init__(self, features: list[nn.Module], num_features: int, *, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.num_features = num_features
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(num_features, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (B, C)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _v1_features(in_chans: int) -> tuple[list[nn.Module], int]:
    layers, channels = [conv_bn_act(in_chans, 32, 3, 2)], 32
    for out_ch, stride in V1_BLOCKS:
        layers.append(depthwise_separable(channels, out_ch, stride))
        channels = out_ch
    return layers, channels


def _v2_features(in_chans: int) -> tuple[list[nn.Module], int]:
    layers, channels = [conv_bn_act(in_chans, 32, 3, 2, act=nn.ReLU6)], 32
    for t, out_ch, n, s in V2_SETTINGS:
        for i in range(n):
            layers.append(InvertedResidual(channels, out_ch, s if i == 0 else 1, t))
            channels = out_ch
    layers.append(conv_bn_act(channels, 1280, 1, act=nn.ReLU6))
    return layers, 1280


def _build(version: str, num_classes: int, in_chans: int, dropout: float) -> MobileNet:
    features, num_features = {"v1": _v1_features, "v2": _v2_features}[version](in_chans)
    return MobileNet(features, num_features, num_classes=num_classes, dropout=dropout)


# dropout 0.001 is the reference (TF-slim) implementation's keep_prob 0.999; the paper gives none.
@register_model(
    family="mobilenet",
    year=2017,
    paper="MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    weights_url=None,
)
def mobilenet_v1(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.001) -> MobileNet:
    """MobileNet v1 from "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications" (2017)."""
    return _build("v1", num_classes, in_chans, dropout)


@register_model(
    family="mobilenet",
    year=2018,
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    crop_pct=224 / 232,
    weights_url="https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth",
)
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> MobileNet:
    """MobileNet v2 from "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., 2018)."""
    return _build("v2", num_classes, in_chans, dropout)
