"""ResNet (He et al., 2015), with torchvision's attribute names so its ImageNet checkpoints load.

A variant is data: a block type and four stage depths. `block_attn` builds an optional
channel-attention module inserted in every block after its last norm, before the
residual add; SE-ResNet (models/senet.py) is this ResNet with a squeeze-excitation block.
"""

from collections.abc import Callable

import torch
from torch import nn

from models.registry import register_model

AttnBuilder = Callable[[int], nn.Module]  # channels -> module keeping the shape


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        block_attn: AttnBuilder | None = None,
    ):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = block_attn(planes) if block_attn else nn.Identity()
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        block_attn: AttnBuilder | None = None,
    ):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.se = block_attn(out_planes) if block_attn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool), four stages of blocks, global average pool, fc."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        block_attn: AttnBuilder | None = None,
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive stage depths, got {layers}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, block_attn)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, block_attn)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, block_attn)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, block_attn)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        block_attn: AttnBuilder | None,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        layers = [block(self.inplanes, planes, stride, downsample, block_attn)]
        self.inplanes = out_planes
        layers += [block(out_planes, planes, block_attn=block_attn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, C)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


CONFIGS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def _build(variant: str, num_classes: int, in_chans: int) -> ResNet:
    block, layers = CONFIGS[variant]
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans)


_CARD = {"family": "resnet", "year": 2015, "paper": "Deep Residual Learning for Image Recognition"}
_TV = "https://download.pytorch.org/models/"


@register_model(**_CARD, crop_pct=224 / 256, weights_url=_TV + "resnet18-f37072fd.pth")
def resnet18(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-18 from "Deep Residual Learning for Image Recognition" (He et al., 2015)."""
    return _build("resnet18", num_classes, in_chans)


@register_model(**_CARD, crop_pct=224 / 256, weights_url=_TV + "resnet34-b627a593.pth")
def resnet34(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-34 from "Deep Residual Learning for Image Recognition" (He et al., 2015)."""
    return _build("resnet34", num_classes, in_chans)


@register_model(**_CARD, crop_pct=224 / 232, weights_url=_TV + "resnet50-11ad3fa6.pth")
def resnet50(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-50 from "Deep Residual Learning for Image Recognition" (He et al., 2015)."""
    return _build("resnet50", num_classes, in_chans)


@register_model(**_CARD, crop_pct=224 / 232, weights_url=_TV + "resnet101-cd907fc2.pth")
def resnet101(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-101 from "Deep Residual Learning for Image Recognition" (He et al., 2015)."""
    return _build("resnet101", num_classes, in_chans)


@register_model(**_CARD, crop_pct=224 / 232, weights_url=_TV + "resnet152-f82ba261.pth")
def resnet152(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-152 from "Deep Residual Learning for Image Recognition" (He et al., 2015)."""
    return _build("resnet152", num_classes, in_chans)
