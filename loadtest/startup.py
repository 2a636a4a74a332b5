"""How long the service takes to become ready: a cold start, then restarts with warm caches.

    python loadtest/startup.py --model resnet50 [--restarts 2] [--repository DIR] [--cache-dir DIR] [--output F]

Each start is a fresh `python -m service` process, timed from launch to the first 200 from /readyz.
The first start empties the TensorRT engine and timing cache (`SERVE_TRT_CACHE_DIR`), so it builds
every engine; restarts load them. The service's own `cnnserve_model_load_seconds` splits the time
into building the session and warming up every batch size; the rest is the interpreter, imports and
HTTP start-up. On CPU there is no engine cache, so restarts show what start-up costs without one.
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench import ensure_exported
from loadtest.server import running_service


def load_seconds(metrics_text: str) -> dict[str, float]:
    """cnnserve_model_load_seconds summed over the models served, by phase."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "cnnserve_model_load_seconds":
            for sample in family.samples:
                phase = sample.labels["phase"]
                totals[phase] = totals.get(phase, 0.0) + sample.value
    return totals


def start_once(repository: Path, model: str, env: dict[str, str]) -> dict:
    """One start: seconds from launch to ready, the service's phases and the providers it used."""
    launched = time.monotonic()
    with running_service(repository, [model], env=env) as (url, _):
        ready_s = time.monotonic() - launched
        phases = load_seconds(httpx.get(f"{url}/metrics").text)
        providers = httpx.get(f"{url}/v1/models/{model}").json()["providers"]
    return {"ready_s": ready_s, **{f"{phase}_s": s for phase, s in phases.items()}, "providers": providers}


def markdown(starts: list[dict]) -> str:
    rows = [
        "| start | engine cache | ready s | session s | warm-up s | other s | provider |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for i, start in enumerate(starts):
        other = start["ready_s"] - start["session_s"] - start["warmup_s"]
        cache = "emptied" if i == 0 else "kept"
        rows.append(
            f"| {'cold' if i == 0 else f'restart {i}'} | {cache} | {start['ready_s']:.2f} | {start['session_s']:.2f} "
            f"| {start['warmup_s']:.2f} | {other:.2f} | {start['providers'][0]} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model name in the repository (exported if missing)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--restarts", type=int, default=2, help="starts after the cold one")
    parser.add_argument("--cache-dir", type=Path, help="TensorRT cache, emptied first (default: a temporary one)")
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    repository = args.repository.resolve()
    ensure_exported(repository, args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp) / "trt_cache"
        shutil.rmtree(cache, ignore_errors=True)
        env = {"SERVE_TRT_CACHE_DIR": str(cache)}
        starts = [start_once(repository, args.model, env) for _ in range(1 + args.restarts)]
    print(markdown(starts))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"model": args.model, "starts": starts}, indent=2) + "\n")


if __name__ == "__main__":
    main()
