"""Image bytes to the model's input array, as torchvision's eval transforms do it on PIL images:
`Resize(resize_size)` (short side), `CenterCrop(crop_size)`, `ToTensor()`, `Normalize(mean, std)`.

Runs in the decode pool (service/frontend/decode_pool.py), before anything is queued, so a bad image fails only
its request. What an image may cost is bounded before its pixels are decoded: the header gives its
size and shape, and a JPEG is decoded at 1/2, 1/4 or 1/8 scale when that is still large enough. The
resize costs what its output does: for ordinary shapes it is torchvision's, pixel for pixel (the
intermediate is at most `EXACT_MAX_ASPECT` times the crop's size); a more elongated image resamples
only the region the crop keeps (`resize(box=...)`), so a 1 x 6000 PNG never becomes a 256 x 1,536,000
intermediate.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from modelrepo.schema import ModelConfig, Preprocessing, TensorSpec
from service.config import Settings
from service.errors import AspectRatioTooLarge, ImageTooLarge, InvalidImage, UnsupportedMediaType, shorten

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# JPEG draft mode (DCT scaling) only when it keeps at least this multiple of the target short side,
# so the final resize still filters from a larger image and the result stays close to torchvision's.
DRAFT_MARGIN = 2
# Up to this long:short ratio the whole image is resized, then cropped, exactly as torchvision does. Beyond
# it only the kept region is resampled: the same geometry, but PIL may then order its two passes
# differently, so a pixel can differ from torchvision's by a few levels.
EXACT_MAX_ASPECT = 4.0
# Compressed PNG chunks (zTXt, iTXt text, the iCCP colour profile) are inflated while the file is read:
# Pillow allows 1 MB each and 64 MB of text in all, which a 74 kB file fills in 170 ms of CPU. Nothing here
# reads them; at 256 kB the same file is refused in 0.6 ms. sRGB profiles are 3 kB, a printer's up to 1 MB.
PNG_CHUNK_BYTES = 256 * 1024


def configure_pillow() -> None:
    """Pillow's process-wide decoder limits, set once at start-up (the lifespan) rather than at import."""
    PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY = PNG_CHUNK_BYTES


