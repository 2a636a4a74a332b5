"""DenseNet: dense connectivity, channel bookkeeping, legacy checkpoint names, dropout."""

import pytest
import torch

from models import get_model
from models.densenet import CONFIGS, remap_checkpoint


@pytest.mark.parametrize(
    ("name", "channels"), [("densenet121", 1024), ("densenet161", 2208), ("densenet169", 1664), ("densenet201", 1920)]
)
def test_final_channels(name, channels):
    with torch.device("meta"):
        model = get_model(name)
        assert model.features.norm5.num_features == channels
        assert model.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, channels, 7, 7)


def test_each_layer_sees_all_earlier_outputs():
    growth, blocks, stem = CONFIGS["densenet121"]
    with torch.device("meta"):
        features = get_model("densenet121").features
    channels = stem
    for b, num_layers in enumerate(blocks, start=1):
        block = getattr(features, f"denseblock{b}")
        assert len(block) == num_layers
        for m, layer in enumerate(block.values()):
            assert layer.conv1.in_channels == channels + m * growth
            assert layer.conv2.out_channels == growth
        channels = (channels + num_layers * growth) // (2 if b < len(blocks) else 1)  # transitions halve


def test_remap_checkpoint_loads_torchvisions_2017_key_names():
    model = get_model("densenet121")
    legacy = {}
    for key, value in model.state_dict().items():
        for old, new in (("norm1.", "norm.1."), ("conv1.", "conv.1."), ("norm2.", "norm.2."), ("conv2.", "conv.2.")):
            if "denselayer" in key:
                key = key.replace(old, new)
        if not key.endswith("num_batches_tracked"):  # the 2017 files predate it; BatchNorm fills it in
            legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.conv0.weight" in legacy and "features.norm5.weight" in legacy
    remapped = remap_checkpoint(legacy)
    assert list(remapped) == [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    model.load_state_dict(remapped, strict=True)


def test_drop_rate_is_active_in_training_only():
    torch.manual_seed(0)
    model = get_model("densenet121", num_classes=4, drop_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
