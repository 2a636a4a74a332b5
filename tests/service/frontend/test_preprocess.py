import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin
from PIL.JpegImagePlugin import JpegImageFile

from modelrepo.schema import Preprocessing, TensorSpec
from service.errors import AspectRatioTooLarge, ImageTooLarge, InvalidImage, ServiceError, UnsupportedMediaType
from service.frontend.preprocess import (
    EXACT_MAX_ASPECT,
    ImageLimits,
    Preprocessor,
    center_crop_box,
    configure_pillow,
    resized_size,
)
from tests.service.conftest import IMAGENET_MEAN, IMAGENET_STD, image_bytes


def make(
    color_mode="RGB",
    crop=(16, 16),
    resize=18,
    fused=False,
    max_pixels=10_000_000,
    max_decoded_pixels=10_000_000,
    max_aspect_ratio=20.0,
    interpolation="bilinear",
):
    channels = 3 if color_mode == "RGB" else 1
    pre = Preprocessing(
        color_mode=color_mode,
        resize_size=resize,
        crop_size=crop,
        interpolation=interpolation,
        mean=IMAGENET_MEAN[:channels] if channels == 3 else (0.5,),
        std=IMAGENET_STD[:channels] if channels == 3 else (0.5,),
        fused=fused,
    )
    spec = TensorSpec(name="input", dtype="uint8" if fused else "float32", shape=(-1, channels, *crop))
    limits = ImageLimits(max_pixels, max_decoded_pixels, max_aspect_ratio)
    return Preprocessor(pre, spec, limits=limits)


def test_torchvision_resize_and_crop_arithmetic():
    # torchvision: Resize(256) on 640x480 gives 341x256; CenterCrop(224) offsets round half to even.
    assert resized_size(640, 480, 256) == (341, 256)
    assert resized_size(480, 640, 256) == (256, 341)
    assert center_crop_box(341, 256, 224, 224) == (58, 16, 282, 240)


@pytest.mark.parametrize("size", [(40, 20), (20, 40), (18, 18), (500, 300)])
def test_output_shape_and_dtype(size):
    x = make()(image_bytes(size=size))
    assert x.shape == (3, 16, 16)
    assert x.dtype == np.float32


def test_resize_then_center_crop_picks_the_middle():
    # 60x20 image: left third red, middle green, right blue. Resize short side to 18 -> 54x18, crop 16 -> all green.
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 255, 0), (20, 0, 40, 20))
    image.paste((0, 0, 255), (40, 0, 60, 20))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    x = make(fused=True, crop=(16, 16), resize=18, interpolation="nearest")(buf.getvalue())
    assert (x[1] == 255).all() and (x[0] == 0).all() and (x[2] == 0).all()


def test_normalization_matches_hand_computation():
    color = (200, 100, 50)
    x = make()(image_bytes(color=color))
    for c in range(3):
        expected = (color[c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[c], expected, rtol=1e-6, atol=1e-6)


def test_fused_returns_uint8_pixels():
    x = make(fused=True)(image_bytes(color=(200, 100, 50)))
    assert x.dtype == np.uint8
    assert x.shape == (3, 16, 16)
    assert tuple(x[:, 0, 0]) == (200, 100, 50)


def test_exif_orientation_is_applied():
    # Stored 20x10 landscape, left half red, right half blue; orientation 6 displays it rotated 90 degrees clockwise,
    # so the displayed image is 10x20 portrait with red on top.
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    image.paste((0, 0, 255), (10, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, exif=exif)
    x = make(fused=True, crop=(16, 8), resize=8)(buf.getvalue())  # 10x20 -> 8x16: nothing cropped
    assert x[0, 1, 4] > 200 and x[2, 1, 4] < 50  # top is red
    assert x[2, 14, 4] > 200 and x[0, 14, 4] < 50  # bottom is blue


def test_grayscale_uses_pil_luminance():
    color = (200, 100, 50)
    luminance = Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0))
    x = make(color_mode="L", crop=(8, 8), resize=8)(image_bytes(color=color))
    assert x.shape == (1, 8, 8)
    np.testing.assert_allclose(x, (luminance / 255 - 0.5) / 0.5, rtol=1e-6)


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    x = make(fused=True)(buf.getvalue())
    assert x[0].min() > 240 and x[1].max() < 15


def test_png_alpha_is_dropped_like_torchvision():
    x = make(fused=True)(image_bytes(color=(10, 20, 30, 0), mode="RGBA"))
    assert tuple(x[:, 5, 5]) == (10, 20, 30)


def test_webp_and_bmp_are_accepted():
    for fmt in ("WEBP", "BMP"):
        assert make()(image_bytes(fmt=fmt)).shape == (3, 16, 16)


