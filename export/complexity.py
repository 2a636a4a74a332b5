"""What a network costs, measured at export for its model card: parameters, and GFLOPs of one forward pass at the
card's input size, counted as torchvision's tables count them (one multiply-add is one FLOP; PyTorch's
FlopCounterMode counts two)."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def complexity(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, float]:
    """`{"params": ..., "gflops": ...}` for `model` in eval mode, one image of `input_size` (C, H, W)."""
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *input_size))
    return {"params": params, "gflops": float(f"{counter.get_total_flops() / 2 / 1e9:.4g}")}
