"""Swin: sizes from the paper's architecture table, the shift mask, padding, torchvision at a small input."""

import pytest
import torch

from models import get_model
from models.swin_transformer import ShiftedWindowAttention, _relative_position_index, _shift_mask
from tests.models.deterministic import fill_state_dict, image_batch

# Section 3.3 of the paper: C, blocks per stage, heads per stage; window 7 everywhere.
ARCH = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}
# torchvision 0.29.1's swin_t(num_classes=10) under fill_state_dict, on image_batch(1, 3, 64, 64): at 64x64 the
# stages are 16, 8, 4, 2 wide, so every window is padded and the last two stages drop the shift.
TORCHVISION_64 = [1.487519, 0.376027, 0.384908, 0.816474, 0.086792, -0.514391, -0.75083, 0.759217, -0.142064, -0.873364]


def swin_params(c: int, depths, heads, chans: int = 3, classes: int = 1000) -> int:
    block = lambda d, h: 4 * d + (3 * d * d + 3 * d) + (d * d + d) + 13 * 13 * h + (8 * d * d + 5 * d)  # noqa: E731
    n = chans * 16 * c + c + 2 * c  # 4x4 patch embedding and its LayerNorm
    for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
        d = c * 2**i
        n += depth * block(d, h) + (8 * d * d + 8 * d if i < 3 else 0)  # blocks, then patch merging
    d = c * 8
    return n + 2 * d + d * classes + classes  # final LayerNorm and head


@pytest.mark.parametrize("name", sorted(ARCH))
def test_parameter_count_follows_the_architecture_table(name):
    with torch.device("meta"):
        model = get_model(name)
    assert sum(p.numel() for p in model.parameters()) == swin_params(*ARCH[name])


def test_relative_position_index():
    index = _relative_position_index(7).view(49, 49)
    assert int(index.min()) == 0 and int(index.max()) == 13 * 13 - 1
    assert (index.diagonal() == 6 * 13 + 6).all()  # zero offset sits at the centre of the table
    assert int(index[0, 48]) == 0 and int(index[48, 0]) == 13 * 13 - 1  # offsets (-6, -6) and (+6, +6)


def reference_mask(height: int, width: int, ws: int, shift: int) -> torch.Tensor:
    """torchvision's construction: label the nine regions by slice assignment, then compare labels per window."""
    labels, count = torch.zeros(height, width), 0
    for h in ((0, -ws), (-ws, -shift), (-shift, None)):
        for w in ((0, -ws), (-ws, -shift), (-shift, None)):
            labels[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    labels = labels.view(height // ws, ws, width // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = labels[:, None, :] - labels[:, :, None]
    return diff.masked_fill(diff != 0, -100.0)


@pytest.mark.parametrize(("height", "width"), [(14, 14), (21, 28), (56, 56)])
def test_shift_mask_matches_torchvisions_construction(height, width):
    ours = _shift_mask(height, width, 7, 3, 3, torch.device("cpu"))
    assert torch.equal(ours, reference_mask(height, width, 7, 3))


def changed_positions(attn: ShiftedWindowAttention, row: int, col: int) -> set[tuple[int, int]]:
    x = torch.randn(1, 14, 14, 8)
    y = x.clone()
    y[0, row, col] += 10.0
    with torch.no_grad():
        delta = (attn(y) - attn(x)).abs().amax(-1)[0]
    return {tuple(p) for p in (delta > 1e-6).nonzero().tolist()}


def test_shifted_windows_do_not_leak_across_the_wrap():
    torch.manual_seed(0)
    attn = ShiftedWindowAttention(8, num_heads=2, window_size=7, shift_size=3)
    square = lambda rows, cols: {(r, c) for r in rows for c in cols}  # noqa: E731
    # (0, 0) is rolled into the last window, next to rows and columns 10..13 that wrapped around; the mask keeps it
    # in its own 3x3 region
    assert changed_positions(attn, 0, 0) == square(range(3), range(3))
    # (5, 5) lies in the window that the shift moved to rows and columns 3..9
    assert changed_positions(attn, 5, 5) == square(range(3, 10), range(3, 10))
    attn.shift_size = 0
    assert changed_positions(attn, 0, 0) == square(range(7), range(7))


@pytest.mark.parametrize("size", [5, 7])
def test_no_shift_when_one_window_covers_the_map(size):
    torch.manual_seed(0)
    shifted = ShiftedWindowAttention(8, num_heads=2, window_size=7, shift_size=3)
    plain = ShiftedWindowAttention(8, num_heads=2, window_size=7, shift_size=0)
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, size, size, 8)
    with torch.no_grad():
        assert torch.equal(shifted(x), plain(x))
        assert shifted(x).shape == x.shape


def test_matches_torchvision_at_64x64():
    model = get_model("swin_t", num_classes=10).eval()
    fill_state_dict(model)
    with torch.no_grad():
        ours = model(image_batch(1, 3, 64, 64))[0].double()
    theirs = torch.tensor(TORCHVISION_64, dtype=torch.float64)
    assert (ours - theirs).norm() / theirs.norm() < 1e-4
