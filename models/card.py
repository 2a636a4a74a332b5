"""The model card: everything a consumer needs to feed a network, kept as frozen data.

Export writes the card next to the ONNX file and the service preprocesses from it,
so preprocessing is described once, here, and nowhere else.
"""

from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class ModelCard:
    """Facts about one registered network; `name` is the registry key."""

    name: str
    family: str
    year: int
    paper: str
    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875  # resize the short side to H / crop_pct, then center-crop H x W
    num_classes: int = 1000
    label_set: str = "imagenet"
    # torchvision's published ImageNet checkpoint, when there is one; the card's
    # preprocessing matches the transforms that checkpoint was evaluated with.
    weights_url: str | None = None
    weights_kwargs: dict = field(default_factory=dict)  # builder kwargs that checkpoint needs
    # torchvision's published ImageNet top-1/top-5 of that checkpoint (models/published.py), for the card and page.
    published_accuracy: dict = field(default_factory=dict)

    def __post_init__(self):
        channels = self.input_size[0]
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ValueError(f"{self.name}: input_size must be (C, H, W), got {self.input_size}")
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean/std need {channels} values, got {self.mean} / {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"{self.name}: interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"{self.name}: crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def resize_size(self) -> int:
        """Short side before the center crop, as torchvision's eval transforms compute it."""
        return round(self.input_size[1] / self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)
