"""One process against an engine process with front ends: what SERVE_WORKERS buys on this host, measured in
one run so the figures compare.

    python -m loadtest.workers [--repository DIR] [--seconds 10] [--workers 1 2] [--repeats 2]

Needs wrk (Debian: apt-get install wrk) and lenet5 and resnet50 exported (make export).

For each layout, `python -m service` is started here (127.0.0.1) and driven by wrk (C, one thread, keep-alive
connections; its CPU is reported, as it shares the machine): lenet5 with a digit PNG at 64 connections (the
network costs nothing, so this is the host's overhead per request), then resnet50 with a photo JPEG at 1 and
16. Each point is run `--repeats` times, alternating layouts; the spread between repeats of one point is the
run's noise. CPU per request is split by process from /proc: front ends (HTTP, decode, transport's client
side) and the engine (dequeue, batch assembly, the session, result fan-out). Prints a Markdown table and
writes JSON with --output.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from loadtest.images import photo_jpegs
from loadtest.server import cpu_seconds, running_service
from service.config import usable_cores

WRK_SCRIPT = """
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
"""
POINTS = [("lenet5", "png", 64), ("resnet50", "jpeg", 1), ("resnet50", "jpeg", 16)]


def digit_png() -> bytes:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]  # 8 x 8, values 0..16
    image = Image.fromarray((digit * 255 / 16).astype("uint8")).resize((28, 28))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, body: Path, content_type: str, connections: int, seconds: float, script: Path) -> dict:
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_pct = 100 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / seconds
    return {**parse_wrk(out), "load_generator_cpu_pct": cpu_pct}


def parse_wrk(out: str) -> dict:
    """Requests/s, p50 and p99 (ms) and the non-2xx count from wrk's --latency report."""
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def processes(root: int) -> dict[str, list[int]]:
    """The service's processes by role, from /proc: one process, or supervisor -> engine + front ends."""
    kids = [int(c) for c in Path(f"/proc/{root}/task/{root}/children").read_text().split()]
    roles: dict[str, list[int]] = {"frontends": [], "engine": [], "supervisor": [root]}
    for pid in kids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" in cmdline:
            continue
        roles["engine" if not roles["engine"] else "frontends"].append(pid)  # the engine is started first
    if not kids:
        roles = {"frontends": [root], "engine": [], "supervisor": []}
    return roles


def point(url: str, pid: int, model: str, body: Path, content_type: str, connections: int, seconds: float, script):
    roles = processes(pid)
    before = {role: sum(cpu_seconds(p) for p in pids) for role, pids in roles.items()}
    result = wrk(f"{url}/v1/classify?model={model}", body, content_type, connections, seconds, script)
    done = result["requests_per_s"] * seconds
    for role, pids in roles.items():
        used = sum(cpu_seconds(p) for p in pids) - before[role]
        result[f"{role}_core_ms_per_request"] = 1000 * used / max(done, 1)
    return result


def run(repository: Path, seconds: float, layouts: list[int], repeats: int) -> dict:
    work = Path(tempfile.mkdtemp())
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = {"png": work / "digit.png", "jpeg": work / "photo.jpg"}
    bodies["png"].write_bytes(digit_png())
    bodies["jpeg"].write_bytes(next(iter(photo_jpegs().values())))
    types = {"png": "image/png", "jpeg": "image/jpeg"}
    results: list[dict] = []
    for repeat in range(repeats):
        for workers in layouts if repeat % 2 == 0 else layouts[::-1]:
            env = {"SERVE_WORKERS": str(workers), "SERVE_MODELS": "lenet5,resnet50"}
            with running_service(repository, ["lenet5", "resnet50"], env=env) as (url, proc):
                for model, kind, connections in POINTS:
                    wrk_warm = point(url, proc.pid, model, bodies[kind], types[kind], connections, 2, script)
                    del wrk_warm  # the first seconds after start: arenas and caches growing
                    measured = point(url, proc.pid, model, bodies[kind], types[kind], connections, seconds, script)
                    results.append({"workers": workers, "model": model, "connections": connections, **measured})
    return {"cores": usable_cores(), "seconds": seconds, "repeats": repeats, "points": results}


def summary(report: dict) -> str:
    rows = [
        "| workers | model | connections | requests/s (each repeat) | p50 ms | p99 ms | non-2xx "
        "| front-end core-ms/req | engine core-ms/req | wrk CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def key(p: dict) -> tuple:
        return p["model"], p["connections"], p["workers"]

    for k in sorted({key(p) for p in report["points"]}):
        ps = [p for p in report["points"] if key(p) == k]
        model, connections, workers = k

        def mean(field: str, ps: list[dict] = ps) -> float:
            return sum(p[field] for p in ps) / len(ps)

        rates = " / ".join(f"{p['requests_per_s']:,.0f}" for p in ps)
        rows.append(
            f"| {workers} | {model} | {connections} | {rates} | {mean('p50_ms'):.1f} | {mean('p99_ms'):.1f} | "
            f"{sum(p['non_2xx'] for p in ps)} | {mean('frontends_core_ms_per_request'):.2f} | "
            f"{mean('engine_core_ms_per_request'):.2f} | {mean('load_generator_cpu_pct'):.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    started = time.time()
    report = run(args.repository, args.seconds, args.workers, args.repeats)
    report["wall_s"] = time.time() - started
    print(summary(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
