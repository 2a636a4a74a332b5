"""The model zoo: every classic image-classification network, LeNet (1989) to Swin (2021).

Each family lives in its own module and registers its builders on import; they are
imported here, explicitly, so `import models` gives the whole zoo.
"""

from models import (  # noqa: F401  (imported for registration)
    alexnet,
    convnext,
    densenet,
    googlenet,
    inception,
    inception_bn,
    lenet,
    mobilenet,
    nin,
    resnet,
    senet,
    swin_transformer,
    vgg,
    vision_transformer,
    zfnet,
)
from models.card import ModelCard
from models.registry import UnknownModelError, get_card, get_model, list_models, register_model

__all__ = ["ModelCard", "UnknownModelError", "get_card", "get_model", "list_models", "register_model"]
