"""VGG: every configuration, plain and batch-normalized, has torchvision's size and the paper's depth."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from models import get_model

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "torchvision.json").read_text())["models"]
NAMES = [f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")]


def build(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return get_model(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_torchvision(name):
    assert sum(p.numel() for p in build(name).parameters()) == FIXTURE[name]["num_params"]


@pytest.mark.parametrize("name", NAMES)
def test_depth_counts_weight_layers(name):
    """VGG-n has n weight layers: n - 3 convolutions and 3 fully connected layers."""
    model = build(name)
    depth = int(name.removeprefix("vgg").removesuffix("_bn"))
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert (len(convs), len(linears)) == (depth - 3, 3)
    assert len(norms) == (len(convs) if name.endswith("_bn") else 0)


def test_in_chans_and_dropout_reach_the_layers():
    model = build("vgg11", in_chans=1, dropout=0.25)
    assert model.features[0].in_channels == 1
    assert {m.p for m in model.classifier if isinstance(m, nn.Dropout)} == {0.25}
