"""What a hostile client sends: image bombs, oversized bodies, and clients that are slow or leave early.

Shared by `loadtest/attack.py` (full scale, with a well-behaved client alongside) and the tests (small
scale). Clients speak HTTP/1.1 over asyncio streams by hand, because misbehaving is the point: no HTTP
library will send headers a byte a second or hang up halfway through a body.
"""

import asyncio
import base64
import io
import json
import struct
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

# -- payloads ---------------------------------------------------------------------------------------


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A blank PNG: a handful of bytes, however many pixels (1 x 6000 is 102 bytes)."""
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


def webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "WEBP")
    return out.getvalue()


def digit_png(seed: int = 0) -> bytes:
    """A small grayscale image, the well-behaved client's request."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def photo_jpeg(width: int = 640, height: int = 480) -> bytes:
    gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(gradient).save(out, "JPEG", quality=90)
    return out.getvalue()


def png_text_bomb(chunks: int = 70, inflated: int = 1024 * 1024 - 100) -> bytes:
    """An 8 x 8 PNG carrying `chunks` zTXt chunks that each inflate to about a megabyte (74 kB in all)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    plain = png(8, 8)
    compressed = zlib.compress(b"A" * inflated, 9)
    texts = b"".join(chunk(b"zTXt", b"k%d\x00\x00" % i + compressed) for i in range(chunks))
    return plain[:33] + texts + plain[33:]  # after the signature and IHDR


BOUNDARY = "hostile-boundary"


def multipart(parts: int, data: bytes) -> tuple[bytes, str]:
    """(body, Content-Type) with `parts` file parts of `data`."""
    part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    return part * parts + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def json_images(count: int, data: bytes) -> bytes:
    return json.dumps({"images": [base64.b64encode(data).decode()] * count}).encode()


# -- raw HTTP ---------------------------------------------------------------------------------------


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if (body or method == "POST") and "Content-Length" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")), 0)
    return int(lines[0].split(b" ")[1]), await reader.readexactly(length)


class Connection:
    """One keep-alive client connection, reopened whenever the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, data: bytes, timeout: float = 30.0) -> int:
        """Send `data`, return the response's status; 0 if the server closed without one."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(data)
            await self.writer.drain()
            status, _ = await asyncio.wait_for(read_response(self.reader), timeout)
            return status
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


@dataclass
class Tally:
    """What attackers got back: a count per status (0: closed without an answer)."""

    statuses: Counter

    @classmethod
    def empty(cls) -> "Tally":
        return cls(Counter())

    @property
    def server_errors(self) -> int:
        """5xx answers other than 504, the answer a request whose own deadline passed is meant to get."""
        return sum(
            n for status, n in self.statuses.items() if isinstance(status, int) and status >= 500 and status != 504
        )


# -- attackers: each runs until `stop` is set and records into `tally` -----------------------------------


async def flood(host: str, port: int, data: bytes, clients: int, stop: asyncio.Event, tally: Tally) -> None:
    """`clients` closed-loop clients sending the same request, each on its keep-alive connection."""

    async def one() -> None:
        connection = Connection(host, port)
        while not stop.is_set():
            try:
                tally.statuses[await connection.exchange(data)] += 1
            except OSError:
                tally.statuses[0] += 1
                connection.close()
                await asyncio.sleep(0.05)
        connection.close()

    await asyncio.gather(*(one() for _ in range(clients)))


async def trickle(
    host: str, port: int, head: bytes, tail: bytes, step: int, interval: float, stop: asyncio.Event, tally: Tally
) -> None:
    """Send `head` at once, then `tail` `step` bytes every `interval` s, until the server answers or closes."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.statuses[0] += 1
        return
    answer = asyncio.ensure_future(read_response(reader))
    try:
        writer.write(head)
        for i in range(0, len(tail), step):
            if stop.is_set() or answer.done():
                break
            writer.write(tail[i : i + step])
            await asyncio.wait([answer], timeout=interval)
        await asyncio.wait([answer], timeout=0 if stop.is_set() else 30)
        tally.statuses[answer.result()[0] if answer.done() and not answer.exception() else 0] += 1
    except (ConnectionError, OSError):
        tally.statuses[0] += 1
    finally:
        answer.cancel()
        writer.close()


async def slow_clients(
    host: str,
    port: int,
    connections: int,
    head: bytes,
    tail: bytes,
    step: int,
    interval: float,
    stop: asyncio.Event,
    tally: Tally,
) -> None:
    """`connections` trickling clients, each replaced by a new one when it is answered, until `stop`."""

    async def one() -> None:
        while not stop.is_set():
            await trickle(host, port, head, tail, step, interval, stop, tally)

    await asyncio.gather(*(one() for _ in range(connections)))


async def hang_up(host: str, port: int, data: bytes, after: float) -> None:
    """Send `data` and hang up `after` seconds later, without reading an answer."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()


async def hang_ups(
    host: str, port: int, data: bytes, clients: int, after: float, stop: asyncio.Event, tally: Tally
) -> None:
    """`clients` clients that each, over and over, send `data` (all of it, or part of a body) and hang up
    `after` seconds later."""

    async def one() -> None:
        while not stop.is_set():
            try:
                await hang_up(host, port, data, after)
                tally.statuses["hung up"] += 1
            except OSError:
                tally.statuses[0] += 1

    await asyncio.gather(*(one() for _ in range(clients)))
