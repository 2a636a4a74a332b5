"""Datasets for `models.train`: scikit-learn's digits and an image folder, preprocessed from the model card.

A dataset spec is a string: `digits`, or `imagefolder:PATH` where PATH holds `train/` and `val/`,
each with one folder per class. torchvision is not a dependency, so the transforms are written
here with PIL and torch; randomness comes from torch's generator, which DataLoader seeds per worker.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset, TensorDataset

from models.card import ModelCard

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_PIL_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass
class DataBundle:
    """What a trainer needs from a dataset: both splits and the class names in index order."""

    train: Dataset
    test: Dataset
    labels: list[str]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def normalize(x: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """(..., C, H, W) in [0, 1] -> standardized with the card's mean and std."""
    mean = torch.tensor(card.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(card.std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------- digits


def digits_split(seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train/test indices into `load_digits()` (80/20)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    return train_test_split(np.arange(len(target)), test_size=DIGITS_TEST_FRACTION, stratify=target, random_state=seed)


def digits_tensors(card: ModelCard) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, C, H, W) float32 at the card's size and normalization, and (N,) labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    channels, height, width = card.input_size
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    x = x.expand(-1, channels, -1, -1)  # (N, C, H, W): grey replicated where the net wants RGB
    return normalize(x, card).contiguous(), torch.from_numpy(digits.target).long()


class RandomAffine:
    """A small random rotation, scale and shift of a (C, H, W) tensor; uncovered pixels get `fill`, per channel."""

    def __init__(self, fill: torch.Tensor, degrees: float = 10.0, scale=(0.9, 1.1), translate: float = 0.1):
        self.fill = fill.view(-1, 1, 1)  # (C, 1, 1)
        self.degrees, self.scale, self.translate = degrees, scale, translate

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width = x.shape
        angle, zoom = math.radians(_uniform(-self.degrees, self.degrees)), _uniform(*self.scale)
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        shift_x, shift_y = (2 * _uniform(-self.translate, self.translate) for _ in range(2))  # in grid units
        # The sampling grid, output -> input, at pixel centres (what affine_grid gives, without a matmul).
        ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, dtype=x.dtype).view(-1, 1)  # (H, 1)
        xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, dtype=x.dtype).view(1, -1)  # (1, W)
        grid = torch.stack([cos * xs - sin * ys + shift_x, sin * xs + cos * ys + shift_y], dim=-1)  # (H, W, 2)
        shifted = F.grid_sample((x - self.fill)[None], grid[None], padding_mode="zeros", align_corners=False)[0]
        return shifted + self.fill


class TransformedTensors(Dataset):
    """In-memory (x, y) pairs with a transform applied to each x as it is drawn."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.x[index]), self.y[index]


def load_digits_bundle(card: ModelCard, augment: bool = True) -> DataBundle:
    x, y = digits_tensors(card)
    train_idx, test_idx = digits_split()
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    train_x, train_y = x[train_idx], y[train_idx]
    background = normalize(torch.zeros(card.input_size[0], 1, 1), card)  # blank paper, normalized
    return DataBundle(
        train=TransformedTensors(train_x, train_y, RandomAffine(background))
        if augment
        else TensorDataset(train_x, train_y),
        test=TensorDataset(x[test_idx], y[test_idx]),
        labels=[str(i) for i in range(10)],
    )


# ---------------------------------------------------------------------------- image folder


def _to_tensor(img: Image.Image, card: ModelCard) -> torch.Tensor:
    """PIL image -> normalized (C, H, W) float32."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return normalize(torch.from_numpy(array).permute(2, 0, 1).contiguous(), card)  # (C, H, W)


class TrainTransform:
    """Random resized crop, horizontal flip and colour jitter, as torchvision's ImageNet recipe."""

    def __init__(self, card: ModelCard, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), jitter: float = 0.4):
        self.card, self.scale, self.ratio, self.jitter = card, scale, ratio, jitter

    def _crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(torch.randint(0, width - w + 1, ()).item())
                top = int(torch.randint(0, height - h + 1, ()).item())
                return left, top, left + w, top + h
        side = min(width, height)  # fallback: the central square
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        _, height, width = self.card.input_size
        box = self._crop_box(*img.size)
        img = img.resize((width, height), _PIL_RESAMPLE[self.card.interpolation], box=box)
        if torch.rand(()).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.jitter > 0:
            enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast]
            if img.mode == "RGB":
                enhancers.append(ImageEnhance.Color)  # saturation
            for i in torch.randperm(len(enhancers)).tolist():
                img = enhancers[i](img).enhance(_uniform(1 - self.jitter, 1 + self.jitter))
        return _to_tensor(img, self.card)


class EvalTransform:
    """Resize the short side to the card's resize size, then center-crop to the input size."""

    def __init__(self, card: ModelCard):
        self.card = card

    def __call__(self, img: Image.Image) -> torch.Tensor:
        _, height, width = self.card.input_size
        short = self.card.resize_size
        w, h = img.size
        scale = short / min(w, h)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        img = img.resize((new_w, new_h), _PIL_RESAMPLE[self.card.interpolation])
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return _to_tensor(img.crop((left, top, left + width, top + height)), self.card)


class ImageFolder(Dataset):
    """root/<class>/<image>, classes sorted by name; `classes` fixes the label order when given."""

    def __init__(self, root: Path, transform, color_mode: str, classes: list[str] | None = None):
        root = Path(root)
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        self.classes = classes if classes is not None else found
        if not self.classes:
            raise ValueError(f"no class folders under {str(root)!r}")
        if unknown := sorted(set(found) - set(self.classes)):
            raise ValueError(f"{str(root)!r} has classes {unknown} that the training split lacks")
        self.samples = [
            (path, index)
            for index, name in enumerate(self.classes)
            if (root / name).is_dir()
            for path in sorted((root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise ValueError(f"no images under {str(root)!r} (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.transform, self.color_mode = transform, color_mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            return self.transform(img.convert(self.color_mode)), label


def load_imagefolder_bundle(root: str | Path, card: ModelCard, augment: bool = True) -> DataBundle:
    root = Path(root)
    color_mode = "L" if card.input_size[0] == 1 else "RGB"
    train = ImageFolder(root / "train", TrainTransform(card) if augment else EvalTransform(card), color_mode)
    test = ImageFolder(root / "val", EvalTransform(card), color_mode, classes=train.classes)
    return DataBundle(train=train, test=test, labels=list(train.classes))


# ---------------------------------------------------------------------------- spec


def data_kind(spec: str) -> str:
    """`digits` or `imagefolder`; raises on anything else."""
    kind = spec.split(":", 1)[0]
    if kind == "digits" and spec == "digits":
        return kind
    if kind == "imagefolder" and spec.partition(":")[2]:
        return kind
    raise ValueError(f"unknown data spec {spec!r}; expected 'digits' or 'imagefolder:PATH'")


def load_data(spec: str, card: ModelCard, augment: bool = True) -> DataBundle:
    """Both splits of the dataset named by `spec`, preprocessed for `card`; `augment` applies to training only."""
    if data_kind(spec) == "digits":
        return load_digits_bundle(card, augment)
    return load_imagefolder_bundle(spec.partition(":")[2], card, augment)
