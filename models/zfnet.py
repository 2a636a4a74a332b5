"""ZFNet (Zeiler & Fergus, 2013): AlexNet with a 7x7/2 first layer and a 5x5/2 second, as in the paper's Figure 3.

224x224 input; the feature-map sizes of Figure 3 (110, 55, 26, 13, 13, 13, 6) come out with
padding 1 on layer 1 and max pools that round up, as Caffe's do. Layers 1 and 2 are followed by
ReLU, 3x3/2 max pooling and contrast normalization across feature maps; the paper gives no
constants for the normalization, so AlexNet's are used.
"""

import torch
from torch import nn

from models.registry import register_model

# Conv layers as (out_channels, kernel, stride, padding); "M" = 3x3/2 max pool, "N" = local response norm.
cfg: list[tuple[int, int, int, int] | str] = [
    *((96, 7, 2, 1), "M", "N", (256, 5, 2, 0), "M", "N"),
    *((384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"),
]


def make_layers(cfg: list[tuple[int, int, int, int] | str], in_chans: int) -> nn.Sequential:
    """The convolutional trunk: every convolution followed by a ReLU, then pools and norms where the cfg says."""
    layers: list[nn.Module] = []
    channels = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        elif v == "N":  # AlexNet's constants; PyTorch divides alpha by size, so 5 * 1e-4 is the paper's 1e-4
            layers.append(nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0))
        else:
            out, kernel, stride, padding = v
            layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(*layers)


class ZFNet(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # the identity at 224x224
        self.classifier = nn.Sequential(  # dropout on the outputs of layers 6 and 7, as the paper says
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        # torchvision's VGG init. The paper's (weights N(0, 0.01), zero biases) shrinks the signal at every
        # layer, to logits of order 1e-3 for unit-variance input, and the first Adam steps hardly move the loss.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256, 6, 6) at 224x224

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 256 * 6 * 6)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(num_classes: int, in_chans: int, dropout: float) -> ZFNet:
    return ZFNet(make_layers(cfg, in_chans), num_classes=num_classes, dropout=dropout)


@register_model(
    family="zfnet",
    year=2013,
    paper="Visualizing and Understanding Convolutional Networks",
    interpolation="bilinear",
    crop_pct=224 / 256,
)
def zfnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> ZFNet:
    """ZFNet, "Visualizing and Understanding Convolutional Networks", 2013."""
    return _build(num_classes, in_chans, dropout)
