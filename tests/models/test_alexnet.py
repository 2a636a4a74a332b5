"""AlexNet as published (2012): the two-GPU split as groups, LRN, and the parameter count layer by layer."""

import torch
from torch import nn

from models import get_model


def layers_of(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_alexnet_2012_convs_are_split_as_on_two_gpus():
    with torch.device("meta"):
        model = get_model("alexnet_2012")
    convs = layers_of(model.features, nn.Conv2d)
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # conv3 reads both halves
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert [m.out_features for m in layers_of(model.classifier, nn.Linear)] == [4096, 4096, 1000]


def test_alexnet_2012_parameter_count_layer_by_layer():
    with torch.device("meta"):
        model = get_model("alexnet_2012")
    counts = [sum(p.numel() for p in m.parameters()) for m in layers_of(model, (nn.Conv2d, nn.Linear))]
    expected = [
        96 * 3 * 11 * 11 + 96,  # conv1
        256 * 48 * 5 * 5 + 256,  # conv2: each half sees its GPU's 48 maps
        384 * 256 * 3 * 3 + 384,  # conv3: across GPUs
        384 * 192 * 3 * 3 + 384,  # conv4
        256 * 192 * 3 * 3 + 256,  # conv5
        256 * 6 * 6 * 4096 + 4096,  # fc6
        4096 * 4096 + 4096,  # fc7
        4096 * 1000 + 1000,  # fc8
    ]
    assert counts == expected
    assert sum(expected) == 60_965_224


def test_alexnet_2012_normalizes_after_conv1_and_conv2_then_pools():
    with torch.device("meta"):
        kinds = [type(m).__name__ for m in get_model("alexnet_2012").features]
    assert kinds[:8] == [
        *("Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"),
        *("Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"),
    ]
    assert kinds.count("LocalResponseNorm") == 2 and kinds.count("MaxPool2d") == 3


def test_alexnet_2012_lrn_is_the_papers_formula():
    with torch.device("meta"):
        lrn = get_model("alexnet_2012").features[2]
    lrn = type(lrn)(lrn.size, lrn.alpha, lrn.beta, lrn.k)  # a real copy of the meta module
    a = torch.randn(1, 96, 4, 4, generator=torch.Generator().manual_seed(0)) * 30
    squares = nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))  # zero maps beyond the edges
    window = sum(squares[:, i : i + 96] for i in range(5))  # sum over maps i-2 .. i+2
    expected = a / (2 + 1e-4 * window) ** 0.75  # k=2, alpha=1e-4, beta=0.75, n=5
    assert torch.allclose(lrn(a), expected, rtol=1e-5)


def test_alexnet_2012_feature_map_is_256x6x6_at_227():
    model = get_model("alexnet_2012").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 227, 227)).shape == (1, 256, 6, 6)


def test_alexnet_2012_drops_the_outputs_of_fc6_and_fc7():
    with torch.device("meta"):
        kinds = [type(m).__name__ for m in get_model("alexnet_2012").classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
