"""ConvNeXt: sizes from the paper's stage table, layer scale, stochastic depth."""

import itertools

import pytest
import torch

from models import get_model

# Section 3 of the paper: blocks per stage and channels per stage.
STAGES = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}


def convnext_params(depths, dims, chans: int = 3, classes: int = 1000) -> int:
    block = lambda d: (49 * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d) + d  # noqa: E731  dw, LN, MLP, scale
    n = chans * 16 * dims[0] + dims[0] + 2 * dims[0]  # 4x4 stem conv and its LayerNorm
    n += sum(depth * block(d) for depth, d in zip(depths, dims, strict=True))
    n += sum(2 * d + 4 * d * d2 + d2 for d, d2 in itertools.pairwise(dims))  # LayerNorm + 2x2 conv between stages
    return n + 2 * dims[-1] + dims[-1] * classes + classes  # head LayerNorm and Linear


@pytest.mark.parametrize("name", sorted(STAGES))
def test_parameter_count_follows_the_stage_table(name):
    with torch.device("meta"):
        model = get_model(name)
    assert sum(p.numel() for p in model.parameters()) == convnext_params(*STAGES[name])


@pytest.mark.parametrize(("name", "rate"), [("convnext_tiny", 0.1), ("convnext_small", 0.4), ("convnext_large", 0.5)])
def test_stochastic_depth_grows_linearly_to_torchvisions_rate(name, rate):
    with torch.device("meta"):
        model = get_model(name)
    rates = [m.drop_prob for m in model.modules() if hasattr(m, "drop_prob")]
    assert rates == pytest.approx(torch.linspace(0, rate, sum(STAGES[name][0])).tolist())


def test_stochastic_depth_is_random_in_training_and_identity_in_eval():
    torch.manual_seed(0)
    model = get_model("convnext_tiny", num_classes=4, stochastic_depth_prob=0.9)
    for m in model.modules():  # make the residual branches matter
        if hasattr(m, "layer_scale"):
            torch.nn.init.ones_(m.layer_scale)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        assert torch.equal(model.eval()(x), model(x))


def test_layer_scale_starts_at_1e_6_and_bad_rates_raise():
    scales = [m.layer_scale for m in get_model("convnext_tiny").modules() if hasattr(m, "layer_scale")]
    assert len(scales) == 18
    assert all(torch.equal(s, torch.full_like(s, 1e-6)) for s in scales)
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        get_model("convnext_tiny", stochastic_depth_prob=1.0)
