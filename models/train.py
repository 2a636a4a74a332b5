"""Train a registered network on digits or an image folder: `python -m models.train --model lenet5 --data digits`.

Single process by default; under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) each process trains one
shard with DistributedDataParallel (nccl on CUDA, gloo on CPU), and rank 0 alone shows progress and
writes `last.pt` / `best.pt`. `--batch-size` is per process, as in torchvision's reference scripts.
"""

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from models.data import ImageFolder, data_kind, load_data
from models.registry import get_card, get_model

# Recipe per data kind, then per (model, data kind) on top; explicit flags win over both. Digits runs use one
# CPU thread: a tiny network gains nothing from more, and a shared machine loses a great deal.
# fmt: off
DEFAULTS = {
    "digits": dict(epochs=30, batch_size=64, opt="adamw", lr=3e-3, weight_decay=1e-4, label_smoothing=0.0,
                   warmup_epochs=1.0, threads=1),
    "imagefolder": dict(epochs=90, batch_size=64, opt="sgd", lr=0.025, weight_decay=1e-4, label_smoothing=0.1,
                        warmup_epochs=5.0, threads=0),
}
MODEL_DEFAULTS: dict[tuple[str, str], dict] = {
    ("lenet5", "digits"): dict(epochs=40, lr=3e-3),
    ("lenet1989", "digits"): dict(epochs=30, lr=3e-3),
}
# fmt: on


@dataclass
class TrainConfig:
    """Everything one run needs; None means "take the recipe's default" (see `resolve`)."""

    model: str
    data: str = "digits"
    epochs: int | None = None
    batch_size: int | None = None
    opt: str | None = None  # "sgd" (momentum, nesterov off) or "adamw"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    label_smoothing: float | None = None
    warmup_epochs: float | None = None
    augment: bool = True
    seed: int = 0
    threads: int | None = None  # CPU intra-op threads; 0 keeps torch's default
    workers: int = 2
    amp: str = "bf16"  # "bf16", "fp16" or "none"; CUDA only
    output: str | None = None  # default checkpoints/<model>/
    resume: str | None = None
    progress: bool = True
    command: list[str] = field(default_factory=lambda: list(sys.argv))

    def resolve(self) -> "TrainConfig":
        recipe = DEFAULTS[data_kind(self.data)] | MODEL_DEFAULTS.get((self.model, data_kind(self.data)), {})
        filled = replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})
        if filled.opt not in ("sgd", "adamw"):
            raise ValueError(f"--opt must be 'sgd' or 'adamw', got {filled.opt!r}")
        if filled.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"--amp must be 'bf16', 'fp16' or 'none', got {filled.amp!r}")
        if filled.epochs < 1 or filled.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {filled.epochs} and {filled.batch_size}")
        return filled


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """DDP when torchrun's variables are set, else a single process; picks the device either way."""
    cuda = torch.cuda.is_available()
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return Distributed(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device, owns)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor per optimizer step: linear warmup to 1, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and kernels only, not on biases or norm scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def run_epoch(model, loader, ctx: Distributed, amp_dtype, desc: str, fit=None, progress: bool = True) -> dict:
    """One pass over `loader`; trains when `fit` = (criterion, optimizer, scheduler, scaler) is given.

    Returns loss and accuracy over all ranks; the eval loss is plain cross-entropy, without label smoothing.
    """
    model.train(fit is not None)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and ctx.is_main), dynamic_ncols=True)
    for images, targets in bar:
        images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)
        if ctx.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(fit is not None), torch.autocast(ctx.device.type, amp_dtype, amp_dtype is not None):
            logits = model(images)
            loss = (fit[0] if fit else F.cross_entropy)(logits, targets)
        if fit:
            _, optimizer, scheduler, scaler = fit
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        n = targets.numel()
        totals += torch.tensor([loss.item() * n, (logits.argmax(1) == targets).sum().item(), n], dtype=torch.float64)
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.2%}")
    if ctx.world_size > 1:
        totals = totals.to(ctx.device)  # nccl reduces CUDA tensors only
        dist.all_reduce(totals)
    return {"loss": (totals[0] / totals[2]).item(), "acc": (totals[1] / totals[2]).item()}


