"""How much of the engine's speed the service keeps, and what dynamic batching buys.

    python loadtest/bench.py --model resnet50 --output loadtest/results/bench.json [--quick] [--repository DIR]
        [--concurrency 1,16,64,256]

On one exported ONNX file: (a) the raw engine as the service builds it (host copies included) at batch
sizes 1, 2, 4, ... up to the max batch size (`SERVE_MAX_BATCH_SIZE` raises it), and on a GPU the same
with inputs already on the device, CUDA graphs off and on; (b) the host's decode ceiling with the
service's decoder, on one core and on all; (c) the service end to end over HTTP (started here on
127.0.0.1) with JPEG photos at concurrency 1, 4, 16, 64 (or --concurrency) and dynamic batching, with
GPU utilization where there is a GPU; (d) the same with batching off (`SERVE_MAX_BATCH_SIZE=1`), the
naive baseline. Prints a Markdown table, writes JSON. The load generator shares the machine with the
service: its CPU use is reported beside each point.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from loadtest.gpu import GpuMonitor, gpu_info
from loadtest.images import photo_jpegs
from loadtest.measure import decode_rates, device_points, http_point, raw_point
from loadtest.server import ROOT, running_service, tree_cpu_seconds
from modelrepo.layout import CONFIG_FILE, model_dir
from modelrepo.read import ModelSource, load_source
from service.config import Settings, usable_cores
from service.engine.instances import cpu_model
from service.engine.loader import build_engine, effective_batching, session_providers
from service.engine.session import CPU, cuda_graphs_in_use, open_session
from service.frontend.preprocess import Preprocessor

CONCURRENCY = (1, 4, 16, 64)
REFERENCE_CONCURRENCY = 16  # where the top-level ratio_service_over_raw is taken
WITHIN_BEST = 0.95  # the recommended max batch size is the smallest whose raw throughput is this close to the best


def ensure_exported(repository: Path, model: str) -> None:
    if (model_dir(repository, model) / CONFIG_FILE).is_file():
        return
    print(f"{model} is not in {repository}: exporting it with random weights", file=sys.stderr)
    cmd = [sys.executable, "export/to_onnx.py", "--model", model, "--weights", "random", "--output", str(repository)]
    subprocess.run(cmd, cwd=ROOT, check=True)


def preprocess_photos(source: ModelSource, jpegs: list[bytes], rounds: int = 5) -> tuple[list[np.ndarray], float]:
    """The photos as the model's input tensors, and the median milliseconds one took to decode and
    preprocess on one thread (over `rounds` passes)."""
    config = source.config
    preprocess = Preprocessor.for_model(config, Settings())
    times = []
    for _ in range(rounds):
        tensors = []
        for data in jpegs:
            started = time.perf_counter()
            tensors.append(preprocess(data))
            times.append((time.perf_counter() - started) * 1000)
    return tensors, statistics.median(times)


def bench_raw(
    source: ModelSource, tensors: list[np.ndarray], seconds: float, sizes: list[int] | None = None
) -> list[dict]:
    """The engine built as the service builds it (same providers, same session options), at `sizes`
    (default 1, 2, 4, ... up to the max batch size)."""
    settings = Settings()
    batching = effective_batching(source.config.batching, settings)
    engine = build_engine(source, settings, batching)
    sizes = sizes or raw_sizes(batching.max_batch_size)
    if engine.providers_in_use[0] != CPU:
        engine.warmup(sizes)  # cuDNN's per-shape choices and CUDA graph captures stay out of the figures
    try:
        return [raw_point(engine, tensors, n, seconds) for n in sizes]
    finally:
        engine.close()


def raw_sizes(max_batch: int) -> list[int]:
    sizes = [2**i for i in range(max_batch.bit_length()) if 2**i <= max_batch]
    return sizes + ([max_batch] if sizes[-1] != max_batch else [])


def bench_device(
    source: ModelSource, tensors: list[np.ndarray], sizes: list[int], seconds: float, graphs: bool = True
) -> dict | None:
    """On a GPU, the session alone with inputs on the device (loadtest/measure.py, `device_points`), built
    with the service's provider options, CUDA graphs asked for unless `graphs` is False. None on CPU."""
    settings = Settings(cuda_graphs=graphs)
    config = source.config
    specs = [p for p in session_providers(config, settings, max(sizes), max(sizes)) if p.name != CPU]
    if not specs:
        return None
    session, used = open_session(source.onnx_path, specs)
    running_on = session.get_providers()[0]
    if running_on == CPU:
        return None
    points = device_points(
        session,
        tensors,
        sizes,
        seconds,
        output_row_shape=tuple(config.output.shape[1:]),
        output_dtype=np.dtype(config.output.dtype),
        graphs=cuda_graphs_in_use(session, used),
        device_id=settings.device_id,
    )
    return {"provider": running_on, "points": points}


