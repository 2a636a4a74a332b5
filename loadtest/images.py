"""Real photos from scikit-image, JPEG-encoded once, so the load generator spends no time encoding."""

import io

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")
SIZES = (224, 320, 512)  # short side in pixels: small, typical, large uploads


def _rgb(name: str) -> np.ndarray:
    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)  # (H, W) -> (H, W, 3)
    return array[..., :3]


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def photo_jpegs(names: tuple[str, ...] = PHOTOS, sizes: tuple[int, ...] = SIZES) -> dict[str, bytes]:
    """`{"chelsea@320": b"\\xff\\xd8...", ...}`: each photo resized to each short side, then encoded."""
    out = {}
    for name in names:
        image = Image.fromarray(_rgb(name))
        for short in sizes:
            scale = short / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            out[f"{name}@{short}"] = jpeg(image.resize(size, Image.Resampling.BILINEAR))
    return out
