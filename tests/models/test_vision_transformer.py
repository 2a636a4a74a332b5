"""ViT: sizes from the paper's Table 1, the image_size argument, the class-token head."""

import pytest
import torch

from models import get_model

# Table 1 of the paper: (layers, hidden size D, MLP size, heads); the name gives the patch size.
TABLE_1 = {"vit_b_16": (12, 768, 3072, 12), "vit_b_32": (12, 768, 3072, 12), "vit_l_16": (24, 1024, 4096, 16)}


def vit_params(layers: int, d: int, mlp: int, patch: int, image: int = 224, chans: int = 3, classes: int = 1000) -> int:
    tokens = (image // patch) ** 2 + 1  # patches and the class token
    embed = chans * patch**2 * d + d + d + tokens * d  # patch projection, class token, position embeddings
    layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)  # 2 LN, qkv, out, MLP
    return embed + layers * layer + 2 * d + d * classes + classes  # final LN, head


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_parameter_count_follows_table_1(name):
    layers, d, mlp, heads = TABLE_1[name]
    with torch.device("meta"):
        model = get_model(name)
    assert sum(p.numel() for p in model.parameters()) == vit_params(layers, d, mlp, int(name[-2:]))
    blocks = list(model.encoder.layers)
    assert len(blocks) == layers and {b.self_attention.num_heads for b in blocks} == {heads}


@pytest.mark.parametrize(
    ("name", "image_size", "tokens"), [("vit_b_16", 64, 17), ("vit_b_32", 64, 5), ("vit_l_16", 384, 577)]
)
def test_image_size_sets_the_sequence_length(name, image_size, tokens):
    with torch.device("meta"):
        model = get_model(name, image_size=image_size)
        assert model.encoder.pos_embedding.shape[1] == tokens
        assert model.forward_features(torch.empty(2, 3, image_size, image_size)).shape[:2] == (2, tokens)


def test_bad_sizes_raise_value_errors():
    with pytest.raises(ValueError, match="100"):
        get_model("vit_b_16", image_size=100)
    with torch.device("meta"):
        model = get_model("vit_b_32", image_size=64)
        with pytest.raises(ValueError, match="image_size"):
            model(torch.empty(1, 3, 96, 96))


def test_head_reads_the_class_token_and_starts_at_zero():
    torch.manual_seed(0)
    model = get_model("vit_b_32", image_size=64, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), torch.zeros(2, 5))  # torchvision zero-initialises the head
        torch.nn.init.normal_(model.heads.head.weight)
        tokens = model.forward_features(x)
        tokens[:, 1:] = 0.0  # only the class token reaches the head
        assert torch.allclose(model.forward_head(tokens), model(x))