@dataclass(frozen=True)
class ImageLimits:
    """What one image may ask of a decode worker; every check runs on the header, before decoding."""

    max_pixels: int  # width * height as stored
    max_decoded_pixels: int  # width * height as decoded (a JPEG after DCT scaling)
    max_aspect_ratio: float  # long side / short side

    @classmethod
    def from_settings(cls, settings: Settings) -> "ImageLimits":
        return cls(
            max_pixels=settings.max_image_pixels,
            max_decoded_pixels=settings.max_decoded_pixels,
            max_aspect_ratio=settings.max_image_aspect_ratio,
        )


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision's `Resize(int)`: short side to `short`, long side truncated to keep the aspect."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def center_crop_box(width: int, height: int, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """torchvision's `CenterCrop` offsets (left, top, right, bottom)."""
    left = round((width - crop_w) / 2.0)
    top = round((height - crop_h) / 2.0)
    return left, top, left + crop_w, top + crop_h


def crop_source_box(width: int, height: int, pre: Preprocessing) -> tuple[float, float, float, float]:
    """The region of a `width` x `height` image that `Resize` then `CenterCrop` keeps, in its own pixels:
    resampling it to the crop size maps every output pixel to the same source centre and filter support."""
    resized_w, resized_h = resized_size(width, height, pre.resize_size)
    left, top, right, bottom = center_crop_box(resized_w, resized_h, *pre.crop_size)
    sx, sy = width / resized_w, height / resized_h
    return left * sx, top * sy, right * sx, bottom * sy


class Preprocessor:
    """Callable: bytes -> (C, H, W) array of the input's dtype (float normalized, or uint8 when fused)."""

    def __init__(self, pre: Preprocessing, spec: TensorSpec, *, limits: ImageLimits):
        self.pre = pre
        self.limits = limits
        self.dtype = np.dtype(spec.dtype)
        channels = 3 if pre.color_mode == "RGB" else 1
        self.mean = np.asarray(pre.mean, dtype=np.float32).reshape(channels, 1, 1)
        self.std = np.asarray(pre.std, dtype=np.float32).reshape(channels, 1, 1)

    @classmethod
    def for_model(cls, config: ModelConfig, settings: Settings) -> "Preprocessor":
        return cls(config.preprocessing, config.input, limits=ImageLimits.from_settings(settings))

    def __call__(self, data: bytes) -> np.ndarray:
        return self.finish(self.to_pixels(self.open(data)))

    def finish(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(C, H, W) uint8 pixels -> the model's input: as they are when the graph normalizes, else normalized.
        Written into `out` (a shared-memory slot) when given: the engine reads it from there."""
        if self.pre.fused:
            x = pixels
        else:
            x = pixels.astype(np.float32) / np.float32(255.0)
            x = ((x - self.mean) / self.std).astype(self.dtype, copy=False)
        if out is None:
            return x
        np.copyto(out, x)
        return out

    def open(self, data: bytes) -> Image.Image:
        """Identify the format and check the image against the limits from its header; no pixel is decoded.
        A JPEG much larger than the model needs is set to decode at reduced scale, and is judged at that size."""
        if not data:
            raise InvalidImage("empty image")
        limits = self.limits
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"image is larger than {limits.max_pixels} pixels") from e
        except UnidentifiedImageError as e:
            raise UnsupportedMediaType(f"not a supported image; accepted: {', '.join(FORMATS)}") from e
        except MemoryError as e:
            raise ImageTooLarge("image header asks for more memory than an image may use") from e
        except Exception as e:  # a malformed header can raise nearly anything from a decoder plugin
            raise InvalidImage(f"cannot read image header: {shorten(str(e) or type(e).__name__, 200)}") from e
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImage(f"image is {width}x{height}")
        if width * height > limits.max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels, the limit is {limits.max_pixels}"
            )
        if max(width, height) > limits.max_aspect_ratio * min(width, height):
            raise AspectRatioTooLarge(
                f"image is {width}x{height}, an aspect ratio of {max(width, height) / min(width, height):.0f}:1; "
                f"the limit is {limits.max_aspect_ratio:g}:1"
            )
        if image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is much larger than needed.
            scale = DRAFT_MARGIN * self.pre.resize_size / min(width, height)
            if scale < 0.5:
                image.draft(self.pre.color_mode, (int(width * scale), int(height * scale)))
        decoded_w, decoded_h = image.size
        if decoded_w * decoded_h > limits.max_decoded_pixels:
            raise ImageTooLarge(
                f"a {width}x{height} {image.format} decodes to {decoded_w * decoded_h} pixels, the limit is "
                f"{limits.max_decoded_pixels} ({image.format} has no reduced-size decoding; send a JPEG or a "
                f"smaller image)"
            )
        return image

    def to_pixels(self, image: Image.Image) -> np.ndarray:
        """Decode (GIF and WebP: first frame only), orient by EXIF, convert, resize and crop: (C, H, W) uint8.
        Beside the decoded image, nothing here allocates more than `EXACT_MAX_ASPECT` x resize_size**2 pixels."""
        pre = self.pre
        crop_h, crop_w = pre.crop_size
        resample = _RESAMPLE[pre.interpolation]
        try:
            ImageOps.exif_transpose(image, in_place=True)  # decodes; copies only when it must rotate
            if image.mode != pre.color_mode:
                image = image.convert(pre.color_mode)
            width, height = image.size
            if max(width, height) <= EXACT_MAX_ASPECT * min(width, height):
                size = resized_size(width, height, pre.resize_size)
                if size != image.size:
                    image = image.resize(size, resample)
                image = image.crop(center_crop_box(*size, crop_h, crop_w))
            else:
                image = image.resize((crop_w, crop_h), resample, box=crop_source_box(width, height, pre))
        except MemoryError as e:
            raise ImageTooLarge("decoding the image needs more memory than an image may use") from e
        except Exception as e:  # corrupt or truncated data raises from deep inside the decoders
            raise InvalidImage(f"cannot decode image: {shorten(str(e) or type(e).__name__, 200)}") from e
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            return np.ascontiguousarray(pixels[None])  # (1, H, W)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)
