"""Which library carries the control messages between front ends and the engine: pyzmq (DEALER/ROUTER over an
ipc:// socket) or multiprocessing's Pipe, measured the way the service uses them, from asyncio event loops.

A front end sends a small pickled header (request id, model, slots, deadline) and gets back a header and one
image's logits (1000 float32). Prints round trips per second with `--in-flight` requests outstanding, and
the CPU each side spends per round trip.

    python -m loadtest.transport [--seconds 3] [--in-flight 1 16]
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import pickle
import tempfile
import time

import numpy as np
import zmq
import zmq.asyncio

LOGITS = np.zeros(1000, np.float32).tobytes()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- zmq ------------------------------------------------------------------------------------------


async def _zmq_server(endpoint: str, ready) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    ready.set()
    while True:
        identity, header = await sock.recv_multipart(copy=False)
        request = pickle.loads(header.bytes)
        if request is None:
            return
        await sock.send_multipart([identity.bytes, pickle.dumps((request[0], 0.1, 0.2, 1)), LOGITS], copy=False)


def zmq_server(endpoint: str, ready, cpu) -> None:
    started = _cpu()
    asyncio.run(_zmq_server(endpoint, ready))
    cpu.value = _cpu() - started


async def zmq_client(endpoint: str, seconds: float, in_flight: int) -> int:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    done = 0
    end = time.monotonic() + seconds
    for i in range(in_flight):
        await sock.send(pickle.dumps((i, "resnet50", [i], end)))
    while time.monotonic() < end:
        header, _ = await sock.recv_multipart()
        request_id = pickle.loads(header)[0]
        done += 1
        await sock.send(pickle.dumps((request_id, "resnet50", [request_id], end)))
    for _ in range(in_flight):
        await sock.recv_multipart()
    await sock.send(pickle.dumps(None))
    return done


# -- multiprocessing Pipe -------------------------------------------------------------------------


async def _pipe_serve(conn) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(conn.fileno(), readable.set)
    while True:
        await readable.wait()
        readable.clear()
        while conn.poll():
            request = pickle.loads(conn.recv_bytes())
            if request is None:
                return
            conn.send_bytes(pickle.dumps((request[0], 0.1, 0.2, 1)) + LOGITS)


def pipe_server(conn, cpu) -> None:
    started = _cpu()
    asyncio.run(_pipe_serve(conn))
    cpu.value = _cpu() - started


async def pipe_client(conn, seconds: float, in_flight: int) -> int:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(conn.fileno(), readable.set)
    done = 0
    end = time.monotonic() + seconds
    for i in range(in_flight):
        conn.send_bytes(pickle.dumps((i, "resnet50", [i], end)))
    outstanding = in_flight
    while outstanding:
        await readable.wait()
        readable.clear()
        while conn.poll():
            reply = conn.recv_bytes()
            request_id = pickle.loads(reply[: -len(LOGITS)])[0]
            outstanding -= 1
            if time.monotonic() < end:
                done += 1
                outstanding += 1
                conn.send_bytes(pickle.dumps((request_id, "resnet50", [request_id], end)))
    conn.send_bytes(pickle.dumps(None))
    return done


def measure(kind: str, seconds: float, in_flight: int) -> tuple[float, float, float]:
    """(round trips/s, client CPU µs per round trip, server CPU µs per round trip)."""
    spawn = mp.get_context("spawn")
    cpu = spawn.Value("d", 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "zmq":
            endpoint = f"ipc://{tmp}/engine"
            ready = spawn.Event()
            server = spawn.Process(target=zmq_server, args=(endpoint, ready, cpu))
            server.start()
            ready.wait(30)
            client_cpu = _cpu()
            done = asyncio.run(zmq_client(endpoint, seconds, in_flight))
        else:
            ours, theirs = spawn.Pipe()
            server = spawn.Process(target=pipe_server, args=(theirs, cpu))
            server.start()
            time.sleep(1.0)  # the server's interpreter starting
            client_cpu = _cpu()
            done = asyncio.run(pipe_client(ours, seconds, in_flight))
        client_cpu = _cpu() - client_cpu
        server.join(30)
    return done / seconds, client_cpu / done * 1e6, cpu.value / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    print(f"{'transport':<22} {'in flight':>9} {'round trips/s':>14} {'client µs':>10} {'server µs':>10}")
    for in_flight in args.in_flight:
        for kind in ("zmq", "pipe"):
            rate, client_us, server_us = measure(kind, args.seconds, in_flight)
            name = "pyzmq ipc" if kind == "zmq" else "multiprocessing Pipe"
            print(f"{name:<22} {in_flight:>9} {rate:>14,.0f} {client_us:>10.1f} {server_us:>10.1f}")


if __name__ == "__main__":
    main()
