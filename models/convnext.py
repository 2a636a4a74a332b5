"""ConvNeXt (Liu et al., 2022): a ResNet modernised step by step towards a Swin-like design.

Names follow torchvision's `ConvNeXt`, so its ImageNet checkpoints load with strict=True.
"""

import torch
from torch import nn
from torch.nn import functional as F

from models.registry import register_model

PAPER = "A ConvNet for the 2020s"

# name -> (blocks per stage, channels per stage, torchvision's stochastic depth rate for training)
VARIANTS = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.5),
}


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch of whole samples with probability p (identity in eval)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *(1,) * (x.dim() - 1)).bernoulli_(1.0 - p)  # (B, 1, 1, 1)
    return x * keep / (1.0 - p)


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class CNBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm, 4x inverted-bottleneck MLP, layer scale, residual."""

    def __init__(self, dim: int, drop_prob: float, layer_scale: float = 1e-6):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            Permute(0, 2, 3, 1),  # (B, C, H, W) -> (B, H, W, C), so the norm and MLP act on channels
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute(0, 3, 1, 2),  # (B, H, W, C) -> (B, C, H, W)
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_path(self.layer_scale * self.block(x), self.drop_prob, self.training)


class ConvNeXt(nn.Module):
    def __init__(
        self,
        depths: tuple[int, ...],
        dims: tuple[int, ...],
        num_classes: int = 1000,
        in_chans: int = 3,
        stochastic_depth_prob: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= stochastic_depth_prob < 1.0:
            raise ValueError(f"stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob}")
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        layers: list[nn.Module] = [stem]
        total, block_id = sum(depths), 0
        for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            # the drop rate grows linearly with depth, from 0 at the first block to the full rate at the last
            rates = [stochastic_depth_prob * (block_id + j) / (total - 1) for j in range(depth)]
            layers.append(nn.Sequential(*(CNBlock(dim, rate) for rate in rates)))
            block_id += depth
            if i + 1 < len(dims):  # downsampling between stages
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], num_classes)
        )

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(x))  # (B, C, 1, 1) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(name: str, stochastic_depth_prob: float | None, **kwargs) -> ConvNeXt:
    depths, dims, default_rate = VARIANTS[name]
    rate = default_rate if stochastic_depth_prob is None else stochastic_depth_prob
    return ConvNeXt(depths, dims, stochastic_depth_prob=rate, **kwargs)


@register_model(
    family="convnext",
    year=2022,
    paper=PAPER,
    crop_pct=224 / 236,
    weights_url="https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
)
def convnext_tiny(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> ConvNeXt:
    """ConvNeXt-T from "A ConvNet for the 2020s" (Liu et al., 2022); stochastic depth 0.1 by default."""
    return _build("convnext_tiny", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)


@register_model(
    family="convnext",
    year=2022,
    paper=PAPER,
    crop_pct=224 / 230,
    weights_url="https://download.pytorch.org/models/convnext_small-0c510722.pth",
)
def convnext_small(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> ConvNeXt:
    """ConvNeXt-S from "A ConvNet for the 2020s" (Liu et al., 2022); stochastic depth 0.4 by default."""
    return _build("convnext_small", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)


@register_model(
    family="convnext",
    year=2022,
    paper=PAPER,
    crop_pct=224 / 232,
    weights_url="https://download.pytorch.org/models/convnext_base-6075fbad.pth",
)
def convnext_base(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> ConvNeXt:
    """ConvNeXt-B from "A ConvNet for the 2020s" (Liu et al., 2022); stochastic depth 0.5 by default."""
    return _build("convnext_base", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)


@register_model(
    family="convnext",
    year=2022,
    paper=PAPER,
    crop_pct=224 / 232,
    weights_url="https://download.pytorch.org/models/convnext_large-ea097f82.pth",
)
def convnext_large(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> ConvNeXt:
    """ConvNeXt-L from "A ConvNet for the 2020s" (Liu et al., 2022); stochastic depth 0.5 by default."""
    return _build("convnext_large", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)
