"""Does the GPU path do what it claims? Run on a machine with a GPU; prints a table, writes JSON, exits 1
if a check fails.

    python -m loadtest.gpu_check --repository model_repository --models resnet50,vit_b_16 \\
        [--reference-repository DIR] --output loadtest/results/gpu_check.json

For each model, on the photos of loadtest/images.py: the engine the service builds with the CUDA provider
(CUDA graphs off, then on) against the same file on the CPU provider: the provider really in use,
staging pinned or not, relative error |gpu - cpu| / |cpu| (norms) and top-1 / top-5 agreement, every padded
batch size giving the rows an unpadded CPU run gives, and two batches in flight at once giving what each
gives alone. With --reference-repository (the fp32 export of an fp16 repository), the error against it too.
Targets: fp32 under 1e-3 with the same top-5; fp16 the same top-1 (its error is recorded).
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from loadtest.gpu import gpu_info
from loadtest.images import photo_jpegs
from modelrepo.read import ModelSource, load_source
from service.config import Settings
from service.engine.loader import build_engine, effective_batching, warmup_batch_sizes
from service.engine.session import CPU, Engine
from service.frontend.preprocess import Preprocessor, configure_pillow

FP32_MAX_RELATIVE_ERROR = 1e-3
MAX_BATCH = 16
IN_FLIGHT_ROUNDS = 20


def photos(source: ModelSource) -> np.ndarray:
    config = source.config
    preprocess = Preprocessor.for_model(config, Settings())
    return np.stack([preprocess(data) for name, data in photo_jpegs().items() if name.endswith("@320")])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """|got - want| / |want| (norms); where `want` is all zeros (random weights under a zero-initialized head,
    as vit_b_16's), |got| itself, so only exact zeros pass."""
    diff = float(np.linalg.norm(got.astype(np.float64) - want))
    scale = float(np.linalg.norm(want.astype(np.float64)))
    return diff / scale if scale > 0 else diff


def top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def agreement(got: np.ndarray, want: np.ndarray) -> dict:
    return {
        "relative_error": relative_error(got, want),
        "top1_same": bool((top(got, 1) == top(want, 1)).all()),
        "top5_same": bool((top(got, 5) == top(want, 5)).all()),
    }


def engine_for(source: ModelSource, providers: list[str], graphs: bool) -> tuple[Engine, float]:
    settings = Settings(providers=providers, cuda_graphs=graphs, max_batch_size=MAX_BATCH)
    batching = effective_batching(source.config.batching, settings, on_gpu=providers[0] != "cpu")
    engine = build_engine(source, settings, batching)
    started = time.perf_counter()
    if engine.providers_in_use[0] != CPU:
        engine.warmup(warmup_batch_sizes(batching))
    return engine, time.perf_counter() - started


def padded_rows(engine: Engine, x: np.ndarray, want: np.ndarray) -> float:
    """The largest difference, relative to the logits' scale, between each batch size 1..len(x) run on
    `engine` (padded up to its bucket) and the same rows of `want`."""
    scale = float(np.abs(want).max()) or 1.0  # all zeros: absolute differences
    worst = 0.0
    for n in range(1, len(x) + 1):
        worst = max(worst, float(np.abs(engine.run(list(x[:n])) - want[:n]).max()) / scale)
    return worst


def in_flight(engine: Engine, x: np.ndarray) -> int:
    """Two threads run different batches at once, IN_FLIGHT_ROUNDS times each; the number of runs whose
    logits differ from the same batch run alone (0 expected)."""
    halves = [x[: len(x) // 2], x[len(x) // 2 :]]
    alone = [engine.run(list(h)) for h in halves]
    wrong = [0, 0]

    def worker(i: int) -> None:
        for _ in range(IN_FLIGHT_ROUNDS):
            if not np.array_equal(engine.run(list(halves[i])), alone[i]):
                wrong[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(wrong)


def check_model(repository: Path, model: str, reference: Path | None) -> dict:
    source = load_source(repository, model)
    precision = source.config.versions[source.version].precision
    x = photos(source)
    cpu, _ = engine_for(source, ["cpu"], graphs=False)
    want = cpu.run(x)
    cpu.close()
    ref = None
    if reference is not None:
        ref_engine, _ = engine_for(load_source(reference, model), ["cpu"], graphs=False)
        ref = ref_engine.run(x)
        ref_engine.close()
    result = {"model": model, "precision": precision, "images": len(x), "modes": []}
    for graphs in (False, True):
        engine, warmup_s = engine_for(source, ["cuda"], graphs)
        got = engine.run(x)
        mode = {
            "cuda_graphs_asked": graphs,
            "providers_in_use": engine.providers_in_use,
            "staging": engine.staging,
            "bucket_sizes": engine.bucket_sizes,
            "cuda_graph_batch_sizes": engine.cuda_graph_batch_sizes,
            "warmup_s": warmup_s,
            "vs_cpu": agreement(got, want),
            "padded_rows_max_diff": padded_rows(engine, x, want),
            "in_flight_mismatches": in_flight(engine, x),
        }
        if ref is not None:
            mode["vs_fp32_cpu"] = agreement(got, ref)
        mode["failures"] = failures(mode, precision, graphs)
        result["modes"].append(mode)
        engine.close()
    return result


def failures(mode: dict, precision: str, graphs: bool) -> list[str]:
    found = []
    if mode["providers_in_use"][0] != "CUDAExecutionProvider":
        found.append(f"running on {mode['providers_in_use'][0]}, not CUDA")
    if graphs and not mode["cuda_graph_batch_sizes"]:
        found.append("no CUDA graph captured")
    vs_cpu = mode["vs_cpu"]
    if precision == "fp32" and (vs_cpu["relative_error"] > FP32_MAX_RELATIVE_ERROR or not vs_cpu["top5_same"]):
        found.append(f"fp32 differs from CPU: {vs_cpu}")
    if not vs_cpu["top1_same"]:
        found.append("top-1 differs from CPU")
    tolerance = FP32_MAX_RELATIVE_ERROR if precision == "fp32" else 1e-2
    if mode["padded_rows_max_diff"] > tolerance:
        found.append(f"padded batches differ from CPU rows by {mode['padded_rows_max_diff']:.2e}")
    if mode["in_flight_mismatches"]:
        found.append(f"{mode['in_flight_mismatches']} runs in flight gave other logits than alone")
    return found


def markdown(results: list[dict]) -> str:
    rows = [
        "| model | precision | CUDA graphs | provider | staging | rel. error vs CPU | top-1 | top-5 "
        "| padded rows max diff | in-flight mismatches | warm-up s | failures |",
        "|---|---|---|---|---|---:|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        for m in r["modes"]:
            v = m["vs_cpu"]
            graphs = ",".join(map(str, m["cuda_graph_batch_sizes"])) or "off"
            rows.append(
                f"| {r['model']} | {r['precision']} | {graphs} | {m['providers_in_use'][0]} | {m['staging']} "
                f"| {v['relative_error']:.2e} | {v['top1_same']} | {v['top5_same']} | {m['padded_rows_max_diff']:.2e} "
                f"| {m['in_flight_mismatches']} | {m['warmup_s']:.1f} | {'; '.join(m['failures']) or 'none'} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--reference-repository", type=Path, help="fp32 exports of the same models and weights")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_pillow()
    results = [check_model(args.repository, m, args.reference_repository) for m in args.models.split(",")]
    report = {"gpu": gpu_info(), "onnxruntime": ort.__version__, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    return 1 if any(m["failures"] for r in results for m in r["modes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
