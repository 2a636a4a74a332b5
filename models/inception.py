"""Inception v3 (Szegedy et al., 2015), as torchvision builds it.

Module names follow torchvision, so its ImageNet checkpoint (ported from Google's, which
expects `transform_input=True`) loads with strict=True. Like that checkpoint, the 35x35
blocks keep a 5x5 branch beside the two stacked 3x3s of the paper's Figure 5.

The Mixed blocks are data: {branch name: steps}, where a step is one conv
`(out_channels, kernel_size[, stride])` or a list of two convs applied to the same input
and concatenated (the expanded filter banks of Figure 7). torchvision's names follow from
that: `branch3x3dbl_2` is step 2 of branch `branch3x3dbl`, `branch3x3_2a` / `_2b` the two
halves of a split step, and a one-step branch is named by the branch alone. Convs are
"same"-padded at stride 1 and unpadded at stride 2, as in Google's graph (TF "VALID").
"""

import torch
import torch.nn.functional as F
from torch import nn

from models.googlenet import BasicConv2d, transform_input
from models.registry import register_model

Conv = tuple  # (out_channels, kernel_size) or (out_channels, kernel_size, stride)
Branches = dict[str, list[Conv | list[Conv]]]

BLOCK_A: Branches = {  # 35x35 (Figure 5)
    "branch1x1": [(64, 1)],
    "branch5x5": [(48, 1), (64, 5)],
    "branch3x3dbl": [(64, 1), (96, 3), (96, 3)],
}


def block_c(c7: int) -> Branches:  # 17x17, 7x7 factorized into 1x7 and 7x1 (Figure 6)
    return {
        "branch1x1": [(192, 1)],
        "branch7x7": [(c7, 1), (c7, (1, 7)), (192, (7, 1))],
        "branch7x7dbl": [(c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))],
    }


REDUCE_35_TO_17: Branches = {  # grid reductions (Figure 10)
    "branch3x3": [(384, 3, 2)],
    "branch3x3dbl": [(64, 1), (96, 3), (96, 3, 2)],
}
REDUCE_17_TO_8: Branches = {
    "branch3x3": [(192, 1), (320, 3, 2)],
    "branch7x7x3": [(192, 1), (192, (1, 7)), (192, (7, 1)), (192, 3, 2)],
}
BLOCK_E: Branches = {  # 8x8, expanded filter banks (Figure 7)
    "branch1x1": [(320, 1)],
    "branch3x3": [(384, 1), [(384, (1, 3)), (384, (3, 1))]],
    "branch3x3dbl": [(448, 1), (384, 3), [(384, (1, 3)), (384, (3, 1))]],
}


class Mixed(nn.Module):
    """Parallel conv branches plus a pooling branch, concatenated along channels.

    With `pool_proj` the pooling branch is a 3x3/1 average pool and a 1x1 projection;
    without it the block reduces the grid and the pooling branch is a bare 3x3/2 max pool.
    """

    def __init__(self, in_channels: int, branches: Branches, pool_proj: int | None = None) -> None:
        super().__init__()
        self.chains: list[list[list[str]]] = []  # branch -> step -> names of the convs in that step
        for prefix, steps in branches.items():
            chain, channels = [], in_channels
            for i, step in enumerate(steps, 1):
                convs = step if isinstance(step, list) else [step]
                step_name = prefix if len(steps) == 1 else f"{prefix}_{i}"
                names = [step_name] if len(convs) == 1 else [step_name + c for c in "ab"[: len(convs)]]
                for name, (out, kernel, *stride) in zip(names, convs, strict=True):
                    s = stride[0] if stride else 1
                    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
                    pad = (kh // 2, kw // 2) if s == 1 else 0
                    self.add_module(name, BasicConv2d(channels, out, kernel_size=kernel, stride=s, padding=pad))
                chain.append(names)
                channels = sum(conv[0] for conv in convs)
            self.chains.append(chain)
        if pool_proj is None:
            self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
            self.branch_pool = None
        else:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
            self.branch_pool = BasicConv2d(in_channels, pool_proj, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chain in self.chains:
            y = x
            for step in chain:
                ys = [getattr(self, name)(y) for name in step]
                y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
            outs.append(y)
        pooled = self.pool(x)
        outs.append(pooled if self.branch_pool is None else self.branch_pool(pooled))
        return torch.cat(outs, 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 average pool, 1x1 conv 128, 5x5 conv 768, fc."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))  # (B, 768, 1, 1) at 17x17 input
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)  # (B, 768)
        return self.fc(x)


class Inception3(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input=True needs RGB input (in_chans=3), got in_chans={in_chans}")
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = Mixed(192, BLOCK_A, pool_proj=32)
        self.Mixed_5c = Mixed(256, BLOCK_A, pool_proj=64)
        self.Mixed_5d = Mixed(288, BLOCK_A, pool_proj=64)
        self.Mixed_6a = Mixed(288, REDUCE_35_TO_17)
        self.Mixed_6b = Mixed(768, block_c(128), pool_proj=192)
        self.Mixed_6c = Mixed(768, block_c(160), pool_proj=192)
        self.Mixed_6d = Mixed(768, block_c(160), pool_proj=192)
        self.Mixed_6e = Mixed(768, block_c(192), pool_proj=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = Mixed(768, REDUCE_17_TO_8)
        self.Mixed_7b = Mixed(1280, BLOCK_E, pool_proj=192)
        self.Mixed_7c = Mixed(2048, BLOCK_E, pool_proj=192)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.AuxLogits is not None:  # smaller initial weights in the aux head, as in torchvision
            nn.init.trunc_normal_(self.AuxLogits.conv1.conv.weight, mean=0.0, std=0.01, a=-2, b=2)
            nn.init.trunc_normal_(self.AuxLogits.fc.weight, mean=0.0, std=0.001, a=-2, b=2)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Trunk output (B, 2048, 8, 8 at 299x299) and the aux logits (empty unless training with aux)."""
        if self.transform_input:
            x = transform_input(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))  # (B, 192, 71, 71)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        aux = [self.AuxLogits(x)] if self.training and self.AuxLogits is not None else []
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.dropout(self.avgpool(x)), 1)  # (B, 2048)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; in training mode with the aux head, (logits, aux_logits)."""
        x, aux = self._features(x)
        logits = self.forward_head(x)
        return (logits, *aux) if aux else logits


def _build(**kwargs) -> Inception3:
    return Inception3(**kwargs)


@register_model(
    family="inception",
    year=2015,
    paper="Rethinking the Inception Architecture for Computer Vision",
    input_size=(3, 299, 299),
    interpolation="bilinear",
    crop_pct=299 / 342,
    weights_url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    weights_kwargs={"transform_input": True},
)
def inception_v3(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    aux_logits: bool = True,
    transform_input: bool = False,
    dropout: float = 0.5,
) -> Inception3:
    """Inception v3, "Rethinking the Inception Architecture for Computer Vision", 2015.

    aux_logits: build the auxiliary classifier (returned only in training mode).
    transform_input: rescale ImageNet-normalized input to [-1, 1], as the torchvision checkpoint expects.
    """
    return _build(
        num_classes=num_classes,
        in_chans=in_chans,
        aux_logits=aux_logits,
        transform_input=transform_input,
        dropout=dropout,
    )