def test_truncated_jpeg_is_invalid():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    data = buf.getvalue()
    with pytest.raises(InvalidImage):
        make()(data[: len(data) // 2])


def test_decompression_bomb_rejected_before_decoding(monkeypatch):
    bomb = image_bytes(color=0, size=(5000, 5000), mode="1")  # 25 M pixels in a few kB

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageTooLarge, match="25000000"):
        make(max_pixels=1_000_000)(bomb)


@pytest.mark.parametrize("data", [image_bytes(fmt="TIFF"), b"GIF-but-not-really", b"\x00" * 100])
def test_unsupported_formats(data):
    with pytest.raises(UnsupportedMediaType):
        make()(data)


def test_empty_body_is_invalid():
    with pytest.raises(InvalidImage):
        make()(b"")


def test_jpeg_draft_mode_for_large_images(monkeypatch):
    calls = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    x = make(fused=True)(image_bytes(color=(0, 0, 255), size=(400, 300), fmt="JPEG", quality=95))
    assert calls and min(calls[0]) >= 2 * 18  # decoded at reduced scale, still twice the target short side
    assert x[2].min() > 230 and x[0].max() < 25
    calls.clear()
    make()(image_bytes(size=(40, 30), fmt="JPEG"))
    assert calls == []  # small images are decoded at full size


def reference(image: Image.Image, resize: int, crop: int, resample) -> np.ndarray:
    """torchvision's eval geometry, spelled out: resize the whole image, then center-crop."""
    size = resized_size(*image.size, resize)
    return np.asarray(image.resize(size, resample).crop(center_crop_box(*size, crop, crop)), dtype=np.int16)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_ordinary_shapes_are_torchvision_exact(interpolation):
    rng = np.random.default_rng(0)
    for _ in range(20):
        short = int(rng.integers(10, 120))
        long = int(rng.integers(short, int(short * EXACT_MAX_ASPECT) + 1))
        w, h = (short, long) if rng.random() < 0.5 else (long, short)
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = make(fused=True, crop=(16, 16), resize=18, interpolation=interpolation)(png(noise))
        expected = reference(Image.fromarray(noise), 18, 16, Image.Resampling[interpolation.upper()])
        np.testing.assert_array_equal(x.transpose(1, 2, 0), expected)


def test_elongated_images_resample_only_the_region_the_crop_keeps(monkeypatch):
    sizes = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    smooth = np.linspace(0, 255, 600 * 20 * 3).reshape(600, 20, 3).astype(np.uint8)  # 20 x 600: aspect 30
    x = make(fused=True, max_aspect_ratio=100)(png(smooth))
    assert sizes == [(16, 16)]  # never the 18 x 540 whole-image resize
    monkeypatch.setattr(Image.Image, "resize", original)
    expected = reference(Image.fromarray(smooth), 18, 16, Image.Resampling.BILINEAR)
    assert np.abs(x.transpose(1, 2, 0).astype(np.int16) - expected).max() <= 2


@pytest.mark.parametrize("size", [(1, 6000), (6000, 1), (21, 1)])
def test_extreme_aspect_ratios_are_refused_from_the_header(monkeypatch, size):
    data = image_bytes(size=size)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    with pytest.raises(AspectRatioTooLarge, match="limit is 20:1"):
        make()(data)


def test_an_aspect_ratio_at_the_limit_is_served():
    assert make()(image_bytes(size=(20, 1))).shape == (3, 16, 16)


def test_decoded_size_is_judged_after_jpeg_dct_scaling():
    limited = make(max_decoded_pixels=100_000)
    with pytest.raises(ImageTooLarge, match="PNG has no reduced-size decoding"):
        limited(image_bytes(size=(400, 400)))  # 160,000 pixels, decoded in full
    x = limited(image_bytes(size=(400, 400), fmt="JPEG"))  # decoded at 1/4 scale: 10,000 pixels
    assert x.shape == (3, 16, 16)


@pytest.mark.parametrize(("error", "expected"), [(MemoryError, ImageTooLarge), (OverflowError, InvalidImage)])
def test_decoder_failures_are_client_errors(monkeypatch, error, expected):
    def fail(self):
        raise error("from the decoder")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(expected):
        make()(image_bytes())


def test_png_text_chunks_cannot_inflate_megabytes(monkeypatch):
    for name in ("MAX_TEXT_MEMORY", "MAX_TEXT_CHUNK"):
        monkeypatch.setattr(PngImagePlugin, name, getattr(PngImagePlugin, name))  # restored afterwards
    configure_pillow()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    plain = image_bytes(size=(8, 8))

    def with_text(kilobytes: int, chunks: int) -> bytes:
        bomb = zlib.compress(b"A" * kilobytes * 1024, 9)  # a kilobyte of text in about a byte
        texts = b"".join(chunk(b"zTXt", b"k%d\x00\x00" % i + bomb) for i in range(chunks))
        return plain[:33] + texts + plain[33:]  # after the signature and IHDR

    with pytest.raises(InvalidImage, match="MAX_TEXT_CHUNK"):
        make()(with_text(500, 1))
    with pytest.raises(InvalidImage, match="MAX_TEXT_MEMORY"):
        make()(with_text(200, 10))
    assert make()(with_text(10, 2)).shape == (3, 16, 16)  # modest text is fine


def mutations(data: bytes, rng: np.random.Generator, count: int):
    for _ in range(count):
        mutated = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:  # flip bytes
            for i in rng.integers(0, len(mutated), size=int(rng.integers(1, 8))):
                mutated[i] = int(rng.integers(256))
        elif kind == 1:  # truncate
            mutated = mutated[: int(rng.integers(1, len(mutated)))]
        else:  # duplicate a slice
            start = int(rng.integers(len(mutated)))
            mutated[start:start] = mutated[start : start + int(rng.integers(1, 64))]
        yield bytes(mutated)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_corrupted_images_only_ever_raise_client_errors(fmt):
    """A small fuzz: whatever a mutated file does inside a decoder, the client gets a 4xx, never a 500."""
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))
    noise = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, fmt)
    preprocess = make()
    for data in mutations(buf.getvalue(), rng, 150):
        try:
            assert preprocess(data).shape == (3, 16, 16)
        except ServiceError as e:
            assert 400 <= e.status_code < 500, e
