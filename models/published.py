"""torchvision's published ImageNet-1K accuracy (top-1, top-5, %) of each checkpoint a card's weights_url names, as
torchvision's weights metadata gives it (torchvision 0.29.1, commit 1f1a920d, `_metrics["ImageNet-1K"]`), keyed by
the checkpoint's file name: the figure belongs to the exact weights, not to the architecture."""

from pathlib import PurePosixPath

IMAGENET_ACCURACY: dict[str, tuple[float, float]] = {
    "alexnet-owt-7be5be79.pth": (56.522, 79.066),
    "convnext_base-6075fbad.pth": (84.062, 96.87),
    "convnext_large-ea097f82.pth": (84.414, 96.976),
    "convnext_small-0c510722.pth": (83.616, 96.65),
    "convnext_tiny-983f1562.pth": (82.52, 96.146),
    "densenet121-a639ec97.pth": (74.434, 91.972),
    "densenet161-8d451a50.pth": (77.138, 93.56),
    "densenet169-b2777c0a.pth": (75.6, 92.806),
    "densenet201-c1103571.pth": (76.896, 93.37),
    "googlenet-1378be20.pth": (69.778, 89.53),
    "inception_v3_google-0cc3c7bd.pth": (77.294, 93.45),
    "mobilenet_v2-7ebf99e0.pth": (72.154, 90.822),
    "resnet101-cd907fc2.pth": (81.886, 95.78),
    "resnet152-f82ba261.pth": (82.284, 96.002),
    "resnet18-f37072fd.pth": (69.758, 89.078),
    "resnet34-b627a593.pth": (73.314, 91.42),
    "resnet50-11ad3fa6.pth": (80.858, 95.434),
    "swin_b-68c6b09e.pth": (83.582, 96.64),
    "swin_s-5e29d889.pth": (83.196, 96.36),
    "swin_t-704ceda3.pth": (81.474, 95.776),
    "vgg11-8a719046.pth": (69.02, 88.628),
    "vgg11_bn-6002323d.pth": (70.37, 89.81),
    "vgg13-19584684.pth": (69.928, 89.246),
    "vgg13_bn-abd245e5.pth": (71.586, 90.374),
    "vgg16-397923af.pth": (71.592, 90.382),
    "vgg16_bn-6c64b313.pth": (73.36, 91.516),
    "vgg19-dcbb9e9d.pth": (72.376, 90.876),
    "vgg19_bn-c79401a0.pth": (74.218, 91.842),
    "vit_b_16-c867db91.pth": (81.072, 95.318),
    "vit_b_32-d86f8d99.pth": (75.912, 92.466),
    "vit_l_16-852ce7e3.pth": (79.662, 94.638),
}


def published_accuracy(weights_url: str | None) -> dict[str, float]:
    """`{"imagenet_top1": ..., "imagenet_top5": ...}` for the checkpoint at `weights_url`; empty if none is known."""
    if not weights_url:
        return {}
    found = IMAGENET_ACCURACY.get(PurePosixPath(weights_url).name)
    return {} if found is None else {"imagenet_top1": found[0], "imagenet_top5": found[1]}
