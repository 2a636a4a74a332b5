"""LeNet (1989) and LeNet-5 (1998): parameter counts from the papers, connection tables, RBF outputs."""

import pytest
import torch
from torch import nn

from models import get_model
from models.lenet import C3_INPUTS, H2_INPUTS, PartialConv2d, _rbf_codes

# Table I of the LeNet-5 paper: row = S2 map, column = C3 map, X = connected.
TABLE_I = [
    "X   XXX  XXXX XX",
    "XX   XXX  XXXX X",
    "XXX   XXX  X XXX",
    " XXX  XXXX  X XX",
    "  XXX  XXXX XX X",
    "   XXX  XXXX XXX",
]


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def dense_kernel(conv: PartialConv2d) -> torch.Tensor:
    return (conv.scatter @ conv.weight.flatten(1)).view(conv.shape)  # (out, in, k, k)


def test_c3_table_is_table_one_of_the_paper():
    grid = [["X" if s2 in C3_INPUTS[c3] else " " for c3 in range(16)] for s2 in range(6)]
    assert ["".join(row) for row in grid] == TABLE_I
    assert sum(len(inputs) for inputs in C3_INPUTS) == 60


def test_lenet5_parameter_counts_per_layer():
    model = get_model("lenet5")
    counts = {name: trainable(getattr(model, name)) for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output")}
    # C1 6x(25+1); S2 6x2; C3 60 kernels x 25 + 16 biases; S4 16x2; C5 120x(16x25+1); F6 84x(120+1); RBF fixed.
    assert counts == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164, "output": 0}
    assert trainable(model) == 60_000


def test_lenet5_c3_kernel_is_zero_off_the_table():
    model = get_model("lenet5")
    connected = dense_kernel(model.c3).abs().sum(dim=(2, 3)) != 0  # (16, 6)
    expected = torch.tensor([[s2 in C3_INPUTS[c3] for s2 in range(6)] for c3 in range(16)])
    assert torch.equal(connected, expected)


def test_lenet5_codes_are_fixed_plus_minus_one_and_need_no_rng():
    state = torch.random.get_rng_state()
    codes = _rbf_codes(10, 84)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    model = get_model("lenet5")
    assert torch.equal(model.output.codes, codes)
    assert "output.codes" in model.state_dict() and not any(p is model.output.codes for p in model.parameters())
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    hamming = (codes[:, None] != codes[None]).sum(-1) + 84 * torch.eye(10, dtype=torch.long)
    assert hamming.min() >= 30  # every pair of digit codes differs in at least 30 of 84 places


def test_lenet5_logits_are_negative_squared_distances_to_the_codes():
    model = get_model("lenet5", num_classes=7).eval()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f6 = model.act(model.f6(model.forward_features(x).flatten(1)))  # (3, 84)
        assert torch.allclose(model(x), -(torch.cdist(f6, model.output.codes) ** 2), rtol=1e-5, atol=1e-4)


def test_lenet5_trains():
    torch.manual_seed(0)
    model = get_model("lenet5", num_classes=4)
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_lenet1989_parameter_counts_per_layer():
    model = get_model("lenet1989")
    # H1: 12 shared 5x5 kernels + 12x8x8 untied biases; H2: 12 maps x 8 inputs x 25 + 12x4x4 biases.
    assert model.h1_bias.shape == (12, 8, 8) and model.h2_bias.shape == (12, 4, 4)
    assert trainable(model.h1) + model.h1_bias.numel() == 300 + 768
    assert trainable(model.h2) + model.h2_bias.numel() == 2_400 + 192
    assert trainable(model.h3) == 192 * 30 + 30 and trainable(model.output) == 30 * 10 + 10
    assert trainable(model) == 9_760


def test_lenet1989_each_h2_map_sees_eight_h1_maps():
    model = get_model("lenet1989")
    connected = dense_kernel(model.h2).abs().sum(dim=(2, 3)) != 0  # (12, 12)
    assert connected.sum(1).tolist() == [8] * 12
    assert len({tuple(row.tolist()) for row in connected}) == 3  # three groups of four maps
    assert [len(set(H2_INPUTS[4 * g])) for g in range(3)] == [8, 8, 8]


@pytest.mark.parametrize(
    "name, layer, fan_in",
    [("lenet1989", "h1", 25), ("lenet1989", "h3", 192), ("lenet5", "c1", 25), ("lenet5", "f6", 120)],
)
def test_weights_start_uniform_within_the_fan_in_bound(name, layer, fan_in):
    weight = getattr(get_model(name), layer).weight
    bound = 2.4 / fan_in**0.5
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.9 * bound  # uniform over the whole interval, not a narrower init


def test_partial_conv_rejects_a_table_outside_its_inputs():
    with pytest.raises(ValueError, match=r"\[6\]"):
        PartialConv2d(6, ((0, 6),), 5)
