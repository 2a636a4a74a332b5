"""ResNet: stage layout, the block_attn hook, and argument checks."""

import pytest
import torch
from torch import nn

from models import get_model
from models.resnet import BasicBlock, Bottleneck, ResNet


class Recorder(nn.Identity):
    """A block_attn that keeps the shape and records the channels it was built for."""

    built: list[int] = []

    def __init__(self, channels: int):
        super().__init__()
        Recorder.built.append(channels)


@pytest.mark.parametrize(
    ("block", "layers", "channels"),
    [
        (BasicBlock, (2, 2, 2, 2), [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2),
        (Bottleneck, (3, 4, 6, 3), [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3),
    ],
)
def test_block_attn_is_built_per_block_for_its_output_channels(block, layers, channels):
    Recorder.built = []
    with torch.device("meta"):
        ResNet(block, layers, block_attn=Recorder)
    assert Recorder.built == channels


def test_block_attn_acts_before_the_residual_add():
    class Zero(nn.Module):
        def __init__(self, channels: int):
            super().__init__()

        def forward(self, x):
            return torch.zeros_like(x)

    torch.manual_seed(0)
    model = ResNet(Bottleneck, (1, 1, 1, 1), block_attn=Zero).eval()
    block = model.layer2[0]
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(block.downsample(x)))  # only the shortcut is left


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("resnet50", 2048), ("resnet152", 2048)])
def test_feature_map_is_stride_32(name, channels):
    with torch.device("meta"):
        assert get_model(name).forward_features(torch.empty(1, 3, 224, 224)).shape == (1, channels, 7, 7)


def test_depths_are_the_papers():
    with torch.device("meta"):
        depths = {n: [len(getattr(get_model(n), f"layer{i}")) for i in range(1, 5)] for n in ("resnet34", "resnet101")}
    assert depths == {"resnet34": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


def test_bad_layers_raise():
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        ResNet(BasicBlock, (2, 2, 2))
