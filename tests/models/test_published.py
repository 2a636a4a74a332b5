from models import get_card, list_models
from models.published import IMAGENET_ACCURACY, published_accuracy


def test_every_torchvision_checkpoint_has_its_published_accuracy_on_its_card():
    with_weights = [get_card(name) for name in list_models() if get_card(name).weights_url]
    assert len(with_weights) == len(IMAGENET_ACCURACY)
    for card in with_weights:
        accuracy = card.published_accuracy
        assert 50 < accuracy["imagenet_top1"] < accuracy["imagenet_top5"] < 100, card.name


def test_the_figure_belongs_to_the_checkpoint_not_the_architecture():
    assert get_card("resnet50").published_accuracy == {"imagenet_top1": 80.858, "imagenet_top5": 95.434}  # V2
    assert published_accuracy("https://download.pytorch.org/models/resnet50-0676ba61.pth") == {}  # V1: not ours
    assert get_card("lenet5").published_accuracy == {} and published_accuracy(None) == {}
