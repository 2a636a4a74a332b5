"""VGG (Simonyan & Zisserman, 2014): stacks of 3x3 convolutions, configurations A, B, D, E of the paper's Table 1.

Module names follow torchvision (`features`, `avgpool`, `classifier`), so its ImageNet
checkpoints load with strict=True.
"""

import torch
from torch import nn

from models.registry import register_model

# Table 1 of the paper, keyed by depth (weight layers): conv widths, "M" = 2x2 max pool.
cfgs: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],  # E
}


def make_layers(cfg: list[int | str], in_chans: int, batch_norm: bool) -> nn.Sequential:
    """The convolutional trunk: 3x3/1 pad-1 convolutions (+ BN) + ReLU, and 2x2/2 max pools."""
    layers: list[nn.Module] = []
    channels = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 512, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512 * 7 * 7)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(depth: int, batch_norm: bool, num_classes: int, in_chans: int, dropout: float) -> VGG:
    return VGG(make_layers(cfgs[depth], in_chans, batch_norm), num_classes=num_classes, dropout=dropout)


_CARD = dict(
    family="vgg",
    year=2014,
    paper="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    interpolation="bilinear",
    crop_pct=224 / 256,
)
_URL = "https://download.pytorch.org/models/"


@register_model(**_CARD, weights_url=_URL + "vgg11-8a719046.pth")
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A), "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(11, False, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg13-19584684.pth")
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B), "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(13, False, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg16-397923af.pth")
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D), "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(16, False, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg19-dcbb9e9d.pth")
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E), "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(19, False, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg11_bn-6002323d.pth")
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 + batch norm, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(11, True, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg13_bn-abd245e5.pth")
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 + batch norm, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(13, True, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg16_bn-6c64b313.pth")
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 + batch norm, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(16, True, num_classes, in_chans, dropout)


@register_model(**_CARD, weights_url=_URL + "vgg19_bn-c79401a0.pth")
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 + batch norm, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014."""
    return _build(19, True, num_classes, in_chans, dropout)
