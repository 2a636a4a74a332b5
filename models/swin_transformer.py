"""Swin Transformer (Liu et al., 2021): self-attention inside 7x7 windows, shifted every other block, over a pyramid.

Names follow torchvision's v1 `SwinTransformer`, so its ImageNet checkpoints load with strict=True.
"""

import torch
from torch import nn
from torch.nn import functional as F

from models.convnext import Permute, drop_path
from models.registry import register_model

PAPER = "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"

# name -> (embed_dim, blocks per stage, heads per stage, torchvision's stochastic depth rate for training)
VARIANTS = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}


def _relative_position_index(ws: int) -> torch.Tensor:
    """For each (query, key) pair of a ws x ws window, the row of the bias table for their offset."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, N)
    offsets = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2 * ws - 2]
    return (offsets[0] * (2 * ws - 1) + offsets[1]).flatten()  # (N * N,)


def _to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)  # (B * nW, N, C)


def _from_windows(x: torch.Tensor, B: int, H: int, W: int, ws: int) -> torch.Tensor:
    x = x.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)  # (B, H, W, C)


def _shift_mask(H: int, W: int, ws: int, shift_h: int, shift_w: int, device: torch.device) -> torch.Tensor:
    """-100 where query and key came from different regions of the rolled map, 0 elsewhere; (nW, N, N).

    After the roll by -shift, rows [H - ws, H - shift) and [H - shift, H) of the last window row are not neighbours
    in the image (likewise for columns). Computed from shapes alone, so it is a constant in an exported graph.
    """

    def region(n: int, shift: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - ws).long() + (i >= n - shift).long()  # 0, 1 or 2 along the axis

    label = region(H, shift_h)[:, None] * 3 + region(W, shift_w)[None, :]  # (H, W)
    label = _to_windows(label[None, :, :, None], ws).squeeze(-1)  # (nW, N)
    return torch.where(label[:, :, None] == label[:, None, :], 0.0, -100.0)  # (nW, N, N)


class ShiftedWindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int):
        super().__init__()
        self.num_heads, self.window_size, self.shift_size = num_heads, window_size, shift_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", _relative_position_index(window_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws, heads = self.window_size, self.num_heads
        x = F.pad(x, (0, 0, 0, -W % ws, 0, -H % ws))  # pad right and bottom to whole windows
        pad_H, pad_W = x.shape[1], x.shape[2]
        nW, N = (pad_H // ws) * (pad_W // ws), ws * ws  # windows per image, tokens per window
        # as torchvision: no shift along an axis that a single window covers
        shift_h = 0 if pad_H <= ws else self.shift_size
        shift_w = 0 if pad_W <= ws else self.shift_size
        shifted = shift_h > 0 or shift_w > 0
        if shifted:
            x = torch.roll(x, shifts=(-shift_h, -shift_w), dims=(1, 2))

        x = _to_windows(x, ws)  # (B * nW, N, C)
        Bw = x.shape[0]
        qkv = self.qkv(x).reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (3, B * nW, heads, N, hd)
        q, k, v = qkv.unbind(0)
        attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1)  # (B * nW, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index].view(N, N, heads)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N) broadcast over windows
        if shifted:
            mask = _shift_mask(pad_H, pad_W, ws, shift_h, shift_w, x.device).to(attn.dtype)  # (nW, N, N)
            attn = attn.view(B, nW, heads, N, N) + mask[None, :, None]  # (B, nW, heads, N, N)
            attn = attn.view(Bw, heads, N, N)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(Bw, N, C)  # (B * nW, N, C)
        x = _from_windows(self.proj(x), B, pad_H, pad_W, ws)  # (B, pad_H, pad_W, C)
        if shifted:
            x = torch.roll(x, shifts=(shift_h, shift_w), dims=(1, 2))
        return x[:, :H, :W].contiguous()  # (B, H, W, C)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, drop_prob: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, num_heads, window_size, shift_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim), nn.Dropout(0.0)
        )
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)


class PatchMerging(nn.Module):
    """Each 2x2 neighbourhood concatenated (4C), normalised, projected to 2C: (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # odd sizes get a zero row/column
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class SwinTransformer(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        num_classes: int = 1000,
        in_chans: int = 3,
        window_size: int = 7,
        patch_size: int = 4,
        stochastic_depth_prob: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= stochastic_depth_prob < 1.0:
            raise ValueError(f"stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob}")
        stem = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size),
            Permute(0, 2, 3, 1),  # (B, C, H, W) -> (B, H, W, C): the blocks work channels-last
            nn.LayerNorm(embed_dim),
        )
        layers: list[nn.Module] = [stem]
        total, block_id = sum(depths), 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            dim = embed_dim * 2**i
            stage = []
            for j in range(depth):  # every other block shifts its windows by half a window
                rate = stochastic_depth_prob * block_id / (total - 1)  # grows linearly with depth
                stage.append(SwinTransformerBlock(dim, heads, window_size, (j % 2) * (window_size // 2), rate))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(depths):
                layers.append(PatchMerging(dim))
        self.features = nn.Sequential(*layers)
        num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.features(x))  # (B, H/32, W/32, C)
        return x.permute(0, 3, 1, 2)  # (B, C, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.avgpool(x).flatten(1))  # (B, C, 1, 1) -> (B, C) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(name: str, stochastic_depth_prob: float | None, **kwargs) -> SwinTransformer:
    embed_dim, depths, num_heads, default_rate = VARIANTS[name]
    rate = default_rate if stochastic_depth_prob is None else stochastic_depth_prob
    return SwinTransformer(embed_dim, depths, num_heads, stochastic_depth_prob=rate, **kwargs)


@register_model(
    family="swin",
    year=2021,
    paper=PAPER,
    interpolation="bicubic",
    crop_pct=224 / 232,
    weights_url="https://download.pytorch.org/models/swin_t-704ceda3.pth",
)
def swin_t(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> SwinTransformer:
    """Swin-T from "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., 2021)."""
    return _build("swin_t", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)


@register_model(
    family="swin",
    year=2021,
    paper=PAPER,
    interpolation="bicubic",
    crop_pct=224 / 246,
    weights_url="https://download.pytorch.org/models/swin_s-5e29d889.pth",
)
def swin_s(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> SwinTransformer:
    """Swin-S from "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., 2021)."""
    return _build("swin_s", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)


@register_model(
    family="swin",
    year=2021,
    paper=PAPER,
    interpolation="bicubic",
    crop_pct=224 / 238,
    weights_url="https://download.pytorch.org/models/swin_b-68c6b09e.pth",
)
def swin_b(
    *, num_classes: int = 1000, in_chans: int = 3, stochastic_depth_prob: float | None = None
) -> SwinTransformer:
    """Swin-B from "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., 2021)."""
    return _build("swin_b", stochastic_depth_prob, num_classes=num_classes, in_chans=in_chans)
