"""The training script: digits and image-folder data, checkpoints and resume, DDP on CPU, accuracy on digits."""

import os
import socket
from collections import Counter

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from models import get_card
from models.card import ModelCard
from models.data import EvalTransform, RandomAffine, TrainTransform, data_kind, digits_split, digits_tensors
from models.train import TrainConfig, main, train

CKPT_KEYS = {"model", "card", "metrics", "epoch", "optimizer", "scheduler", "command", "data", "labels"}


def _config(tmp_path, **overrides) -> TrainConfig:
    """A short lenet1989 run on digits; `overrides` change any field."""
    fields = dict(model="lenet1989", output=str(tmp_path / "ckpt"), epochs=2, progress=False, command=["test"])
    return TrainConfig(**(fields | overrides))


# ---------------------------------------------------------------------------- digits data


def test_digits_tensors_have_the_card_shape_and_normalization():
    card = ModelCard(name="t", family="t", year=0, paper="t", input_size=(3, 12, 10), mean=(0.1, 0.2, 0.3),
                     std=(0.5, 0.25, 2.0))  # fmt: skip
    x, y = digits_tensors(card)
    assert x.shape == (1797, 3, 12, 10) and x.dtype == torch.float32
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    mean, std = torch.tensor(card.mean).view(3, 1, 1), torch.tensor(card.std).view(3, 1, 1)
    raw = x * std + mean  # back to [0, 1]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert torch.allclose(raw.amin(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)  # background is 0
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6) and torch.allclose(raw[:, 0], raw[:, 2], atol=1e-5)

    grey = digits_tensors(get_card("lenet5"))[0]
    assert grey.shape == (1797, 1, 32, 32)
    assert torch.isclose(grey.min(), torch.tensor(-1.0))  # (0 - 0.5) / 0.5


def test_digits_split_is_fixed_disjoint_and_stratified():
    train_idx, test_idx = digits_split()
    again_train, again_test = digits_split()
    assert np.array_equal(train_idx, again_train) and np.array_equal(test_idx, again_test)
    assert len(train_idx) == 1437 and len(test_idx) == 360
    assert not set(train_idx) & set(test_idx) and set(train_idx) | set(test_idx) == set(range(1797))
    _, y = digits_tensors(get_card("lenet1989"))
    everywhere, held_out = Counter(y.tolist()), Counter(y[test_idx].tolist())
    for label, count in everywhere.items():
        assert abs(held_out[label] - 0.2 * count) <= 1, label


def test_random_affine_keeps_identity_and_fills_with_the_background():
    x = torch.randn(2, 12, 12)
    fill = torch.tensor([-1.0, 3.0])
    assert torch.allclose(RandomAffine(fill, degrees=0, scale=(1, 1), translate=0)(x), x, atol=1e-5)
    moved = RandomAffine(fill, degrees=0, scale=(0.2, 0.2), translate=0)(x)  # shrunk to a fifth: mostly blank
    assert torch.equal(moved[:, 0, 0], fill) and torch.equal(moved[:, -1, -1], fill)


def test_bad_data_spec_raises():
    for spec in ("mnist", "imagefolder", "imagefolder:", "digits:x"):
        with pytest.raises(ValueError, match="data spec"):
            data_kind(spec)


# ---------------------------------------------------------------------------- a short run, checkpoints, resume


def test_short_run_lowers_the_loss_checkpoints_and_resumes(tmp_path):
    result = train(_config(tmp_path))
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert result["test_acc"] > 0.5

    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "ckpt" / name, weights_only=False)
        assert ckpt.keys() >= CKPT_KEYS
    last = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert last["epoch"] == 2 and last["data"] == "digits" and last["command"] == ["test"]
    assert last["labels"] == [str(i) for i in range(10)]
    assert last["card"]["name"] == "lenet1989" and last["card"]["num_classes"] == 10
    assert last["metrics"]["test_acc"] == pytest.approx(result["test_acc"])
    weights = result["network"].state_dict()
    assert all(torch.equal(last["model"][k], weights[k]) for k in weights)

    resumed = train(_config(tmp_path, epochs=3, resume=str(tmp_path / "ckpt" / "last.pt")))
    assert [h["epoch"] for h in resumed["history"]] == [3]
    third = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert third["epoch"] == 3
    steps_per_epoch = last["scheduler"]["last_epoch"] // 2
    assert third["scheduler"]["last_epoch"] == 3 * steps_per_epoch
    assert resumed["history"][0]["train_loss"] < losses[0]


