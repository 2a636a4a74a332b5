"""AlexNet: torchvision's single-GPU variant (Krizhevsky, 2014) and the network as published (Krizhevsky et al., 2012).

Module names follow torchvision (`features`, `avgpool`, `classifier`), so its ImageNet
checkpoint loads into `alexnet` with strict=True. `alexnet_2012` keeps the paper's two-GPU
split as groups=2 on conv2, conv4 and conv5 (conv3 and the fully connected layers read both
halves), and its local response normalization after conv1 and conv2.
"""

import torch
from torch import nn

from models.registry import register_model

# Conv layers as (out_channels, kernel, stride, padding, groups); "N" = local response norm, "M" = 3x3/2 max pool.
cfgs: dict[str, list[tuple[int, int, int, int, int] | str]] = {
    "alexnet": [
        *((64, 11, 4, 2, 1), "M", (192, 5, 1, 2, 1), "M"),
        *((384, 3, 1, 1, 1), (256, 3, 1, 1, 1), (256, 3, 1, 1, 1), "M"),
    ],
    "alexnet_2012": [
        *((96, 11, 4, 0, 1), "N", "M", (256, 5, 1, 2, 2), "N", "M"),
        *((384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2), "M"),
    ],
}


def local_response_norm() -> nn.LocalResponseNorm:
    """The paper's normalization, b = a / (k + alpha * sum a^2)^beta over 5 maps, k=2, alpha=1e-4, beta=0.75.

    PyTorch (like Caffe) divides alpha by the window size, so the paper's alpha is 5 * 1e-4 here.
    """
    return nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def make_layers(cfg: list[tuple[int, int, int, int, int] | str], in_chans: int) -> nn.Sequential:
    """The convolutional trunk: every convolution followed by a ReLU, then norms and pools where the cfg says."""
    layers: list[nn.Module] = []
    channels = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        elif v == "N":
            layers.append(local_response_norm())
        else:
            out, kernel, stride, padding, groups = v
            layers += [nn.Conv2d(channels, out, kernel, stride, padding, groups=groups), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(*layers)


class AlexNet(nn.Module):
    def __init__(
        self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5, dropout_first: bool = True
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # the identity at the cards' input sizes
        fc6, fc7 = nn.Linear(256 * 6 * 6, 4096), nn.Linear(4096, 4096)
        if dropout_first:  # torchvision: dropout on the inputs of fc6 and fc7
            hidden = [nn.Dropout(dropout), fc6, nn.ReLU(inplace=True), nn.Dropout(dropout), fc7, nn.ReLU(inplace=True)]
        else:  # the paper (and Caffe's reference model): dropout on the outputs of fc6 and fc7
            hidden = [fc6, nn.ReLU(inplace=True), nn.Dropout(dropout), fc7, nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.classifier = nn.Sequential(*hidden, nn.Linear(4096, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256, 6, 6) at the card's input size

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 256 * 6 * 6)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(model: AlexNet) -> None:
    """torchvision's VGG init: He-normal (fan-out) convolutions, N(0, 0.01) linear layers, zero biases.

    The paper's own (N(0, 0.01) everywhere, biases of 1 in conv2, conv4, conv5, fc6 and fc7) suits
    its SGD at lr 0.01; under AdamW at lr 1e-4 (the zoo's training smoke test) the loss oscillated
    (1.9, 3.2, 3.3, 1.7, 2.6, 2.7) instead of falling, so we do not use it.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _build(variant: str, num_classes: int, in_chans: int, dropout: float) -> AlexNet:
    published = variant == "alexnet_2012"
    model = AlexNet(make_layers(cfgs[variant], in_chans), num_classes, dropout, dropout_first=not published)
    if published:
        _init_weights(model)
    return model  # torchvision's AlexNet keeps PyTorch's default init


_CARD = dict(family="alexnet", interpolation="bilinear")


@register_model(
    **_CARD,
    year=2014,
    paper="One weird trick for parallelizing convolutional neural networks",
    crop_pct=224 / 256,
    weights_url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """torchvision's AlexNet, "One weird trick for parallelizing convolutional neural networks", 2014."""
    return _build("alexnet", num_classes, in_chans, dropout)


@register_model(
    **_CARD,
    year=2012,
    paper="ImageNet Classification with Deep Convolutional Neural Networks",
    input_size=(3, 227, 227),
    crop_pct=227 / 256,
)
def alexnet_2012(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet as published, "ImageNet Classification with Deep Convolutional Neural Networks", 2012."""
    return _build("alexnet_2012", num_classes, in_chans, dropout)
