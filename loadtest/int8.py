"""INT8 against fp32 on this CPU: the raw engine and the service, with the agreement export records.

    python -m loadtest.int8 --model resnet50 --model mobilenet_v2 --model lenet5 [--seconds 5]
        [--repository model_repository] [--output loadtest/results/int8.json]

Each model's served fp32 file is quantized here exactly as `export/to_onnx.py --int8` does it (same calibration,
so the same weights on both sides), into a temporary copy of its repository entry. Then, in one run: (a) the raw
engine built as the service builds it, at batch 1, 2, 4, 8 and 16, for each file; (b) the service started on each
repository in turn, `/v1/classify` with the bundled JPEG photos at 16 closed-loop clients. Figures, not tests.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from export.quantize import agreement, calibration_set, quantize
from loadtest.bench import bench_raw, ensure_exported, preprocess_photos
from loadtest.images import photo_jpegs
from loadtest.measure import http_point
from loadtest.server import ROOT, running_service, tree_cpu_seconds
from modelrepo.checksum import sha256_file
from modelrepo.read import load_source
from modelrepo.write import write_config
from models import get_card

SIZES = [1, 2, 4, 8, 16]
CLIENTS = 16


def int8_copy(repository: Path, model: str, folder: Path) -> dict:
    """`folder/model`: the model's entry with its served version quantized; returns the agreement record."""
    source = load_source(repository, model)
    shutil.copytree(repository / model, folder / model)
    target = folder / model / source.config.versions[source.version].file
    name, calibration, held, labels = calibration_set(get_card(model), None)
    quantize(source.onnx_path, target, calibration)
    record = agreement(source.onnx_path, target, name, len(calibration), held, labels)
    config = source.config
    version = config.versions[source.version].model_copy(
        update={"sha256": sha256_file(target), "precision": "int8", "parity": None, "quantization": record}
    )
    updated = config.model_copy(update={"versions": {**config.versions, source.version: version}})
    write_config(folder, updated)
    return record.model_dump()


def bench_model(repository: Path, model: str, seconds: float) -> dict:
    ensure_exported(repository, model)
    jpegs = list(photo_jpegs(sizes=(320,)).values())
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        int8_repo = Path(tmp)
        quantization = int8_copy(repository, model, int8_repo)
        result = {"model": model, "quantization": quantization, "raw": {}, "service": {}}
        for precision, repo in (("fp32", repository), ("int8", int8_repo)):
            source = load_source(repo, model)
            tensors, _ = preprocess_photos(source, jpegs, rounds=1)
            result["raw"][precision] = bench_raw(source, tensors, seconds, SIZES)
            with running_service(repo, [model]) as (url, proc):
                point = http_point(url, model, jpegs, CLIENTS, seconds, lambda proc=proc: tree_cpu_seconds(proc.pid))
            result["service"][precision] = point
            best = max(p["images_per_s"] for p in result["raw"][precision])
            print(
                f"  {model} {precision}: raw best {best:.1f}, service {point['images_per_s']:.1f} images/s",
                file=sys.stderr,
            )
    return result


def table(results: list[dict]) -> str:
    rows = [
        "| model | raw batch 1, fp32 -> int8 (images/s) | raw best, fp32 -> int8 | service at 16 clients, fp32 -> int8 "
        "| service p50 ms, fp32 -> int8 | top-1 agreement | top-5 agreement | max logit rel. error | accuracy |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        raw, service, q = r["raw"], r["service"], r["quantization"]
        b1 = [next(p["images_per_s"] for p in raw[k] if p["batch_size"] == 1) for k in ("fp32", "int8")]
        best = [max(p["images_per_s"] for p in raw[k]) for k in ("fp32", "int8")]
        served = [service[k]["images_per_s"] for k in ("fp32", "int8")]
        p50 = [service[k]["p50_ms"] for k in ("fp32", "int8")]
        accuracy = ", ".join(f"{k} {v:.4f}" for k, v in q["accuracy"].items()) or "(no labels)"
        rows.append(
            f"| {r['model']} | {b1[0]:.1f} -> {b1[1]:.1f} ({b1[1] / b1[0]:.2f}x) | {best[0]:.1f} -> {best[1]:.1f} "
            f"({best[1] / best[0]:.2f}x) | {served[0]:.1f} -> {served[1]:.1f} ({served[1] / served[0]:.2f}x) | "
            f"{p50[0]:.1f} -> {p50[1]:.1f} | {q['top1_agreement']:.3f} | {q['top5_agreement']:.3f} | "
            f"{q['max_rel_diff_logits']:.3f} | {accuracy} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="repeatable; default resnet50")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    results = [bench_model(args.repository, model, args.seconds) for model in args.model or ["resnet50"]]
    print(table(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
