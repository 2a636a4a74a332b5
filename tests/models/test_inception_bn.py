"""BN-Inception: the parameter count derived by hand from the paper's Figure 5 table.

Every convolution is followed by batch norm and has no bias, so a k x k conv from c_in to
c_out channels holds k*k*c_in*c_out weights plus 2*c_out (BN's scale and shift; the running
statistics are buffers, not parameters). The fc layer is 1024*1000 + 1000. A module
(#1x1 a, #3x3 reduce b_r, #3x3 b, double reduce d_r, double #3x3 d, pool proj p) on c_in
channels holds

    (c_in*a + 2a) + (c_in*b_r + 2b_r) + (9*b_r*b + 2b)
    + (c_in*d_r + 2d_r) + (9*d_r*d + 2d) + (9*d*d + 2d) + (c_in*p + 2p)

and outputs a + b + d + p channels, or a + b + d + c_in for a pass-through module
(3c, 4e), which has a = p = 0. Summing the branches of the table gives 608 channels out of
4c and 4d (the table's output column prints 576) and 1056 out of 4e (printed 1024), as in
the released Caffe model. Stem: 7x7 conv 3->64 (9,536), 1x1 64->64 (4,224), 3x3 64->192
(110,976). Per module, 3a..5b: 219,072; 260,160; 385,088; 609,984; 665,344; 914,432;
1,142,912; 1,449,984; 2,208,896; 2,279,616. fc: 1,025,000. Total: 11,285,224.
"""

import torch

from models import get_model

# Figure 5, transcribed independently of models/inception_bn.py: (#1x1, #3x3 reduce, #3x3,
# double #3x3 reduce, double #3x3, pool proj), pool proj 0 = pass through.
TABLE = {
    "inception3a": (64, 64, 64, 64, 96, 32),
    "inception3b": (64, 64, 96, 64, 96, 64),
    "inception3c": (0, 128, 160, 64, 96, 0),
    "inception4a": (224, 64, 96, 96, 128, 128),
    "inception4b": (192, 96, 128, 96, 128, 128),
    "inception4c": (160, 128, 160, 128, 160, 128),
    "inception4d": (96, 128, 192, 160, 192, 128),
    "inception4e": (0, 128, 192, 192, 256, 0),
    "inception5a": (352, 192, 320, 160, 224, 128),
    "inception5b": (352, 192, 320, 192, 224, 128),
}
PER_MODULE = [219_072, 260_160, 385_088, 609_984, 665_344, 914_432, 1_142_912, 1_449_984, 2_208_896, 2_279_616]
TOTAL = 11_285_224


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + 2 * c_out


def derived() -> tuple[dict[str, int], dict[str, int]]:
    """Parameters and output channels of each module, from the table alone."""
    params, channels, c_in = {}, {}, 192
    for name, (a, b_r, b, d_r, d, p) in TABLE.items():
        params[name] = (
            (conv(1, c_in, a) if a else 0)
            + conv(1, c_in, b_r)
            + conv(3, b_r, b)
            + conv(1, c_in, d_r)
            + conv(3, d_r, d)
            + conv(3, d, d)
            + (conv(1, c_in, p) if p else 0)
        )
        c_in = channels[name] = a + b + d + (p or c_in)
    return params, channels


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_derivation_adds_up():
    params, channels = derived()
    assert list(params.values()) == PER_MODULE
    stem = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    assert stem == 124_736
    assert stem + sum(PER_MODULE) + channels["inception5b"] * 1000 + 1000 == TOTAL


def test_parameter_count_is_derived_from_the_table():
    with torch.device("meta"):
        model = get_model("inception_bn")
    params, channels = derived()
    assert {name: count(getattr(model, name)) for name in TABLE} == params
    assert {name: getattr(model, name).out_channels for name in TABLE} == channels
    assert count(model) == TOTAL


def test_batch_norm_after_every_conv_and_no_dropout():
    with torch.device("meta"):
        model = get_model("inception_bn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 3 + 8 * 7 + 2 * 5  # stem; 7 convs a module, 5 in 3c and 4e
    assert all(c.bias is None for c in convs)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_grid_sizes_at_224():
    shapes = {}
    with torch.device("meta"):
        model = get_model("inception_bn").eval()
        for name in ("inception3b", "inception3c", "inception4d", "inception4e", "inception5b"):
            getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.update({name: out.shape}))
        assert model(torch.empty(1, 3, 224, 224)).shape == (1, 1000)
    assert shapes == {
        "inception3b": (1, 320, 28, 28),
        "inception3c": (1, 576, 14, 14),
        "inception4d": (1, 608, 14, 14),
        "inception4e": (1, 1056, 7, 7),
        "inception5b": (1, 1024, 7, 7),
    }
