"""Image bytes to the model's input array, as torchvision's eval transforms do it on PIL images:
`Resize(resize_size)` (short side), `CenterCrop(crop_size)`, `ToTensor()`, `Normalize(mean, std)`.

Runs in the decode thread pool, before anything is queued, so a bad image fails only its request.
"""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from service.model_config import Preprocessing, TensorSpec

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# JPEG draft mode (DCT scaling) only when it keeps at least this multiple of the target short side,
# so the final resize still filters from a larger image and the result stays close to torchvision's.
DRAFT_MARGIN = 2


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


class Preprocessor:
    """Callable: bytes -> (C, H, W) array of the input's dtype (float normalized, or uint8 when fused)."""

    def __init__(self, pre: Preprocessing, spec: TensorSpec, *, max_pixels: int):
        self.pre = pre
        self.max_pixels = max_pixels
        self.dtype = np.dtype(spec.dtype)
        channels = 3 if pre.color_mode == "RGB" else 1
        self.mean = np.asarray(pre.mean, dtype=np.float32).reshape(channels, 1, 1)
        self.std = np.asarray(pre.std, dtype=np.float32).reshape(channels, 1, 1)

    def __call__(self, data: bytes) -> np.ndarray:
        image = self.open(data)
        pixels = self.to_pixels(image)  # (C, H, W) uint8
        if self.pre.fused:
            return pixels
        x = pixels.astype(np.float32) / np.float32(255.0)
        x = (x - self.mean) / self.std
        return x.astype(self.dtype, copy=False)

    def open(self, data: bytes) -> Image.Image:
        """Identify the format and check the size from the header; no pixel is decoded yet."""
        if not data:
            raise InvalidImage("empty image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"image is larger than {self.max_pixels} pixels") from e
        except UnidentifiedImageError as e:
            raise UnsupportedMediaType(f"not a supported image; accepted: {', '.join(FORMATS)}") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise InvalidImage(f"cannot read image header: {e}") from e
        width, height = image.size
        if width * height > self.max_pixels:
            raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels, the limit is {self.max_pixels}")
        if width < 1 or height < 1:
            raise InvalidImage(f"image is {width}x{height}")
        return image

    def to_pixels(self, image: Image.Image) -> np.ndarray:
        pre = self.pre
        mode = pre.color_mode
        try:
            if image.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is much larger than needed.
                width, height = image.size
                scale = DRAFT_MARGIN * pre.resize_size / min(width, height)
                if scale < 0.5:
                    image.draft(mode, (int(width * scale), int(height * scale)))
            image = ImageOps.exif_transpose(image)  # decodes; GIF and WebP stay on their first frame
            image = image.convert(mode)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise InvalidImage(f"cannot decode image: {e}") from e

        size = resized_size(*image.size, pre.resize_size)
        if size != image.size:
            image = image.resize(size, _RESAMPLE[pre.interpolation])
        crop_h, crop_w = pre.crop_size
        image = image.crop(center_crop_box(*image.size, crop_h, crop_w))
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            return np.ascontiguousarray(pixels[None])  # (1, H, W)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)