def bench_service(
    repository: Path, model: str, jpegs: list[bytes], seconds: float, env: dict, log, concurrency=CONCURRENCY
) -> dict:
    with running_service(repository, [model], env=env, log=log) as (url, proc):
        info = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()
        points = []
        for c in concurrency:
            with GpuMonitor() as gpu:
                point = http_point(url, model, jpegs, c, seconds, lambda: tree_cpu_seconds(proc.pid))
            points.append({**point, **(gpu.summary() or {})})
    keys = ("providers", "batching", "bucket_sizes", "cuda_graph_batch_sizes")
    return {**{k: info.get(k) for k in keys}, "points": points}


def compare(
    raw: list[dict],
    batched: dict,
    unbatched: dict,
    recheck: dict,
    decode: float,
    device: dict | None = None,
    decoding: dict | None = None,
) -> dict:
    best = max(raw, key=lambda p: p["images_per_s"])
    one_client = next(p for p in batched["points"] if p["concurrency"] == 1)
    raw_one = next(p for p in raw if p["batch_size"] == 1)
    for point in batched["points"] + unbatched["points"]:
        point["ratio_over_raw_best"] = point["images_per_s"] / best["images_per_s"]
    for on, off in zip(batched["points"], unbatched["points"], strict=True):
        on["ratio_over_unbatched"] = on["images_per_s"] / off["images_per_s"]
    reference = next(p for p in batched["points"] if p["concurrency"] == REFERENCE_CONCURRENCY)
    return {
        "raw_best": {k: best[k] for k in ("batch_size", "images_per_s")},
        "ratio_service_over_raw": reference["ratio_over_raw_best"],
        # The best batch size measured again after the service: how far the machine drifted meanwhile.
        "raw_recheck": {k: recheck[k] for k in ("batch_size", "images_per_s")},
        "raw_drift": recheck["images_per_s"] / best["images_per_s"],
        "decode_ms": decode,
        # One client: the service's p50 less decoding, over the raw engine's batch-1 p50 (the HTTP and queue cost).
        "latency_ratio_at_1": (one_client["p50_ms"] - decode) / raw_one["p50_ms"],
        "recommended_max_batch_size": recommended_max_batch(raw),
        **ceiling(raw, batched, decode, device, decoding),
    }


def ceiling(raw: list[dict], batched: dict, decode: float, device: dict | None, decoding: dict | None) -> dict:
    """The most the service could do here: min(the engine's best, with inputs on the device where there is
    a GPU; the host's decode ceiling on all cores). The busiest point's share of it, and one client's p50
    over raw batch 1 plus one decode."""
    engine_points = device["points"] if device else raw
    engine_best = max(p["images_per_s"] for p in engine_points)
    engine_one = min(p["p50_ms"] for p in engine_points if p["batch_size"] == 1)
    out = {"engine_best_images_per_s": engine_best}
    if decoding:
        limit = min(engine_best, decoding["all_cores_processes_images_per_s"])
        busiest = max(batched["points"], key=lambda p: p["concurrency"])
        out |= {
            "ceiling_images_per_s": limit,
            "busiest_over_ceiling": busiest["images_per_s"] / limit,
        }
    one_client = next(p for p in batched["points"] if p["concurrency"] == 1)
    out["latency_at_1_over_engine_plus_decode"] = one_client["p50_ms"] / (engine_one + decode)
    return out


