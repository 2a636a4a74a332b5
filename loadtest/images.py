"""Real photos from scikit-image, JPEG-encoded once, so the load generator spends no time encoding.

python -m loadtest.images samples/     # (make samples) the files README's curl examples send
"""

import io
import sys
from pathlib import Path

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


def write_samples(folder: Path) -> list[Path]:
    """cat.jpg and coffee.jpg (scikit-image's chelsea and coffee) and digit.png (an 8 from scikit-learn's
    handwritten digits, 8x8 scaled to 32x32 as lenet5 sees it)."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, name in (("cat.jpg", "chelsea"), ("coffee.jpg", "coffee")):
        paths.append(folder / file)
        paths[-1].write_bytes(jpeg(Image.fromarray(_rgb(name))))
    digits = load_digits()
    eight = digits.images[list(digits.target).index(8)]  # values 0..16
    digit = Image.fromarray((eight * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
    paths.append(folder / "digit.png")
    digit.save(paths[-1])
    return paths


if __name__ == "__main__":
    for path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "samples")):
        print(path)
