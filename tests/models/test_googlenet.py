"""GoogLeNet: auxiliary heads, their parameter cost, and torchvision's transform_input."""

import pytest
import torch

from models import get_card, get_model


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_aux_heads_are_built_by_default_and_can_be_dropped():
    with torch.device("meta"):
        assert count(get_model("googlenet")) == 13_004_888
        assert count(get_model("googlenet", aux_logits=False)) == 6_624_904


def test_aux_outputs_only_in_training_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model = get_model("googlenet", num_classes=5)
    logits, aux2, aux1 = model.train()(x)
    assert logits.shape == aux2.shape == aux1.shape == (2, 5)
    assert isinstance(model.eval()(x), torch.Tensor)
    assert isinstance(get_model("googlenet", num_classes=5, aux_logits=False).train()(x), torch.Tensor)


def test_transform_input_matches_torchvision_formula():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    plain = get_model("googlenet", num_classes=5).eval()
    transformed = get_model("googlenet", num_classes=5, transform_input=True).eval()
    transformed.load_state_dict(plain.state_dict())
    # torchvision's _transform_input, channel by channel
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    by_hand = torch.cat([x[:, c : c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)
    with torch.no_grad():
        torch.testing.assert_close(transformed(x), plain(by_hand))


def test_checkpoint_kwargs_and_bad_in_chans():
    assert get_card("googlenet").weights_kwargs == {"transform_input": True}
    with pytest.raises(ValueError, match="in_chans=1"):
        get_model("googlenet", in_chans=1, transform_input=True)
