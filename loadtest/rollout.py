"""A version rollout while serving: how long from a version's files appearing to its first answer, and what the
swap costs the requests that run meanwhile.

    python -m loadtest.rollout --model resnet50 [--clients 16] [--poll-interval-s 1] [--seconds 8]
        [--repository model_repository] [--output loadtest/results/rollout.json]

The model is copied into a scratch repository. For each of poll (SERVE_MODEL_CONTROL=poll) and explicit (a POST
/v1/repository/models/NAME/load right after the files land), the service runs under `--clients` closed-loop
clients sending the bundled photos to /v1/classify; after `--seconds` of steady traffic a new version is written
as export writes it (modelrepo.write), the clients run on until it answers and for `--seconds` more. Reported:
seconds from the files (config.json listing the version) to the first answer from it, and p50/p99 latency before
the swap against during it (from the files to `--seconds` after the first new answer). Failed requests are
counted; there should be none. Figures, not tests.
"""

import argparse
import asyncio
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from loadtest.bench import ensure_exported
from loadtest.images import photo_jpegs
from loadtest.server import ROOT, running_service
from modelrepo.read import load_source
from modelrepo.schema import ModelSpec, Version
from modelrepo.write import write_version


class Clients:
    """Closed-loop clients: (finished at, seconds, status, version) per request."""

    def __init__(self, url: str, model: str, jpegs: list[bytes], clients: int):
        self.url, self.model, self.jpegs, self.clients = url, model, jpegs, clients
        self.records: list[tuple[float, float, int, int | None]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
            await asyncio.gather(*(self._one(client, i) for i in range(self.clients)))

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        n = i
        while not self.stop.is_set():
            started = time.monotonic()
            response = await client.post(f"/v1/classify?model={self.model}", content=self.jpegs[n % len(self.jpegs)])
            version = response.json().get("version") if response.status_code == 200 else None
            self.records.append((time.monotonic(), time.monotonic() - started, response.status_code, version))
            n += 1

    def first_answer(self, version: int, after: float) -> float | None:
        return next((t for t, _, _, v in self.records if v == version and t >= after), None)


def latency(records: list, start: float, end: float) -> dict:
    window = [(s, code) for t, s, code, _ in records if start <= t < end]
    ok = np.array([s for s, code in window if code == 200]) * 1000
    return {
        "requests": len(window),
        "failed": sum(code != 200 for _, code in window),
        "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok.size else None,
    }


def add_version(repository: Path, model: str, onnx_file: Path) -> int:
    """As `python export/to_onnx.py --model NAME` adds one: the next version number, written atomically."""
    source = load_source(repository, model)
    spec = ModelSpec(**source.config.model_dump(exclude={"versions"}))
    same = source.config.versions[source.version].model_dump(exclude={"file", "sha256"})
    written = write_version(repository, spec, onnx_file, source.labels, functools.partial(Version, **same))
    return int(written.parent.name)


async def swap(url: str, repository: Path, model: str, jpegs: list[bytes], args, control: str) -> dict:
    clients = Clients(url, model, jpegs, args.clients)
    running = asyncio.ensure_future(clients.run())
    await asyncio.sleep(args.seconds)
    onnx_file = load_source(repository, model).onnx_path
    start_before = time.monotonic() - args.seconds + 1
    written_at = time.monotonic()
    version = await asyncio.to_thread(add_version, repository, model, onnx_file)
    files_at = time.monotonic()
    load_seconds = None
    if control == "explicit":
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            response = await client.post(f"/v1/repository/models/{model}/load")
            response.raise_for_status()
        load_seconds = round(time.monotonic() - files_at, 2)
    while (first := clients.first_answer(version, files_at)) is None:
        if time.monotonic() - files_at > 600:
            raise TimeoutError(f"version {version} never answered")
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.seconds)
    clients.stop.set()
    await running
    return {
        "control": control,
        "version": version,
        "write_seconds": round(files_at - written_at, 2),
        "files_to_first_answer_s": round(first - files_at, 2),
        "load_request_s": load_seconds,
        "before": latency(clients.records, start_before, written_at),
        "during": latency(clients.records, written_at, first + args.seconds),
        "failed_total": sum(code != 200 for _, _, code, _ in clients.records),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--poll-interval-s", type=float, default=1.0)
    p.add_argument("--output", type=Path, default=ROOT / "loadtest" / "results" / "rollout.json")
    args = p.parse_args(argv)
    ensure_exported(args.repository, args.model)
    jpegs = list(photo_jpegs().values())
    results = []
    for control in ("poll", "explicit"):
        with tempfile.TemporaryDirectory() as scratch:
            repository = Path(scratch)
            shutil.copytree(args.repository / args.model, repository / args.model)
            env = {"SERVE_MODEL_CONTROL": control, "SERVE_POLL_INTERVAL_S": str(args.poll_interval_s)}
            with running_service(repository, [args.model], env=env) as (url, _):
                result = asyncio.run(swap(url, repository, args.model, jpegs, args, control))
        results.append(result)
        print(json.dumps(result), flush=True)
    report = {"model": args.model, "clients": args.clients, "poll_interval_s": args.poll_interval_s, "runs": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


def table(report: dict) -> str:
    lines = [
        "| control | files to first answer | before: p50 / p99 | during the swap: p50 / p99 | failed |",
        "|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        before, during = r["before"], r["during"]
        lines.append(
            f"| {r['control']} | {r['files_to_first_answer_s']:.2f} s | {before['p50_ms']} / {before['p99_ms']} ms "
            f"| {during['p50_ms']} / {during['p99_ms']} ms | {r['failed_total']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
