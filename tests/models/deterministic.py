"""Weights and inputs that are the same in any torch version, with no RNG.

The torchvision fixture is generated in a throwaway venv (torchvision installed) and
checked in CI (no torchvision): both sides fill the same state-dict keys with these
values, so the stored torchvision logits can be compared with ours.
"""

import zlib

import torch


def hash_uniform(n: int, seed: int) -> torch.Tensor:
    """n values in [0, 1), from the classic sin-hash, computed in float64."""
    i = torch.arange(n, dtype=torch.float64)
    v = torch.sin(i * 12.9898 + (seed % 100_003) * 78.233) * 43758.5453
    return v - torch.floor(v)


def fill_state_dict(module: torch.nn.Module) -> None:
    """Overwrite every float tensor of the state dict with values derived from its key.

    Matrices get variance 1/fan_in; norm scales sit near 1, running variances in
    [0.5, 1.5), biases and other vectors near 0.
    """
    state = module.state_dict()
    for key, t in state.items():
        if not t.is_floating_point():
            continue
        u = hash_uniform(t.numel(), zlib.crc32(key.encode())).view(t.shape)
        is_vector = t.dim() < 2 or all(s == 1 for s in t.shape[1:])
        if not is_vector:
            fan_in = t.numel() // t.shape[0]
            v = (2 * u - 1) * (3.0 / fan_in) ** 0.5
        elif key.endswith("running_var"):
            v = 0.5 + u
        elif key.endswith("weight"):
            v = 1.0 + 0.1 * (2 * u - 1)
        else:
            v = 0.1 * (2 * u - 1)
        state[key] = v.to(t.dtype)
    module.load_state_dict(state)


def image_batch(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """A normalized-image-like batch in [-1.7, 1.7)."""
    u = hash_uniform(batch * channels * height * width, seed=1234)
    return ((2 * u - 1) * 1.7).float().view(batch, channels, height, width)