def test_resume_refuses_another_model(tmp_path):
    train(_config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="lenet1989"):
        train(_config(tmp_path, model="lenet5", resume=str(tmp_path / "ckpt" / "last.pt")))


def test_cli_prints_the_final_line(tmp_path, capsys):
    main(["--model", "lenet1989", "--epochs", "1", "--output", str(tmp_path), "--no-progress"])
    assert capsys.readouterr().out.strip().startswith("lenet1989 digits: test accuracy ")
    assert torch.load(tmp_path / "last.pt", weights_only=False)["command"][1:3] == ["--model", "lenet1989"]


# ---------------------------------------------------------------------------- image folder


def _image_folder(root, counts: dict[str, int]) -> None:
    colours = {"blue": (20, 40, 220), "red": (220, 30, 30)}
    for split, n in counts.items():
        for name, rgb in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (20 + i, 24), (10, 10, 10))
                img.paste(Image.new("RGB", (12, 12), rgb), (4, 6))
                img.save(root / split / name / f"{i}.png")


def test_imagefolder_trains_with_labels_from_folder_names(tmp_path):
    _image_folder(tmp_path / "data", {"train": 6, "val": 2})
    result = train(_config(tmp_path, data=f"imagefolder:{tmp_path / 'data'}", epochs=1, batch_size=4, workers=0))
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["labels"] == ["blue", "red"]
    assert ckpt["card"]["num_classes"] == 2 and ckpt["data"].startswith("imagefolder:")
    assert result["network"].output.out_features == 2
    assert np.isfinite(result["train_loss"]) and 0.0 <= result["test_acc"] <= 1.0


def test_image_transforms_give_the_card_shape():
    card = ModelCard(name="t", family="t", year=0, paper="t", input_size=(3, 16, 16), crop_pct=0.8)
    img = Image.new("RGB", (40, 30), (255, 255, 255))
    for _ in range(5):
        assert TrainTransform(card)(img).shape == (3, 16, 16)
    out = EvalTransform(card)(img)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 0, 0], (1 - torch.tensor(card.mean)) / torch.tensor(card.std), atol=1e-5)


# ---------------------------------------------------------------------------- DDP on CPU


def _ddp_worker(rank: int, world_size: int, port: int, tmp_path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    result = train(_config(tmp_path, epochs=1, batch_size=32, threads=1, output=str(tmp_path / f"out{rank}")))
    torch.save({"weights": result["network"].state_dict(), "test_acc": result["test_acc"]}, tmp_path / f"{rank}.pt")


def test_ddp_on_cpu_keeps_ranks_in_step_and_rank0_alone_writes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    assert ranks[0]["test_acc"] == ranks[1]["test_acc"]  # all-reduced
    assert (tmp_path / "out0" / "last.pt").exists() and not (tmp_path / "out1").exists()
    ckpt = torch.load(tmp_path / "out0" / "last.pt", weights_only=False)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in ranks[0]["weights"].items())


# ---------------------------------------------------------------------------- accuracy with the default recipe


@pytest.mark.parametrize(("model", "target"), [("lenet5", 0.97), ("lenet1989", 0.95)])
def test_default_recipe_reaches_the_target_accuracy(tmp_path, model, target):
    result = train(TrainConfig(model=model, output=str(tmp_path), progress=False, command=[]))
    assert result["test_acc"] >= target, result["history"][-3:]
