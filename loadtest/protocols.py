"""What each API costs: /v1/classify against the Open Inference Protocol (V2 JSON, V2 binary, gRPC) on the same
photos and concurrency, with encoded images (BYTES) and with tensors the client preprocessed itself.

    python -m loadtest.protocols --model resnet50 --model lenet5 [--concurrency 16] [--seconds 10]
        [--repository model_repository] [--output loadtest/results/protocols.json]

Closed-loop clients on 127.0.0.1, one connection each, with request bodies built once up front, so the
load generator's own cost stays small (reported beside each point). Tensor inputs: FP32 for the model as
exported, UINT8 for the same model exported with `--uint8` (into a temporary repository, with random weights)
in a second service run, with /v1/classify measured again there as that run's baseline. Figures, not tests.
"""

import argparse
import asyncio
import base64
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtest.images import photo_jpegs
from loadtest.measure import Window, percentiles_ms, process_cpu_s
from loadtest.server import ROOT, free_port, running_service, tree_cpu_seconds
from modelrepo.read import load_source
from service.config import Settings
from service.frontend.preprocess import Preprocessor
from service.frontend.tensors import DATATYPES, serialize_bytes
from service.frontend.v2_body import HEADER_LENGTH

Send = Callable[[int], Awaitable[str]]  # request number -> "200" or the error's status
Connect = Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]  # -> (send, close)


def bytes_tensor(items: list[bytes]) -> bytes:
    return serialize_bytes(np.array(items, dtype=object))


async def closed_loop(connect: Connect, concurrency: int, seconds: float) -> Window:
    """`concurrency` clients, each on its own connection, sending back to back; figures from the steady window."""
    window, started = Window(concurrency, seconds), time.perf_counter()

    async def client(worker: int) -> None:
        send, close = await connect()
        try:
            n = worker
            while window.end == math.inf:
                t0 = time.perf_counter()
                code = await send(n)
                t1 = time.perf_counter()
                n += concurrency
                window.answered.add(worker)
                if window.begin <= t1 <= window.end:
                    if code == "200":
                        window.latencies.append(t1 - t0)
                    else:
                        window.errors[code] = window.errors.get(code, 0) + 1
                window.update(t1, started)
        finally:
            await close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return window


def http_connect(url: str, bodies: list[bytes], headers: dict[str, str], check: Callable[[bytes], None]) -> Connect:
    async def connect():
        client = httpx.AsyncClient(timeout=300)

        async def send(n: int) -> str:
            response = await client.post(url, content=bodies[n % len(bodies)], headers=headers)
            if response.status_code == 200:
                check(response.content)
            return str(response.status_code)

        return send, client.aclose

    return connect


def grpc_connect(address: str, requests: list[service_pb2.ModelInferRequest]) -> Connect:
    async def connect():
        channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def send(n: int) -> str:
            try:
                response = await stub.ModelInfer(requests[n % len(requests)])
            except grpc.aio.AioRpcError as e:
                return e.code().name
            if not response.raw_output_contents:
                raise RuntimeError("gRPC answer without outputs")
            return "200"

        return send, channel.close

    return connect


def _has_outputs(content: bytes) -> None:
    if b'"outputs"' not in content[:4096]:
        raise RuntimeError(f"V2 answer without outputs: {content[:200]!r}")


def _v1_answer(content: bytes) -> None:
    if not content.startswith(b'{"model"'):
        raise RuntimeError(f"v1 answer is not a classification: {content[:200]!r}")


def variants(url: str, grpc_address: str, model: str, jpegs: list[bytes], repository: Path, tensors: bool) -> dict:
    """name -> Connect, for every API and input kind a client may use."""
    source = load_source(repository, model)
    config = source.config
    input_name, output_name = config.input.name, config.output.name
    classification = [{"name": output_name, "parameters": {"classification": 1}}]
    infer = f"{url}/v2/models/{model}/infer"
    out: dict[str, Connect] = {
        "v1 classify, JPEG": http_connect(
            f"{url}/v1/classify?model={model}&top_k=1", jpegs, {"content-type": "image/jpeg"}, _v1_answer
        ),
    }
    if not tensors:
        json_bodies = [
            json.dumps(
                {
                    "inputs": [
                        {"name": input_name, "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(j).decode()]}
                    ],
                    "outputs": classification,
                }
            ).encode()
            for j in jpegs
        ]
        out["V2 JSON, BYTES (base64 JPEG)"] = http_connect(
            infer, json_bodies, {"content-type": "application/json"}, _has_outputs
        )
        binary_bodies, binary_headers = [], []
        for j in jpegs:
            data = bytes_tensor([j])
            header = json.dumps(
                {
                    "inputs": [
                        {
                            "name": input_name,
                            "shape": [1],
                            "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(data)},
                        }
                    ],
                    "outputs": classification,
                }
            ).encode()
            binary_bodies.append(header + data)
            binary_headers.append(len(header))
        if len(set(binary_headers)) != 1:  # one header length per variant: the JSON headers are the same size
            raise RuntimeError("binary headers differ in length")
        out["V2 binary, BYTES (JPEG)"] = http_connect(
            infer,
            binary_bodies,
            {HEADER_LENGTH: str(binary_headers[0]), "content-type": "application/octet-stream"},
            _has_outputs,
        )
        out["gRPC, BYTES (JPEG)"] = grpc_connect(
            grpc_address,
            [_grpc_request(model, input_name, output_name, "BYTES", [1], bytes_tensor([j])) for j in jpegs],
        )
    datatype = DATATYPES[config.input.dtype]
    preprocess = Preprocessor.for_model(config, Settings())
    arrays = [preprocess(j)[None] for j in jpegs]  # (1, C, H, W): what a client that preprocesses sends
    shape = list(arrays[0].shape)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": arrays[0].nbytes},
                }
            ],
            "outputs": classification,
        }
    ).encode()
    out[f"V2 binary, {datatype} tensor"] = http_connect(
        infer,
        [header + a.tobytes() for a in arrays],
        {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"},
        _has_outputs,
    )
    out[f"gRPC, {datatype} tensor"] = grpc_connect(
        grpc_address, [_grpc_request(model, input_name, output_name, datatype, shape, a.tobytes()) for a in arrays]
    )
    return out


def _grpc_request(model: str, input_name: str, output_name: str, datatype: str, shape: list[int], raw: bytes):
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype=datatype, shape=shape)
    output = request.outputs.add(name=output_name)
    output.parameters["classification"].int64_param = 1
    request.raw_input_contents.append(raw)
    return request


