"""`make tune MODEL=...`: Triton's Model Analyzer in one command. Measures one model's throughput and batch latency
per batch size and per instance count on this machine, prints the table, recommends the configuration that gives
the most throughput within the latency objective, and with `--write` records it in the model's config.json with
the machine it was measured on.

    python -m loadtest.tune --model resnet50 [--repository model_repository] [--objective-ms 250]
        [--batch-sizes 1,2,4,...] [--instances 1,2] [--seconds 2] [--write] [--verify]

On CPU the instance counts compare one session with every core against several sessions sharing the cores (1, 2,
4, ... up to the usable cores); on a GPU, one session against two. Each configuration runs its sessions at once,
each back to back on batches of one size, as the service runs them under load. The rule is the batcher's
(service/engine/policy.py): a batch may take half the objective (the other half is for queueing), and a larger
batch or more sessions must bring at least 1/0.95 the throughput to be worth it. `--verify` then starts the service
twice, as configured and with the recommendation (as environment overrides), and sends both the bundled photos
from 16 clients: the engine's gain is the service's only where the engine is what limits it.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from loadtest.bench import ensure_exported, preprocess_photos, raw_sizes
from loadtest.images import photo_jpegs
from loadtest.measure import percentiles_ms
from loadtest.objective import phase
from loadtest.server import running_service
from modelrepo.layout import model_dir
from modelrepo.read import ModelSource, load_source, read_config
from modelrepo.schema import DEFAULT_LATENCY_SLO_MS, Instances, ModelConfig, Tuning, TuningPoint
from modelrepo.write import write_config
from service.config import Settings, usable_cores
from service.engine.instances import this_machine
from service.engine.loader import build_instances, effective_batching
from service.engine.policy import PAYS, QUEUEING_SHARE
from service.engine.session import CPU

MIN_RUNS = 3
VERIFY_CLIENTS = 16


def instance_counts(cores: int, on_gpu: bool) -> list[int]:
    if on_gpu:
        return [1, 2]
    return sorted({1, *(2**i for i in range(cores.bit_length()) if 2**i <= cores), cores})


def measure(source: ModelSource, batch: np.ndarray, count: int, seconds: float, settings: Settings) -> TuningPoint:
    """`count` sessions running batches of len(batch) at once for `seconds` (at least MIN_RUNS each)."""
    batching = effective_batching(source.config.batching, settings.model_copy(update={"instances": count}))
    group = build_instances(source, settings, batching)
    try:
        group.warmup([len(batch)])
        latencies: list[float] = []
        failures: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(count)

        def loop(engine) -> None:
            start.wait()
            mine, begin = [], time.perf_counter()
            try:
                while len(mine) < MIN_RUNS or time.perf_counter() - begin < seconds:
                    t = time.perf_counter()
                    engine.run(batch)
                    mine.append(time.perf_counter() - t)
            except Exception as e:  # out of memory at a large batch, say: the whole point fails, not silently
                with lock:
                    failures.append(e)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=loop, args=(engine,)) for engine in group.engines]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    finally:
        group.close()
    if failures:
        raise RuntimeError(f"batch {len(batch)} x {count} sessions failed: {failures[0]}") from failures[0]
    p = percentiles_ms(latencies)
    return TuningPoint(
        batch_size=len(batch),
        instances=count,
        intra_op_threads=batching.intra_op_threads,
        images_per_s=len(batch) * len(latencies) / elapsed,
        p50_ms=p["p50_ms"],
        p99_ms=p["p99_ms"],
    )


def fits(point: TuningPoint, objective_ms: float) -> bool:
    return point.p99_ms <= objective_ms * QUEUEING_SHARE


def recommend(points: list[TuningPoint], objective_ms: float) -> tuple[TuningPoint, bool]:
    """The smallest batch, then the fewest sessions, within PAYS of the best throughput among the configurations
    whose batch fits its share of the objective; with none fitting, the quickest batch (and False)."""
    fitting = [p for p in points if fits(p, objective_ms)]
    if not fitting:
        return min(points, key=lambda p: (p.p99_ms, p.batch_size, p.instances)), False
    best = max(p.images_per_s for p in fitting)
    worth = [p for p in fitting if p.images_per_s >= PAYS * best]
    return min(worth, key=lambda p: (p.batch_size, p.instances)), True


def table(points: list[TuningPoint], objective_ms: float, chosen: TuningPoint) -> str:
    rows = [
        "| batch | sessions | threads each | images/s | batch p50 ms | batch p99 ms | fits the objective |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in sorted(points, key=lambda p: (p.instances, p.batch_size)):
        mark = " **<- recommended**" if p == chosen else ""
        threads = p.intra_op_threads or "auto"
        rows.append(
            f"| {p.batch_size} | {p.instances} | {threads} | {p.images_per_s:.1f} | {p.p50_ms:.1f} | {p.p99_ms:.1f} "
            f"| {'yes' if fits(p, objective_ms) else 'no'}{mark} |"
        )
    return "\n".join(rows)


def service_overrides(chosen: TuningPoint, objective_ms: float) -> dict[str, str]:
    """The recommendation as the SERVE_* variables that apply it to a running service without --write."""
    return {
        "SERVE_MAX_BATCH_SIZE": str(chosen.batch_size),
        "SERVE_INSTANCES": str(chosen.instances),
        "SERVE_INTRA_OP_THREADS": "0",  # the cores shared between the sessions, as measured
        "SERVE_LATENCY_SLO_MS": f"{objective_ms:g}",
    }


def verify(repository: Path, model: str, overrides: dict[str, str], seconds: float) -> dict[str, dict]:
    """The service as configured and with `overrides`, both under the same objective: VERIFY_CLIENTS closed-loop
    clients of /v1/classify, each refused request waiting its Retry-After (loadtest/objective.py)."""
    jpegs = list(photo_jpegs(sizes=(320,)).values())
    same_objective = {"SERVE_LATENCY_SLO_MS": overrides["SERVE_LATENCY_SLO_MS"]}
    results = {}
    for name, env in (("as configured", same_objective), ("recommended", overrides)):
        with tempfile.TemporaryFile("w+") as log, running_service(repository, [model], env=env, log=log) as (url, _):
            results[name] = phase(f"{url}/v1/classify?model={model}&top_k=1", jpegs, VERIFY_CLIENTS, seconds)
    return results


def verify_table(results: dict[str, dict], objective_ms: float) -> str:
    rows = [
        f"| service, {VERIFY_CLIENTS} clients, objective {objective_ms:g} ms | answered/s | p50 ms | p99 ms "
        "| refused/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['answered_per_s']:.1f} | {r.get('answered_p50_ms', 0):.1f} "
            f"| {r.get('answered_p99_ms', 0):.1f} | {r['refused_per_s']:.1f} |"
        )
    return "\n".join(rows)


def tuned_config(config: ModelConfig, chosen: TuningPoint, tuning: Tuning) -> ModelConfig:
    """config.json with the recommendation: the batch size as the largest the batcher may form (with an objective
    it picks sizes up to it from measured latencies), the sessions, and what was measured."""
    batching = config.batching.model_copy(
        update={
            "max_batch_size": chosen.batch_size,
            "preferred_batch_sizes": tuple(n for n in config.batching.preferred_batch_sizes if n <= chosen.batch_size),
            "latency_slo_ms": tuning.latency_slo_ms,
        }
    )
    instances = Instances(count=chosen.instances)  # threads 0: the usable cores shared, wherever it runs
    return config.model_copy(update={"batching": batching, "instances": instances, "tuning": tuning})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--objective-ms", type=float, help="default: config.json's latency_slo_ms, else 250")
    parser.add_argument("--batch-sizes", help="comma-separated; default: powers of two up to max_batch_size")
    parser.add_argument("--instances", help="comma-separated session counts; default: see above")
    parser.add_argument("--seconds", type=float, default=2.0, help="per configuration")
    parser.add_argument("--write", action="store_true", help="record the recommendation in config.json")
    parser.add_argument("--verify", action="store_true", help="the service as configured against recommended")
    args = parser.parse_args(argv)

    ensure_exported(args.repository, args.model)
    source = load_source(args.repository, args.model)
    # What is measured is config.json's model with the sessions' threads following the count; SERVE_* batching
    # variables would override what --write records, in the service as here, so they are left out and named.
    untuned = {"max_batch_size", "preferred_batch_sizes", "max_queue_delay_ms", "max_queue_size", "batches_in_flight"}
    settings = Settings(model_repository=args.repository, intra_op_threads=0, instances=None, **dict.fromkeys(untuned))
    overriding = [
        f"SERVE_{k.upper()}" for k in (*untuned, "instances", "intra_op_threads") if f"SERVE_{k.upper()}" in os.environ
    ]
    if overriding:
        print(f"warning: {', '.join(overriding)} set: the service will use them over config.json", file=sys.stderr)
    objective = args.objective_ms or source.config.batching.latency_slo_ms or DEFAULT_LATENCY_SLO_MS
    sizes = parse_ints(args.batch_sizes) or raw_sizes(source.config.batching.max_batch_size)
    provider = build_instances(source, settings, effective_batching(source.config.batching, settings))
    running_on = provider.providers_in_use[0]
    provider.close()
    counts = parse_ints(args.instances) or instance_counts(usable_cores(), on_gpu=running_on != CPU)

    tensors, _ = preprocess_photos(source, list(photo_jpegs(sizes=(320,)).values()), rounds=1)
    print(f"{args.model} on {this_machine()}, {running_on}, objective {objective:g} ms", file=sys.stderr)
    points = []
    for count in counts:
        for n in sizes:
            batch = np.stack([tensors[i % len(tensors)] for i in range(n)])  # (N, C, H, W)
            point = measure(source, batch, count, args.seconds, settings)
            print(f"  batch {n} x {count} sessions: {point.images_per_s:.1f} images/s", file=sys.stderr)
            points.append(point)
    chosen, met = recommend(points, objective)
    print(table(points, objective, chosen))
    threads = f", {chosen.intra_op_threads} threads each" if chosen.instances > 1 else ""
    verdict = "recommended" if met else "no configuration fits the objective; the quickest is"
    print(
        f"\n{verdict}: max_batch_size {chosen.batch_size}, {chosen.instances} session(s){threads}: "
        f"{chosen.images_per_s:.1f} images/s, a batch in {chosen.p99_ms:.1f} ms at p99 "
        f"(objective {objective:g} ms, of which a batch may take {objective * QUEUEING_SHARE:g})"
    )
    if args.verify:
        results = verify(args.repository, args.model, service_overrides(chosen, objective), max(10.0, args.seconds))
        print("\n" + verify_table(results, objective))
    if args.write:
        if not met:
            print("not written: no configuration meets the objective here (--objective-ms to choose another)")
            return 1
        config = read_config(model_dir(args.repository, args.model))  # as it is now: a version may have been added
        if config.batching.latency_slo_ms is None:
            print(f"the model now batches from its objective, {objective:g} ms (service/engine/policy.py)")
        tuning = Tuning(
            version=source.version,
            sha256=config.versions[source.version].sha256,
            machine=this_machine(),
            provider=running_on,
            onnxruntime=ort.__version__,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            latency_slo_ms=objective,
            points=tuple(points),
        )
        path = write_config(args.repository, tuned_config(config, chosen, tuning))
        print(f"written to {path}")
    return 0


def parse_ints(text: str | None) -> list[int]:
    if not text:
        return []
    values = [int(part) for part in text.split(",") if part.strip()]
    if any(v < 1 for v in values):
        raise SystemExit(f"expected positive integers, got {text!r}")
    return sorted(set(values))


if __name__ == "__main__":
    sys.exit(main())
