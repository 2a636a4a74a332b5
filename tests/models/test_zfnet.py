"""ZFNet: Figure 3 of the paper, layer sizes and parameter count."""

import torch
from torch import nn

from models import get_model


def test_feature_map_sizes_are_figure_3s():
    model = get_model("zfnet").eval()
    sizes = []
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                sizes.append((type(layer).__name__, x.shape[1], x.shape[2]))
    assert sizes == [
        ("Conv2d", 96, 110),
        ("MaxPool2d", 96, 55),
        ("Conv2d", 256, 26),
        ("MaxPool2d", 256, 13),
        ("Conv2d", 384, 13),
        ("Conv2d", 384, 13),
        ("Conv2d", 256, 13),
        ("MaxPool2d", 256, 6),
    ]


def test_contrast_normalization_follows_the_pools_of_layers_1_and_2():
    with torch.device("meta"):
        kinds = [type(m).__name__ for m in get_model("zfnet").features]
    norms = [i for i, kind in enumerate(kinds) if kind == "LocalResponseNorm"]
    assert [kinds[i - 1] for i in norms] == ["MaxPool2d", "MaxPool2d"]
    assert kinds.index("LocalResponseNorm") == 3 and len(norms) == 2


def test_parameter_count_layer_by_layer():
    with torch.device("meta"):
        model = get_model("zfnet")
    counts = [sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    expected = [
        96 * 3 * 7 * 7 + 96,
        256 * 96 * 5 * 5 + 256,
        384 * 256 * 3 * 3 + 384,
        384 * 384 * 3 * 3 + 384,
        256 * 384 * 3 * 3 + 256,
        256 * 6 * 6 * 4096 + 4096,
        4096 * 4096 + 4096,
        4096 * 1000 + 1000,
    ]
    assert counts == expected
    assert sum(expected) == 62_357_608
