"""GuardedHttpProtocol over real sockets: uvicorn in a thread, a small ASGI app, raw clients that misbehave.

Limits are scaled down (half-second timeouts, 4 kB of headers) so each attack takes a second, not forty.
"""

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from service.frontend.http_server import HttpLimits, protocol_factory

LIMITS = dict(
    max_header_bytes=4096,
    max_header_count=20,
    header_timeout_s=0.5,
    min_body_rate=2000.0,
    body_grace_s=0.5,
    max_connections=4,
    linger_s=0.5,
)


class App:
    """Echoes the body's length; `/slow` answers after 1.5 s (longer than any timeout above); `/early`
    answers without reading the body. Records what each request's receive() saw."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/early":
            return await self.answer(send, 413, b"early")
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.events.append("disconnect")
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["path"] == "/slow":
            await asyncio.sleep(1.5)
        await self.answer(send, 200, json.dumps({"bytes": size}).encode())

    @staticmethod
    async def answer(send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running(app, **overrides) -> Iterator[tuple[int, list[str]]]:
    """uvicorn with the guarded protocol on a free port in a thread; yields (port, refusal reasons)."""
    refused: list[str] = []
    limits = HttpLimits(**{**LIMITS, **overrides}, on_refused=refused.append)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol_factory(limits), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], refused
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_response(sock: socket.socket) -> tuple[int, dict | None]:
    """(status, JSON body or None) of one response; the socket's timeout bounds the wait."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), json.loads(body) if body.startswith(b"{") else None


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def get(port: int, path: str = "/", body: bytes = b"") -> tuple[int, dict | None]:
    with connect(port) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        return read_response(sock)


@pytest.fixture(scope="module")
def app() -> App:
    return App()


@pytest.fixture(scope="module")
def server(app):
    with running(app) as (port, refused):
        yield port, refused


def test_well_behaved_requests_pass(server):
    port, _ = server
    assert get(port, body=b"x" * 100_000) == (200, {"bytes": 100_000})


def test_headers_sent_a_byte_at_a_time_get_408(server):
    port, refused = server
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        with pytest.raises(OSError):
            for _ in range(40):  # 2 s of one byte every 50 ms; the server cuts it off at 0.5 s
                sock.sendall(b"X")
                time.sleep(0.05)
            raise AssertionError("still connected after 2 s")
        status, body = read_response(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert "request_timeout" in refused
    assert get(port)[0] == 200


def test_an_idle_connection_is_closed_without_an_answer(server):
    port, _ = server
    with connect(port) as sock:
        time.sleep(0.8)
        assert closed_by_server(sock)


def test_a_slow_body_gets_408_and_the_app_sees_a_disconnect(server, app):
    port, refused = server
    app.events.clear()
    with connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(30):  # 100 bytes/s against a minimum of 2000
                sock.sendall(b"x" * 10)
                time.sleep(0.1)
        status, body = read_response(sock)
    assert status == 408 and "bytes/s" in body["error"]["message"]
    assert refused.count("request_timeout") >= 1
    deadline = time.monotonic() + 2
    while "disconnect" not in app.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.events == ["disconnect"]


def test_a_slow_answer_is_not_cut_off(server):
    port, _ = server
    with connect(port) as sock:
        request = b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        sock.sendall(request)
        assert read_response(sock) == (200, {"bytes": 3})  # 1.5 s: longer than both timeouts
        time.sleep(0.2)
        sock.sendall(request)  # the same keep-alive connection, headers timed from the last answer
        assert read_response(sock) == (200, {"bytes": 3})


def test_an_early_answer_is_followed_by_a_graceful_close(server):
    """Answered before its body arrived: the rest is read and dropped while it keeps coming, then the
    connection closes once the client pauses."""
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        assert read_response(sock)[0] == 413
        with contextlib.suppress(OSError):
            for _ in range(30):
                sock.sendall(b"x" * 10)
                time.sleep(0.1)
        assert closed_by_server(sock)


def test_an_early_answer_tells_the_client_to_close(server):
    """So that a keep-alive client sends its next request on a new connection, not on this closing one."""
    port, _ = server

    def head_of(request: bytes) -> bytes:
        with connect(port) as sock:
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            return head.lower()

    early = head_of(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
    assert early.startswith(b"http/1.1 413") and b"\r\nconnection: close\r\n" in early
    read = head_of(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
    assert read.startswith(b"http/1.1 200") and b"connection: close" not in read  # its body was read: kept


@pytest.mark.parametrize(
    "headers,reason",
    [
        (b"X-Big: " + b"a" * 100_000 + b"\r\n", "headers_too_large"),
        (b"".join(b"X-%d: 1\r\n" % i for i in range(50)), "too_many_headers"),
        (b"", "headers_too_large"),  # the request line alone is over the limit
    ],
)
def test_oversized_headers_get_431(server, headers, reason):
    port, refused = server
    path = b"/" + (b"p" * 10_000 if not headers else b"")
    with connect(port) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        status, body = read_response(sock)
    assert status == 431 and body["error"]["code"] == reason
    assert reason in refused
    assert get(port)[0] == 200


def test_malformed_http_gets_a_json_400(server):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, body = read_response(sock)
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_connections_beyond_the_limit_get_503_and_admitted_ones_keep_working(app):
    request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab"
    with running(app, header_timeout_s=5.0) as (port, refused):
        held = [connect(port) for _ in range(4)]
        try:
            for sock in held:  # four keep-alive connections, each admitted by its first request
                sock.sendall(request)
                assert read_response(sock)[0] == 200
            status, body = get(port)
            assert status == 503 and body["error"]["code"] == "too_many_connections"
            held[0].sendall(request)
            assert read_response(held[0]) == (200, {"bytes": 2})
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert get(port)[0] == 200
        assert refused == ["too_many_connections"]
