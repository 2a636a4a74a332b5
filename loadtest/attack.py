"""Every hostile client we know of, one at a time, against a service started here, with a well-behaved
client alongside: what each attack costs everyone else.

    python loadtest/attack.py --repository model_repository [--target resnet50] [--attack NAME ...]
        [--through-nginx] [--output loadtest/results/attack.json]        (make attack)

The service runs with its defaults on 127.0.0.1, serving `lenet5` (the well-behaved client's model: a
32 x 32 PNG every 20 ms, from a process of its own and from 127.0.0.2) and `--target` (the attackers',
from 127.0.0.1). With `--through-nginx` both go through nginx with the shipped config, which limits each
client address. The attackers run in this process at `--attacker-nice` 10: here they share the
service's cores, where in real life they are other machines. Per attack it prints what the attackers
got, any 5xx, the well-behaved client's p50/p99 before, during and after, the service's RSS, and from
the service's own metrics how many images it decoded and inferred meanwhile. The first attack,
`control`, is 16 clients asking for /healthz: what request rate alone costs on this machine.

Targets: no 5xx (504, the answer to a request's own deadline passing, excepted) and no crash; the
well-behaved p99 during each attack within 2x its warm baseline plus 50 ms; RSS back within 1.5x of the
warm figure once the attacks are over. Exits 1 if a target is missed.
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from loadtest import hostile
from loadtest.proxy import running_nginx
from loadtest.server import running_service

GOOD_MODEL = "lenet5"
GOOD_ADDRESS = "127.0.0.2"  # the well-behaved client's own address: nginx limits per client address
GOOD_INTERVAL_S = 0.02
LATENCY_FACTOR, LATENCY_SLACK_MS, RSS_FACTOR = 2.0, 50.0, 1.5

Run = Callable[[str, int, asyncio.Event, hostile.Tally], Awaitable[None]]


@dataclass(frozen=True)
class Phases:
    """Seconds: the warm baseline (long: its p99 sets every attack's limit), before and after each attack,
    the most any attack runs, and idle at the end before the memory is read."""

    warm: float = 10.0
    before: float = 2.0
    after: float = 2.0
    longest: float = 60.0
    idle: float = 5.0


QUICK = Phases(warm=2.0, before=0.5, after=0.5, longest=1.5, idle=1.0)  # --quick: the report's shape, for tests


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    run: Run
    seconds: float = 5.0


def catalogue(target: str) -> list[Attack]:
    """The attacks of issue 13, at the scale it found them."""
    h = hostile
    url = f"/v1/classify?model={target}"

    def post(path: str, body: bytes, content_type: str = "image/png") -> bytes:
        return h.request_bytes("POST", path, {"Content-Type": content_type}, body)

    def flood(data: bytes, clients: int) -> Run:
        return lambda host, port, stop, tally: h.flood(host, port, data, clients, stop, tally)

    photo = h.photo_jpeg()
    multipart_body, multipart_type = h.multipart(10_000, h.digit_png())
    slow_body_head = h.request_bytes("POST", url, {"Content-Type": "image/png", "Content-Length": "1048576"})[:-2]
    return [
        Attack(
            "control",
            "16 clients, GET /healthz: the cost of request rate alone",
            flood(h.request_bytes("GET", "/healthz", {}), 16),
        ),
        Attack("thin-png-6000", "16 clients, a 102-byte PNG of 1 x 6000", flood(post(url, h.png(1, 6000)), 16)),
        Attack("thin-png-2000", "16 clients, a PNG of 1 x 2000", flood(post(url, h.png(1, 2000)), 16)),
        Attack("thin-png-10m", "4 clients, a PNG of 1 x 10,000,000", flood(post(url, h.png(1, 10_000_000, "L")), 4)),
        Attack("thin-png-200k", "4 clients, a PNG of 1 x 200,000", flood(post(url, h.png(1, 200_000, "L")), 4)),
        Attack("zeros-png-40m", "16 clients, a PNG of 6324 x 6324 zeros", flood(post(url, h.png(6324, 6324)), 16)),
        Attack("wide-webp", "16 clients, a WebP of 16383 x 2441", flood(post(url, h.webp(16383, 2441)), 16)),
        Attack(
            "largest-png",
            "16 clients, a PNG of 4096 x 4096 (the largest allowed)",
            flood(post(url, h.png(4096, 4096)), 16),
        ),
        Attack(
            "png-text-bomb", "16 clients, 74 kB of PNG inflating 70 MB of text", flood(post(url, h.png_text_bomb()), 16)
        ),
        Attack(
            "slow-headers",
            "500 connections sending headers at 1 byte/s",
            lambda host, port, stop, tally: h.slow_clients(
                host, port, 500, b"", post(url, h.digit_png()), 1, 1.0, stop, tally
            ),
            seconds=14.0,
        ),
        Attack(
            "slow-body",
            "200 connections sending a 1 MB body at 1 kB/s",
            lambda host, port, stop, tally: h.slow_clients(
                host, port, 200, slow_body_head + b"\r\n", b"x" * 1_048_576, 1024, 1.0, stop, tally
            ),
            seconds=10.0,
        ),
        Attack(
            "huge-headers",
            "2 clients, 12 MB of headers",
            flood(h.request_bytes("GET", "/healthz", {"X-Big": "a" * 12_000_000}), 2),
        ),
        Attack(
            "many-headers",
            "2 clients, a million headers",
            flood(h.request_bytes("GET", "/healthz", {f"X-{i}": "1" for i in range(1_000_000)}), 2),
        ),
        Attack("long-url", "4 clients, a 63 kB model name", flood(post("/v1/classify?model=" + "m" * 63_000, b"x"), 4)),
        Attack(
            "multipart-10k", "4 clients, 10,000 multipart files", flood(post(url, multipart_body, multipart_type), 4)
        ),
        Attack(
            "json-10k",
            "4 clients, JSON with 10,000 base64 images",
            flood(post(url, h.json_images(10_000, h.digit_png()), "application/json"), 4),
        ),
        Attack(
            "expired",
            "16 clients, photos with timeout_ms=1",
            flood(post(url + "&timeout_ms=1", photo, "image/jpeg"), 16),
        ),
        Attack(
            "doomed",
            "16 clients, photos with timeout_ms=200",
            flood(post(url + "&timeout_ms=200", photo, "image/jpeg"), 16),
        ),
        Attack(
            "hang-ups",
            "16 clients sending a photo and hanging up after 10 ms",
            lambda host, port, stop, tally: h.hang_ups(
                host, port, post(url, photo, "image/jpeg"), 16, 0.01, stop, tally
            ),
        ),
        Attack(
            "mid-body",
            "16 clients hanging up halfway through a body",
            lambda host, port, stop, tally: h.hang_ups(
                host, port, post(url, photo, "image/jpeg")[: -len(photo) // 2], 16, 0.05, stop, tally
            ),
        ),
        Attack(
            "inf-timeout", "4 clients, timeout_ms=inf", flood(post(url + "&timeout_ms=inf", photo, "image/jpeg"), 4)
        ),
    ]


# -- the well-behaved client, in its own process so that the attackers' event loop cannot delay it ------


def well_behaved(port: int, model: str, source: str, stop, results) -> None:
    """POST a 32 x 32 PNG to `model` every GOOD_INTERVAL_S until `stop`, from address `source`;
    put [(start, seconds, status)]."""
    body = hostile.digit_png()
    records, connection = [], None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
            connection.request("POST", f"/v1/classify?model={model}", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status, connection = 0, None
        records.append((started, time.monotonic() - started, status))
        time.sleep(GOOD_INTERVAL_S)
    results.put(records)


def percentiles(records: list[tuple[float, float, int]], start: float, end: float) -> dict:
    window = [r for r in records if start <= r[0] < end]
    ms = sorted(r[1] * 1000 for r in window)
    if not ms:
        return {"n": 0, "p50": None, "p99": None, "failed": 0}
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return {"n": len(ms), "p50": statistics.median(ms), "p99": p99, "failed": sum(r[2] != 200 for r in window)}


class RssSampler(threading.Thread):
    """The service's resident memory every 100 ms, from /proc."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stopping = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            with contextlib.suppress(OSError, ValueError):
                status = Path(f"/proc/{self.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
                self.samples.append((time.monotonic(), kb / 1024))

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def at(self, moment: float) -> float:
        return next((mb for t, mb in reversed(self.samples) if t <= moment), 0.0)


def server_counts(base: str) -> Counter:
    """From /metrics: requests by status, images decoded and inferred, HTTP refusals."""
    counts = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "cnnserve_requests_total":
                counts[f"http {sample.labels['code']}"] += sample.value
            elif sample.name == "cnnserve_decode_duration_seconds_count":
                counts["decoded"] += sample.value
            elif sample.name == "cnnserve_batch_size_sum":
                counts["inferred"] += sample.value
            elif sample.name == "cnnserve_http_refused_total":
                counts[f"refused {sample.labels['reason']}"] += sample.value
    return counts


async def run_attacks(base: str, service: str, attacks: list[Attack], marks: dict, phases: Phases) -> list[dict]:
    """Attack `base` (the service, or nginx in front of it); read the figures from `service`."""
    host, port = base.removeprefix("http://").split(":")
    rows = []
    for attack in attacks:
        print(f"attack {attack.name}: {attack.what} for {attack.seconds:g} s", file=sys.stderr, flush=True)
        before = time.monotonic()
        await asyncio.sleep(phases.before)
        counts = server_counts(service)
        stop, tally = asyncio.Event(), hostile.Tally.empty()
        started = time.monotonic()
        task = asyncio.ensure_future(attack.run(host, int(port), stop, tally))
        await asyncio.wait([task], timeout=min(attack.seconds, phases.longest))
        stop.set()
        ended = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 60)
        done = time.monotonic()
        await asyncio.sleep(phases.after)
        server = server_counts(service) - counts
        rows.append(
            {
                "attack": attack.name,
                "what": attack.what,
                "statuses": {str(k): v for k, v in sorted(tally.statuses.items(), key=str)},
                "attacker_5xx": tally.server_errors,
                "windows": {
                    "before": (before, started),
                    "during": (started, ended),
                    "after": (done, done + phases.after),
                },
                "server": dict(server),
            }
        )
    marks["end"] = time.monotonic()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--good-model", default=GOOD_MODEL, help="the well-behaved client's model")
    parser.add_argument("--target", default="resnet50", help="the model the attackers send to")
    parser.add_argument("--attack", action="append", help="run only these (repeatable); default: all")
    parser.add_argument("--output", type=Path, help="write the figures as JSON")
    parser.add_argument(
        "--attacker-nice",
        type=int,
        default=10,
        help="niceness of the attackers (this process) once the service and the well-behaved client have started: "
        "here they share the service's cores, where in real life they are other machines (0: equal footing)",
    )
    parser.add_argument(
        "--through-nginx",
        action="store_true",
        help="put nginx with deploy/nginx/cnn-serve.conf in front of the service (needs the nginx binary)",
    )
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes: the report's shape only")
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    args = parser.parse_args(argv)
    attacks, phases = catalogue(args.target), QUICK if args.quick else Phases()
    if args.list:
        for attack in attacks:
            print(f"{attack.name:16s} {attack.what}")
        return 0
    if args.attack:
        unknown = set(args.attack) - {a.name for a in attacks}
        if unknown:
            parser.error(f"unknown attacks {sorted(unknown)}; see --list")
        attacks = [a for a in attacks if a.name in args.attack]

    context = multiprocessing.get_context("spawn")
    with (
        running_service(args.repository, sorted({args.good_model, args.target})) as (service, proc),
        tempfile.TemporaryDirectory() as folder,
        running_nginx(Path(folder), [int(service.rsplit(":", 1)[1])])
        if args.through_nginx
        else nullcontext(service) as base,
    ):
        rss = RssSampler(proc.pid)
        rss.start()
        stop, results = context.Event(), context.Queue()
        port = int(base.rsplit(":", 1)[1])
        client = context.Process(target=well_behaved, args=(port, args.good_model, GOOD_ADDRESS, stop, results))
        client.start()
        os.nice(args.attacker_nice)  # the service and the well-behaved client keep their priority
        warm_start = time.monotonic()
        time.sleep(phases.warm + 1.0)  # the warm baseline, after a second to settle
        marks = {"warm": (warm_start + 1.0, time.monotonic())}
        rows = uvloop.run(run_attacks(base, service, attacks, marks, phases))  # uvloop: cheaper attackers
        time.sleep(phases.idle)  # idle, then read the memory the attacks left behind
        marks["idle"] = time.monotonic()
        stop.set()
        records = results.get(timeout=60)
        client.join(10)
        alive = proc.poll() is None
        rss.stopping.set()
        rss.join()
    return report(rows, records, rss, marks, alive, args.output)


def report(rows, records, rss: RssSampler, marks: dict, alive: bool, output: Path | None) -> int:
    warm = percentiles(records, *marks["warm"])
    warm_rss = rss.at(marks["warm"][1])
    limit_ms = LATENCY_FACTOR * warm["p99"] + LATENCY_SLACK_MS
    print(f"\nwell-behaved client, warm: p50 {warm['p50']:.1f} ms, p99 {warm['p99']:.1f} ms (limit during an attack:")
    print(f"{limit_ms:.1f} ms); service RSS warm {warm_rss:.0f} MB\n")
    print("| attack | attackers got | 5xx | well-behaved p50 / p99 ms: before, during, after | RSS peak MB "
          "| decoded, inferred | ok |")  # fmt: skip
    print("|---|---|---:|---|---:|---|---|")
    passed = alive
    for row in rows:
        phases = {name: percentiles(records, *window) for name, window in row["windows"].items()}
        during = phases["during"]
        server_5xx = sum(v for k, v in row["server"].items() if k.startswith("http 5") and k != "http 504")
        good_failed = sum(p["failed"] for p in phases.values())
        ok = (
            row["attacker_5xx"] == 0
            and server_5xx == 0
            and good_failed == 0
            and during["p99"] is not None
            and during["p99"] <= limit_ms
        )
        passed &= ok
        row.update(phases=phases, rss_peak_mb=rss.peak(*row["windows"]["during"]), ok=ok)
        shown = ", ".join(f"{p['p50']:.1f} / {p['p99']:.1f}" if p["n"] else "-" for p in phases.values())
        got = " ".join(f"{k}: {v}" for k, v in row["statuses"].items())
        work = f"{row['server'].get('decoded', 0):.0f}, {row['server'].get('inferred', 0):.0f}"
        print(
            f"| {row['attack']} | {got} | {row['attacker_5xx'] + server_5xx} | {shown} | {row['rss_peak_mb']:.0f} "
            f"| {work} | {'yes' if ok else 'NO'} |"
        )
    idle_rss = rss.at(marks["idle"])
    rss_ok = idle_rss <= RSS_FACTOR * warm_rss
    print(f"\nservice RSS: warm {warm_rss:.0f} MB, peak {rss.peak(0, marks['idle']):.0f} MB, "
          f"after the attacks {idle_rss:.0f} MB ({idle_rss / warm_rss:.2f}x warm, target <= {RSS_FACTOR}x): "
          f"{'ok' if rss_ok else 'MISSED'}")  # fmt: skip
    print(f"service alive at the end: {'yes' if alive else 'NO'}")
    passed &= rss_ok
    print("all targets met" if passed else "TARGETS MISSED")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        summary = {"warm": warm, "warm_rss_mb": warm_rss, "idle_rss_mb": idle_rss, "alive": alive, "passed": passed}
        output.write_text(json.dumps({**summary, "attacks": rows}, indent=2, default=str))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
