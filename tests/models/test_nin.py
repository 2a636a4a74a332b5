"""Network In Network (ImageNet model): parameter count from the layer table, structure, sizes."""

import torch
from torch import nn

from models import get_model

# The authors' Caffe model: (name, in, out, kernel). conv = kxk, cccp = 1x1.
LAYERS = [
    ("conv1", 3, 96, 11),
    ("cccp1", 96, 96, 1),
    ("cccp2", 96, 96, 1),
    ("conv2", 96, 256, 5),
    ("cccp3", 256, 256, 1),
    ("cccp4", 256, 256, 1),
    ("conv3", 256, 384, 3),
    ("cccp5", 384, 384, 1),
    ("cccp6", 384, 384, 1),
    ("conv4-1024", 384, 1024, 3),
    ("cccp7-1024", 1024, 1024, 1),
    ("cccp8-1024", 1024, 1000, 1),
]
NIN_PARAMS = 7_595_176


def test_parameter_count_from_the_layer_table():
    assert sum(c_out * c_in * k * k + c_out for _, c_in, c_out, k in LAYERS) == NIN_PARAMS
    with torch.device("meta"):
        model = get_model("nin")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == NIN_PARAMS
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [row[1:] for row in LAYERS]


def test_no_fully_connected_layer_and_a_relu_after_every_convolution():
    with torch.device("meta"):
        model = get_model("nin")
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, nn.Sequential | type(model))]
    assert "Linear" not in kinds
    assert kinds.count("Conv2d") == kinds.count("ReLU") == 12
    assert kinds.count("MaxPool2d") == 3 and kinds.count("Dropout") == 1


def test_sizes_at_224_end_in_6x6_class_maps():
    model = get_model("nin").eval()
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            sizes.append(x.shape[-1])
        maps = model.classifier(x)
    assert sizes == [54, 27, 27, 13, 13, 6, 6, 6]  # mlpconv, pool, mlpconv, pool, mlpconv, pool, dropout, mlpconv
    assert maps.shape == (1, 1000, 6, 6)


def test_logits_are_averages_of_rectified_class_maps():
    model = get_model("nin", num_classes=5).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        maps = model.classifier(model.forward_features(x))  # (2, 5, H, W)
        logits = model(x)
    assert (logits >= 0).all()
    assert torch.allclose(logits, maps.mean(dim=(2, 3)))