def recommended_max_batch(raw: list[dict]) -> int:
    """The smallest batch size within WITHIN_BEST of the best raw throughput: larger batches only add
    latency (and, with closed-loop clients, idle gaps while a big batch's clients come back)."""
    best = max(p["images_per_s"] for p in raw)
    return min(p["batch_size"] for p in raw if p["images_per_s"] >= WITHIN_BEST * best)


def markdown(report: dict) -> str:
    rows = [
        "| mode | batch / clients | images/s | p50 ms | p95 ms | p99 ms | mean batch | / raw best | / unbatched "
        "| server CPU | loadgen CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["raw"]:
        rows.append(
            f"| raw engine | {p['batch_size']} | {p['images_per_s']:.1f} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} "
            f"| {p['p99_ms']:.1f} | {p['batch_size']} | | | | |"
        )
    for p in (report.get("raw_device") or {}).get("points", []):
        mode = "on device, CUDA graph" if p["cuda_graph"] else "on device"
        rows.append(
            f"| raw engine, {mode} | {p['batch_size']} | {p['images_per_s']:.1f} | {p['p50_ms']:.2f} "
            f"| {p['p95_ms']:.2f} | {p['p99_ms']:.2f} | {p['batch_size']} | | | | |"
        )
    for mode in ("batched", "unbatched"):
        for p in report["service"][mode]["points"]:
            vs_off = f"{p['ratio_over_unbatched']:.3g}x" if "ratio_over_unbatched" in p else ""
            gpu = f", GPU {p['gpu_utilization_mean']:.0f}%" if "gpu_utilization_mean" in p else ""
            rows.append(
                f"| service, {mode}{gpu} | {p['concurrency']} | {p['images_per_s']:.1f} | {p['p50_ms']:.1f} "
                f"| {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['mean_batch_size']:.2f} "
                f"| {p['ratio_over_raw_best']:.3g} | {vs_off} | {p['server_cpu_cores']:.2f} "
                f"| {p['loadgen_cpu_cores']:.2f} |"
            )
    return "\n".join(rows)


def run_raw(model: str, repository: Path, seconds: float, graphs: bool) -> dict:
    """The engine alone (--raw-only): with host copies and, on a GPU, with inputs on the device."""
    ensure_exported(repository, model)
    source = load_source(repository, model)
    tensors, decode = preprocess_photos(source, list(photo_jpegs().values()))
    raw = bench_raw(source, tensors, seconds)
    device = bench_device(source, tensors, [p["batch_size"] for p in raw], seconds, graphs)
    return {
        "model": model,
        "machine": {"gpu": gpu_info(), "onnxruntime": ort.__version__},
        "raw": raw,
        "raw_device": device,
        "decode_ms": decode,
    }


def run(
    model: str,
    repository: Path,
    quick: bool,
    seconds: float | None = None,
    concurrency=CONCURRENCY,
    device_graphs: bool = True,
) -> dict:
    if not {1, REFERENCE_CONCURRENCY} <= set(concurrency):
        raise ValueError(f"concurrency {list(concurrency)} must include 1 and {REFERENCE_CONCURRENCY}: ratios use both")
    concurrency = sorted(set(concurrency))
    seconds = seconds or (1.0 if quick else 5.0)
    ensure_exported(repository, model)
    source = load_source(repository, model)
    jpegs = list(photo_jpegs().values())
    tensors, decode = preprocess_photos(source, jpegs)
    raw = bench_raw(source, tensors, seconds)
    device = bench_device(source, tensors, [p["batch_size"] for p in raw], seconds, device_graphs)
    decoding = decode_rates(repository, model, jpegs, usable_cores(), seconds)
    with tempfile.TemporaryFile("w+") as log:  # the service's own log, shown only if it fails
        try:
            batched = bench_service(repository, model, jpegs, seconds, {}, log, concurrency)
            off = {"SERVE_MAX_BATCH_SIZE": "1"}
            unbatched = bench_service(repository, model, jpegs, seconds, off, log, concurrency)
        except Exception:
            log.seek(0)
            print(log.read()[-4000:], file=sys.stderr)
            raise
    best = max(raw, key=lambda p: p["images_per_s"])["batch_size"]
    (recheck,) = bench_raw(source, tensors, seconds, sizes=[best])
    version = source.config.versions[source.version]
    report = {
        "model": model,
        "version": source.version,
        "weights": version.weights.source,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "gpu": gpu_info(),
            "providers_available": ort.get_available_providers(),
            "provider": batched["providers"][0] if batched["providers"] else "unknown",
            "providers": batched["providers"],
            "precision": version.precision,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
        "budget": {"seconds_per_point": seconds, "quick": quick, "max_batch_size": raw[-1]["batch_size"]},
        "raw": raw,
        "raw_device": device,
        "decode_ceiling": decoding,
        "service": {"batched": batched, "unbatched": unbatched},
    }
    report.update(compare(raw, batched, unbatched, recheck, decode, device, decoding))
    return report


def model_line(report: dict) -> str:
    m = report["machine"]
    gpu = f", {m['gpu']['name']} (driver {m['gpu']['driver']})" if m.get("gpu") else ""
    return (
        f"{report['model']} v{report['version']} ({report['weights']} weights, {m['precision']}) on {m['cpu']}, "
        f"{m['usable_cores']} cores{gpu}, {m['provider']}, onnxruntime {m['onnxruntime']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model name in the repository (exported if missing)")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--quick", action="store_true", help="about 1 s per point: a smoke run, not a figure")
    parser.add_argument("--seconds", type=float, help="recorded seconds per point (default 5, or 1 with --quick)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in text.split(",")],
        default=list(CONCURRENCY),
        help=f"comma-separated client counts, including 1 and {REFERENCE_CONCURRENCY} (default: %(default)s)",
    )
    parser.add_argument(
        "--no-device-graphs", dest="device_graphs", action="store_false", help="on a GPU, time no CUDA graph replay"
    )
    parser.add_argument("--raw-only", action="store_true", help="the engine alone: no decoding, no service")
    args = parser.parse_args(argv)
    if args.raw_only:
        report = run_raw(args.model, args.repository.resolve(), args.seconds or 5.0, args.device_graphs)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        rows = markdown({**report, "service": {"batched": {"points": []}, "unbatched": {"points": []}}})
        print(f"{rows}\nWritten to {args.output}")
        return
    try:
        report = run(
            args.model, args.repository.resolve(), args.quick, args.seconds, args.concurrency, args.device_graphs
        )
    except ValueError as e:
        parser.error(str(e))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{model_line(report)}\n\n{markdown(report)}\n\nservice / raw best at {REFERENCE_CONCURRENCY} clients: "
        f"{report['ratio_service_over_raw']:.3g}; at 1 client, p50 less decoding ({report['decode_ms']:.1f} ms) "
        f"over raw batch-1 p50: {report['latency_ratio_at_1']:.3g}; the raw engine, rechecked at the end, ran at "
        f"{report['raw_drift']:.2f} of its first figure (the machine's drift during the run). The raw engine is within "
        f"{1 - WITHIN_BEST:.0%} of its best from batch {report['recommended_max_batch_size']}: a larger "
        f"SERVE_MAX_BATCH_SIZE only adds latency here.\n{ceiling_line(report)}\nWritten to {args.output}"
    )


def ceiling_line(report: dict) -> str:
    d = report["decode_ceiling"]
    where = "on the device" if report.get("raw_device") else "with host copies"
    return (
        f"Decode ceiling ({d['cores']} cores, the service's decoder): {d['one_core_images_per_s']:.0f} images/s on "
        f"one core, {d['all_cores_processes_images_per_s']:.0f} on all cores as processes, "
        f"{d['all_cores_threads_one_process_images_per_s']:.0f} as threads of one process.\n"
        f"Engine best {where}: {report['engine_best_images_per_s']:.0f} images/s; ceiling min(engine, decoding on "
        f"all cores): {report['ceiling_images_per_s']:.0f}; the busiest point reached "
        f"{report['busiest_over_ceiling']:.2f} of it; one client's p50 over engine batch-1 p50 plus one decode: "
        f"{report['latency_at_1_over_engine_plus_decode']:.2f}."
    )


if __name__ == "__main__":
    main()
