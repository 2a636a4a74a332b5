"""BN-Inception (Ioffe & Szegedy, 2015), the network of the paper's Figure 5.

GoogLeNet with batch norm after every convolution, each 5x5 replaced by two stacked 3x3s
("double 3x3"), average pooling in most modules, and stride-2 "pass through" modules
(3c, 4e) in place of the max pools between stages. As the paper prescribes for batch
normalized networks, there is no dropout; convolutions carry no bias (BN's shift takes
its place). The 3x3/2 max pools are padded like the 3x3/2 convolutions beside them, so
both give ceil(H / 2) at any input size (Caffe's ceil-mode pools, at even sizes).
"""

import torch
from torch import nn

from models.googlenet import BasicConv2d
from models.registry import register_model

# Figure 5, one row per module: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj).
# Rows with no 1x1 branch and no projection are the stride-2 modules, whose pooled input passes through.
STAGES: dict[str, tuple[int, int, int, int, int, str, int]] = {
    "inception3a": (64, 64, 64, 64, 96, "avg", 32),
    "inception3b": (64, 64, 96, 64, 96, "avg", 64),
    "inception3c": (0, 128, 160, 64, 96, "max", 0),
    "inception4a": (224, 64, 96, 96, 128, "avg", 128),
    "inception4b": (192, 96, 128, 96, 128, "avg", 128),
    "inception4c": (160, 128, 160, 128, 160, "avg", 128),
    "inception4d": (96, 128, 192, 160, 192, "avg", 128),
    "inception4e": (0, 128, 192, 192, 256, "max", 0),
    "inception5a": (352, 192, 320, 160, 224, "avg", 128),
    "inception5b": (352, 192, 320, 192, 224, "max", 128),
}


class InceptionBN(nn.Module):
    """1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | 3x3 pool (-> 1x1 proj), concatenated along channels."""

    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, dbl_red: int, dbl: int, pool: str, proj: int
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        stride = 1 if proj else 2  # no projection: a "pass through" module, which halves the grid
        self.out_channels = ch1x1 + ch3x3 + dbl + (proj or in_channels)
        self.branch1x1 = BasicConv2d(in_channels, ch1x1, kernel_size=1) if ch1x1 else None
        self.branch3x3_1 = BasicConv2d(in_channels, ch3x3red, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(ch3x3red, ch3x3, kernel_size=3, stride=stride, padding=1)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, dbl_red, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(dbl_red, dbl, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(dbl, dbl, kernel_size=3, stride=stride, padding=1)
        pool_cls = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        self.pool = pool_cls(kernel_size=3, stride=stride, padding=1)
        self.branch_pool = BasicConv2d(in_channels, proj, kernel_size=1) if proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs.append(self.branch3x3_2(self.branch3x3_1(x)))
        outs.append(self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))))
        pooled = self.pool(x)
        outs.append(pooled if self.branch_pool is None else self.branch_pool(pooled))
        return torch.cat(outs, 1)


class BNInception(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 192
        for name, row in STAGES.items():
            block = InceptionBN(channels, *row)
            self.add_module(name, block)
            channels = block.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4)
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8)
        for name in STAGES:
            x = getattr(self, name)(x)
        return x  # (B, 1024, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 1024)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(**kwargs) -> BNInception:
    return BNInception(**kwargs)


@register_model(
    family="inception",
    year=2015,
    paper="Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    interpolation="bilinear",
    crop_pct=0.875,
)
def inception_bn(*, num_classes: int = 1000, in_chans: int = 3) -> BNInception:
    """BN-Inception (Figure 5), 2015.

    Paper: "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift".
    """
    return _build(num_classes=num_classes, in_chans=in_chans)