def measure(name: str, connect: Connect, concurrency: int, seconds: float, server_cpu) -> dict:
    cpu0, server0, wall0 = process_cpu_s(), server_cpu(), time.perf_counter()
    window = asyncio.run(closed_loop(connect, concurrency, seconds))
    wall = time.perf_counter() - wall0
    if not window.latencies:
        raise RuntimeError(f"{name}: no successful request; errors: {window.errors}")
    return {
        "variant": name,
        "concurrency": concurrency,
        "requests": len(window.latencies),
        "errors": window.errors,
        "images_per_s": len(window.latencies) / (window.end - window.begin),
        **percentiles_ms(window.latencies),
        "loadgen_cpu_cores": (process_cpu_s() - cpu0) / wall,
        "server_cpu_cores": (server_cpu() - server0) / wall,
    }


def export_uint8(model: str, folder: Path) -> None:
    cmd = [sys.executable, "export/to_onnx.py", "--model", model, "--uint8", "--weights", "random"]
    subprocess.run([*cmd, "--output", str(folder), "--no-check"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def bench_model(
    repository: Path, model: str, jpegs: list[bytes], concurrency: int, seconds: float, env: dict
) -> list[dict]:
    points = []
    with tempfile.TemporaryDirectory(prefix="uint8-") as uint8_repo:
        export_uint8(model, Path(uint8_repo))
        for repo, tensors in ((repository, False), (Path(uint8_repo), True)):
            grpc_port = free_port()
            run_env = {**env, "SERVE_GRPC_PORT": str(grpc_port)}
            with running_service(repo, [model], env=run_env) as (url, proc):
                run = "uint8 export" if tensors else "as exported"
                for name, connect in variants(url, f"127.0.0.1:{grpc_port}", model, jpegs, repo, tensors).items():
                    point = measure(name, connect, concurrency, seconds, lambda proc=proc: tree_cpu_seconds(proc.pid))
                    points.append({"model": model, "run": run, **point})
                    print(
                        f"  {model}: {name}: {point['images_per_s']:.1f} images/s, p99 {point['p99_ms']:.1f} ms",
                        file=sys.stderr,
                    )
    return points


def table(points: list[dict]) -> str:
    """One row per point; "vs v1": images/s over /v1/classify's in the same service run; "server core-ms per
    image": the service's CPU (every process) per answered image, which the load generator's share of the
    machine does not skew."""
    rows = [
        "| model | service run | API, input | images/s | vs v1 | p50 ms | p99 ms | errors | server core-ms per image "
        "| load generator CPU (cores) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        baseline = next(
            q["images_per_s"]
            for q in points
            if (q["model"], q["run"]) == (p["model"], p["run"]) and q["variant"].startswith("v1")
        )
        rows.append(
            f"| {p['model']} | {p['run']} | {p['variant']} | {p['images_per_s']:.1f} | "
            f"{p['images_per_s'] / baseline:.2f} | "
            f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {sum(p['errors'].values())} | "
            f"{1000 * p['server_cpu_cores'] / p['images_per_s']:.2f} | "
            f"{p['loadgen_cpu_cores']:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="repeatable; default resnet50")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=None, help="SERVE_WORKERS for the service (default: its own)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    jpegs = list(photo_jpegs(sizes=(320,)).values())
    env = {} if args.workers is None else {"SERVE_WORKERS": str(args.workers)}
    points = []
    for model in args.model or ["resnet50"]:
        points += bench_model(args.repository, model, jpegs, args.concurrency, args.seconds, env)
    print(table(points))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps({"concurrency": args.concurrency, "seconds": args.seconds, "points": points}, indent=2)
        )


if __name__ == "__main__":
    main()
