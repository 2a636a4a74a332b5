"""SE-ResNet (Hu et al., 2017): models.resnet's ResNet with a squeeze-excitation block in every bottleneck.

Names follow timm's `seresnet50` (`layerX.Y.se.fc1` / `se.fc2`, 1x1 convolutions with bias,
after bn3 and before the residual add), so its ImageNet checkpoints load with strict=True.
timm hosts those weights on the Hugging Face Hub (`timm/seresnet50.ra2_in1k`), not at a plain
URL, so the card has no weights_url; its preprocessing is that checkpoint's: 224 px, crop 0.875,
bicubic.
"""

import torch
from torch import nn

from models.registry import register_model
from models.resnet import Bottleneck, ResNet


class SEModule(nn.Module):
    """Squeeze (global average pool), excite (1x1 reduce, ReLU, 1x1 expand, sigmoid), rescale channels."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if channels < reduction:
            raise ValueError(f"SE needs at least reduction={reduction} channels, got {channels}")
        rd_channels = channels // reduction
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.relu(self.fc1(s))))


def _build(layers: tuple[int, int, int, int], num_classes: int, in_chans: int) -> ResNet:
    return ResNet(Bottleneck, layers, num_classes=num_classes, in_chans=in_chans, block_attn=SEModule)


@register_model(
    family="senet",
    year=2017,
    paper="Squeeze-and-Excitation Networks",
    interpolation="bicubic",
    crop_pct=0.875,
    weights_url=None,
)
def se_resnet50(*, num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """SE-ResNet-50 from "Squeeze-and-Excitation Networks" (Hu et al., 2017)."""
    return _build((3, 4, 6, 3), num_classes, in_chans)
