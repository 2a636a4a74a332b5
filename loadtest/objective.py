"""A latency objective against the fixed batching rules, under normal load and under 10x overload.

    python -m loadtest.objective --model resnet50 [--objective-ms 250] [--seconds 20] [--overload-seconds 30]
        [--repository model_repository] [--output loadtest/results/objective.json]

In one run, for the fixed rules (`SERVE_LATENCY_SLO_MS=0`: config.json's max batch, 2 ms delay, queue) and for
the objective (`SERVE_LATENCY_SLO_MS`): the raw engine's best images/s and batch-1 latency first, then the
service (default process layout) with the bundled JPEG photos, `/v1/classify`: 1 client, 16 clients, and 256
clients for `--overload-seconds`, then one client again right after, to see how soon latency is back to normal.
Clients are closed-loop; one refused (429) waits for its Retry-After, at most 1 s, as a client should. Answered
and refused requests are timed apart. Figures, not tests.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from loadtest.bench import bench_raw, ensure_exported, preprocess_photos
from loadtest.images import photo_jpegs
from loadtest.server import ROOT, running_service
from modelrepo.read import load_source

WARMUP_S = 2.0  # the first seconds of a phase are not recorded
RECOVERY_S = 4.0
MAX_BACKOFF_S = 1.0


async def closed_loop(url: str, jpegs: list[bytes], clients: int, seconds: float) -> list[tuple[float, int, float]]:
    """(finished at, status, seconds) per request, from `clients` clients for `seconds`."""
    records: list[tuple[float, int, float]] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            n = i
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    response = await client.post(
                        url, content=jpegs[n % len(jpegs)], headers={"content-type": "image/jpeg"}
                    )
                    status = response.status_code
                except httpx.TransportError:
                    status = 0
                finished = time.monotonic()
                records.append((finished, status, finished - started))
                n += clients
                if status == 429:
                    await asyncio.sleep(min(MAX_BACKOFF_S, float(response.headers.get("retry-after", 1))))

        await asyncio.gather(*(one(i) for i in range(clients)))
    return records


def summary(records: list[tuple[float, int, float]], start: float, end: float) -> dict:
    window = [(t, s, d) for t, s, d in records if start <= t <= end]
    answered = [d for _, s, d in window if s == 200]
    refused = [d for _, s, d in window if s == 429]
    out = {
        "answered_per_s": len(answered) / (end - start),
        "refused_per_s": len(refused) / (end - start),
        "other_errors": sum(1 for _, s, _ in window if s not in (200, 429)),
    }
    if answered:
        p50, p99 = np.percentile(np.asarray(answered) * 1000, [50, 99])
        out |= {"answered_p50_ms": float(p50), "answered_p99_ms": float(p99)}
    if refused:
        out["refused_p99_ms"] = float(np.percentile(np.asarray(refused) * 1000, 99))
    return out


def phase(url: str, jpegs: list[bytes], clients: int, seconds: float) -> dict:
    began = time.monotonic()
    records = asyncio.run(closed_loop(url, jpegs, clients, seconds + WARMUP_S))
    return {"clients": clients, **summary(records, began + WARMUP_S, began + WARMUP_S + seconds)}


def recovery(url: str, jpegs: list[bytes], normal_ms: float) -> dict:
    """One client right after the overload: seconds until an answer comes within 2x the 1-client p50."""
    records = asyncio.run(closed_loop(url, jpegs, 1, RECOVERY_S))
    began = records[0][0] - records[0][2]
    back = next((t - began for t, s, d in records if s == 200 and d * 1000 <= 2 * normal_ms), None)
    return {"seconds_to_normal": back, "first_latencies_ms": [round(d * 1000, 1) for _, _, d in records[:5]]}


def run_config(repository: Path, model: str, jpegs: list[bytes], env: dict, seconds: float, overload_s: float) -> dict:
    with running_service(repository, [model], env=env) as (url, _):
        classify = f"{url}/v1/classify?model={model}&top_k=1"
        batching = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()["batching"]
        alone = phase(classify, jpegs, 1, seconds / 2)
        normal = phase(classify, jpegs, 16, seconds)
        overload = phase(classify, jpegs, 256, overload_s)
        after = recovery(classify, jpegs, alone["answered_p50_ms"])
    return {"batching": batching, "1 client": alone, "16 clients": normal, "256 clients": overload, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--objective-ms", type=float, default=250.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=None, help="SERVE_WORKERS (default: the service's own)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    layout = {} if args.workers is None else {"SERVE_WORKERS": str(args.workers)}
    ensure_exported(args.repository, args.model)
    source = load_source(args.repository, args.model)
    jpegs = list(photo_jpegs(sizes=(320,)).values())
    tensors, decode_ms = preprocess_photos(source, jpegs, rounds=1)
    raw = bench_raw(source, tensors, 3.0, [1, 2, 4, 8])
    result = {"model": args.model, "raw": raw, "decode_ms": decode_ms}
    for name, value in (("fixed rules", "0"), (f"objective {args.objective_ms:g} ms", str(args.objective_ms))):
        print(f"{args.model}: {name} ...", file=sys.stderr)
        result[name] = run_config(
            args.repository,
            args.model,
            jpegs,
            layout | {"SERVE_LATENCY_SLO_MS": value},
            args.seconds,
            args.overload_seconds,
        )
        print(json.dumps(result[name], indent=1), file=sys.stderr)
    best = max(p["images_per_s"] for p in raw)
    batch1 = next(p for p in raw if p["batch_size"] == 1)
    print(f"raw engine: best {best:.1f} images/s, batch 1 p50 {batch1['p50_ms']:.1f} ms; decode {decode_ms:.1f} ms")
    print(table(result, best))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))


def table(result: dict, raw_best: float) -> str:
    rows = [
        "| batching | clients | answered/s | vs raw best | answered p50 ms | answered p99 ms | refused/s "
        "| refused p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, config in result.items():
        if not isinstance(config, dict) or "16 clients" not in config:
            continue
        for key in ("1 client", "16 clients", "256 clients"):
            p = config[key]
            rows.append(
                f"| {name} | {p['clients']} | {p['answered_per_s']:.1f} | {p['answered_per_s'] / raw_best:.2f} | "
                f"{p.get('answered_p50_ms', float('nan')):.0f} | {p.get('answered_p99_ms', float('nan')):.0f} | "
                f"{p['refused_per_s']:.1f} | {p.get('refused_p99_ms', float('nan')):.0f} |"
            )
        rows.append(f"| {name} | after | back to normal in {config['after']['seconds_to_normal']} s | | | | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
