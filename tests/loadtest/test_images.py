import io

import numpy as np
from PIL import Image
from skimage import data

from loadtest.images import SIZES, photo_jpegs, write_samples


def test_photos_are_jpegs_at_each_short_side():
    photos = photo_jpegs(names=("chelsea",))
    assert list(photos) == [f"chelsea@{short}" for short in SIZES]
    for key, encoded in photos.items():
        with Image.open(io.BytesIO(encoded)) as image:
            assert image.format == "JPEG" and min(image.size) == int(key.split("@")[1])


def test_samples_are_the_files_the_readme_sends(tmp_path):
    paths = write_samples(tmp_path / "samples")
    assert [p.name for p in paths] == ["cat.jpg", "coffee.jpg", "digit.png"]
    with Image.open(paths[0]) as cat:
        assert cat.format == "JPEG" and cat.size == data.chelsea().shape[1::-1]
    with Image.open(paths[2]) as digit:
        assert digit.format == "PNG" and digit.size == (32, 32) and digit.mode == "L"
        assert np.asarray(digit).max() > 128  # ink, not a blank image
