"""Vision Transformer (Dosovitskiy et al., 2020): an image as a sequence of 16x16 patches, fed to a plain encoder.

Names follow torchvision's `VisionTransformer`, so its ImageNet checkpoints load with strict=True.
"""

import math
from collections import OrderedDict

import torch
from torch import nn

from models.registry import register_model

PAPER = "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"

# name -> (patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
VARIANTS = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
}


def _mlp(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    mlp = nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
    )
    for m in (mlp[0], mlp[3]):
        nn.init.xavier_uniform_(m.weight)
        nn.init.normal_(m.bias, std=1e-6)
    return mlp


class EncoderBlock(nn.Module):
    """Pre-norm transformer layer: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, hidden_dim: int, num_heads: int, mlp_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = _mlp(hidden_dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Learned position embeddings, a stack of encoder layers, a final LayerNorm."""

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
    ):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))  # as BERT
        self.dropout = nn.Dropout(dropout)
        layers = [EncoderBlock(hidden_dim, num_heads, mlp_dim, dropout, attention_dropout) for _ in range(num_layers)]
        self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", layer) for i, layer in enumerate(layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch_size}")
        self.image_size = image_size
        self.conv_proj = nn.Conv2d(in_chans, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1  # patches and the class token
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

        fan_in = in_chans * patch_size**2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"input is {tuple(x.shape[-2:])}, this model was built for {size}x{size} (image_size)")
        B = x.shape[0]
        x = self.conv_proj(x)  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D) with N = (H/p) * (W/p)
        x = torch.cat([self.class_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, D)
        return self.encoder(x)  # (B, 1 + N, D)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(x[:, 0])  # the class token, (B, D) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(name: str, **kwargs) -> VisionTransformer:
    patch_size, num_layers, num_heads, hidden_dim, mlp_dim = VARIANTS[name]
    return VisionTransformer(
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        **kwargs,
    )


@register_model(
    family="vit",
    year=2020,
    paper=PAPER,
    crop_pct=224 / 256,
    weights_url="https://download.pytorch.org/models/vit_b_16-c867db91.pth",
)
def vit_b_16(
    *, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, dropout: float = 0.0
) -> VisionTransformer:
    """ViT-B/16 from "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2020)."""
    return _build("vit_b_16", num_classes=num_classes, in_chans=in_chans, image_size=image_size, dropout=dropout)


@register_model(
    family="vit",
    year=2020,
    paper=PAPER,
    crop_pct=224 / 256,
    weights_url="https://download.pytorch.org/models/vit_b_32-d86f8d99.pth",
)
def vit_b_32(
    *, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, dropout: float = 0.0
) -> VisionTransformer:
    """ViT-B/32 from "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2020)."""
    return _build("vit_b_32", num_classes=num_classes, in_chans=in_chans, image_size=image_size, dropout=dropout)


@register_model(
    family="vit",
    year=2020,
    paper=PAPER,
    crop_pct=224 / 242,
    weights_url="https://download.pytorch.org/models/vit_l_16-852ce7e3.pth",
)
def vit_l_16(
    *, num_classes: int = 1000, in_chans: int = 3, image_size: int = 224, dropout: float = 0.0
) -> VisionTransformer:
    """ViT-L/16 from "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2020)."""
    return _build("vit_l_16", num_classes=num_classes, in_chans=in_chans, image_size=image_size, dropout=dropout)
