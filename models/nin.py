"""Network In Network (Lin, Chen & Yan, 2013): the authors' ImageNet model from the Caffe model zoo.

Four "mlpconv" blocks, each a convolution followed by two 1x1 convolutions (the paper's
"cccp" layers), all with ReLU; the last block's final 1x1 convolution makes one map per class,
and global average pooling turns the maps into logits. There is no fully connected layer.
"""

import torch
from torch import nn

from models.registry import register_model

# mlpconv blocks as (widths, kernel, stride, padding): a kxk convolution, then a 1x1 per further width.
# "M" = 3x3/2 max pool rounding up (Caffe's), "D" = dropout. The classifier, a 1x1 convolution to
# num_classes maps (the paper's cccp8), ends the last block.
cfg: list[tuple[tuple[int, ...], int, int, int] | str] = [
    *(((96, 96, 96), 11, 4, 0), "M", ((256, 256, 256), 5, 1, 2), "M", ((384, 384, 384), 3, 1, 1), "M", "D"),
    ((1024, 1024), 3, 1, 1),
]


def mlpconv(in_chans: int, widths: tuple[int, ...], kernel: int, stride: int, padding: int) -> nn.Sequential:
    """A kxk convolution and a 1x1 convolution per further width, each followed by a ReLU."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        conv = nn.Conv2d(in_chans, width, kernel, stride, padding) if i == 0 else nn.Conv2d(in_chans, width, 1)
        layers += [conv, nn.ReLU(inplace=True)]
        in_chans = width
    return nn.Sequential(*layers)


class NIN(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            elif v == "D":
                layers.append(nn.Dropout(dropout))
            else:
                widths, kernel, stride, padding = v
                layers.append(mlpconv(channels, widths, kernel, stride, padding))
                channels = widths[-1]
        self.features = nn.Sequential(*layers)
        self.classifier = mlpconv(channels, (num_classes,), 1, 1, 0)  # one map per class
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # global average pooling: 6x6 at 224x224
        # He init for the convolutions; the class layer, as classifiers usually are (and in the authors' Caffe
        # model), N(0, 0.01), which keeps the first steps of Adam from silencing classes behind the last ReLU.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier[0].weight, 0.0, 0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 1024, 6, 6) at 224x224

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.classifier(x))  # (B, num_classes, 1, 1)
        return torch.flatten(x, 1)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    family="nin",
    year=2013,
    paper="Network In Network",
    interpolation="bilinear",
    crop_pct=224 / 256,
)
def nin(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> NIN:
    """Network In Network (ImageNet model), "Network In Network", 2013."""
    return NIN(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
