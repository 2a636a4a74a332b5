import pytest
from torch import nn

import models
from models.registry import UnknownModelError, get_card, get_model, list_models, register_model

REQUIRED = [
    "lenet1989",
    "lenet5",
    "alexnet",
    "alexnet_2012",
    "zfnet",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "nin",
    "googlenet",
    "inception_bn",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "se_resnet50",
    "mobilenet_v1",
    "mobilenet_v2",
    "vit_b_16",
    "vit_b_32",
    "vit_l_16",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "swin_t",
    "swin_s",
    "swin_b",
]


def test_every_required_name_is_registered():
    assert sorted(REQUIRED) == list_models()


def test_list_models_filters_with_a_glob():
    assert list_models("resnet*") == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]
    assert list_models("no_such_*") == []


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        get_model("resnet5O")
    with pytest.raises(UnknownModelError, match="resnet50"):
        get_card("resnt50")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model(family="resnet", year=2015, paper="x")(models.resnet.resnet18)


def test_get_model_passes_builder_kwargs():
    model = get_model("lenet5", num_classes=7)
    assert isinstance(model, nn.Module)
    assert get_card("lenet5", num_classes=7).num_classes == 7
    assert get_card("lenet5").num_classes == 10  # the registered card is untouched


@pytest.mark.parametrize("name", list_models())
def test_card_is_complete(name):
    card = get_card(name)
    assert card.name == name
    assert 1989 <= card.year <= 2022
    assert card.paper and card.family
    assert card.resize_size >= card.input_size[1]


def test_bad_card_is_rejected():
    with pytest.raises(ValueError, match="interpolation"):
        register_model(family="x", year=2000, paper="x", interpolation="lanczos9")(lambda: None)
