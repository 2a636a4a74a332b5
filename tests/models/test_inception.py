"""Inception v3: the auxiliary head, its parameter cost, and torchvision's transform_input."""

import pytest
import torch

from models import get_card, get_model


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_aux_head_is_built_by_default_and_can_be_dropped():
    with torch.device("meta"):
        assert count(get_model("inception_v3")) == 27_161_264
        assert count(get_model("inception_v3", aux_logits=False)) == 23_834_568


def test_aux_output_only_in_training_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 299, 299)  # the aux head needs the 17x17 grid of a 299x299 input
    model = get_model("inception_v3", num_classes=5)
    logits, aux = model.train()(x)
    assert logits.shape == aux.shape == (2, 5)
    assert isinstance(model.eval()(x[:1]), torch.Tensor)


def test_grid_sizes_at_299():
    shapes = {}
    with torch.device("meta"):
        model = get_model("inception_v3").eval()
        for name in ("Mixed_5b", "Mixed_6e", "Mixed_7c"):
            getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.update({name: out.shape}))
        model(torch.empty(1, 3, 299, 299))
    assert shapes == {"Mixed_5b": (1, 256, 35, 35), "Mixed_6e": (1, 768, 17, 17), "Mixed_7c": (1, 2048, 8, 8)}


def test_transform_input_matches_torchvision_formula():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96)
    plain = get_model("inception_v3", num_classes=5).eval()
    transformed = get_model("inception_v3", num_classes=5, transform_input=True).eval()
    transformed.load_state_dict(plain.state_dict())
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    by_hand = torch.cat([x[:, c : c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)
    with torch.no_grad():
        torch.testing.assert_close(transformed(x), plain(by_hand), rtol=1e-4, atol=0)  # logits are large at init


def test_checkpoint_kwargs_and_bad_in_chans():
    assert get_card("inception_v3").weights_kwargs == {"transform_input": True}
    with pytest.raises(ValueError, match="in_chans=4"):
        get_model("inception_v3", in_chans=4, transform_input=True)
