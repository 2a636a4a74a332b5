"""SE-ResNet: the squeeze-excitation block, where it sits, and what it adds to ResNet-50."""

import pytest
import torch

from models import get_card, get_model
from models.senet import SEModule


def meta_state(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in get_model(name).state_dict().items()}


def test_se_keys_are_timms():
    state = meta_state("se_resnet50")
    assert state["layer1.0.se.fc1.weight"] == (16, 256, 1, 1)
    assert state["layer1.0.se.fc1.bias"] == (16,)
    assert state["layer1.0.se.fc2.weight"] == (256, 16, 1, 1)
    assert state["layer1.0.se.fc2.bias"] == (256,)
    assert state["layer4.2.se.fc1.weight"] == (128, 2048, 1, 1)  # reduction 16
    assert sum(k.endswith("se.fc1.weight") for k in state) == 3 + 4 + 6 + 3  # one per bottleneck


def test_se_resnet50_is_resnet50_plus_se_after_bn3():
    se, plain = meta_state("se_resnet50"), meta_state("resnet50")
    assert [k for k in se if ".se." not in k] == list(plain)  # same names, same order, same shapes below
    assert {k: v for k, v in se.items() if ".se." not in k} == plain
    keys = list(se)
    assert keys.index("layer1.0.bn3.num_batches_tracked") + 1 == keys.index("layer1.0.se.fc1.weight")
    assert keys.index("layer1.0.se.fc2.bias") + 1 == keys.index("layer1.0.downsample.0.weight")


def test_se_parameter_count_from_the_stage_widths():
    # Each SE block on C channels: C*C/16 + C/16 (fc1) + C/16*C + C (fc2); stages (C, blocks) of ResNet-50.
    added = sum(n * (2 * c * (c // 16) + c // 16 + c) for c, n in [(256, 3), (512, 4), (1024, 6), (2048, 3)])
    assert added == 2_530_992
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in get_model(n).parameters()) for n in ("resnet50", "se_resnet50")}
    assert counts["se_resnet50"] - counts["resnet50"] == added
    assert counts["se_resnet50"] == 28_088_024


def test_se_gate_rescales_each_channel_by_a_factor_in_0_1():
    torch.manual_seed(0)
    se = SEModule(32).eval()
    with torch.no_grad():
        se.fc1.weight.uniform_(0.0, 1.0)  # positive squeeze weights: the ReLU passes a nonzero signal
        se.fc2.bias[0] = -50.0  # channel 0's gate shut
        se.fc2.bias[1] = 50.0  # channel 1's gate open
        x = torch.randn(2, 32, 5, 5).abs() + 0.1
        x[1] *= torch.linspace(0.1, 5.0, 32).view(32, 1, 1)  # a different channel profile per sample
        ratio = se(x) / x
    gate = ratio[:, :, :1, :1]
    assert torch.allclose(ratio, gate.expand_as(ratio), atol=1e-6)  # one factor per (sample, channel)
    assert ((gate >= 0) & (gate <= 1)).all()
    assert gate[:, 0].max() < 1e-6 and gate[:, 1].min() > 1 - 1e-6
    assert not torch.allclose(gate[0], gate[1])  # the gate depends on the input


def test_se_module_rejects_too_few_channels():
    with pytest.raises(ValueError, match="8"):
        SEModule(8)


def test_card_is_timms_preprocessing_without_a_url():
    card = get_card("se_resnet50")
    assert (card.family, card.year, card.interpolation, card.crop_pct) == ("senet", 2017, "bicubic", 0.875)
    assert card.weights_url is None
    assert card.input_size == (3, 224, 224)
