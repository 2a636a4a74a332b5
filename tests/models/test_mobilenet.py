"""MobileNet v1 and v2: the papers' layer tables and the v1 parameter count derived from them."""

import torch
from torch import nn

from models import get_model
from models.mobilenet import V1_BLOCKS, InvertedResidual


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_v1_parameter_count_from_table_1():
    # Stem: 3x3x3x32 conv + BN (2 per channel). Each separable block c_in -> c_out: 3x3 depthwise
    # (9 c_in) + BN, 1x1 pointwise (c_in c_out) + BN. Then fc 1024 -> 1000 with bias.
    total, c_in = 3 * 3 * 3 * 32 + 2 * 32, 32
    for c_out, _ in V1_BLOCKS:
        total += 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out
        c_in = c_out
    total += 1024 * 1000 + 1000
    assert total == 4_231_976
    with torch.device("meta"):
        assert count(get_model("mobilenet_v1")) == total


def test_v1_layout():
    with torch.device("meta"):
        model = get_model("mobilenet_v1")
        assert model.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
    blocks = list(model.features)[1:]
    assert len(blocks) == 13
    for block in blocks:
        dw, pw = block[0][0], block[1][0]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3)
        assert pw.groups == 1 and pw.kernel_size == (1, 1)
        assert isinstance(block[0][2], nn.ReLU) and isinstance(block[1][2], nn.ReLU)
    assert [b[0][0].stride[0] for b in blocks] == [s for _, s in V1_BLOCKS]
    assert model.classifier[1].in_features == 1024


def test_v2_inverted_residuals():
    with torch.device("meta"):
        model = get_model("mobilenet_v2")
        assert model.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_res_connect for b in blocks) == 10  # every repeat after the first of each row
    for b in blocks:
        assert isinstance(b.conv[-1], nn.BatchNorm2d)  # linear bottleneck: no activation after projection
        assert all(isinstance(m, nn.ReLU6) for m in b.modules() if isinstance(m, nn.ReLU | nn.ReLU6))


def test_v2_skip_adds_the_input():
    torch.manual_seed(0)
    block = InvertedResidual(16, 16, 1, 6).eval()
    nn.init.zeros_(block.conv[-1].weight)  # zero the projection's BN scale: the residual branch is 0
    nn.init.zeros_(block.conv[-1].bias)
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), x)