def train(cfg: TrainConfig) -> dict:
    """Train, evaluate every epoch, checkpoint on rank 0; returns the final metrics and the network."""
    started = time.perf_counter()
    cfg = cfg.resolve()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # before any op: a tiny model on a shared CPU runs best on one
    ctx = setup_distributed()
    try:
        return _train(cfg, ctx, started)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ctx: Distributed, started: float) -> dict:
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, get_card(cfg.model), cfg.augment)
    card = get_card(cfg.model, num_classes=len(data.labels), weights_url=None, weights_kwargs={})
    if data_kind(cfg.data) != "digits":
        card = replace(card, label_set="custom")

    workers = cfg.workers if isinstance(data.train, ImageFolder) else 0  # digits sit in memory
    sampler = DistributedSampler(data.train, ctx.world_size, ctx.rank, seed=cfg.seed) if ctx.world_size > 1 else None
    train_loader = DataLoader(
        data.train,
        cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=torch.Generator().manual_seed(cfg.seed),
        pin_memory=ctx.device.type == "cuda",
    )
    test_shard = Subset(data.test, range(ctx.rank, len(data.test), ctx.world_size))  # exact, no padding
    test_loader = DataLoader(test_shard, cfg.batch_size * 2, num_workers=workers)

    model = get_model(cfg.model, num_classes=card.num_classes).to(ctx.device)
    if ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    steps = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    )
    use_amp = ctx.device.type == "cuda" and cfg.amp != "none"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp] if use_amp else None
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16)

    start_epoch, best_acc, metrics = 0, -1.0, {}
    if cfg.resume:
        ckpt = torch.load(cfg.resume, map_location="cpu", weights_only=False)
        if ckpt["card"]["name"] != cfg.model:
            raise ValueError(f"--resume {cfg.resume!r} holds {ckpt['card']['name']!r}, not {cfg.model!r}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_acc, metrics = ckpt["epoch"], ckpt["metrics"]["best_acc"], ckpt["metrics"]

    net = (
        DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if ctx.world_size > 1
        else model
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    out_dir = Path(cfg.output or Path("checkpoints") / cfg.model)
    say = tqdm.write if cfg.progress and ctx.is_main else (lambda _: None)
    history = []
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        tag = f"epoch {epoch + 1}/{cfg.epochs}"
        fit = (criterion, optimizer, scheduler, scaler)
        tr = run_epoch(net, train_loader, ctx, amp_dtype, f"{tag} train", fit, progress=cfg.progress)
        te = run_epoch(net, test_loader, ctx, amp_dtype, f"{tag} test", progress=cfg.progress)
        best_acc = max(best_acc, te["acc"])
        metrics = {f"train_{k}": v for k, v in tr.items()} | {f"test_{k}": v for k, v in te.items()}
        metrics |= {"best_acc": best_acc, "lr": scheduler.get_last_lr()[0]}
        history.append({"epoch": epoch + 1, **metrics})
        say(f"{tag}: train loss {tr['loss']:.4f} acc {tr['acc']:.2%} | test loss {te['loss']:.4f} acc {te['acc']:.2%}")
        if ctx.is_main:
            ckpt = {
                "model": model.state_dict(),
                "card": card.to_dict(),
                "metrics": metrics,
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "command": list(cfg.command),
                "data": cfg.data,
                "labels": list(data.labels),
                "config": asdict(cfg),
            }
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(ckpt, out_dir / "last.pt")
            if te["acc"] >= best_acc:
                torch.save(ckpt, out_dir / "best.pt")
    seconds = time.perf_counter() - started
    return {
        "model": cfg.model,
        "data": cfg.data,
        **metrics,
        "epochs": cfg.epochs,
        "seconds": seconds,
        "history": history,
        "output": str(out_dir),
        "network": model,
    }


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered name, e.g. lenet5 (see models.list_models())")
    p.add_argument("--data", default="digits", help="'digits' or 'imagefolder:PATH' (PATH/train, PATH/val)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--opt", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, help="peak learning rate, reached after warmup")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="train on eval-style inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads per process, 0 for torch's default (digits: 1)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes (image folders only)")
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16", help="autocast dtype on CUDA")
    p.add_argument("--output", help="checkpoint folder (default checkpoints/<model>/)")
    p.add_argument("--resume", help="a last.pt to continue from")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or epoch lines")
    args = vars(p.parse_args(argv))
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(
        **{k: v for k, v in args.items() if k in known},
        command=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{result['model']} {result['data']}: test accuracy {result['test_acc']:.1%} in {result['seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
